"""`fiqa-trt serve` as a real server process on 127.0.0.1, with real images and a real model.

Two servers for most of the module: `service` (the shared MobileFaceNet on LFW crops, or without ../shared the default dlib
model on generated images) answers correctness, limits and API-key questions; `slow_batches` (the default model,
batches of 2 that wait up to 5 s to fill, a queue of 2, a 2 s timeout) makes queueing states last long enough
to observe: a full queue, a timeout, a client that disconnects, and SIGTERM draining the queue (its last test).
One more, with --align, checks the face box and detector score.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import LFW, MOBILEFACENET, write_image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "import sys; from fiqa_trt.cli.app import main; sys.argv[0] = 'fiqa-trt'; main()"
KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", LAUNCH, *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Server:
    def __init__(self, args: list[str], log: Path, key: str | None = None, guard: Path | None = None):
        """`guard`: run under tests/network_guard.py, recording outbound attempts in that folder."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"X-API-Key": key} if key else {}
        self.log = log
        command, environment = cli("serve", "--port", str(self.port), *args), env()
        if guard is not None:
            from tests.network_guard import guarded

            command, environment = guarded(command, guard)
        self.proc = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT)
        self.traced = command[0] == "strace"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"server not ready in time:\n{log.read_text()}")

    def post(self, files=None, **kw) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return httpx.post(self.url + "/v1/quality", files=files, headers=headers, timeout=60, **kw)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=10).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.traced:  # the server is strace's child: strace itself would only detach
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                os.kill(int(children[0]), signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def generated_faces(folder: Path, n: int) -> list[Path]:
    """n distinct structured 112x112 RGB images (for the default model where ../shared is absent)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:112, 0:112]
    paths = []
    for i in range(n):
        img = np.stack([(xx * (i % 5 + 1)) % 256, (yy * 2 + 17 * i) % 256, ((xx + yy) * 3 + i) % 256], -1)
        img = img.astype(np.uint8)
        img[20 + i % 30 : 70, 30:60] = rng.integers(0, 255, 3)
        paths.append(write_image(folder / f"gen{i:02d}.png", img))
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """24 images in one flat folder (so that a file's key in `score` is its name, as the upload's filename is)."""
    folder = tmp_path_factory.mktemp("serve_images")
    if LFW.is_dir():
        picked = sorted(LFW.glob("*/*.jpg"))[:: 500][:24]
        for p in picked:
            (folder / p.name).write_bytes(p.read_bytes())
        return sorted(folder.iterdir())
    return generated_faces(folder, 24)


@pytest.fixture(scope="module")
def model_args() -> list[str]:
    return ["--model", str(MOBILEFACENET)] if MOBILEFACENET.is_file() else []


@pytest.fixture(scope="module")
def service(tmp_path_factory, model_args):
    tmp = tmp_path_factory.mktemp("serve_a")
    (tmp / "key").write_text(KEY + "\n")
    server = Server([*model_args, "--max-batch", "16", "--max-wait-ms", "30", "--max-images", "8",
                     "--max-upload-mb", "1", "--max-pixels", "1000000", "--timeout", "120",
                     "--api-key-file", str(tmp / "key")], tmp / "server.log", key=KEY)
    yield server
    server.stop()
    assert server.proc.returncode == 0, server.log.read_text()


def test_concurrent_clients_get_the_scores_of_score(service, images, model_args, tmp_path):
    ref_file = tmp_path / "ref.jsonl"
    done = run_cli("score", images[0].parent, *model_args, "--out", ref_file, "-q")
    assert done.returncode == 0, done.stderr
    reference = {Path(row["path"]).name: row for row in map(json.loads, ref_file.read_text().splitlines())}
    before = service.metrics()

    def request(group: list[Path]) -> list[dict]:
        files = [("image", (p.name, p.read_bytes(), "application/octet-stream")) for p in group]
        response = service.post(files)
        assert response.status_code == 200, response.text
        return response.json()["images"]

    groups = [images[i : i + 1 + i % 3] for i in range(0, len(images), 3)]  # requests of 1, 2 and 3 images
    with ThreadPoolExecutor(8) as pool:
        rows = [row for answer in pool.map(request, groups * 2) for row in answer]
    assert len(rows) == 2 * sum(map(len, groups))
    for row in rows:
        ref = reference[row["path"]]
        assert row["error"] is None and ref["error"] is None
        assert row == {**ref, "path": row["path"]}, (row, ref)  # every field exactly as `score` writes it
    raw = images[0].read_bytes()
    one = service.post(content=raw, headers={"Content-Type": "image/jpeg"}, params={"name": images[0].name})
    assert one.status_code == 200
    assert one.json()["images"][0] == {**reference[images[0].name], "path": images[0].name}

    after = service.metrics()
    batches = after["fiqa_batch_size_count"] - before.get("fiqa_batch_size_count", 0)
    singles = after['fiqa_batch_size_bucket{le="1.0"}'] - before.get('fiqa_batch_size_bucket{le="1.0"}', 0)
    assert batches - singles >= 1, "no batch of more than one image formed under concurrency"
    assert after["fiqa_batch_size_sum"] - before["fiqa_batch_size_sum"] == len(rows) + 1
    assert after['fiqa_images_total{outcome="scored"}'] >= len(rows) + 1


def truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 3]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header; the data never comes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_images_are_error_rows_beside_good_ones(service, images):
    files = [("image", ("good.jpg", images[0].read_bytes(), "image/jpeg")),
             ("image", ("cut.jpg", truncated(images[1]), "image/jpeg")),
             ("image", ("notes.txt", b"not an image at all", "text/plain")),
             ("image", ("empty.jpg", b"", "image/jpeg")),
             ("image", ("bomb.png", png_header(2000, 1000), "image/png"))]
    response = service.post(files)
    assert response.status_code == 200, response.text
    body = response.json()
    rows = {r["path"]: r for r in body["images"]}
    assert list(rows) == ["good.jpg", "cut.jpg", "notes.txt", "empty.jpg", "bomb.png"]
    assert rows["good.jpg"]["error"] is None and np.isfinite(rows["good.jpg"]["quality"])
    assert rows["cut.jpg"]["error"] == "cannot decode image (corrupt or truncated file)"
    assert rows["notes.txt"]["error"] == "not an image (unrecognised file format)"
    assert rows["empty.jpg"]["error"] == "empty file (0 bytes)"
    assert rows["bomb.png"]["error"] == "image too large: 2000x1000 pixels (limit 1000000)"
    assert all(rows[k]["quality"] is None for k in ("cut.jpg", "notes.txt", "empty.jpg", "bomb.png"))
    assert (body["scored"], body["failed"]) == (1, 4)


def chunked(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("case, status, message", [
    ("json body", 415, "unsupported content type 'application/json'"),
    ("no content type", 415, "unsupported content type 'none'"),
    ("only a text file", 415, "no image of the request can be scored: not an image (unrecognised file format)"),
    ("only a bomb", 413, "no image of the request can be scored: image too large (Image size (10000000000 pixels)"),
    ("over the pixel limit", 413, "no image of the request can be scored: image too large: 1001x1000 pixels"),
    ("nine images", 413, "too many images: at most 8 per request"),
    ("body over 1 MiB", 413, "request body over the upload limit of 1048576 bytes"),
    ("streamed body over 1 MiB", 413, "request body over the upload limit of 1048576 bytes"),
    ("empty raw body", 400, "empty request body: send an image"),
    ("only an empty file", 400, "no image of the request can be scored: empty file (0 bytes)"),
    ("multipart without files", 415, "no image of the request can be scored: not an image"),
    ("only a truncated image", 400, "no image of the request can be scored: cannot decode image"),
    ("broken multipart", 400, "malformed multipart body"),
])
def test_bad_requests_get_a_status_and_a_json_message(service, images, case, status, message):
    jpeg = images[0].read_bytes()
    big = os.urandom(1024 * 1024 + 10)
    send = {
        "json body": dict(content=b"{}", headers={"Content-Type": "application/json"}),
        "no content type": dict(content=jpeg),
        "only a text file": dict(files=[("image", ("a.txt", b"hello", "text/plain"))]),
        "only a bomb": dict(content=png_header(100000, 100000), headers={"Content-Type": "image/png"}),
        "over the pixel limit": dict(files=[("image", ("big.png", png_header(1001, 1000), "image/png"))]),
        "nine images": dict(files=[("image", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(9)]),
        "body over 1 MiB": dict(content=big, headers={"Content-Type": "image/jpeg"}),
        "streamed body over 1 MiB": dict(content=chunked(big), headers={"Content-Type": "image/jpeg"}),
        "empty raw body": dict(content=b"", headers={"Content-Type": "image/jpeg"}),
        "only an empty file": dict(files=[("image", ("e.jpg", b"", "image/jpeg"))]),
        "multipart without files": dict(data={"field": "value"}, files=[]),
        "only a truncated image": dict(files=[("image", ("cut.jpg", truncated(images[1]), "image/jpeg"))]),
        "broken multipart": dict(content=b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n",
                                 headers={"Content-Type": "multipart/form-data; boundary=x"}),
    }[case]
    if case == "no content type":
        response = httpx.post(service.url + "/v1/quality", content=jpeg, headers={**service.headers,
                              "Content-Type": ""}, timeout=60)
    elif case == "multipart without files":
        response = httpx.post(service.url + "/v1/quality", data={"field": "value"},
                              files={"dummy": (None, b"x")}, headers=service.headers, timeout=60)
    else:
        response = service.post(**send)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(message), response.json()
    assert "Traceback" not in response.text


def test_unknown_route_is_a_json_404(service):
    response = httpx.get(service.url + "/v2/nothing", headers=service.headers)
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_api_key_is_needed_everywhere_but_healthz(service, images):
    files = [("image", ("a.jpg", images[0].read_bytes(), "image/jpeg"))]
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        for method, route in (("GET", "/readyz"), ("GET", "/v1/model"), ("GET", "/metrics"),
                              ("POST", "/v1/quality")):
            response = httpx.request(method, service.url + route, headers=headers,
                                     files=files if method == "POST" else None)
            assert response.status_code == 401, (route, headers, response.text)
            assert response.json()["error"].startswith("missing or wrong API key")
    assert httpx.get(service.url + "/healthz").json() == {"status": "alive"}
    ok = httpx.post(service.url + "/v1/quality", files=files, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["scored"] == 1
    assert service.metrics()['fiqa_rejected_requests_total{reason="unauthorized"}'] >= 16


def test_model_and_readiness(service, model_args):
    assert httpx.get(service.url + "/readyz", headers=service.headers).json() == {"ready": True}
    info = httpx.get(service.url + "/v1/model", headers=service.headers).json()
    assert info["model"] == (Path(model_args[1]).name if model_args else info["model"])
    assert info["backend"] in ("openvino", "onnxruntime") and info["device"] == "cpu"
    if model_args:
        import hashlib

        assert info["sha256"] == hashlib.sha256(Path(model_args[1]).read_bytes()).hexdigest()
    from fiqa_trt.engine.perturbations import parse_spec, plan_views
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.settings import ScoringSettings

    recipe = resolve(ScoringSettings(model=str(model_args[1]) if model_args else None)).recipe
    assert info["perturb"] == [parse_spec(spec).label() for spec in recipe.perturb]  # the model's default recipe
    assert info["views"] == [v.label for v in plan_views([parse_spec(spec) for spec in recipe.perturb], 1)]
    assert info["batching"] == {"max_batch": 16, "max_wait_ms": 30.0, "queue": 1024}
    assert info["limits"]["max_images"] == 8 and info["limits"]["max_upload_bytes"] == 1024 * 1024
    assert info["config"]["input_size"] == [112, 112]
    resolution = info["resolution"]  # each value the session runs, with where it came from
    assert resolution["recipe"] == {"value": recipe.name, "source": resolution["recipe"]["source"]}
    assert resolution["input_size"]["value"] == [112, 112] and resolution["precision"]["source"]
    assert resolution["realign"] == {"value": recipe.realign, "source": f"recipe '{recipe.name}'"}  # as `score`


def test_a_multipart_part_without_a_filename_is_scored_under_its_sha256(service, images):
    data = images[2].read_bytes()
    part = service.post(files=[("image", (None, data, "image/jpeg"))])  # a form field, to most parsers
    raw = service.post(content=data, headers={"Content-Type": "image/jpeg"})  # keyed by the body's SHA-256 too
    assert part.status_code == 200 and raw.status_code == 200, (part.text, raw.text)
    import hashlib

    assert part.json()["images"] == raw.json()["images"]
    assert part.json()["images"][0]["path"] == hashlib.sha256(data).hexdigest()
    assert part.json()["images"][0]["error"] is None


def test_the_api_key_is_checked_before_the_upload_limit(service):
    big = {"Content-Type": "image/jpeg"}
    anonymous = httpx.post(service.url + "/v1/quality", content=os.urandom(2 * 1024 * 1024), headers=big)
    assert anonymous.status_code == 401, anonymous.text  # the limit stays unknown to a client without the key
    assert "upload limit" not in anonymous.text
    known = service.post(content=os.urandom(2 * 1024 * 1024), headers=big)
    assert known.status_code == 413


# ---- pixel budgets, lanes by cost, Retry-After, read timeouts (one server, under the network guard) ----

@pytest.fixture(scope="module")
def budgets(tmp_path_factory, model_args):
    tmp = tmp_path_factory.mktemp("serve_c")
    server = Server([*model_args, "--max-batch", "64", "--queue", "80", "--max-images", "64", "--max-wait-ms", "2000",
                     "--max-pixels", "5000000", "--max-request-pixels", "9000000", "--max-inflight-pixels", "30000000",
                     "--read-timeout", "2", "--timeout", "60"], tmp / "server.log", guard=tmp / "network")
    yield server
    server.stop()
    assert server.proc.returncode == 0, server.log.read_text()
    from tests.network_guard import outbound_attempts

    assert outbound_attempts(tmp / "network") == []  # a serve start and its requests opened no outbound connection


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> bytes:
    """A 2000x2000 PNG: 4 megapixels decoded."""
    cv2 = pytest.importorskip("cv2")
    yy, xx = np.mgrid[0:2000, 0:2000]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def post_later(pool, server, files):
    """Post from a worker thread; (the response, when it arrived)."""
    def post():
        response = server.post(files)
        return response, time.monotonic()
    return pool.submit(post)


def test_retry_after_follows_the_drain_rate_not_the_warm_up(budgets, tmp_path):
    faces = upload(generated_faces(tmp_path, 64))
    with ThreadPoolExecutor(1) as pool:
        held = post_later(pool, budgets, faces[:63])  # 63 < --max-batch: held up to 2 s for a fuller batch
        time.sleep(0.5)
        full = budgets.post(faces[:20])  # 63 + 20 > --queue 80
        answer, _ = held.result()
    assert answer.status_code == 200 and answer.json()["scored"] == 63, answer.text
    assert full.status_code == 503 and full.json()["error"].startswith("the queue is full"), full.text
    # what the oldest image still waits (under 2 s) plus 63 images at the drain rate of real batches: seconds, not
    # 63 times the warm-up's first image, which includes building the pipeline
    assert 1 <= int(full.headers["retry-after"]) <= 15, full.headers["retry-after"]


def test_pixel_budgets_per_request_and_in_flight(budgets, large):
    files = lambda n: [("image", (f"large{i}.png", large, "image/png")) for i in range(n)]  # noqa: E731
    over = budgets.post(files(3))  # 12 megapixels in one request
    assert over.status_code == 413, over.text
    assert over.json()["error"] == ("the request's images decode to 12000000 pixels, over the per-request budget of "
                                    "9000000 (send fewer or smaller images per request)")
    with ThreadPoolExecutor(3) as pool:
        held = [post_later(pool, budgets, files(2)) for _ in range(3)]  # 24 megapixels queued, held up to 2 s
        time.sleep(0.5)
        busy = budgets.post(files(2))  # 8 more: over the 30 megapixels in flight
        answers = [h.result()[0] for h in held]
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"].startswith("the images in flight would decode to more than 30000000 pixels; retry")
    assert int(busy.headers["retry-after"]) >= 1
    assert [a.status_code for a in answers] == [200, 200, 200]


def test_a_small_request_is_not_starved_by_large_images(budgets, large, images):
    files = [("image", (f"large{i}.png", large, "image/png")) for i in range(2)]
    with ThreadPoolExecutor(4) as pool:
        heavy = [post_later(pool, budgets, files) for _ in range(3)]  # six 4-megapixel images: two batches
        time.sleep(0.3)
        small = post_later(pool, budgets, [("image", (images[0].name, images[0].read_bytes(), "image/jpeg"))])
        small_answer, small_done = small.result()
        heavy_done = [h.result() for h in heavy]
    assert small_answer.status_code == 200 and all(r.status_code == 200 for r, _ in heavy_done)
    assert small_done < min(t for _, t in heavy_done)  # scored in its own lane first, not after the large images


def test_slow_clients_are_answered_408_and_disconnected(budgets):
    with socket.create_connection(("127.0.0.1", budgets.port), timeout=30) as conn:
        conn.sendall(b"POST /v1/quality HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        first = conn.recv(4096)
        assert first.startswith(b"HTTP/1.1 408"), first
        assert b"the request was not sent within the read timeout of 2 s" in first
    with socket.create_connection(("127.0.0.1", budgets.port), timeout=30) as conn:
        conn.sendall(b"POST /v1/quality HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" * 10)  # a body that never completes
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'{"error":"the request was not sent within the read timeout of 2 s"}' in answer


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """A shared LFW face in a larger photo, and a blank image (no face)."""
    cv2 = pytest.importorskip("cv2")
    if not LFW.is_dir():
        pytest.skip("shared LFW data not available (../shared/data/lfw112)")
    folder = tmp_path_factory.mktemp("serve_photos")
    face = cv2.resize(cv2.imread(str(sorted(LFW.glob("*/*.jpg"))[0])), (300, 300), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / "photo.png"), cv2.copyMakeBorder(face, 50, 50, 80, 80, cv2.BORDER_CONSTANT,
                                                               value=(90, 90, 90)))
    cv2.imwrite(str(folder / "zblank.png"), np.full((200, 200, 3), 128, np.uint8))
    return sorted(folder.iterdir())


def test_align_rows_carry_the_face_box_and_detector_score(real_model, photos, tmp_path):
    pytest.importorskip("dlib")
    ref_file = tmp_path / "ref.jsonl"
    done = run_cli("score", photos[0].parent, "--model", real_model, "--align", "--out", ref_file, "-q")
    assert done.returncode == 0, done.stderr
    reference = {Path(row["path"]).name: row for row in map(json.loads, ref_file.read_text().splitlines())}
    server = Server(["--model", str(real_model), "--align"], tmp_path / "server.log")
    try:
        response = server.post(upload(photos))
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    photo, blank = response.json()["images"]
    assert blank["error"] == "no face found" and blank["box"] is None and blank["det_score"] is None
    left, top, right, bottom = photo["box"]
    assert 80 <= left < right <= 460 and 50 <= top < bottom <= 400 and photo["det_score"] > 0
    for row in (photo, blank):
        ref = reference[row["path"]]
        assert {k: row[k] for k in ref if k != "path"} == {k: v for k, v in ref.items() if k != "path"}
    assert server.proc.returncode == 0


# ---- queueing: full queue, timeout, disconnect, SIGTERM (one slow-batching server; SIGTERM last) ----

@pytest.fixture(scope="module")
def slow_batches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_b")
    server = Server(["--max-batch", "2", "--queue", "2", "--max-images", "2", "--max-wait-ms", "5000",
                     "--timeout", "2"], tmp / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[Path]:
    return generated_faces(tmp_path_factory.mktemp("serve_gen"), 2)


def upload(paths: list[Path]) -> list:
    return [("image", (p.name, p.read_bytes(), "image/png")) for p in paths]


def test_a_full_batch_is_scored_without_waiting(slow_batches, generated):
    response = slow_batches.post(upload(generated))  # 2 images = --max-batch: not held for the 5 s wait
    assert response.status_code == 200, response.text
    assert response.json()["scored"] == 2


def test_full_queue_answers_503_and_a_late_request_504(slow_batches, generated):
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(slow_batches.post, upload(generated[:1]))  # held: the batch waits to fill
        time.sleep(0.5)
        full = slow_batches.post(upload(generated))  # 1 queued + 2 > --queue 2
        assert full.status_code == 503, full.text
        assert full.json()["error"].startswith("the queue is full; retry after")
        assert int(full.headers["retry-after"]) >= 1
        late = waiting.result()
    assert late.status_code == 504, late.text
    assert late.json() == {"error": "no result within the request timeout of 2 s"}
    metrics = slow_batches.metrics()
    assert metrics['fiqa_dropped_images_total{reason="timeout"}'] == 1
    assert metrics["fiqa_queue_depth"] == 0


def test_a_disconnected_client_has_its_images_dropped(slow_batches, generated):
    scored = slow_batches.metrics()['fiqa_images_total{outcome="scored"}']
    body = generated[0].read_bytes()
    with socket.create_connection(("127.0.0.1", slow_batches.port)) as conn:
        conn.sendall(b"POST /v1/quality?name=gone.png HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
    for _ in range(50):
        metrics = slow_batches.metrics()
        if metrics.get('fiqa_dropped_images_total{reason="disconnected"}'):
            break
        time.sleep(0.1)
    assert metrics['fiqa_dropped_images_total{reason="disconnected"}'] == 1
    assert metrics["fiqa_queue_depth"] == 0
    time.sleep(0.5)
    assert slow_batches.metrics()['fiqa_images_total{outcome="scored"}'] == scored


def test_a_client_gone_mid_upload_is_no_error(slow_batches, generated):
    body = generated[0].read_bytes()
    with socket.create_connection(("127.0.0.1", slow_batches.port)) as conn:
        conn.sendall(b"POST /v1/quality HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        time.sleep(0.3)
    time.sleep(0.3)
    assert slow_batches.metrics().get("fiqa_internal_errors_total", 0) == 0
    log = slow_batches.log.read_text()
    assert "Traceback" not in log and "never retrieved" not in log, log


def test_sigterm_scores_what_is_queued_and_exits_0(slow_batches, generated):
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(slow_batches.post, upload(generated[:1]))  # held for a second image that never comes
        time.sleep(0.5)
        slow_batches.proc.send_signal(signal.SIGTERM)
        answer = waiting.result()
    assert answer.status_code == 200, answer.text  # drained: scored at once instead of waiting (or timing out)
    assert answer.json()["scored"] == 1
    assert slow_batches.proc.wait(60) == 0, slow_batches.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(slow_batches.url + "/healthz", timeout=2)
    log = slow_batches.log.read_text()
    assert "Traceback" not in log and "never retrieved" not in log, log


# ---- the command's own checks (in-process; nothing is bound: each fails before the server starts) ----

@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0", "--model", "/nonexistent/model.onnx"], "model file not found"),
    (["--api-key-file", "/nonexistent/key"], "cannot read the API key file /nonexistent/key"),
    (["--perturb", "mixup"], "mixup draws its partner from a list of input files"),
    (["--queue", "2", "--max-batch", "4"], "--queue 2: give at least --max-batch (4)"),
])
def test_serve_refuses_bad_options_with_one_line(args, message):
    proc = run_cli("serve", "--port", free_port(), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    if "0.0.0.0" in args:  # the warning comes first, before anything is opened
        assert "warning: serving on 0.0.0.0 without --api-key-file" in " ".join(proc.stderr.split())
