"""`fiqa-trt serve` under load on this machine, against the in-process `score` rate of the same model, as JSON.

    python benchmarks/bench_serve.py [--images 512] [--concurrency 1 4 16 64] [--soak-s 180]
                                     [--out benchmarks/results/serve_cpu_intel-xeon-2core.json]

1. Baseline: `Scorer.score` in this process over the first N shared LFW images (the `score` command's path and
   batch size), with no server running: once before the server starts and once after it has stopped; their mean
   is the reference (other jobs on a shared machine move it), and CPU ms per image are counted beside wall time.
2. A server process on 127.0.0.1 (the same model and perturbation); per concurrency level, that many clients each
   send one image per request (raw JPEG body, keyed by its file name) until N images are answered: images/s,
   p50/p99 latency, the mean batch the server formed (from /metrics), CPU ms per image of the server process and
   of the client, and images/s over the baseline.
3. Soak: 16 clients for --soak-s seconds mixing good images (80%), corrupt uploads (10%: truncated JPEGs, random
   bytes) and dropped connections (10%: the request is sent and the socket closed before the answer), with the
   server's resident memory sampled from /proc at the start, every 10 s and at the end.
Then SIGTERM, and the exit code. Bounded everywhere (request counts, soak time, timeouts); localhost only.
Needs the serve extra and aiohttp + httpx for the clients (the bench extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline(scorer, files: list[Path], batch_size: int) -> dict:
    from fiqa_trt.engine.inputs import list_items

    listing = Path("/tmp") / f"bench_serve_{os.getpid()}.txt"
    listing.write_text("\n".join(map(str, files)))
    try:
        list(scorer.score(list_items(str(listing))[: 2 * batch_size]))  # warm
        started, cpu = time.perf_counter(), time.process_time()
        results = list(scorer.score(list_items(str(listing))))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        listing.unlink()
    return {"images": len(results), "seconds": round(seconds, 2), "images_per_s": round(len(results) / seconds, 1),
            "cpu_ms_per_image": round(1000 * cpu / len(results), 1),
            "batch_size": batch_size, "backend": scorer.runner.name, "precision": scorer.runner.precision,
            "qualities": {Path(r.path).name: r.quality for r in results}}


def metrics(client, url: str) -> dict[str, float]:
    text = client.get(url + "/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


async def load_level(url: str, images: list[tuple[str, bytes]], concurrency: int, total: int) -> dict:
    """`concurrency` clients on keep-alive connections (aiohttp: its client costs the shared CPUs far less per
    request than httpx's, which at 64 clients took half as much CPU per image as the server)."""
    import aiohttp

    latencies, statuses, answers = [], {}, {}
    next_index = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker():
            for i in next_index:
                name, data = images[i % len(images)]
                t0 = time.perf_counter()
                async with session.post(url + "/v1/quality", data=data, params={"name": name},
                                        headers={"Content-Type": "image/jpeg"}) as r:
                    body = await r.read()
                latencies.append(time.perf_counter() - t0)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 200:
                    answers[name] = json.loads(body)["images"][0]["quality"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": total, "seconds": round(seconds, 2),
            "images_per_s": round(statuses.get(200, 0) / seconds, 1),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1), "statuses": statuses, "answers": answers}


