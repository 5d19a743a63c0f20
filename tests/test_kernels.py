import numpy as np
import pytest

from fiqa_trt import kernels


def test_cosines_and_aggregations_match_hand_computation():
    emb = np.array([
        [[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]],      # cos: 1, 0, 1/sqrt(2)
        [[0, 2, 0], [0, -3, 0], [0, 1, 1], [0, 5, 0]],     # cos: -1, 1/sqrt(2), 1
    ], np.float32)
    r = 1 / np.sqrt(2)
    cos, q = kernels.quality(emb, "mean")
    np.testing.assert_allclose(cos, [[1, 0, r], [-1, r, 1]], atol=1e-7)
    np.testing.assert_allclose(q, [(1 + r) / 3, r / 3], atol=1e-7)
    assert cos.dtype == np.float32 and q.dtype == np.float32
    np.testing.assert_allclose(kernels.quality(emb, "min")[1], [0, -1], atol=1e-7)
    np.testing.assert_allclose(kernels.quality(emb, "median")[1], [r, r], atol=1e-7)


def test_scale_invariance_and_float16_input():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((16, 5, 512)).astype(np.float32)
    scaled = emb * rng.uniform(0.1, 10, (16, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(kernels.quality(emb)[1], kernels.quality(scaled)[1], atol=1e-6)
    ref = np.einsum("nd,nkd->nk", *(e / np.linalg.norm(e, axis=-1, keepdims=True) for e in
                                    (emb[:, 0].astype(np.float64), emb[:, 1:].astype(np.float64))))
    np.testing.assert_allclose(kernels.quality(emb.astype(np.float16))[0], ref, atol=2e-3)


def test_zero_embedding_gives_nan_not_a_number():
    emb = np.zeros((1, 2, 4), np.float32)
    emb[0, 1] = 1
    cos, q = kernels.quality(emb)
    assert np.isnan(cos).all() and np.isnan(q).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="aggregation"):
        kernels.quality(np.ones((1, 2, 3), np.float32), "max")
    with pytest.raises(ValueError, match="1\\+K"):
        kernels.quality(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError):
        kernels.quality([[[1.0]]])
