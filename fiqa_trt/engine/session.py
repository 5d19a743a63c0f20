"""One scoring session: `open_session(settings)` is the only constructor of a Scorer, used by every command.

It resolves the settings (`engine.resolve`), opens the runner (or takes one already open), runs the template check
on the input files when the resolution asks for it (once per run: the Ray driver runs it and hands the matrix to
every actor through `settings.template`), and builds the Scorer with the recipe, and with the face aligner or the
realigner. The `Session` keeps what was decided, with its sources, for reports (`-v`, /v1/model, Parquet metadata).
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa_trt.engine.resolve import CROPS, FILES, Resolution, resolve
from fiqa_trt.engine.settings import ScoringSettings


@dataclass
class Session:
    settings: ScoringSettings  # as run: the realignment matrix of the template check included
    resolution: Resolution
    runner: object  # engine.runners.base.Runner
    scorer: object  # engine.scorer.Scorer
    template_report: str  # one line: what the template check found and did

    @property
    def recipe(self):
        return self.resolution.recipe

    def describe_recipe(self) -> str:
        """The recipe in one line with where it came from."""
        r = self.resolution
        return (f"{r.recipe.describe()} ({r.sources['recipe']})" if r.recipe is not None
                else f"no recipe: {r.sources['recipe']}")


def open_runner(resolution: Resolution, settings: ScoringSettings):
    """The runner a resolution names, with the settings' threads and preprocessing overrides."""
    from fiqa_trt.engine.runners import load_runner

    return load_runner(resolution.model, backend=resolution.backend, precision=resolution.precision,
                       threads=settings.threads, device=resolution.device, **settings.overrides)


def open_session(settings: ScoringSettings, items: list | None = None, runner=None, inputs: str = FILES,
                 resolution: Resolution | None = None) -> Session:
    """A session for `settings`: resolved, its runner opened (`runner`: one already open, reused as it is: its
    model, device, backend, precision and preprocessing), the template check run on `items` (input files) where the resolution realigns and the settings carry
    no matrix yet, and its Scorer built. `inputs`: FILES or CROPS (see `engine.resolve.resolve`). `resolution`:
    one `resolve` already gave for these settings."""
    from fiqa_trt.engine.scorer import Scorer

    resolution = resolution or resolve(settings, inputs, runner=runner)
    if runner is None:
        runner = open_runner(resolution, settings)
    resolution = resolution.opened(runner)
    settings, report = _template(settings, resolution, items, runner.config.input_size)
    aligner = None
    if settings.aligns:
        from fiqa_trt.engine.detect import make_aligner

        aligner = make_aligner(settings.detector, all_faces=settings.all_faces, min_score=settings.min_face_score)
    elif settings.template is not None:
        from fiqa_trt.engine.template import Realigner, TemplateCheck

        aligner = Realigner(TemplateCheck.of_matrix(settings.template), runner.config.input_size,
                            each=resolution.realign_each)
    scorer = Scorer(runner, list(settings.perturb) or None, views=settings.views, agg=settings.agg,
                    seed=settings.seed, batch_size=settings.batch_size, threads=settings.threads, aligner=aligner,
                    recipe=resolution.recipe)
    return Session(settings, resolution, runner, scorer, report)


def check_template(settings: ScoringSettings, items: list) -> tuple[ScoringSettings, str]:
    """The template check alone, once for a run whose sessions open elsewhere (the Ray driver for its actors):
    the settings carrying the realignment matrix it found, and its report. The model is opened on the CPU for its
    input size only."""
    on_cpu = settings.with_(device="cpu", backend="onnxruntime", precision="fp32")  # where the check runs
    resolution = resolve(on_cpu)
    if settings.aligns or settings.template is not None or resolution.realign == "off":
        return _template(settings, resolution, items, (0, 0))
    size = open_runner(resolution, on_cpu).config.input_size
    return _template(settings, resolution, items, size)


def _template(settings: ScoringSettings, resolution: Resolution, items: list | None,
              input_size: tuple[int, int]) -> tuple[ScoringSettings, str]:
    """The settings with the realignment matrix the template check found on `items` (when the resolution realigns
    and none was found yet), and a one-line report."""
    from fiqa_trt.engine.template import realigner_for

    if settings.aligns:
        return settings, resolution.sources["realign"]
    if settings.template is not None:
        return settings, "crops realigned by the template check's transform of this run"
    if resolution.realign == "off":
        return settings, f"template check off: {resolution.sources['realign']}"
    if not items:
        return settings, "template check: no input files to check: not realigned"
    realigner, report = realigner_for(items, input_size, resolution.realign, settings.seed,
                                      each=resolution.realign_each)
    matrix = tuple(map(tuple, realigner.check.matrix.tolist())) if realigner is not None else None
    return settings.with_(template=matrix), report


__all__ = ["CROPS", "FILES", "Session", "check_template", "open_runner", "open_session"]