async def soak(url: str, port: int, pid: int, images: list[tuple[str, bytes]], seconds: float,
               clients: int = 16) -> dict:
    import httpx

    rng = random.Random(0)
    counts = {"good": 0, "corrupt": 0, "dropped": 0}
    statuses: dict[str, int] = {}
    memory = [(0.0, rss_mib(pid))]
    started = time.monotonic()
    deadline = started + seconds

    async def dropped(data: bytes) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/quality?name=dropped.jpg HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(data) + data)
        await writer.drain()
        await asyncio.sleep(rng.uniform(0, 0.05))
        writer.transport.abort()

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=120) as client:
        async def worker():
            while time.monotonic() < deadline:
                name, data = rng.choice(images)
                roll = rng.random()
                if roll < 0.1:
                    counts["dropped"] += 1
                    await dropped(data)
                    continue
                if roll < 0.2:
                    counts["corrupt"] += 1
                    data = data[: len(data) // 3] if rng.random() < 0.5 else os.urandom(rng.randint(10, 5000))
                    name = "corrupt.jpg"
                else:
                    counts["good"] += 1
                r = await client.post(url + "/v1/quality", content=data, params={"name": name},
                                      headers={"Content-Type": "image/jpeg"})
                key = str(r.status_code)
                if r.status_code == 200 and r.json()["images"][0]["error"]:
                    key = "200 error row"
                statuses[key] = statuses.get(key, 0) + 1

        async def sampler():
            while time.monotonic() < deadline:
                await asyncio.sleep(10)
                memory.append((round(time.monotonic() - started, 1), rss_mib(pid)))

        await asyncio.gather(sampler(), *(worker() for _ in range(clients)))
    memory.append((round(time.monotonic() - started, 1), rss_mib(pid)))
    return {"seconds": seconds, "clients": clients, "sent": counts, "statuses": statuses,
            "rss_mib_start": memory[0][1], "rss_mib_end": memory[-1][1], "rss_mib_samples": memory}


def main() -> None:
    import httpx

    from fiqa_trt.benchmark import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"))
    ap.add_argument("--data", default=str(SHARED / "data/lfw112"))
    ap.add_argument("--images", type=int, default=512, help="images per measurement")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--score-batch", type=int, default=32, help="batch of the in-process baseline (score's default)")
    ap.add_argument("--soak-s", type=float, default=180.0)
    ap.add_argument("--out")
    args = ap.parse_args()

    load_start = os.getloadavg()
    files = sorted(Path(args.data).glob("*/*.jpg"))[: args.images]
    images = [(p.name, p.read_bytes()) for p in files]
    from fiqa_trt.engine.session import open_session
    from fiqa_trt.engine.settings import ScoringSettings

    print(f"baseline: Scorer.score over {len(files)} images in this process", flush=True)
    scorer = open_session(ScoringSettings(model=args.model, batch_size=args.score_batch)).scorer
    base = baseline(scorer, files, args.score_batch)
    print({k: v for k, v in base.items() if k != "qualities"}, flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path("/tmp") / f"bench_serve_server_{port}.log", "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "fiqa_trt.cli", "serve", "--model", args.model, "--port",
                               str(port), "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
                               "--timeout", "120"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    rows, soak_report, exit_code = [], None, None
    try:
        with httpx.Client() as client:
            for _ in range(600):
                try:
                    if client.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"server exited with {server.returncode}")
                time.sleep(0.5)
            rss_ready = rss_mib(server.pid)
            for c in args.concurrency:
                before = metrics(client, url)
                server_cpu, client_cpu = cpu_s(server.pid), time.process_time()
                row = asyncio.run(load_level(url, images, c, len(images)))
                server_cpu, client_cpu = cpu_s(server.pid) - server_cpu, time.process_time() - client_cpu
                after = metrics(client, url)
                row["server_cpu_ms_per_image"] = round(1000 * server_cpu / len(images), 1)
                row["client_cpu_ms_per_image"] = round(1000 * client_cpu / len(images), 1)
                n = after["fiqa_batch_size_count"] - before["fiqa_batch_size_count"]
                row["mean_batch"] = round((after["fiqa_batch_size_sum"] - before["fiqa_batch_size_sum"]) / n, 1)
                answers = row.pop("answers")
                row["equal_to_score"] = all(answers[k] == base["qualities"][k] for k in answers)
                rows.append(row)
                print(row, flush=True)
            if args.soak_s > 0:
                print(f"soak: {args.soak_s:g} s", flush=True)
                soak_report = asyncio.run(soak(url, port, server.pid, images, args.soak_s))
                after = metrics(client, url)
                soak_report["healthy_after"] = client.get(url + "/readyz", timeout=10).status_code == 200
                soak_report["queue_depth_after"] = after["fiqa_queue_depth"]
                soak_report["dropped_images_disconnected"] = after.get(
                    'fiqa_dropped_images_total{reason="disconnected"}', 0.0)
                soak_report["internal_errors"] = after.get("fiqa_internal_errors_total", 0.0)
                print(soak_report, flush=True)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                exit_code = server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                exit_code = server.wait()
        else:
            exit_code = server.returncode
        log.close()
    print("baseline again, the server stopped (the machine's load drifts)", flush=True)
    again = baseline(scorer, files, args.score_batch)
    print({k: v for k, v in again.items() if k != "qualities"}, flush=True)
    base_rate = (base["images_per_s"] + again["images_per_s"]) / 2
    for row in rows:
        row["vs_in_process_score"] = round(row["images_per_s"] / base_rate, 3)
    report = {"benchmark": "bench_serve", **provenance(), "model": Path(args.model).name,
              "server": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "http": "uvicorn (" + ("httptools" if __import__("importlib.util").util.find_spec("httptools") else "h11") + ")",
                         "clients": "aiohttp (levels) and httpx (soak) in one process on the same machine, one image "
                                    "per request"},
              "in_process_score": [{k: v for k, v in b.items() if k != "qualities"} for b in (base, again)],
              "in_process_images_per_s_mean": round(base_rate, 1), "rss_mib_ready": rss_ready,
              "levels": rows, "soak": soak_report, "sigterm_exit_code": exit_code,
              "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
              "note": "the machine's 2 cores are shared with other jobs: the load average says how busy it was"}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
