"""One whole evaluation run (the library behind `fiqa-trt eval`): pairs, one embedding pass, the EDC of every
method, the report files and pictures. `EvalSettings` holds what the run needs besides the scoring settings.

Pairs: a pair file (`pairs`, `protocol`), or generated from identity folders (`generate`): `generator=
"all-mated"` (default; every mated pair among at most `max_images_per_identity` images per identity, plus
`impostors` non-mated pairs, default 2,000,000 or all possible; `protocols.all_mated_pairs`) or `"sampled"` (at
most `max_mated_per_identity` mated pairs per identity, as many non-mated; `protocols.generate_pairs`).
`half="dev"|"test"` evaluates one half of the seeded identity split (`split_seed`, `test_fraction`;
`evaluation.split`). `cross_quality=SHARE` evaluates the cross-quality protocol (`evaluation.crossquality`): that
seeded share of the images degraded by realistic kinds at random strengths (written under OUT/cross-quality/),
verification and quality both on the images as they then are. Methods: the perturbation specs (one embedding pass), the raw-embedding norm (`norm`), other
methods' score files (`external`), the random reference. EDC (ISO/IEC 29794-1 conventions): pair quality
`pair_quality` (min), threshold fixed at 0% discard, discard fraction over the mated comparisons (`discard`),
pAUC raw / normalised / theoretical best at each limit, `bootstrap` resamples of the identities for 90%
intervals and for the differences `compare` ("A:B"; default: the first method against every other one).

API: `run_eval(EvalSettings(images, scoring=ScoringSettings(...), generate=True, half="test", norm=True,
bootstrap=200), out_dir) -> report dict`; `build_pairs(settings) -> Pairs` gives the pair set alone.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError


@dataclass(frozen=True)
class EvalSettings:
    images: str  # the image root the pair paths are relative to (identity folders for `generate`)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    pairs: str | None = None
    protocol: str = "auto"
    generate: bool = False
    generator: str = "all-mated"  # or "sampled"
    max_images_per_identity: int | None = 20  # all-mated: images kept per identity (None: all)
    max_mated_per_identity: int = 20  # sampled: mated pairs kept per identity
    impostors: int | None = None
    pair_limit: int | None = None
    half: str | None = None  # "dev" / "test": one half of the seeded identity split
    cross_quality: float | None = None  # the share of images degraded (cross-quality protocol), None: none
    cross_quality_kinds: tuple[str, ...] = ()  # the realistic kinds drawn from (default: all)
    split_seed: int = 0
    test_fraction: float = 0.5
    all_kinds: bool = False
    norm: bool = False  # also the raw-embedding norm as a method
    methods: tuple[str, ...] = ()  # more recipes (names or files) evaluated as methods in the same pass
    pair_quality: str = "min"
    fmrs: tuple[float, ...] = ()
    pauc_limits: tuple[float, ...] = ()
    compat: bool = False
    discard: str = "mated"  # the discard fraction's pool: "mated" (ISO/IEC 29794-1) or "all" pairs
    bootstrap: int = 200  # resamples of the identities for intervals (0: none)
    bootstrap_seed: int = 0
    compare: tuple[str, ...] = ()  # "A:B": interval of the difference A - B
    external: tuple[str, ...] = ()  # NAME=PATH score files of other methods
    lower_is_better: tuple[str, ...] = ()
    plots: bool = True
    plot_max_discard: float = 0.5


def _parse_external(specs: list[str], negate: list[str]) -> list[tuple[str, Path, bool]]:
    out, names = [], set()
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq:
            name, path = Path(spec).stem, spec
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise FiqaError(f"--external '{spec}': use NAME=PATH or PATH")
        if name in names:
            raise FiqaError(f"--external: the name '{name}' is given twice (use NAME=PATH to tell them apart)")
        names.add(name)
        out.append((name, Path(path), name in negate))
    unknown = set(negate) - names
    if unknown:
        raise FiqaError(f"--lower-is-better names no --external method: {', '.join(sorted(unknown))}")
    return out


GENERATORS = ("all-mated", "sampled")
COMPAT_MAX_NONMATED = 200_000  # the recomputed mode costs (discard steps x non-mated pairs)


def _parse_compare(specs) -> list[str] | None:
    """The --compare specs, checked for the A:B form; they are split against the method names in the report."""
    for spec in specs:
        if spec.strip(":").count(":") == 0:
            raise FiqaError(f"--compare '{spec}': use A:B (the difference of normalised pAUC, A - B)")
    return list(specs) or None


def _check_compare(compare: list[str] | None, specs: list[str] | None, recipes, norm: bool,
                   external: list[str]) -> None:
    """Refuse, before the embedding pass, a --compare side that names no method of this run."""
    if not compare:
        return
    from fiqa_trt.engine.perturbations import DEFAULT_SPEC, parse_spec
    from fiqa_trt.evaluation import sweep
    from fiqa_trt.evaluation.report import split_compare

    names = sweep.method_names([parse_spec(x).label() for x in (specs or [DEFAULT_SPEC])])
    names += [f"recipe:{r.name}" for r in recipes] + ([sweep.NORM] if norm else [])
    for spec in compare:
        split_compare(spec, set(names + list(external) + ["random"]))


def build_pairs(settings: EvalSettings):
    """The pair set of the settings: generated or read, limited to `pair_limit`, one half of the identity split."""
    from fiqa_trt.evaluation import protocols, split

    s, seed = settings, settings.scoring.seed
    if s.generator not in GENERATORS:
        raise FiqaError(f"unknown --generator '{s.generator}'; use one of: {', '.join(GENERATORS)}")
    if s.half not in (None, "dev", "test"):
        raise FiqaError(f"--half '{s.half}': use dev or test")
    if s.generate and s.generator == "all-mated":
        pairs = protocols.all_mated_pairs(s.images, s.max_images_per_identity, s.impostors, seed)
    elif s.generate:
        pairs = protocols.generate_pairs(s.images, s.max_mated_per_identity, s.impostors, seed)
    else:
        pairs = protocols.read_pairs(s.pairs, s.images, s.protocol)
    if s.pair_limit is not None:
        pairs = pairs.subset(s.pair_limit)
    if s.half:
        halves = split.identity_split(pairs.identities(), s.split_seed, s.test_fraction)
        pairs = dict(zip(split.SIDES, split.split_pairs(pairs, halves)))[s.half]
    if pairs.mated.all() or not pairs.mated.any():  # say so before the long embedding pass
        raise FiqaError(f"{pairs.describe()}: an EDC needs both mated and non-mated pairs")
    return pairs


def draw_pictures(report: dict, keys: list[str], qualities: dict[str, np.ndarray], root: Path, out_dir: Path,
                  fmrs: list[float] | None = None, methods: list[str] | None = None, max_discard: float = 0.5,
                  faces: int = 16, cols: int = 8, select: str = "spread", grid_method: str | None = None) -> list[Path]:
    """Every picture of an evaluation: EDC per target FMR and mode, histograms, one annotated face grid."""
    from fiqa_trt.evaluation import plots
    from fiqa_trt.evaluation.report import fmr_key

    written = []
    for fmr in fmrs or report["fmrs"]:
        if fmr_key(fmr) not in {fmr_key(f) for f in report["fmrs"]}:
            raise FiqaError(f"the results hold FMR {', '.join(f'{f:g}' for f in report['fmrs'])}, not {fmr:g}")
        if report["verification"]["at_fmr"][fmr_key(fmr)].get("false_non_matches", 1) == 0:
            continue  # no false non-match at 0% discard: a flat line at 0 (the report notes it)
        for mode in report["modes"]:
            suffix = "" if mode == "fixed" else f"_{mode}"
            written += plots.plot_edc(report, fmr, out_dir / f"edc_fmr{fmr_key(fmr)}{suffix}", mode, methods,
                                      max_discard)
    kinds = {m["name"]: m["kind"] for m in report["methods"]}
    shown = {n: q for n, q in qualities.items()
             if (n in methods if methods else kinds.get(n) != "reference")}  # random qualities: no picture
    written += plots.plot_histograms(shown, out_dir / "quality_hist")
    engine = [n for n, kind in kinds.items() if kind == "engine"]
    engine.sort(key=lambda n: not n.startswith("recipe:"))  # the model's recipe first, when it is a method
    name = grid_method or (engine[0] if engine else next(iter(qualities)))
    if name not in qualities:
        raise FiqaError(f"--grid-method: no method '{name}'; the results hold: {', '.join(qualities)}")
    written += plots.plot_face_grid([str(root / k) for k in keys], qualities[name], out_dir / f"faces_{_safe(name)}",
                                    faces, cols, select, title=f"{name}: faces by quality ({select}), lowest first")
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def _session(scoring: ScoringSettings, pair_set):
    """The session of the run (`engine.session.open_session`): the quality recipe evaluated with the specs
    (--recipe, or the model's own), the runner, and the template realigner every embedding of the run goes through,
    verification included (`scoring.realign`, default: the recipe's setting, as for `score`)."""
    from fiqa_trt.engine.session import open_session

    # --views and --agg shape the specs' methods; the recipe's method has its own views
    return open_session(scoring.with_(perturb=(), views=1, agg="mean"))


def _methods(names: tuple[str, ...], session, recipe) -> list:
    """The recipes of --method, resolved for the run's model (a name packaged or calibrated for it, or a file);
    FiqaError for one that is the run's recipe already or given twice."""
    from fiqa_trt.engine.resolve import resolve_recipe

    out = []
    for name in names:
        extra, _ = resolve_recipe(name, session.resolution.model)
        taken = [r.name for r in ([recipe] if recipe is not None else []) + out]
        if extra.name in taken:
            raise FiqaError(f"--method {name}: recipe '{extra.name}' is evaluated already")
        extra.check_runnable()
        out.append(extra)
    return out


def run_eval(settings: EvalSettings, out_dir: str | Path, say: Callable[[str], None] | None = None,
             progress: Callable[[int, int], None] | None = None,
             phase: Callable[[str, int | None], None] | None = None,
             detail: Callable[[str], None] | None = None) -> dict:
    """The whole `fiqa-trt eval` run: pairs, one embedding pass, EDC of every method, files. Returns the report.
    `say`: messages; `phase(name, total)`: each step as it starts (the embedding pass with its image count);
    `progress(n, total)`: images embedded; `detail`: the session's resolution, one line per value with its source
    (-v)."""
    phase = phase or (lambda name, total=None: None)
    from fiqa_trt.evaluation import external as ext
    from fiqa_trt.evaluation import report as rep, sweep
    from fiqa_trt.evaluation.edc import DISCARD_POOLS, PAIR_RULES

    s, scoring = settings, settings.scoring
    scoring.check()
    pairs, generate, pair_quality = s.pairs, s.generate, s.pair_quality
    if pairs and generate:
        raise FiqaError("pass either --pairs FILE or --generate, not both")
    if not pairs and not generate:
        raise FiqaError("no pairs: pass --pairs FILE (a pair list) or --generate (pairs from identity folders)")
    if pair_quality not in PAIR_RULES:
        raise FiqaError(f"unknown --pair-quality '{pair_quality}'; use one of: {', '.join(PAIR_RULES)}")
    fmrs = list(s.fmrs or rep.DEFAULT_FMRS)
    for f in fmrs:
        if not 0 < f < 1:
            raise FiqaError(f"--fmr {f:g} must be strictly between 0 and 1 (e.g. 1e-3)")
    limits = sorted(s.pauc_limits or rep.DEFAULT_LIMITS)
    for lim in limits:
        if not 0 < lim <= 1:
            raise FiqaError(f"--pauc-limit {lim:g} must be in (0, 1]")
    if not 0 < s.plot_max_discard <= 1:
        raise FiqaError("--plot-max-discard must be in (0, 1]")
    if s.discard not in DISCARD_POOLS:
        raise FiqaError(f"unknown --discard '{s.discard}'; use one of: {', '.join(DISCARD_POOLS)}")
    if s.bootstrap < 0 or s.bootstrap == 1:
        raise FiqaError("--bootstrap: 0 (no intervals) or at least 2 resamples")
    if s.bootstrap_seed < 0:
        raise FiqaError(f"--bootstrap-seed {s.bootstrap_seed}: give a seed of at least 0")
    if s.bootstrap and s.discard != "mated":
        raise FiqaError("--bootstrap intervals are computed over the mated comparisons: use --discard mated "
                        "(or --bootstrap 0)")
    externals = _parse_external(list(s.external), list(s.lower_is_better))
    compare = _parse_compare(s.compare)
    pair_set = build_pairs(s)
    out = Path(out_dir)
    cross = None
    if s.cross_quality is not None:
        from fiqa_trt.evaluation.crossquality import CrossQuality, materialise
        from fiqa_trt.evaluation.degradations import REALISTIC

        setting = CrossQuality(s.cross_quality, scoring.seed, tuple(s.cross_quality_kinds) or REALISTIC)
        if say:
            say(f"{setting.describe()}: writing the images to {out / 'cross-quality'}")
        pair_set, counts = materialise(pair_set, setting, out / "cross-quality")
        cross = {"share": setting.share, "seed": setting.seed, "kinds": list(setting.kinds), "degraded": counts}
    if s.compat and int((~pair_set.mated).sum()) > COMPAT_MAX_NONMATED:
        raise FiqaError(f"--compat re-derives the threshold at every discard step, over {int((~pair_set.mated).sum())} "
                        f"non-mated pairs: far too slow; use --impostors {COMPAT_MAX_NONMATED} or fewer with --compat")
    scores = []
    for name, path, negate in externals:  # read and match before the long embedding pass
        values = ext.match_scores(ext.read_scores(path), pair_set.keys, f"score file {path.name}")
        scores.append(rep.Method(name, "external", f"{path}" + (" (negated: lower is better)" if negate else ""),
                                 -values if negate else values))
    specs = list(sweep.ALL_KINDS) + list(scoring.perturb) if s.all_kinds else list(scoring.perturb) or None
    phase("opening the model", None)
    session = _session(scoring, pair_set)
    for line in session.resolution.lines() if detail else ():
        detail(line)
    runner, aligner, template_report = session.runner, session.scorer.aligner, session.template_report
    recipe = session.recipe
    if scoring.recipe is None and session.resolution.sources["recipe"].startswith("no recipe"):
        recipe = None  # the fallback is the seed's view again: nothing to add to the specs' methods
    out.mkdir(parents=True, exist_ok=True)

    extra = _methods(s.methods, session, recipe)
    recipes = ([recipe] if recipe is not None else []) + extra
    _check_compare(compare, specs, recipes, s.norm, [m.name for m in scores])
    plots_on = s.plots
    if plots_on and importlib.util.find_spec("matplotlib") is None:
        plots_on = False
        if say:
            say("pictures skipped: matplotlib is not installed (pip install 'fiqa-trt[eval]'; --no-plots says nothing)")
    if say:
        say(f"{pair_set.describe()}; model {runner.config.name} on {runner.name}")
        say(template_report)
        for r in recipes:
            say(f"{r.describe()}: evaluated as method recipe:{r.name}")
    phase("embedding", len(pair_set.keys))
    started = time.perf_counter()
    embedded = sweep.embed_specs(runner, pair_set.root, pair_set.keys, specs, scoring.views, scoring.agg, scoring.seed,
                                 scoring.batch_size, scoring.threads,
                                 progress=(lambda n: progress(n, len(pair_set.keys))) if progress else None,
                                 recipes=recipes,
                                 placement=session.settings.with_(realign=session.resolution.realign,
                                                                  realign_each=session.resolution.realign_each))
    elapsed = time.perf_counter() - started
    phase("evaluating (EDC, intervals, files" + (", pictures)" if plots_on else ")"), None)

    report, methods, pair_set = sweep.evaluate_sweep(
        pair_set, embedded, scores, scoring.seed, scoring.agg, with_norm=s.norm, fmrs=fmrs, limits=limits,
        rule=pair_quality, compat=s.compat, grid_max=max(s.plot_max_discard, limits[-1]), discard=s.discard,
        bootstrap=s.bootstrap, bootstrap_seed=s.bootstrap_seed, compare=compare)
    report["settings"] = {
        "model": str(scoring.model or runner.config.name), "model_name": runner.config.name, "backend": runner.name,
        "precision": runner.precision, "specs": embedded.specs, "views": embedded.views,
        "views_per_random_spec": scoring.views, "agg": scoring.agg, "seed": scoring.seed,
        "batch_size": scoring.batch_size, "embedding_pass_seconds": round(elapsed, 1),
        "images_per_second": round(len(pair_set.keys) / elapsed, 2) if elapsed > 0 else None,
        "protocol": {"pairs": s.pairs, "generate": s.generate, "generator": s.generator if s.generate else None,
                     "max_images_per_identity": s.max_images_per_identity, "impostors": s.impostors,
                     "pair_limit": s.pair_limit, "half": s.half, "split_seed": s.split_seed,
                     "test_fraction": s.test_fraction, "cross_quality": cross},
        "edc": {"pair_quality": pair_quality, "discard": s.discard, "bootstrap": s.bootstrap,
                "bootstrap_seed": s.bootstrap_seed, "norm": s.norm},
        "recipe": recipe.to_dict() if recipe is not None else None,
        "methods": [r.to_dict() for r in extra], "template_check": template_report,
        "realigned": aligner is not None, "resolution": session.resolution.to_dict()}
    rep.write_report(report, out)
    rep.write_qualities(out / "qualities.csv", pair_set.keys, methods, embedded.errors)
    if plots_on:
        draw_pictures(report, pair_set.keys, {m.name: m.quality for m in methods}, pair_set.root, out,
                      max_discard=s.plot_max_discard)
    if say:
        say(f"written to {out}/: results.json, results.csv, results.md, qualities.csv"
            + (", pictures (PNG + SVG)" if plots_on else ""))
    return report
