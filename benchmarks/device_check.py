"""The GPU device check, sized for one 15-minute lease: prepare here on the CPU, then measure there in few calls.

    python benchmarks/device_check.py prepare [--data ../shared/data/lfw112] [--model MOBILEFACENET.onnx]
    python benchmarks/device_check.py run [--sections env kernel torch e2e] [--out FILE] [--quick]
    python benchmarks/device_check.py run --sections dali scorer        # a later call, with DALI unpacked

`prepare` (CPU, no device time) writes `.devcheck/first/` (carried by the first call, under 64 MiB): 4,096 LFW
JPEGs, the shared MobileFaceNet, the small wheels the device lacks, and `reference.npz`: seeded probe images, ONNX
Runtime fp32 embeddings of MobileFaceNet on them, CPU fp32 embeddings of the random-weight iresnet50/100 (with a
checksum of their weights, so the device knows it made the same ones), and CPU qualities of the first 256 images
(host-made views, ONNX Runtime fp32; and through the DALI CPU Scorer) to compare the device's against.

`run` sections (each skips with its reason; everything before a section's first GPU call runs anywhere):
  env     GPU name, driver, torch / CuPy / CUDA versions
  kernel  the CuPy quality kernel: parity with the NumPy reference on fresh random inputs (outputs poisoned first),
          then 20 launches between two CUDA events on 65,536 rows, rotating over 4 buffers (each larger than the
          60 MB L2), as a CUDA graph too; GB/s and the fraction of a device-to-device copy measured in the same run
  torch   matrix-product peaks (fp32 with TF32, fp16, bf16; 8192^3, random data, CUDA events) and the PyTorch runner
          (channels-last, CUDA graphs) in fp32 / fp16 / bf16 on iresnet50 and iresnet100 (random weights) and the
          shared MobileFaceNet (onnx_export.onnx_to_torch), batch 64 / 256 / 1024 on device-resident CuPy batches:
          images/s, TFLOP/s, fraction of the same-precision peak; cosine of each precision against CPU fp32
  e2e     the product path without DALI: LFW decoded on the host once and its views made there once (cv2, the
          views' matrices from the engine's keyed draws), uploaded; then >= 10,240 images in steady state: slice ->
          runner (CuPy -> torch by DLPack) -> CUDA quality kernel -> qualities to the host, per batch. Host producer
          time (the engine's per-batch parameter draws) reported apart from GPU time; `nvidia-smi dmon` sampled
          during the run; qualities of the first 256 images against the CPU reference (Spearman, max difference)
  dali    (later calls) DALI's CUDA / nvJPEG / nvImageCodec / NPP versions; the GPU pipeline, built once per kind and
          reused: images/s for decode alone and decode + each kind on the LFW JPEGs; GPU-vs-CPU pixel parity
  scorer  (later calls) fiqa_trt's Scorer on cuda:0 (DALI GPU -> DLPack -> PyTorch fp16 MobileFaceNet -> kernel),
          one Scorer reused after a warm-up, against the CPU Scorer's qualities from `prepare`

benchmarks/DEVICE_CHECK.md has the minute-by-minute plan and each call's exact arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lfw112"
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"
CARRY = ROOT / ".devcheck" / "first"
JPEGS = 4096  # distinct LFW images carried (about 24 MB)
REFERENCE_IMAGES = 256  # images whose CPU qualities are precomputed
PROBES = 8  # seeded probe images for the runner parity checks
SPECS = {1: ["affine:rot=0.5,scale=1.01,flip=1"], 4: ["affine:rot=-1:1,scale=1:1.02,flip=1"]}  # K -> specs
SEED = 0
WHEELS = ["platformdirs==4.14.8"]  # what fiqa_trt imports and the device image lacks (KINDS.md's package list)


class Skip(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- shared


def _cupy():
    from fiqa_trt.kernels.cuda import usable_device

    reason = usable_device()
    if reason:
        raise Skip(f"no GPU ({reason})")
    import cupy

    return cupy


def _torch_cuda():
    try:
        import torch
    except ImportError:
        raise Skip("torch is not installed") from None
    if not torch.cuda.is_available():
        raise Skip(f"no GPU (torch {torch.__version__} sees no CUDA device)")
    return torch


def _dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise Skip("nvidia.dali is not installed (later calls unpack it: DEVICE_CHECK.md)") from None
    return nvidia.dali


def _events_seconds(cp, fn, repeats: int = 5) -> float:
    """Median seconds of fn() between two CUDA events on the current stream, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def _network(name: str):
    """(arch, net) with well-scaled random weights (seeded: the same on every machine with the same torch RNG)."""
    from fiqa_trt.onnx_export import export
    from fiqa_trt.weights import zoo
    from benchmarks.harness.nets import randomise

    arch = zoo.arch(name)
    return arch, randomise(export.build_network(arch), seed=0).eval()


