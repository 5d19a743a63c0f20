"""One embedding pass: the raw embeddings of N originals and their K views, where they were computed.

A `Pass` holds the (N, 1 + K, D) embeddings one runner call gave (the original in column 0, then each view), as
NumPy or CuPy arrays, and for each view the index of the perturbation spec it comes from (`view_specs`). What the
signals read off it is computed there, once, and cached: the L2 norm of every forward, the cosine of every forward
with a centre, the quality kernel's per-view cosines and aggregations (`kernels.quality`). Only per-image results
are brought to the host (`host`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fiqa_trt import kernels


def array_module(array):
    """NumPy or CuPy, whichever `array` belongs to (CuPy is imported only for its own arrays)."""
    if isinstance(array, np.ndarray):
        return np
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    raise TypeError(f"no array module for {type(array).__module__}.{type(array).__name__}")


class Pass:
    """One embedding pass: `embeddings` (N, 1 + K, D), originals first, and `view_specs[k]`, the index of the
    perturbation spec view k comes from; `observed` (N, 1 + K, M), where the runner was asked for them, the reduced
    intermediate activations of the same call (`Runner.forward`'s observer outputs), for signals that read them,
    and `layers`, the layer whose L2 norm each of the M columns is (`onnx_export.observers`, reduction `l2`).
    A pass may hold no view (K = 0): the originals alone, for recipes that read nothing but them.
    Everything derived is computed on the embeddings' device and cached."""

    def __init__(self, embeddings, view_specs: Sequence[int], observed=None, layers: Sequence[str] | None = None):
        if embeddings.ndim != 3 or embeddings.shape[1] != 1 + len(view_specs):
            raise ValueError(f"a pass of {len(view_specs)} view(s) needs (N, {1 + len(view_specs)}, D) embeddings, "
                             f"got shape {tuple(embeddings.shape)}")
        if observed is not None and tuple(observed.shape[:2]) != tuple(embeddings.shape[:2]):
            raise ValueError(f"observer outputs of shape {tuple(observed.shape)} do not match the pass's "
                             f"{tuple(embeddings.shape[:2])} forwards")
        if observed is not None and (layers is None or len(layers) != observed.shape[2]):
            raise ValueError("observer outputs need the name of the layer of each column")
        self.embeddings, self.observed = embeddings, observed
        self.layers = tuple(layers) if observed is not None else ()
        self.view_specs = tuple(int(i) for i in view_specs)
        self.xp = array_module(embeddings)
        self._cache: dict = {}

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[2])

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def norms(self):
        """(N, 1 + K) float32 L2 norms of the raw embeddings: the original's, then each view's."""
        return self._cached("norms", lambda: self.xp.linalg.norm(self.embeddings.astype(self.xp.float32), axis=2))

    def centre_cosines(self, centre: Sequence[float]):
        """(N, 1 + K) float32 cosine of every forward's embedding with the unit vector `centre` (D,)."""
        def compute():
            e = self.embeddings.astype(self.xp.float32)
            c = self.xp.asarray(np.asarray(centre, np.float32))
            with np.errstate(invalid="ignore", divide="ignore"):
                return (e @ c) / self.xp.linalg.norm(e, axis=2)
        return self._cached(("centre", tuple(centre)), compute)

    def kernel(self, agg: str = "mean"):
        """(cosines (N, K), quality (N,)), float32: `kernels.quality` of this pass, each view against its original,
        aggregated by `agg` (the stability score)."""
        if not self.view_specs:  # no view: no cosine, no stability score
            n = len(self)
            return self._cached(("kernel", agg), lambda: (self.xp.zeros((n, 0), self.xp.float32),
                                                          self.xp.full(n, self.xp.nan, self.xp.float32)))
        return self._cached(("kernel", agg), lambda: kernels.quality(self.embeddings, agg))

    def view_cosines(self):
        """(N, K) float32 cosine of each view's embedding with its original's (whichever aggregation computed it)."""
        done = [v for k, v in self._cache.items() if isinstance(k, tuple) and k[0] == "kernel"]
        return done[0][0] if done else self.kernel()[0]

    def layer_norms(self, layers: Sequence[str]):
        """(N, 1 + K, len(layers)) float32 L2 norms of those layers' activations in every forward (observer outputs
        of the runner call that embedded the pass)."""
        missing = [x for x in layers if x not in self.layers]
        if missing:
            from fiqa_trt.errors import FiqaError

            raise FiqaError(f"the pass holds no observer output of layer {missing[0]!r} (observed: "
                            f"{', '.join(self.layers) or 'none'})")
        cols = [self.layers.index(x) for x in layers]
        return self.observed[:, :, cols].astype(self.xp.float32)

    def columns(self, spec: int) -> list[int]:
        """The view columns (0-based, into the K views) that come from spec `spec`."""
        return [k for k, i in enumerate(self.view_specs) if i == spec]

    def select(self, specs: Sequence[int]) -> "Pass":
        """The pass of the originals and the views of `specs`, renumbered: spec i of the new pass is spec `specs[i]`
        of this one (its views in their order here). For one method of a pass that embeds several (a sweep)."""
        cols = [0] + [1 + k for i in specs for k in self.columns(i)]
        renumber = [new for new, i in enumerate(specs) for _ in self.columns(i)]
        return Pass(self.embeddings[:, cols], renumber, None if self.observed is None else self.observed[:, cols],
                    self.layers)

    def host(self, array) -> np.ndarray:
        """`array` as a NumPy array (a copy from the device for CuPy)."""
        if isinstance(array, np.ndarray):
            return array
        return self.xp.asnumpy(array)
