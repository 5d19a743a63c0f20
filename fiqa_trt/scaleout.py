"""Scale-out scoring with Ray Data: the same scorer inside Ray actors, one Parquet dataset out.

`ray_score` lists INPUT (local paths or any URI a pyarrow filesystem reads), skips what an earlier run already wrote
to the output folder, and maps batches of paths through `_ScoreActor`s: each actor loads the model and builds its
Scorer once, then scores its batches exactly as the single-machine CLI does. Every actor knows the whole input list
(through Ray's object store), so keyed per-view draws and mixup partners are the same as in one process; the pixel
noise of DALI's noise operators follows the stream position (see engine.pipeline) and so differs between a
sharded and a single run. Output columns and types are those of `fiqa-trt score --out x.parquet`.
Devices: `cpu` gives CPU actors; `cuda` gives actors that reserve one GPU each (Ray shows each its own card as
cuda:0), refused when the cluster has no GPU; `auto` takes GPU actors when the cluster has GPUs, each actor then
resolving `auto` itself. Ray is the `ray` extra and only this module imports it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from fiqa_trt.engine.inputs import Item, list_items
from fiqa_trt.engine.models import model_or_default
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError, MissingDependency


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependency("ray[data]", "ray") from None
    return ray


class _ScoreActor:
    """One per Ray worker: the runner and scorer are built once, then every batch goes through `Scorer.score`."""

    def __init__(self, settings: ScoringSettings, population_ref):
        import ray

        from fiqa_trt.engine import sinks
        from fiqa_trt.engine.session import open_session

        self.scorer = open_session(settings).scorer
        self.population = [Item(p, k, index=i) for i, (p, k) in enumerate(ray.get(population_ref))]
        self.columns = sinks.columns(self.scorer.view_labels, faces=self.scorer.aligns_photos)

    def __call__(self, batch):
        from fiqa_trt.engine import sinks

        items = [Item(p, k, index=i) for p, k, i in zip(batch["path"].to_pylist(), batch["key"].to_pylist(),
                                                         batch["index"].to_pylist())]
        results = list(self.scorer.score(items, population=self.population))
        return sinks.arrow_table(results, self.columns)


def ray_score(input: str, out_dir: str, settings: ScoringSettings, *, workers: int = 2, address: str | None = None,
              cpus_per_worker: int = 1) -> dict:
    """Score INPUT with `workers` Ray actors, each scoring with `settings` (its threads and device set per actor),
    and write Parquet files into `out_dir`. Returns a summary dict."""
    if workers < 1:
        raise FiqaError("--workers must be at least 1")
    out = Path(out_dir)
    if out.suffix and out.exists() and not out.is_dir():
        raise FiqaError(f"{out} exists and is not a folder: Ray writes a folder of Parquet files")
    from fiqa_trt.engine import sinks

    if not out.parent.is_dir():
        raise FiqaError(f"the output folder {out.parent} does not exist")
    lock = sinks.OutputLock(out)  # one writer per output, as for `score --out FILE`: a second run is refused here
    try:
        return _ray_score(input, out, settings, workers, address, cpus_per_worker)
    finally:
        lock.release()


def _ray_score(input: str, out: Path, settings: ScoringSettings, workers: int, address: str | None,
               cpus_per_worker: int) -> dict:
    from fiqa_trt.engine import sinks

    ray = _ray()
    items = list_items(input)
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.session import template_report as report_of

    template_report = report_of(resolve(settings.with_(device="cpu")))  # each actor realigns each crop by itself
    done = sinks.done_paths(out)  # the mechanism of `score --resume`: items already in the output
    todo = sinks.Done(done).todo(items)
    summary = {"items": len(items), "already_done": len(items) - len(todo), "scored": 0, "failed": 0,
               "workers": workers, "seconds": 0.0, "out": str(out), "template_check": template_report}
    if not todo:
        return summary
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)  # start-up notices stay off the terminal
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers * cpus_per_worker), include_dashboard=False, **quiet)
    _quiet_ray_loggers()
    actor_device, gpus = _actor_device(settings.device, ray.cluster_resources().get("GPU", 0), workers)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    population = ray.put([(it.path, it.key) for it in items])
    dataset = ray.data.from_items([{"path": it.path, "key": it.key, "index": it.index} for it in todo])
    start = time.perf_counter()
    scored = dataset.map_batches(
        _ScoreActor, batch_format="pyarrow", batch_size=settings.batch_size, concurrency=workers,
        num_cpus=cpus_per_worker, num_gpus=gpus,
        fn_constructor_kwargs=dict(
            settings=settings.with_(model=str(model_or_default(settings.model)), threads=cpus_per_worker,
                                    device=actor_device),
            population_ref=population))
    scored.write_parquet(str(out))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    errors = _new_rows(out, done)
    summary["scored"] = sum(1 for e in errors if e is None)
    summary["failed"] = sum(1 for e in errors if e is not None)
    return summary


def _quiet_ray_loggers() -> None:
    """Ray and Ray Data log their progress and notices (execution plans, deprecations) on the terminal at INFO and
    WARNING through loggers they configure themselves: only errors are shown."""
    for name in list(logging.root.manager.loggerDict):
        if name == "ray" or name.startswith("ray."):
            logging.getLogger(name).setLevel(logging.ERROR)


def _actor_device(device: str, cluster_gpus: float, workers: int) -> tuple[str, int]:
    """(the device each actor resolves, GPUs each reserves) for `--device` on a cluster with `cluster_gpus`."""
    from fiqa_trt.engine.device import parse_device

    kind, _ = parse_device(device)
    if kind == "cpu" or (kind == "auto" and cluster_gpus < 1):
        return "cpu", 0
    if cluster_gpus < 1:
        raise FiqaError(f"--device {device} with --ray: the Ray cluster has no GPU (start its nodes on GPU "
                        "machines, or use --device cpu)")
    if workers > cluster_gpus:
        raise FiqaError(f"--workers {workers} GPU actors need {workers} GPUs; the Ray cluster has "
                        f"{int(cluster_gpus)}: use --workers {int(cluster_gpus)}")
    return ("cuda" if kind == "cuda" else "auto"), 1


def _new_rows(out: Path, before: set[str]) -> list[str | None]:
    from fiqa_trt.engine.sinks import item_path, read_rows

    return [r["error"] for r in read_rows(out)[1] if item_path(r["path"]) not in before]
