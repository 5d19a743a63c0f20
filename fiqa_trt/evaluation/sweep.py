"""One embedding pass for several perturbation specs: every image is decoded once and its original embedded once.

All specs' views run through one `Scorer` (one DALI pipeline, one runner call per batch, via `Scorer.embed`); the
quality for a spec is the quality kernel applied to the original and that spec's views only. The original
embeddings are kept: they give the verification similarities of the pairs (`pair_similarities`), so the
evaluation needs no second pass over the images. `evaluate_sweep` turns one pass into the report of every spec on
a pair set; `SweepResult.select` gives the rows for another pair set over the same images.

View draws are keyed by (seed, image, index of the view among all views of the run): a spec's qualities here are
those of `fiqa-trt score` with that spec alone only when it comes first; later specs get other (equally
distributed) draws.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fiqa_trt.engine.inputs import Item
from fiqa_trt.engine.perturbations import DEFAULT_SPEC, KINDS, parse_spec
from fiqa_trt.engine.runners.base import Runner
from fiqa_trt.engine.session import open_session
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation.protocols import Pairs
from fiqa_trt.evaluation.report import Method, evaluate, random_method
from fiqa_trt.quality import Pass

log = logging.getLogger("fiqa_trt")

ALL_KINDS = tuple(KINDS)  # every registered perturbation at its default strength


@dataclass
class SweepResult:
    keys: list[str]  # image keys (paths relative to the root), the row order of every array
    originals: np.ndarray  # (N, D) float32 original embeddings; NaN rows for images that failed
    qualities: dict[str, np.ndarray]  # method name -> (N,) float32 qualities, NaN where the image failed
    specs: dict[str, str]  # method name -> full spec label
    views: dict[str, list[str]]  # method name -> its view labels
    errors: dict[str, str] = field(default_factory=dict)  # key -> why the image has no embedding
    seconds: float = 0.0

    def select(self, keys: list[str]) -> "SweepResult":
        """The rows of `keys` (each must have been embedded), in that order: another pair set on the same images."""
        index = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in index]
        if missing:
            raise ValueError(f"{len(missing)} keys were not embedded, e.g. {missing[0]}")
        rows = np.array([index[k] for k in keys], dtype=np.int64)
        return SweepResult(list(keys), self.originals[rows], {n: q[rows] for n, q in self.qualities.items()},
                           self.specs, self.views, {k: e for k, e in self.errors.items() if k in set(keys)},
                           self.seconds)


def method_names(spec_labels: list[str]) -> list[str]:
    """Short names: the perturbation's kind where it is unique in the run, the full spec label otherwise."""
    kinds = [label.split(":", 1)[0] for label in spec_labels]
    return [k if kinds.count(k) == 1 else label for k, label in zip(kinds, spec_labels)]


def embed_specs(runner: Runner, root: str | Path, keys: list[str], specs: list[str] | None = None, views: int = 1,
                agg: str = "mean", seed: int = 0, batch_size: int = 32, threads: int | None = None,
                progress: Callable[[int], None] | None = None, recipes: list | None = None,
                placement: ScoringSettings | None = None) -> SweepResult:
    """Embed `root/key` for every key once, with the views of all `specs`, and score each spec separately.

    `recipes` (quality.Recipe): each becomes a method `recipe:<name>`, its views added to the same pass (a
    view spec already in `specs` is shared). `placement`: the settings of a session whose template check already
    ran (`engine.session`; its resolved realign and realign_each, given explicitly: with the specs' views and no
    recipe the resolver would turn the template check off): every image is put on the template as they say before
    the views, the originals (verification embeddings) included."""
    recipes = list(recipes or [])
    for recipe in recipes:
        recipe.check_runnable()
    specs = list(specs) if specs else [DEFAULT_SPEC]
    own = len(specs)  # the specs that are methods (a recipe's own views are not)
    for recipe in recipes:
        for spec in recipe.perturb:
            if parse_spec(spec).label() not in {parse_spec(x).label() for x in specs}:
                specs.append(spec)
    layers = tuple(dict.fromkeys(x for r in recipes if r.observers is not None for x in r.layers))
    if layers:  # the recipes' observer signals: every forward of the pass also gives those layers' L2 norms
        from fiqa_trt.onnx_export.observers import Observers

        runner = runner.observing(Observers(layers))
    settings = (placement or ScoringSettings()).with_(perturb=tuple(specs), views=views, agg=agg, seed=seed,
                                                      batch_size=batch_size, threads=threads, recipe=None)
    scorer = open_session(settings, runner=runner).scorer
    labels = [s.label() for s in scorer.specs]
    all_labels, labels = labels, labels[:own]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise FiqaError(f"the same perturbation spec is given twice: {', '.join(dup)}")
    names = method_names(labels)
    by_label = {label: i for i, label in enumerate(all_labels)}
    # each method's pass: spec i of a method is the scorer's spec selected[i] (a shared spec is embedded once)
    selected = {name: [i] for i, name in enumerate(names)}
    selected |= {f"recipe:{r.name}": [by_label[parse_spec(spec).label()] for spec in r.perturb] for r in recipes}
    methods = {name: None for name in names} | {f"recipe:{r.name}": r for r in recipes}
    root = Path(root)
    items = [Item(str(root / k), k) for k in keys]
    n = len(items)
    originals: np.ndarray | None = None
    qualities = {name: np.full(n, np.nan, np.float64 if name.startswith("recipe:") else np.float32)
                 for name in methods}
    errors: dict[str, str] = {}
    row, started = 0, time.perf_counter()
    for batch in scorer.embed(items, progress):
        ok = [i for i, it in enumerate(batch.items) if it.error is None]
        for it in batch.items:
            if it.error is not None:
                errors[it.key] = it.error
        if batch.embeddings is not None:
            embedded = Pass(batch.embeddings, scorer.view_specs, batch.observed,
                            scorer.layers if batch.observed is not None else None)
            if originals is None:
                originals = np.full((n, embedded.dim), np.nan, np.float32)
            rows = row + np.array(ok, dtype=np.int64)
            originals[rows] = batch.embeddings[:, 0]
            for name, recipe in methods.items():
                own = embedded.select(selected[name])
                qualities[name][rows] = own.kernel(agg)[1] if recipe is None else recipe.evaluate(own).quality
        row += len(batch.items)
    if originals is None:
        raise FiqaError(f"none of the {n} images could be embedded (first error: {next(iter(errors.values()))})")
    norms = np.linalg.norm(originals.astype(np.float64), axis=1)
    for i in np.flatnonzero(~(np.isfinite(norms) & (norms > 0))):
        errors.setdefault(keys[i], "the model returned a zero or non-finite embedding")
    bad = np.array([k in errors for k in keys])
    originals[bad] = np.nan
    for q in qualities.values():
        q[bad] = np.nan
    spec_of = dict(zip(names, labels)) | {f"recipe:{r.name}": r.describe() for r in recipes}
    views_of = {name: [scorer.views[k].label for i in selected[name] for k, j in enumerate(scorer.view_specs)
                       if j == i] for name in methods}
    return SweepResult(keys, originals, qualities, spec_of, views_of, errors, time.perf_counter() - started)


