"""One engine pass that holds every candidate recipe of a model: the originals and the union of the candidates' views,
every observable layer's L2 norm of every forward, embedded once and cached, so that each candidate's signals are
read off the sub-pass of its own views (`quality.Pass.select`) by the recipe code that scores (`Recipe.read_signals`).

A view's embedding does not depend on the other views of its pass (fixed perturbation specs, each computed on its
own), so a candidate's signals on the sub-pass are the ones a session with that candidate alone computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def superset_recipe(base, specs: tuple[str, ...], layers: tuple[str, ...]):
    """A recipe placing crops as `base` does, with the views `specs` and every layer of `layers` observed."""
    from fiqa_trt.quality import Recipe

    return Recipe("superset", tuple(specs), "weighted_log", signals=(("obs:0", 1.0),), realign=base.realign,
                  realign_each=base.realign_each, layers=tuple(layers))


def embed(runner, recipe, root, keys: list[str], cache: Path, mode: tuple[str, bool] | None = None,
          batch_size: int = 32) -> dict:
    """{"keys", "embeddings" (N, 1 + K, D) float32, "observed" (N, 1 + K, L) float32 or absent} of the images
    `root/key` through a session of `recipe` (placement `mode`, else the recipe's), cached in `cache` (.npz)."""
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate

    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files} | {"keys": [str(k) for k in z["keys"]]}
    session = calibrate.fit_session(runner, ScoringSettings(seed=0, batch_size=batch_size), recipe,
                                    mode or (recipe.realign, recipe.realign_each))
    emb, obs, ok = [], [], []
    for batch in session.scorer.embed([Item(str(Path(root) / k), k) for k in keys]):
        bad = [it for it in batch.items if it.error is not None]
        if bad:
            raise SystemExit(f"{bad[0].key}: {bad[0].error}")
        ok += [it.key for it in batch.items]
        emb.append(np.asarray(batch.embeddings, np.float32))
        if batch.observed is not None:
            obs.append(np.asarray(batch.observed, np.float32))
    out = {"keys": np.array(ok), "embeddings": np.concatenate(emb)}
    if obs:
        out["observed"] = np.concatenate(obs)
    save(cache, out)
    return out | {"keys": ok}


def save(path: Path, arrays: dict) -> None:
    """`arrays` to the .npz file `path`, whole or not at all (written beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    partial.replace(path)