def weights_checksum(net) -> str:
    """sha256 of a network's weights as float32 bytes, in state_dict order."""
    digest = hashlib.sha256()
    for value in net.state_dict().values():
        digest.update(value.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def count_flops(net, shape=(1, 3, 112, 112)) -> float:
    """FLOPs (2 x multiply-adds) of one image through the Conv2d / Linear layers, counted with forward hooks."""
    import torch

    total = [0.0]

    def conv_hook(m, inp, out):
        total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        total[0] += 2.0 * out.numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        net.float().cpu()(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total[0]


def _decode(paths: list[Path]) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB, decoded on the host with OpenCV (libjpeg-turbo), in threads."""
    import cv2

    def one(p):
        return cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(one, paths)))


def make_views(images: np.ndarray, keys: list[str], k: int) -> np.ndarray:
    """(N, 1+K', H, W, 3): the originals and their views, made on the host with cv2.warpAffine from the matrices
    the engine draws for those keys (the same function here and on the device, so the reference is comparable)."""
    import cv2

    from fiqa_trt.engine.perturbations import parse_spec, plan_views
    from fiqa_trt.engine.pipeline import host_inputs

    views = plan_views([parse_spec(s) for s in SPECS[k]], k)
    n, h, w = images.shape[:3]
    feeds = host_inputs(views, keys, SEED, h, w)
    out = np.empty((n, 1 + len(views), h, w, 3), np.uint8)
    out[:, 0] = images
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for v in views:
        matrices = feeds[f"v{v.index}_matrix"]
        for i in range(n):
            out[i, 1 + v.index] = cv2.warpAffine(images[i], matrices[i], (w, h), flags=flags,
                                                 borderMode=cv2.BORDER_REPLICATE)
    return out


def _carried(args) -> tuple[list[Path], list[str], Path]:
    """The carried JPEGs (sorted), their keys (paths relative to the folder) and the MobileFaceNet file."""
    folder = args.dir / "lfw"
    if not folder.is_dir():
        raise Skip(f"nothing carried at {folder}: run `python benchmarks/device_check.py prepare` first")
    paths = sorted(folder.glob("*/*.jpg"))
    return paths, [str(p.relative_to(folder)) for p in paths], args.dir / "fr_feature.onnx"


def _reference(args) -> dict:
    path = args.dir / "reference.npz"
    if not path.is_file():
        raise Skip(f"no {path}: run `python benchmarks/device_check.py prepare` first")
    return dict(np.load(path, allow_pickle=False))


def _mobilefacenet_runner(model: Path, device: str, precision: str = "fp32", cuda_graphs: bool = False,
                          max_batch: int = 1024):
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner
    from fiqa_trt.onnx_export import onnx_to_torch

    config = load_runner(str(model), "onnxruntime", "fp32").config  # the registry's preprocessing
    return TorchRunner(onnx_to_torch.load(model), config, device=device, fp16=precision == "fp16",
                       bf16=precision == "bf16", cuda_graphs=cuda_graphs, max_batch=max_batch)


# ---------------------------------------------------------------------------------------------------- prepare


def prepare(args) -> int:
    """Everything the CPU can precompute, into .devcheck/first (carried by the first call)."""
    import tarfile  # noqa: F401  (only the standard library here)

    from fiqa_trt.engine.runners import load_runner

    out = args.dir
    partial = out.parent / "reference.partial.npz"  # steps already done (a rerun after an interruption skips them)
    ref: dict[str, np.ndarray] = dict(np.load(partial)) if partial.is_file() else {}

    def keep(name, value):
        ref[name] = value
        np.savez(partial, **ref)

    if out.exists():
        shutil.rmtree(out)
    (out / "lfw").mkdir(parents=True)
    paths = sorted(args.data.glob("*/*.jpg"))[:JPEGS]
    if len(paths) < REFERENCE_IMAGES:
        print(f"not enough JPEGs in {args.data}", file=sys.stderr)
        return 1
    for p in paths:
        (out / "lfw" / p.parent.name).mkdir(exist_ok=True)
        shutil.copy2(p, out / "lfw" / p.parent.name / p.name)
    shutil.copy2(args.model, out / "fr_feature.onnx")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "-d", str(out / "whl"), *WHEELS],
                   check=True)
    rng = np.random.default_rng(1234)
    # smooth probe images (noise upsampled): realistic activations, never all zeros
    import cv2

    probes = np.stack([cv2.resize(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), (112, 112),
                                  interpolation=cv2.INTER_CUBIC) for _ in range(PROBES)])
    ref["probes"] = probes
    ort = load_runner(str(args.model), "onnxruntime", "fp32")
    ref["mobilefacenet_probe_emb"] = ort.embed(probes)
    try:
        import torch

        for name in ("iresnet50", "iresnet100"):
            if f"{name}_probe_emb" in ref:
                continue
            arch, net = _network(name)
            ref[f"{name}_checksum"] = np.array(weights_checksum(net))
            x = torch.from_numpy(probes).permute(0, 3, 1, 2).float()
            cfg = arch.model_config()
            mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
            with torch.inference_mode():
                emb = net((x - mean) / std)
            keep(f"{name}_probe_emb", (emb[0] if isinstance(emb, (tuple, list)) else emb).float().numpy())
            print(f"prepared {name}: weights {ref[f'{name}_checksum']}", flush=True)
    except ImportError:
        print("torch not installed here: no iresnet references (the device compares precisions among themselves)")
    images = _decode(paths[:REFERENCE_IMAGES])
    keys = [str(p.relative_to(args.data)) for p in paths[:REFERENCE_IMAGES]]
    from fiqa_trt import kernels

    for k in SPECS:
        if f"host_views_k{k}_quality" in ref and len(ref[f"host_views_k{k}_quality"]) == REFERENCE_IMAGES:
            continue
        views = make_views(images, keys, k)
        n, v = views.shape[:2]
        emb = ort.embed(views.reshape(n * v, 112, 112, 3)).reshape(n, v, -1)
        keep(f"host_views_k{k}_quality", kernels.quality(emb, "mean")[1])
        print(f"prepared host-view qualities K={k}", flush=True)
    # the product's CPU path (DALI CPU pipeline, ONNX Runtime fp32) on the same files, for the `scorer` section
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.scorer import Scorer

    items = [Item(str(out / "lfw" / key), key) for key in keys]
    for k in SPECS:
        if f"scorer_k{k}_quality" in ref and len(ref[f"scorer_k{k}_quality"]) == REFERENCE_IMAGES:
            continue
        scorer = Scorer(ort, SPECS[k], views=k, seed=SEED, batch_size=64)
        keep(f"scorer_k{k}_quality", np.array([r.quality for r in scorer.score(items)], np.float32))
        print(f"prepared Scorer qualities K={k}", flush=True)
    np.savez_compressed(out / "reference.npz", **ref)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {sum(1 for _ in out.rglob('*.jpg'))} JPEGs, {size / 2**20:.1f} MiB in all "
          f"({'under' if size < 64 * 2**20 else 'OVER'} the 64 MiB a call carries)")
    return 0 if size < 64 * 2**20 else 1


# ---------------------------------------------------------------------------------------------------- env


def section_env(args) -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        pass
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info.update(gpu=name, cupy=cp.__version__, cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                multiprocessors=props["multiProcessorCount"], l2_bytes=props["l2CacheSize"],
                memory_bytes=props["totalGlobalMem"])
    return info


# ---------------------------------------------------------------------------------------------------- kernel


def section_kernel(args) -> dict:
    from fiqa_trt.kernels.reference import quality as reference

    rows_n, d, buffers, launches = (8192 if args.quick else 65536), 512, 4, 20
    rng = np.random.default_rng()  # fresh inputs each run (METHOD.md: the fast version must hold on any input)
    parity_inputs = {}
    for k in (1, 4, 16, 100):
        base = rng.standard_normal((512, 1, d))
        emb = base + 0.3 * rng.standard_normal((512, 1 + k, d))
        emb[1], emb[2, 1] = 0.0, 0.0  # a zero image, a zero view: NaN where the reference has NaN
        parity_inputs[k] = emb
    cp = _cupy()  # ---- first GPU call
    from fiqa_trt.kernels import cuda

    big = cp.empty(1 << 30, cp.uint8)
    copy_bw = 2 * big.nbytes / _events_seconds(cp, lambda: big.copy(), 10)  # bytes read + written
    del big
    parity = []
    for k, host in parity_inputs.items():
        for dtype, tol in (("float32", 1e-5), ("float16", 2e-3)):
            emb_h = host.astype(dtype)
            emb = cp.asarray(emb_h)
            for agg in ("mean", "min", "median"):
                want_c, want_q = reference(emb_h, agg)
                cos, q = cp.full(want_c.shape, 7.0, cp.float32), cp.full(want_q.shape, 7.0, cp.float32)
                cuda.quality(emb, agg, out=(cos, q))
                got_c, got_q = cp.asnumpy(cos), cp.asnumpy(q)
                nan_ok = bool((np.isnan(got_c) == np.isnan(want_c)).all() and (np.isnan(got_q) == np.isnan(want_q)).all())
                written = bool(not (got_c == 7.0).any() and not (got_q == 7.0).any())
                ok_c, ok_q = ~np.isnan(want_c), ~np.isnan(want_q)
                err = float(max(np.abs(got_c[ok_c] - want_c[ok_c]).max(), np.abs(got_q[ok_q] - want_q[ok_q]).max()))
                parity.append(dict(k=k, dtype=dtype, agg=agg, max_abs_err=err, ok=err <= tol and nan_ok and written))
    timing = []
    for k in (1, 4, 16):
        for dtype in ("float16", "float32"):
            bufs = [cp.random.standard_normal((rows_n, 1 + k, d), dtype=cp.float32).astype(dtype)
                    for _ in range(buffers)]
            outs = [(cp.empty((rows_n, k), cp.float32), cp.empty((rows_n,), cp.float32)) for _ in range(buffers)]

            def many():
                for i in range(launches):
                    cuda.quality(bufs[i % buffers], "mean", out=outs[i % buffers])

            seconds = _events_seconds(cp, many, 5) / launches
            moved = bufs[0].nbytes + outs[0][0].nbytes + outs[0][1].nbytes
            row = dict(k=k, dtype=dtype, rows=rows_n, buffer_mb=bufs[0].nbytes / 1e6, us_per_launch=seconds * 1e6,
                       gb_per_s=moved / seconds / 1e9, fraction_of_copy_bw=moved / seconds / copy_bw)
            try:  # the same launches captured once as a CUDA graph: launch gaps out of the picture
                stream = cp.cuda.Stream(non_blocking=True)
                with stream:
                    stream.begin_capture()
                    many()
                    graph = stream.end_capture()
                    g_seconds = _events_seconds(cp, graph.launch, 5) / launches
                row.update(graph_us_per_launch=g_seconds * 1e6, graph_fraction_of_copy_bw=moved / g_seconds / copy_bw)
            except Exception as exc:
                row["graph_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            timing.append(row)
            del bufs, outs
    return dict(copy_bandwidth_gb_per_s=copy_bw / 1e9, parity=parity, parity_ok=all(p["ok"] for p in parity),
                timing=timing, note=f"{launches} launches between two events, rotating over {buffers} buffers")


# ---------------------------------------------------------------------------------------------------- torch


def _matmul_peaks(torch) -> dict[str, float]:
    n, peaks = 8192, {}
    for name, dtype, tf32 in (("fp32_tf32", torch.float32, True), ("fp32", torch.float32, False),
                              ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps = 10 if dtype != torch.float32 or tf32 else 3
        start.record()
        for _ in range(reps):
            a @ b
        stop.record()
        stop.synchronize()
        peaks[name] = 2 * n ** 3 * reps / (start.elapsed_time(stop) / 1e3)
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    return peaks


def _device_rate(torch, cp, runner, batch: int, rotate: int = 3, min_images: int = 4096) -> float:
    """Images/s of runner.embed on device-resident CuPy batches (rotating inputs), timed with CUDA events."""
    inputs = [cp.random.randint(0, 256, (batch, 112, 112, 3), dtype=cp.uint8) for _ in range(rotate)]
    for x in inputs:  # warm-up: graph capture per bucket, cuDNN choices
        runner.embed(x)
    reps = max(3, min_images // batch)
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for i in range(reps):
        runner.embed(inputs[i % rotate])
    stop.record()
    stop.synchronize()
    return batch * reps / (cp.cuda.get_elapsed_time(start, stop) / 1e3)


def section_torch(args) -> dict:
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner
    from fiqa_trt.weights.model_config import ModelConfig

    ref = _reference(args)
    _, _, model_path = _carried(args)
    models = {}
    for name in ("iresnet50", "iresnet100"):
        arch, net = _network(name)
        same = str(ref.get(f"{name}_checksum", "")) == weights_checksum(net)
        models[name] = (net, ModelConfig.from_dict(arch.model_config(), source="network"), count_flops(net), same)
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.onnx_export import onnx_to_torch

    import onnx

    from fiqa_trt.benchmark import model_flops

    mfn = onnx_to_torch.load(model_path)  # FLOPs from its ONNX graph (the importer has no Conv2d modules to hook)
    models["mobilefacenet"] = (mfn, load_runner(str(model_path), "onnxruntime", "fp32").config,
                               model_flops(onnx.load(str(model_path))), True)
    torch = _torch_cuda()  # ---- first GPU call
    cp = _cupy()
    peaks = _matmul_peaks(torch)
    torch.backends.cudnn.benchmark = True
    rows, parity = [], []
    batches = [64, 256] if args.quick else [64, 256, 1024]
    for name, (net, config, flops, same_weights) in models.items():
        cpu_ref = ref.get("mobilefacenet_probe_emb" if name == "mobilefacenet" else f"{name}_probe_emb")
        fp32_probe = None
        for precision in ("fp32", "fp16", "bf16"):
            runner = TorchRunner(net, config, device="cuda:0", fp16=precision == "fp16", bf16=precision == "bf16",
                                 cuda_graphs=True, max_batch=max(batches))
            probe = runner.embed(ref["probes"])  # NumPy in and out
            fp32_probe = probe if precision == "fp32" else fp32_probe
            from fiqa_trt.onnx_export.export import cosines

            entry = dict(model=name, precision=precision, min_cos_vs_gpu_fp32=float(cosines(probe, fp32_probe).min()))
            if cpu_ref is not None and same_weights:
                entry["min_cos_vs_cpu_fp32"] = float(cosines(probe, cpu_ref).min())
            parity.append(entry)
            peak = peaks["fp32_tf32" if precision == "fp32" else precision]
            for batch in batches:
                try:
                    ips = _device_rate(torch, cp, runner, batch)
                except Exception as exc:
                    rows.append(dict(model=name, precision=precision, batch=batch, error=str(exc)[:200]))
                    continue
                rows.append(dict(model=name, precision=precision, batch=batch, images_per_s=ips,
                                 gflop_per_image=flops / 1e9, tflop_per_s=ips * flops / 1e12,
                                 fraction_of_peak=ips * flops / peak))
            del runner
            torch.cuda.empty_cache()
    return dict(matmul_peak_tflop_per_s={k: v / 1e12 for k, v in peaks.items()}, rows=rows, parity=parity,
                note="channels-last, one CUDA graph per batch bucket, inputs already on the GPU (CuPy, rotating over "
                     "3 batches), outputs left there; fp32 rows run cuDNN's default TF32 convolutions and are set "
                     "against the TF32 matrix-product peak")


# ---------------------------------------------------------------------------------------------------- e2e


class _Dmon:
    """`nvidia-smi dmon` (power, utilisation, clocks, memory) sampled every second into a file while running."""

    def __init__(self, path: Path):
        self.path, self.proc = path, None

    def __enter__(self):
        smi = shutil.which("nvidia-smi")
        if smi:
            self.file = open(self.path, "w")
            self.proc = subprocess.Popen([smi, "dmon", "-s", "pucm", "-d", "1"], stdout=self.file,
                                         stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.file.close()

    def summary(self) -> dict:
        if not self.path.is_file():
            return {"dmon": "nvidia-smi not found"}
        lines = [ln.split() for ln in self.path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        header = next((ln[1:] for ln in (h.split() for h in self.path.read_text().splitlines() if h.startswith("# gpu")
                                         )), None)
        if not header or not lines:
            return {"dmon_raw": self.path.read_text()[-500:]}
        cols = {name: i for i, name in enumerate(header)}
        def column(name):
            vals = [float(ln[cols[name]]) for ln in lines if len(ln) == len(header) and ln[cols[name]] != "-"]
            return {"max": max(vals), "median": float(np.median(vals))} if vals else None
        return {name: column(name) for name in ("pwr", "sm", "mem", "mclk", "pclk") if name in cols}


def section_e2e(args) -> dict:
    from fiqa_trt import kernels
    from fiqa_trt.engine.perturbations import parse_spec, plan_views
    from fiqa_trt.engine.pipeline import host_inputs
    from fiqa_trt.weights.model_config import ModelConfig

    paths, keys, model_path = _carried(args)
    ref = _reference(args)
    t0 = time.perf_counter()
    images = _decode(paths)
    decode_s = time.perf_counter() - t0
    views = {k: make_views(images, keys, k) for k in SPECS}
    views_s = time.perf_counter() - t0 - decode_s
    total = 2048 if args.quick else 10240
    batch = args.batch
    arch, net100 = _network("iresnet100")
    cfg100 = ModelConfig.from_dict(arch.model_config(), source="network")
    torch = _torch_cuda()  # ---- first GPU call
    cp = _cupy()
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner
    from fiqa_trt.engine.precision import spearman

    runners = {"mobilefacenet fp16": _mobilefacenet_runner(model_path, "cuda:0", "fp16", cuda_graphs=True),
               "iresnet100 fp16": TorchRunner(net100, cfg100, device="cuda:0", fp16=True, cuda_graphs=True,
                                              max_batch=1024)}
    rows = []
    dmon = _Dmon(args.out.parent / "dmon.txt")
    with dmon:
        for name, runner in runners.items():
            for k, host in views.items():
                n_views = host.shape[1]
                device_views = cp.asarray(host)  # uploaded once: the steady state measures runner + kernel
                plan = plan_views([parse_spec(s) for s in SPECS[k]], k)
                stream = cp.cuda.Stream(non_blocking=True)

                def one_batch(start, collect=None):
                    idx = np.arange(start, start + batch) % len(keys)
                    h0 = time.perf_counter()
                    host_inputs(plan, [keys[i] for i in idx], SEED, 112, 112)  # the producer's host work
                    host_s = time.perf_counter() - h0
                    lo = start % len(keys)
                    chunk = (device_views[lo:lo + batch] if lo + batch <= len(keys)
                             else device_views[cp.asarray(idx)])
                    a, b = cp.cuda.Event(), cp.cuda.Event()
                    with stream:
                        a.record(stream)
                        emb = runner.embed(chunk.reshape(-1, 112, 112, 3)).reshape(len(idx), n_views, -1)
                        _, q = kernels.quality(emb, "mean")
                        b.record(stream)
                        q_host = cp.asnumpy(q)  # only the qualities come back (waits for the stream)
                    if collect is not None:
                        collect.append(q_host)
                    return host_s, cp.cuda.get_elapsed_time(a, b) / 1e3

                first = []
                for start in range(0, REFERENCE_IMAGES, batch):  # warm-up + the qualities compared with the CPU
                    one_batch(start, first)
                got = np.concatenate(first)[:REFERENCE_IMAGES]
                want = ref[f"host_views_k{k}_quality"]
                host_total, gpu_s, done = 0.0, 0.0, 0
                t1 = time.perf_counter()
                while done < total:
                    host_s, batch_gpu_s = one_batch(done)
                    host_total, gpu_s, done = host_total + host_s, gpu_s + batch_gpu_s, done + batch
                wall = time.perf_counter() - t1
                rows.append(dict(model=name, k=k, views_per_image=n_views, images=done, batch=batch,
                                 quality_scores_per_s=done / wall, forward_passes_per_s=done * n_views / wall,
                                 gpu_seconds=gpu_s, gpu_share=gpu_s / wall, wall_seconds=wall, host_producer_seconds=host_total,
                                 host_producer_share=host_total / wall,
                                 spearman_vs_cpu=spearman(got, want), max_abs_diff_vs_cpu=float(np.abs(got - want).max()),
                                 reference="ONNX Runtime fp32 on the same host-made views" if "mobile" in name else
                                 "none (random weights): Spearman against the MobileFaceNet reference is meaningless"))
                if "mobile" not in name:
                    rows[-1].pop("spearman_vs_cpu"), rows[-1].pop("max_abs_diff_vs_cpu")
                del device_views
    return dict(rows=rows, decode_seconds=decode_s, views_seconds=views_s, distinct_images=len(keys),
                dmon=dmon.summary(), note="per batch: host-side parameter draws (the producer's work), then on one "
                "CUDA stream a slice of the uploaded views -> runner.embed (CuPy -> torch by DLPack) -> CUDA quality "
                "kernel -> qualities copied to the host; wall time over the steady-state batches")


# ---------------------------------------------------------------------------------------------------- dali


def section_dali(args) -> dict:
    paths, keys, _ = _carried(args)
    dali = _dali()
    from nvidia.dali import backend

    versions = {"dali": dali.__version__}
    for name in ("GetCudaVersion", "GetNvjpegVersion", "GetNvimgcodecVersion", "GetNppVersion"):
        try:
            versions[name[3:]] = getattr(backend, name)()
        except Exception as exc:
            versions[name[3:]] = f"{type(exc).__name__}: {str(exc)[:100]}"
    print("dali    versions " + json.dumps(versions), flush=True)
    _cupy()  # ---- first GPU call
    from fiqa_trt.engine.inputs import Item, check_item
    from fiqa_trt.engine.perturbations import KINDS, mixup_partners, parse_spec, plan_views
    from fiqa_trt.engine.pipeline import PerturbPipeline, Sample
    from fiqa_trt.weights.model_config import ModelConfig

    config = ModelConfig(input_size=(112, 112))
    n = 1024 if args.quick else len(paths)
    items = [Sample.of(check_item(Item(str(p), key, index=i)), config.input_size)
             for i, (p, key) in enumerate(zip(paths[:n], keys[:n]))]
    batch = args.batch
    rows = []
    for kind in [None, *KINDS]:
        views = plan_views([parse_spec(kind)], 1) if kind else []
        partners_all = {v.index: [items[j] for j in mixup_partners(range(n), keys[:n], v, SEED)]
                        for v in views if v.spec.kind.needs_partner} or None
        try:
            pipe = PerturbPipeline(views, config, seed=SEED, batch_size=batch, num_threads=8, device="gpu",
                                   device_id=0)  # built once, reused by the warm-up and the timed batches

            def run_all(limit):
                outs = []
                for s in range(0, limit, batch):
                    part = {i: p[s:s + batch] for i, p in partners_all.items()} if partners_all else None
                    outs.append(pipe.run(items[s:s + batch], part))
                return outs

            run_all(batch)  # warm-up on the same pipeline
            t0 = time.perf_counter()
            outs = run_all(n)
            import cupy

            cupy.cuda.Device().synchronize()
            seconds = time.perf_counter() - t0
        except Exception as exc:
            rows.append(dict(kind=kind or "decode", error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        row = dict(kind=kind or "decode", images=n, images_per_s=n / seconds)
        if kind in (None, "affine", "border", "occlusion", "elastic", "selfmixup"):  # keyed kinds: same pixels
            m = min(n, 256)
            gpu_px = np.concatenate([o.get() for o in outs])[:m]
            cpu = PerturbPipeline(views, config, seed=SEED, batch_size=batch, num_threads=8)
            cpu_px = np.concatenate([cpu.run(items[s:s + batch]) for s in range(0, m, batch)])[:m]
            diff = np.abs(gpu_px.astype(np.int16) - cpu_px)
            row.update(mean_abs_pixel_diff_vs_cpu=float(diff.mean()), max_abs_pixel_diff_vs_cpu=int(diff.max()))
        rows.append(row)
    return dict(versions=versions, rows=rows)


def section_scorer(args) -> dict:
    paths, keys, model_path = _carried(args)
    ref = _reference(args)
    _dali()
    _torch_cuda()  # ---- first GPU call
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.precision import spearman
    from fiqa_trt.engine.scorer import Scorer

    runner = _mobilefacenet_runner(model_path, "cuda:0", "fp16", cuda_graphs=True)
    items = [Item(str(p), key) for p, key in zip(paths, keys)]
    rows = []
    for k in SPECS:
        scorer = Scorer(runner, SPECS[k], views=k, seed=SEED, batch_size=args.batch, threads=8)
        assert scorer.device.is_cuda
        got = np.array([r.quality for r in scorer.score(items[:REFERENCE_IMAGES])])  # warm-up + parity
        want = ref[f"scorer_k{k}_quality"]
        t0 = time.perf_counter()
        done = sum(1 for _ in scorer.score(items))  # the same Scorer: its pipeline is reused
        seconds = time.perf_counter() - t0
        rows.append(dict(k=k, images=done, quality_scores_per_s=done / seconds,
                         stage_seconds={s: round(v, 3) for s, v in scorer.timings.items()},
                         spearman_vs_cpu_scorer=spearman(got, want), max_abs_diff=float(np.nanmax(np.abs(got - want)))))
    return dict(rows=rows, note="Scorer on cuda:0: DALI GPU (mixed decode, fancy upsampling) -> DLPack -> PyTorch "
                "fp16 MobileFaceNet (onnx_to_torch) -> CUDA kernel, against the CPU Scorer (DALI CPU, ONNX Runtime fp32)")


# ---------------------------------------------------------------------------------------------------- main


SECTIONS = {"env": section_env, "kernel": section_kernel, "torch": section_torch, "e2e": section_e2e,
            "dali": section_dali, "scorer": section_scorer}
FIRST_CALL = ["env", "kernel", "torch", "e2e"]


def _summary(name: str, result: dict) -> list[str]:
    if "skipped" in result or "error" in result:
        return [f"{name:7s} " + (f"skipped: {result['skipped']}" if "skipped" in result else f"ERROR: {result['error']}")]
    lines = []
    if name == "env":
        lines.append(f"env     {result.get('gpu')} | {result.get('nvidia_smi', '')} | torch {result.get('torch')} "
                     f"cupy {result.get('cupy')}")
    elif name == "kernel":
        lines.append(f"kernel  copy {result['copy_bandwidth_gb_per_s']:.0f} GB/s; parity "
                     f"{'ok' if result['parity_ok'] else 'FAIL'} ({len(result['parity'])} cases)")
        for r in result["timing"]:
            graph = (f" graph {r['graph_us_per_launch']:.1f} us {r['graph_fraction_of_copy_bw']:.0%}"
                     if "graph_us_per_launch" in r else "")
            lines.append(f"kernel  K={r['k']:<2} {r['dtype']} {r['rows']} rows {r['us_per_launch']:8.1f} us "
                         f"{r['gb_per_s']:5.0f} GB/s {r['fraction_of_copy_bw']:.0%} of copy{graph}")
    elif name == "torch":
        lines.append("torch   peaks " + " ".join(f"{k} {v:.0f}" for k, v in result["matmul_peak_tflop_per_s"].items())
                     + " TFLOP/s")
        for r in result["rows"]:
            lines.append(f"torch   {r['model']:13s} {r['precision']} b={r['batch']:<4} " + (
                f"{r['images_per_s']:8.0f} img/s {r['tflop_per_s']:6.1f} TFLOP/s {r['fraction_of_peak']:.0%}"
                if "error" not in r else f"ERROR {r['error']}"))
        for p in result["parity"]:
            lines.append(f"torch   {p['model']:13s} {p['precision']} cos vs GPU fp32 {p['min_cos_vs_gpu_fp32']:.5f}"
                         + (f", vs CPU fp32 {p['min_cos_vs_cpu_fp32']:.5f}" if "min_cos_vs_cpu_fp32" in p else ""))
    elif name == "e2e":
        for r in result["rows"]:
            lines.append(f"e2e     {r['model']:18s} K={r['k']} {r['quality_scores_per_s']:8.0f} scores/s "
                         f"{r['forward_passes_per_s']:8.0f} fwd/s GPU {r['gpu_share']:.0%} host {r['host_producer_share']:.0%}"
                         + (f" Spearman {r['spearman_vs_cpu']:.4f} max diff {r['max_abs_diff_vs_cpu']:.4f}"
                            if "spearman_vs_cpu" in r else ""))
        lines.append(f"e2e     dmon {json.dumps(result['dmon'])[:200]}")
    elif name == "dali":
        for r in result["rows"]:
            extra = (f" |gpu-cpu| mean {r['mean_abs_pixel_diff_vs_cpu']:.3f} max {r['max_abs_pixel_diff_vs_cpu']}"
                     if "mean_abs_pixel_diff_vs_cpu" in r else "")
            lines.append(f"dali    {r['kind']:10s} " + (f"{r['images_per_s']:8.0f} img/s{extra}" if "error" not in r
                                                        else f"ERROR {r['error']}"))
    elif name == "scorer":
        for r in result["rows"]:
            lines.append(f"scorer  K={r['k']} {r['quality_scores_per_s']:8.0f} scores/s Spearman vs CPU "
                         f"{r['spearman_vs_cpu_scorer']:.4f} max diff {r['max_abs_diff']:.4f} {r['stage_seconds']}")
    return lines


def run(args) -> int:
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for section in args.sections:
        t0 = time.perf_counter()
        try:
            report[section] = SECTIONS[section](args)
        except Skip as why:
            report[section] = {"skipped": str(why)}
        except Exception as exc:  # one broken section must not cost the others
            report[section] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}",
                               "traceback": traceback.format_exc()[-3000:]}
        report[section]["seconds"] = round(time.perf_counter() - t0, 1)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # kept if a later section hangs
        lines += _summary(section, report[section]) + [f"{section:7s} {report[section]['seconds']} s"]
        print("\n".join(lines[-len(_summary(section, report[section])) - 1:]), flush=True)
    print("\n".join(["---- summary"] + lines + [f"written {args.out}"]))  # the table last: the reply's tail
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="precompute on the CPU what the first call carries")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--dir", type=Path, default=CARRY)
    r = sub.add_parser("run", help="measure (sections skip with their reason where a GPU or DALI is missing)")
    r.add_argument("--dir", type=Path, default=CARRY)
    r.add_argument("--sections", nargs="+", default=FIRST_CALL, choices=list(SECTIONS))
    r.add_argument("--batch", type=int, default=512)
    r.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    r.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "device_check.json")
    args = parser.parse_args()
    return prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