def pair_similarities(originals: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 1 << 18) -> np.ndarray:
    """Cosine similarity of the original embeddings of each pair (float64; NaN where an embedding is missing),
    in blocks of `block` pairs (2M pairs of 512-d embeddings would otherwise need several GB)."""
    e = originals.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    out = np.empty(len(a), np.float64)
    for start in range(0, len(a), block):
        part = slice(start, start + block)
        out[part] = np.einsum("pd,pd->p", unit[a[part]], unit[b[part]])
    return out


NORM = "embedding-norm"  # the method name of the raw-embedding norm


def norm_method(embedded: SweepResult) -> Method:
    """The L2 norm of each image's original embedding as the model returned it (before any normalisation): a
    quality the embedding pass gives for free (one forward). Meaningless for a model that normalises in its graph
    (every norm 1): FiqaError then."""
    norms = np.linalg.norm(embedded.originals.astype(np.float64), axis=1)
    finite = norms[np.isfinite(norms)]
    if len(finite) and np.ptp(finite) <= 1e-4 * max(float(np.max(finite)), 1e-12):
        raise FiqaError("the model's embeddings all have the same norm (normalised in its graph): the embedding "
                        "norm carries no quality")
    return Method(NORM, "engine", "L2 norm of the raw original embedding (1 forward)", norms)


def evaluate_sweep(pairs: Pairs, embedded: SweepResult, extra: list[Method] | None = None, seed: int = 0,
                   agg: str = "mean", with_norm: bool = False, **evaluate_kwargs) -> tuple[dict, list[Method], Pairs]:
    """Evaluate every spec of `embedded` (+ the raw-embedding norm if `with_norm`, + `extra` methods, + the random
    reference) on `pairs`.

    Pairs with an image that could not be embedded are dropped (said in the report's notes). Returns the report,
    the methods (qualities in the order of `pairs.keys`) and the pairs actually evaluated.
    """
    if embedded.keys != pairs.keys:
        raise ValueError("the embeddings are not in the order of the pair set's keys (use SweepResult.select)")
    failed = np.array([k in embedded.errors for k in pairs.keys])
    keep = ~(failed[pairs.a] | failed[pairs.b])
    if not keep.all():
        note = (f"{int((~keep).sum())} pairs dropped: {int(failed.sum())} images could not be embedded "
                f"(e.g. {next(iter(embedded.errors.items()))})")
        log.warning(note)
        pairs = Pairs(pairs.root, pairs.keys, pairs.a[keep], pairs.b[keep], pairs.mated[keep], pairs.source,
                      pairs.notes + [note])
    similarity = pair_similarities(embedded.originals, pairs.a, pairs.b)
    methods = [Method(name, "engine", f"{embedded.specs[name]} ({len(embedded.views[name])} view(s), {agg})",
                      q.astype(np.float64)) for name, q in embedded.qualities.items()]
    if with_norm:
        methods.append(norm_method(embedded))
    taken = {m.name for m in methods} | {"random"}
    for m in extra or []:
        if m.name in taken:
            raise FiqaError(f"the method name '{m.name}' is taken by this run; name the score file otherwise")
        taken.add(m.name)
    methods += list(extra or []) + [random_method(len(pairs.keys), seed)]
    return evaluate(pairs, similarity, methods, **evaluate_kwargs), methods, pairs
