"""`fiqa-trt serve` under the hostile loads its limits are for, as JSON.

    python benchmarks/serve_hostile.py [--large 16] [--slow 300] [--out benchmarks/results/serve_hostile_cpu.json]

A server process on 127.0.0.1 with its default limits (the shared MobileFaceNet, else the default model), then:
1. Large images: --large clients at once, each posting one image just under --max-pixels (6000x6600), and 0.5 s
   later one client posting a 112x112 face crop: the status of every large request, the crop's latency, and the
   server's resident memory before and at its peak (VmHWM).
2. Retry-After: a request of 63 crops held for a fuller batch (--max-batch 64 is the default; the server runs with
   --max-wait-ms 2000 and --queue 80), then a request of 20 that finds the queue full: the Retry-After it is
   given against the seconds the held request then took.
3. Slow clients: --slow connections that send half a request header and nothing more; one normal request meanwhile
   (its latency), and the seconds until the server had closed every slow connection (--read-timeout, 30 s).
Then SIGTERM and the exit code. Bounded everywhere; localhost only. Needs the serve and bench extras.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mib(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def png(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image)[1].tobytes()


def main() -> None:
    import httpx

    from fiqa_trt.benchmark import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=16)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model = ["--model", str(MODEL)] if MODEL.is_file() else []
    server = subprocess.Popen([sys.executable, "-m", "fiqa_trt.cli", "serve", "--port", str(port), *model,
                               "--max-wait-ms", "2000", "--queue", "80", "--timeout", "120"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        server.kill()
        raise SystemExit("the server did not get ready in 300 s")
    rng = np.random.default_rng(0)
    crop = png(rng.integers(0, 255, (112, 112, 3), np.uint8))
    yy, xx = np.mgrid[0:6600, 0:6000]
    large = png(np.stack([xx % 256, yy % 256, (xx // 7 + yy // 5) % 256], -1).astype(np.uint8))
    result: dict = {"benchmark": "benchmarks/serve_hostile.py", **provenance(),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()], "server_mib_ready": memory_mib(server.pid)["VmRSS"]}

    def post(files, timeout=180):
        t0 = time.monotonic()
        response = httpx.post(url + "/v1/quality", files=files, timeout=timeout)
        return response.status_code, round(time.monotonic() - t0, 2), response.headers.get("retry-after")

    with ThreadPoolExecutor(args.large + 1) as pool:
        big = [pool.submit(post, [("image", (f"large{i}.png", large, "image/png"))]) for i in range(args.large)]
        time.sleep(0.5)
        small = pool.submit(post, [("image", ("crop.png", crop, "image/png"))])
        big_answers, small_answer = [f.result() for f in big], small.result()
    result["large_images"] = {
        "clients": args.large, "pixels_each": 6000 * 6600,
        "statuses": {str(s): sum(a[0] == s for a in big_answers) for s in sorted({a[0] for a in big_answers})},
        "slowest_large_s": max(a[1] for a in big_answers), "crop_status": small_answer[0],
        "crop_latency_s": small_answer[1], "server_mib_peak": memory_mib(server.pid)["VmHWM"]}

    crops = [("image", (f"c{i}.png", png(rng.integers(0, 255, (112, 112, 3), np.uint8)), "image/png"))
             for i in range(63)]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, crops)
        time.sleep(0.5)
        full = post(crops[:20])
        drained = held.result()
    result["retry_after"] = {"status": full[0], "retry_after_s": int(full[2]) if full[2] else None,
                             "held_request_s": drained[1], "held_status": drained[0]}

    slow = []
    for _ in range(args.slow):
        conn = socket.create_connection(("127.0.0.1", port), timeout=60)
        conn.sendall(b"POST /v1/quality HTTP/1.1\r\nHost: x\r\n")
        slow.append(conn)
    opened = time.monotonic()
    normal = post([("image", ("crop.png", crop, "image/png"))])
    for conn in slow:
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        conn.close()
    result["slow_clients"] = {"connections": args.slow, "normal_status": normal[0], "normal_latency_s": normal[1],
                              "all_closed_after_s": round(time.monotonic() - opened, 2)}
    server.send_signal(15)
    result["exit_code"] = server.wait(120)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
