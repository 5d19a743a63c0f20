"""One script for a GPU session: measures the whole GPU path in one go, prints one short table, writes JSON.

    python benchmarks/device_check.py [--data ../shared/data/lfw112] [--quick] [--out FILE]

Sections (each skips with its reason when a dependency or the GPU is missing, so the script runs anywhere):
  kernel  CuPy quality kernel vs the NumPy reference (max abs error fp32/fp16, every output written) and its time for
          N=4096 x (1+K) x 512 at K=1,4,16, as a fraction of the measured device-to-device copy bandwidth
  dali    DALI GPU pipeline: images/s for decode alone and decode + each perturbation kind on the LFW JPEGs; parity
          with the CPU pipeline for the deterministic kinds (affine, border: mean abs pixel difference)
  torch   PyTorch CUDA runner, FP16 autocast, channels-last, random weights, iresnet50/100 at batch 64..1024:
          images/s, TFLOP/s (conv/linear multiply-adds counted with hooks, as benchmark.model_flops counts them) and
          the fraction of a measured FP16 matmul peak (8192^2 torch.matmul)
  tensorrt  TensorRT fp16/fp32 engines (CUDA graphs) of the shared MobileFaceNet and a random iresnet100: cosine
          against ONNX Runtime fp32 and images/s on device-resident batches (only where tensorrt imports)
  e2e     quality scores/s end to end for iresnet100 at K=1 and K=4 through the Scorer on cuda:0 (DALI GPU -> DLPack
          -> torch CUDA fp16 -> CUDA kernel), and the Spearman of those scores against the same Scorer on the CPU

Written without a GPU: it has only run here with every section skipped. JSON: benchmarks/results/
device_check_<gpu-name>.json (or --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lfw112"
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"


class Skip(Exception):
    pass


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


def _dali_gpu():
    try:
        import nvidia.dali  # noqa: F401  (only whether it imports)
    except ImportError:
        raise Skip("nvidia.dali is not installed") from None
    _cupy()


def gpu_name() -> str:
    try:
        cp = _cupy()
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Skip:
        return "no-gpu"


def _cuda_time(cp, fn, repeats: int) -> float:
    """Median seconds of fn() measured with CUDA events, after one warm-up."""
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


# ---------------------------------------------------------------------------------------------------- kernel


def section_kernel(args) -> dict:
    cp = _cupy()
    from fiqa_trt.kernels import cuda
    from fiqa_trt.kernels.reference import quality as reference

    big = cp.empty(1 << 30, cp.uint8)  # 1 GiB copy: read + write
    copy_bw = 2 * big.nbytes / _cuda_time(cp, big.copy, 10)
    big = None
    rows = []
    n, d = 4096, 512
    for k in (1, 4, 16):
        rng = np.random.default_rng(k)
        host = rng.standard_normal((n, 1 + k, d)).astype(np.float32)
        host[0] = 0.0  # a zero image: NaN expected
        for dtype, tol in (("float32", 1e-5), ("float16", 2e-3)):
            emb_h = host.astype(dtype)
            emb = cp.asarray(emb_h)
            for agg in ("mean", "min", "median"):
                want_c, want_q = reference(emb_h, agg)
                cos = cp.full((n, k), np.nan, cp.float32)
                q = cp.full((n,), np.nan, cp.float32)
                cuda.quality(emb, agg, out=(cos, q))
                got_c, got_q = cp.asnumpy(cos), cp.asnumpy(q)
                unwritten = int((np.isnan(got_c) != np.isnan(want_c)).sum()
                                + (np.isnan(got_q) != np.isnan(want_q)).sum())
                ok_c, ok_q = ~np.isnan(want_c), ~np.isnan(want_q)
                err = float(max(np.abs(got_c[ok_c] - want_c[ok_c]).max(), np.abs(got_q[ok_q] - want_q[ok_q]).max()))
                seconds = _cuda_time(cp, lambda: cuda.quality(emb, agg, out=(cos, q)), 50)
                read = emb.nbytes
                rows.append(dict(k=k, dtype=dtype, agg=agg, max_abs_err=err, within_tolerance=err <= tol,
                                 unwritten_or_wrong_nan=unwritten, seconds=seconds, bytes_read=read,
                                 gb_per_s=read / seconds / 1e9, fraction_of_copy_bw=read / seconds / copy_bw))
    return dict(copy_bandwidth_gb_per_s=copy_bw / 1e9, rows=rows)


# ---------------------------------------------------------------------------------------------------- DALI


def _items(data: Path, n: int):
    from fiqa_trt.engine.inputs import check_item, list_items

    items = list_items(str(data))[:n]
    if not items:
        raise Skip(f"no images in {data}")
    from dataclasses import replace

    return [check_item(replace(it, index=i)) for i, it in enumerate(items)]


def _partners(views, items, seed=0):
    from fiqa_trt.engine.pipeline import INPUT_NAMES, mixup_partner

    keys = [it.key for it in items]
    return {v.index: [items[mixup_partner(it.index, keys, v, seed)] for it in items]
            for v in views if "partner" in INPUT_NAMES[v.spec.kind.name]} or None


def _run_pipe(device, views, config, items, batch, partners_all):
    from fiqa_trt.engine.pipeline import PerturbPipeline

    pipe = PerturbPipeline(views, config, batch_size=batch, num_threads=4, device=device,
                           device_id=0 if device == "gpu" else None)
    outs = []
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        partners = {i: p[s:s + batch] for i, p in partners_all.items()} if partners_all else None
        out = pipe.run(chunk, partners)
        outs.append(out if isinstance(out, np.ndarray) else out.get())  # the GPU pipeline gives CuPy arrays
    return np.concatenate(outs)


def section_dali(args) -> dict:
    if not args.data.is_dir():
        raise Skip(f"no data folder {args.data}")
    _dali_gpu()
    from fiqa_trt.weights.model_config import ModelConfig
    from fiqa_trt.engine.perturbations import KINDS, parse_spec, plan_views

    config = ModelConfig(input_size=(112, 112))
    items = _items(args.data, args.images)
    rows = []
    for kind in [None, *KINDS]:
        views = plan_views([parse_spec(kind)], 1) if kind else []
        partners = _partners(views, items)
        try:
            _run_pipe("gpu", views, config, items[:args.batch], args.batch, partners and
                      {i: p[:args.batch] for i, p in partners.items()})  # warm-up (+ build)
            t0 = time.perf_counter()
            gpu_out = _run_pipe("gpu", views, config, items, args.batch, partners)
            seconds = time.perf_counter() - t0
        except Exception as exc:
            rows.append(dict(kind=kind or "decode", error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        row = dict(kind=kind or "decode", images=len(items), images_per_s=len(items) / seconds)
        if kind in ("affine", "border", None):
            cpu_out = _run_pipe("cpu", views, config, items, args.batch, partners)
            row["mean_abs_pixel_diff_vs_cpu"] = float(np.abs(gpu_out.astype(np.int16) - cpu_out).mean())
        rows.append(row)
    return dict(rows=rows)


# ---------------------------------------------------------------------------------------------------- torch


def _network(name: str):
    from fiqa_trt.onnx_export import export
    from fiqa_trt.weights import zoo

    arch = zoo.arch(name)
    net = export.build_network(arch)
    try:  # well-scaled random weights (finite in fp16 through 100 layers), as the export tests make them
        from tests.test_export import randomise

        net = randomise(net, seed=0)
    except Exception:  # tests not importable: PyTorch's default initialisation
        pass
    return arch, net


def count_flops(net, shape=(1, 3, 112, 112)) -> float:
    """FLOPs (2 x multiply-adds) of one image through the Conv2d / Linear layers, counted with forward hooks."""
    import torch

    total = [0.0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += 2.0 * out.numel() * m.in_features

    layers = (torch.nn.Conv2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, layers)]
    with torch.no_grad():
        net.float().cpu()(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total[0]


def section_torch(args) -> dict:
    torch = _torch_cuda()
    from fiqa_trt.engine.runners.torch_cuda import from_network

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.half)
    b = torch.randn(n, n, device="cuda", dtype=torch.half)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    peak = 2 * n ** 3 * 20 / (time.perf_counter() - t0)
    del a, b
    rows = []
    for name in ("iresnet50", "iresnet100"):
        arch, net = _network(name)
        flops = count_flops(net)
        for graphs in (False, True):
            runner = from_network(net, arch, device="cuda:0", cuda_graphs=graphs, max_batch=1024)
            for batch in args.batches:
                images = np.random.default_rng(0).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)
                try:
                    host = _images_per_s(runner, images, torch.cuda.synchronize)
                    ips = _images_per_s(runner, _cupy().asarray(images), torch.cuda.synchronize)
                except Exception as exc:
                    rows.append(dict(model=name, batch=batch, cuda_graphs=graphs, error=str(exc)[:200]))
                    continue
                rows.append(dict(model=name, batch=batch, cuda_graphs=graphs, images_per_s=ips,
                                 images_per_s_host_io=host, gflop_per_image=flops / 1e9,
                                 tflop_per_s=ips * flops / 1e12, fraction_of_peak=ips * flops / peak))
            del runner
            torch.cuda.empty_cache()
    return dict(fp16_matmul_peak_tflop_per_s=peak / 1e12, rows=rows,
                note="images_per_s: inputs already on the GPU (CuPy, as the GPU pipeline hands them over), outputs "
                "left there; images_per_s_host_io: NumPy in and out, copies included")


def _images_per_s(runner, images, synchronize) -> float:
    """Images/s of runner.embed on one batch (two warm-up calls, then at least three timed ones)."""
    runner.embed(images)
    runner.embed(images)
    synchronize()
    reps = max(3, 2048 // len(images))
    t0 = time.perf_counter()
    for _ in range(reps):
        runner.embed(images)
    synchronize()
    return len(images) * reps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------- tensorrt


def section_tensorrt(args) -> dict:
    """TensorRT engines (fp16 and fp32, CUDA graphs) of the shared MobileFaceNet and a random-weight iresnet100:
    cosine against ONNX Runtime fp32 on the CPU, and images/s on device-resident batches."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("tensorrt") is None:
        raise Skip("tensorrt is not installed (its builder cannot be installed on this project's machines)")
    cp = _cupy()
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.runners.tensorrt import Profile, load_tensorrt_runner
    from fiqa_trt.onnx_export import export

    tmp = Path(tempfile.mkdtemp(prefix="fiqa-trt-check-"))
    models = {}
    if args.model.is_file():
        models["shared MobileFaceNet"] = args.model
    try:
        import torch

        arch, net = _network("iresnet100")
        torch.save(net.state_dict(), tmp / "iresnet100.pth")
        models["iresnet100 (random weights)"] = export.export_checkpoint(tmp / "iresnet100.pth", arch,
                                                                         out=tmp / "iresnet100.onnx").path
    except ImportError:
        pass
    images = np.random.default_rng(0).integers(0, 256, (64, 112, 112, 3), dtype=np.uint8)
    rows = []
    for name, path in models.items():
        want = load_runner(str(path), "onnxruntime", "fp32", device="cpu").embed(images)
        for precision in ("fp16", "fp32"):
            try:
                runner = load_tensorrt_runner(path, Profile(1, 256, max(args.batches)), cache_dir=tmp / "engines",
                                              cuda_graphs=True, precision=precision)
                cosine = float(export.cosines(runner.embed(images), want).min())
                rates = {b: _images_per_s(runner, cp.asarray(np.resize(images, (b, *images.shape[1:]))),
                                          cp.cuda.Device().synchronize) for b in args.batches}
            except Exception as exc:
                rows.append(dict(model=name, precision=precision, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            rows.append(dict(model=name, precision=precision, min_cosine_vs_onnxruntime_fp32=cosine,
                             images_per_s=rates))
    return dict(rows=rows)


# ---------------------------------------------------------------------------------------------------- end to end


def _qualities(scorer, items) -> np.ndarray:
    return np.array([r.quality for r in scorer.score(items)], np.float64)


def section_e2e(args) -> dict:
    """The product path: Scorer on cuda:0 (DALI on the GPU -> CuPy hand-over -> PyTorch fp16 -> CUDA kernel)
    against the same Scorer on the CPU (DALI cpu -> PyTorch fp32 -> NumPy)."""
    if not args.data.is_dir():
        raise Skip(f"no data folder {args.data}")
    torch = _torch_cuda()
    _dali_gpu()
    from fiqa_trt.benchmark import spec_for
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.precision import spearman
    from fiqa_trt.engine.runners.torch_cuda import from_network
    from fiqa_trt.engine.scorer import Scorer

    arch, net = _network("iresnet100")
    torch.manual_seed(0)
    items = list_items(str(args.data))[:args.images]
    subset = items[:args.spearman_images]
    gpu_runner = from_network(net, arch, device="cuda:0", max_batch=1024)
    cpu_runner = from_network(copy.deepcopy(net).float().cpu(), arch, device="cpu", max_batch=64)
    rows = []
    for k in (1, 4):
        gpu = Scorer(gpu_runner, spec_for(k), views=k, batch_size=args.batch, threads=8)
        assert gpu.device.is_cuda
        _qualities(gpu, items[:args.batch])  # warm-up: pipeline build, cuDNN choices
        t0 = time.perf_counter()
        gpu_q = _qualities(gpu, items)
        seconds = time.perf_counter() - t0
        stages = {name: round(v, 3) for name, v in gpu.timings.items()}
        cpu_q = _qualities(Scorer(cpu_runner, spec_for(k), views=k, batch_size=args.batch, threads=16), subset)
        rows.append(dict(model="iresnet100 (random weights)", k=k, images=len(items),
                         quality_scores_per_s=len(items) / seconds, stage_seconds=stages,
                         spearman_gpu_vs_cpu=spearman(gpu_q[:len(subset)], cpu_q), spearman_images=len(subset),
                         max_abs_quality_diff=float(np.nanmax(np.abs(gpu_q[:len(subset)] - cpu_q)))))
    return dict(rows=rows, note="fiqa_trt Scorer on cuda:0 (DALI gpu, CuPy DLPack hand-over, torch fp16 "
                "channels-last, CUDA kernel) vs the same Scorer on the CPU (torch fp32, NumPy kernel)")


# ---------------------------------------------------------------------------------------------------- main


SECTIONS = {"kernel": section_kernel, "dali": section_dali, "torch": section_torch, "tensorrt": section_tensorrt,
            "e2e": section_e2e}


def _summary(name: str, result: dict) -> list[str]:
    if "skipped" in result or "error" in result:
        return [f"{name:7s} {result.get('skipped') and 'skipped: ' + result['skipped'] or 'ERROR: ' + result['error']}"]
    lines = []
    if name == "kernel":
        lines.append(f"kernel  copy bandwidth {result['copy_bandwidth_gb_per_s']:.0f} GB/s")
        for r in result["rows"]:
            lines.append(f"kernel  K={r['k']:<2} {r['dtype']} {r['agg']:6s} err {r['max_abs_err']:.1e} "
                         f"{'ok' if r['within_tolerance'] and not r['unwritten_or_wrong_nan'] else 'FAIL'} "
                         f"{r['seconds'] * 1e6:7.1f} us {r['gb_per_s']:6.0f} GB/s "
                         f"{r['fraction_of_copy_bw']:.0%} of copy")
    elif name == "dali":
        for r in result["rows"]:
            extra = f" |gpu-cpu| {r['mean_abs_pixel_diff_vs_cpu']:.3f}" if "mean_abs_pixel_diff_vs_cpu" in r else ""
            lines.append(f"dali    {r['kind']:10s} " + (f"{r['images_per_s']:8.0f} img/s{extra}" if "error" not in r
                                                        else f"ERROR {r['error']}"))
    elif name == "torch":
        lines.append(f"torch   fp16 matmul peak {result['fp16_matmul_peak_tflop_per_s']:.0f} TFLOP/s")
        for r in result["rows"]:
            lines.append(f"torch   {r['model']:10s} b={r['batch']:<4} graphs={int(r['cuda_graphs'])} " +
                         (f"{r['images_per_s']:8.0f} img/s {r['tflop_per_s']:6.1f} TFLOP/s {r['fraction_of_peak']:.0%}"
                          if "error" not in r else f"ERROR {r['error']}"))
    elif name == "tensorrt":
        for r in result["rows"]:
            lines.append(f"trt     {r['model'][:22]:22s} {r['precision']} " + (
                f"cos {r['min_cosine_vs_onnxruntime_fp32']:.5f} " + " ".join(
                    f"b{b}:{v:.0f}" for b, v in r["images_per_s"].items()) + " img/s"
                if "error" not in r else f"ERROR {r['error']}"))
    elif name == "e2e":
        for r in result["rows"]:
            lines.append(f"e2e     iresnet100 K={r['k']} {r['quality_scores_per_s']:8.0f} scores/s  Spearman vs CPU "
                         f"{r['spearman_gpu_vs_cpu']:.4f} ({r['spearman_images']} images)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an ONNX model for the TensorRT section")
    parser.add_argument("--images", type=int, default=2048, help="LFW images for DALI and end-to-end timings")
    parser.add_argument("--spearman-images", type=int, default=256, help="images scored on the CPU for Spearman")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer images and batch sizes (a first smoke run)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.images, args.spearman_images, args.batches = 256, 64, [64, 256]
    name = gpu_name()
    report = {"gpu": name, "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}
    for section in args.sections:
        t0 = time.perf_counter()
        try:
            report[section] = SECTIONS[section](args)
        except Skip as why:
            report[section] = {"skipped": str(why)}
        except Exception as exc:  # one broken section must not cost the others
            report[section] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}",
                               "traceback": traceback.format_exc()[-2000:]}
        report[section]["seconds"] = round(time.perf_counter() - t0, 1)
        print("\n".join(_summary(section, report[section])), flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"device_check_{name.replace(' ', '_').lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
