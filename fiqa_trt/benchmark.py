"""Throughput benchmark: quality scores/s per backend, precision, batch size and K, with FLOP/s against peak.

For each configuration it measures, in the same run:
- inference only: the runner on pre-made batches of N*(1+K) samples (latency per batch p50/p99);
- end to end: `Scorer.score` over the images (read, decode, perturb, embed, score), with its stage breakdown;
- the model's FLOPs (from the ONNX graph) times forward passes/s, against the peak of a large matrix product run
  through the same backend in the same precision;
- for each reduced precision, the ranking check of `engine.precision` (the Spearman correlation of its quality
  scores with ONNX Runtime fp32 on the same images), recorded when it passes so that `precision="auto"` uses it.
Nothing here asserts a time: the numbers are reported, and ratios are taken within one run.

With `device="cuda[:N]"` the same measurements run on the GPU path: TensorRT fp16 and fp32 engines, batches
decoded and perturbed by the GPU pipeline and kept in device memory, the peak as a CuPy matrix product in the same
precision, the ranking check against ONNX Runtime fp32 on the CPU. (Written; not executed: no GPU with TensorRT.)
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from fiqa_trt.engine import precision as checks
from fiqa_trt.engine.inputs import check_item, list_items
from fiqa_trt.engine.perturbations import DEFAULT_SPEC
from fiqa_trt.engine.pipeline import PerturbPipeline, Sample
from fiqa_trt.engine.models import model_or_default
from fiqa_trt.engine.resolve import resolve
from fiqa_trt.engine.runners import available_backends, supported_precisions
from fiqa_trt.engine.scorer import STAGES
from fiqa_trt.engine.session import open_runner, open_session
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError

MULTI_VIEW_SPEC = "affine:rot=-1:1,scale=1:1.02,flip=1"  # the study's setting with jitter, so that K views differ


def spec_for(views: int) -> list[str]:
    return [DEFAULT_SPEC] if views == 1 else [MULTI_VIEW_SPEC]


def machine() -> dict:
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import nvidia.dali
    import onnxruntime

    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "dali": nvidia.dali.__version__, "onnxruntime": onnxruntime.__version__,
            "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile",
                                         "avx512_fp16"})}
    if "openvino" in available_backends():
        import openvino

        info["openvino"] = openvino.__version__
    return info


def provenance(argv: list[str] | None = None) -> dict:
    """What every results JSON records about its run (benchmarks/render.py prints it with each result): the command
    line, the git commit of the working tree (with '+dirty' when it has uncommitted changes; None outside a git
    checkout), the UTC date and time, and the machine."""
    import subprocess
    import sys
    from datetime import datetime, timezone

    argv = sys.argv if argv is None else argv
    program = Path(argv[0]).name if argv else "python"
    if program.endswith(".py"):
        program = f"python {os.path.relpath(argv[0])}"
    commit = None
    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent)]
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip() or None
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"command": " ".join([program, *argv[1:]]), "commit": commit,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}


def model_flops(proto) -> float:
    """FLOPs (2 x multiply-adds) of one image through Conv, ConvTranspose-free FR graphs' Conv / Gemm / MatMul."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {i.name: i for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits][0]
    real.type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for name, init in inits.items():
        shapes[name] = list(numpy_helper.to_array(init).shape)
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out and all(out):
                total += 2.0 * np.prod(out) * np.prod(w[1:])  # out elements x (Cin/groups x kh x kw)
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out):
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                total += 2.0 * np.prod(out) * (a[-2] if trans_a else a[-1])
    return total


