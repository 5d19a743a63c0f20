"""One scoring session: `open_session(settings)` is the only constructor of a Scorer, used by every command.

It resolves the settings (`engine.resolve`), opens the runner (or takes one already open), and builds the Scorer with
the recipe, and with the face aligner or the realigner (`engine.template`: each crop checked and realigned by
itself, so nothing is estimated from the run's input and every session, a Ray actor's included, realigns a crop the
same way). The `Session` keeps what was decided, with its sources, for reports (`-v`, /v1/model, Parquet metadata).
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa_trt.engine.resolve import Resolution, resolve
from fiqa_trt.engine.settings import ScoringSettings


@dataclass
class Session:
    settings: ScoringSettings
    resolution: Resolution
    runner: object  # engine.runners.base.Runner
    scorer: object  # engine.scorer.Scorer
    template_report: str  # one line: the realignment of this session and where it came from

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


def open_session(settings: ScoringSettings, runner=None, resolution: Resolution | None = None) -> Session:
    """A session for `settings`: resolved, its runner opened (`runner`: one already open, reused as it is: its
    model, device, backend, precision and preprocessing) and its Scorer built. `resolution`: one `resolve` already gave for
    these settings."""
    from fiqa_trt.engine.scorer import Scorer

    resolution = resolution or resolve(settings, runner=runner)
    if runner is None:
        runner = open_runner(resolution, settings)
    resolution = resolution.opened(runner)
    aligner = None
    if settings.aligns:
        from fiqa_trt.engine.detect import make_aligner

        aligner = make_aligner(settings.detector, all_faces=settings.all_faces, min_score=settings.min_face_score)
    elif resolution.realign != "off":
        from fiqa_trt.engine.template import realigner_for

        aligner, _ = realigner_for(runner.config.input_size, "on" if resolution.realign_each else resolution.realign)
    scorer = Scorer(runner, list(settings.perturb) or None, views=settings.views, agg=settings.agg,
                    seed=settings.seed, batch_size=settings.batch_size, threads=settings.threads, aligner=aligner,
                    recipe=resolution.recipe, recipe_source=resolution.sources["recipe"])
    return Session(settings, resolution, runner, scorer, template_report(resolution))


def template_report(resolution: Resolution) -> str:
    """One line: the realignment a resolution asks for and where that came from."""
    from fiqa_trt.engine.template import describe_mode

    source = resolution.sources["realign"]
    if resolution.realign == "off":
        return source if source.startswith(("photos", "template check")) else f"template check off: {source}"
    return f"{describe_mode('on' if resolution.realign_each else resolution.realign)} ({source})"


__all__ = ["Session", "open_runner", "open_session", "template_report"]