def measure_peak(backend: str, precision: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matrix product through `backend` in `precision` (best of `repeats`)."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "a")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "a"], ["y"])], "peak",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [a])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "peak.onnx"
        onnx.save(model, str(path))
        if backend == "openvino":
            import openvino as ov

            from fiqa_trt.engine.runners.openvino import HINTS

            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": HINTS[precision],
                                                                 "PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()
            run = lambda: request.infer({0: x})  # noqa: E731
        else:
            from fiqa_trt.onnx_export.graph import ort_session

            session = ort_session(model)
            run = lambda: session.run(None, {"x": x})  # noqa: E731
        run()
        best = min(_timed(run) for _ in range(repeats))
    return 2.0 * n**3 / best


def measure_gpu_peak(precision: str, device_index: int, n: int = 8192, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n CuPy matrix product in fp16 or fp32 on cuda:device_index (best of `repeats`)."""
    import cupy as cp

    with cp.cuda.Device(device_index):
        dtype = cp.float16 if precision == "fp16" else cp.float32
        a = cp.random.default_rng(0).standard_normal((n, n), dtype=cp.float32).astype(dtype)
        run = lambda: a @ a  # noqa: E731
        run()
        best = min(_timed(run, sync=cp.cuda.get_current_stream().synchronize) for _ in range(repeats))
    return 2.0 * n**3 / best


def _timed(fn, sync=None) -> float:
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


def _settings(model: str, views: int, batch_size: int, **runner) -> ScoringSettings:
    return ScoringSettings(model=model, perturb=tuple(spec_for(views)), views=views, batch_size=batch_size, **runner)


def _runner(model: str, **runtime):
    """A runner for `model` as the resolver opens it for these runtime settings (backend, precision, device)."""
    settings = ScoringSettings(model=model, perturb=(DEFAULT_SPEC,), **runtime)
    return open_runner(resolve(settings), settings)


def recipe_rows(runner, items, recipe_options: list[str | None], model: str, batch_size: int = 32,
                progress=print, preprocessing: dict | None = None) -> list[dict]:
    """End-to-end throughput of quality recipes on one runner, each measured in the same run: quality scores/s and
    forward passes per score (the original plus the recipe's views), with the host seconds of the per-crop template
    check (the `align` stage, part of the scoring time). `None` in `recipe_options` is the model's default recipe."""
    rows = []
    for option in recipe_options:
        settings = ScoringSettings(model=model, recipe=option, batch_size=batch_size, **(preprocessing or {}))
        session = open_session(settings, runner=runner)
        scorer = session.scorer
        recipe, source, aligner = scorer.recipe, session.resolution.sources["recipe"], scorer.aligner
        start = time.perf_counter()
        results = list(scorer.score(items))
        elapsed = time.perf_counter() - start
        if any(r.error for r in results):
            raise FiqaError("benchmark images failed to score: " + str(next(r for r in results if r.error)))
        rows.append({"recipe": recipe.name, "source": source, "backend": runner.name, "precision": runner.precision,
                     "batch_size": batch_size, "forwards_per_score": 1 + len(scorer.views),
                     "realigned": aligner is not None, "template_check_seconds": round(scorer.timings["align"], 2),
                     "quality_scores_per_s": round(len(items) / elapsed, 1),
                     "stage_seconds": {s: round(scorer.timings[s], 3) for s in STAGES}})
        progress(f"recipe {recipe.name} ({1 + len(scorer.views)} forwards per score, realigned: "
                 f"{aligner is not None}): {rows[-1]['quality_scores_per_s']:.1f} quality scores/s")
    return rows


def run_benchmark(model: str | None, data: str, images: int = 512, backends: list[str] | None = None,
                  precisions: list[str] | None = None, views: tuple[int, ...] = (1, 4),
                  batch_sizes: tuple[int, ...] = (32,), ranking_images: int = 1000, progress=print,
                  device: str = "auto", recipes: list[str | None] | None = None,
                  preprocessing: dict | None = None) -> dict:
    """`recipes`: also measure these recipes (names or files; None: the model's default) end to end on the
    default runner (`recipe_rows`), next to the seed recipe."""
    from fiqa_trt.engine.device import resolve_device

    model = model_or_default(model)
    all_items = list_items(data)
    items = all_items[:images]
    target = resolve_device(device, model)
    if target.is_cuda:
        backends = backends or ["tensorrt"]
        if backends != ["tensorrt"]:
            raise FiqaError(f"on {target} the benchmark measures TensorRT; drop --backend {' '.join(backends)}")
    else:
        backends = backends or available_backends()
        for b in backends:
            if b not in available_backends():
                raise FiqaError(f"backend '{b}' is not installed; available: {', '.join(available_backends())}")
    given = dict(preprocessing or {})  # colour order, mean, std, input size stated for the model
    reference = _runner(model, backend="onnxruntime", precision="fp32", device="cpu", **given)
    flops = model_flops(reference.model.proto)
    report = {"benchmark": "fiqa-trt bench", **provenance(), "model": Path(model).name,
              "model_sha256": reference.sha256, "model_gflops_per_image": round(flops / 1e9, 4),
              "images": len(items), "data": str(data), "device": str(target), "peak_gflops": {},
              "ranking_checks": [], "rows": []}
    sync, where = None, {}  # GPU: wait for the device in timings; the pipeline on the GPU
    if target.is_cuda:
        import cupy

        from fiqa_trt.engine.runners.tensorrt import gpu_identity

        report["machine"]["gpu"] = gpu_identity(target.index)[0]
        sync, where = cupy.cuda.get_current_stream().synchronize, dict(device="gpu", device_id=target.index)
    read = [check_item(it) for it in items]
    if any(it.error for it in read):
        raise FiqaError("the benchmark needs readable images; these are not: "
                        + ", ".join(it.path for it in read if it.error)[:300])
    checked = [Sample.of(it, reference.config.input_size) for it in read]

    # decode+perturb (and decode alone) once per (K, batch size): the same for every backend
    prepared: dict[tuple[int, int], dict] = {}
    for k in views:
        for bs in batch_sizes:
            scorer = open_session(_settings(model, k, bs, **given), runner=reference).scorer
            decode_only = PerturbPipeline([], reference.config, batch_size=bs, num_threads=os.cpu_count(), **where)
            start = time.perf_counter()
            for i in range(0, len(checked), bs):
                decode_only.run(checked[i : i + bs])
            decode_rate = len(checked) / (time.perf_counter() - start)
            pipe = PerturbPipeline(scorer.views, reference.config, batch_size=bs, num_threads=os.cpu_count(), **where)
            start = time.perf_counter()
            tensors = [pipe.run(checked[i : i + bs]) for i in range(0, len(checked), bs)]  # in device memory on a GPU
            if sync is not None:
                sync()
            prepared[(k, bs)] = {"tensors": tensors, "decode": decode_rate,
                                 "decode_perturb": len(checked) / (time.perf_counter() - start),
                                 "perturb": [s.label() for s in scorer.specs], "k": len(scorer.views)}

    for backend in backends:
        runs = ["fp16", "fp32"] if target.is_cuda else supported_precisions(backend)
        for prec in precisions or runs:
            if prec not in runs:
                progress(f"skip {backend} {prec}: not supported {'here' if target.is_cuda else 'on this CPU'}")
                continue
            runner = _runner(model, backend=backend, precision=prec, device=str(target), **given)
            key = f"{backend}:{runner.precision}"
            peak = measure_gpu_peak(runner.precision, target.index) if target.is_cuda else \
                measure_peak(backend, runner.precision)
            report["peak_gflops"][key] = round(peak / 1e9, 1)
            for (k, bs), prep in prepared.items():
                tensors = prep["tensors"]
                runner.embed(tensors[0].reshape(-1, *tensors[0].shape[2:]))  # warm-up
                latencies = [_timed(lambda t=t: runner.embed(t.reshape(-1, *t.shape[2:])), sync) for t in tensors]
                inference = len(checked) / sum(latencies)
                scorer = open_session(_settings(model, k, bs, **given), runner=runner).scorer
                marks = [time.perf_counter()]
                start = marks[0]
                results = list(scorer.score(items, progress=lambda n: marks.append(time.perf_counter())))
                e2e = len(items) / (time.perf_counter() - start)
                if any(r.error for r in results):
                    raise FiqaError("benchmark images failed to score: " + str(next(r for r in results if r.error)))
                stage_total = sum(scorer.timings.values()) or 1.0
                passes = inference * (1 + prep["k"])
                row = {
                    "backend": backend, "precision": runner.precision, "views": prep["k"], "batch_size": bs,
                    "perturb": prep["perturb"],
                    "quality_scores_per_s": round(e2e, 1), "inference_images_per_s": round(inference, 1),
                    "end_to_end_vs_inference": round(e2e / inference, 3),
                    "forward_passes_per_s_inference": round(passes, 1),
                    "forward_passes_per_s_end_to_end": round(e2e * (1 + prep["k"]), 1),
                    "achieved_gflops": round(passes * flops / 1e9, 1),
                    "fraction_of_peak": round(passes * flops / 1e9 / report["peak_gflops"][key], 4),
                    "inference_latency_ms_p50": round(1e3 * float(np.percentile(latencies, 50)), 2),
                    "inference_latency_ms_p99": round(1e3 * float(np.percentile(latencies, 99)), 2),
                    "end_to_end_batch_interval_ms_p50": round(1e3 * float(np.percentile(np.diff(marks), 50)), 2),
                    "end_to_end_batch_interval_ms_p99": round(1e3 * float(np.percentile(np.diff(marks), 99)), 2),
                    "decode_images_per_s": round(prep["decode"], 1),
                    "decode_perturb_images_per_s": round(prep["decode_perturb"], 1),
                    "stage_seconds": {s: round(scorer.timings[s], 3) for s in STAGES},
                    "stage_fraction": {s: round(scorer.timings[s] / stage_total, 3) for s in STAGES},
                }
                report["rows"].append(row)
                progress(f"{backend} {runner.precision} K={prep['k']} batch {bs}: {e2e:.1f} quality scores/s "
                         f"(inference alone {inference:.1f} images/s)")
            if runner.precision != "fp32":
                report["ranking_checks"].append(checks.ranking_check(reference, runner, all_items[:ranking_images],
                                                                     data))
                progress(f"ranking check {key}: Spearman {report['ranking_checks'][-1]['spearman_vs_fp32']:.4f}")
    if recipes:
        runner = _runner(model, device=str(target), **given)
        wanted = ["seed"] + [r for r in recipes if r != "seed"]
        report["recipe_rows"] = recipe_rows(runner, items, wanted, model, batch_sizes[0], progress, given)
    return report
