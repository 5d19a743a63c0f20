"""The CuPy quality kernel: pure-Python parts everywhere, parity with the NumPy reference where a GPU is usable."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa_trt import kernels
from fiqa_trt.errors import FiqaError
from fiqa_trt.kernels import cuda
from fiqa_trt.kernels.reference import quality as reference


# ---------------------------------------------------------------------------------------------------- CPU-runnable


@pytest.mark.parametrize("shape, dtype, agg, message", [
    ((4, 1, 8), "float32", "mean", "K >= 1"),
    ((4, 8), "float32", "mean", "K >= 1"),
    ((4, 2, 8), "int8", "mean", "float16, float32 or float64"),
    ((4, 2, 8), "float32", "avg", "unknown aggregation"),
    ((4, 2, cuda.MAX_D + 1), "float32", "mean", "limit"),
])
def test_validation_errors_are_user_errors(shape, dtype, agg, message):
    with pytest.raises(FiqaError, match=message) as info:
        cuda.validate(shape, dtype, agg)
    assert isinstance(info.value, ValueError)  # what the reference raises for the same mistakes


def test_validate_returns_n_k_d():
    assert cuda.validate((5, 3, 512), "float16", "median") == (5, 2, 512)


@pytest.mark.parametrize("k", [1, 4, 16, 64, 65, 200])
def test_launch_config(k):
    launch = cuda.launch_config(4096, k, 512, "median")
    assert launch.grid == (4096,)
    assert launch.block[0] % 32 == 0 and 128 <= launch.block[0] <= 256
    assert launch.fused == (k <= cuda.MAX_FUSED_K)
    assert launch.agg_code == (cuda.AGG_CODES["median"] if launch.fused else cuda.AGG_CODES["none"])
    assert launch.shared_mem == 4 * (512 + 32 + (k if launch.fused else 0))
    assert launch.shared_mem <= 48 * 1024


def test_kernel_source_per_dtype():
    for name, ctype in cuda.DTYPES.items():
        src = cuda.kernel_source(name)
        assert f"fiqa_quality_{name}(const {ctype}* __restrict__ emb" in src
        assert "const T*" not in src


def _nvrtc():
    """cupy's NVRTC binding when libnvrtc loads (no GPU or driver needed to compile to PTX), else a skip."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC not loadable (cupy-cuda13x + nvidia-cuda-nvrtc): {str(exc).splitlines()[0][:150]}")
    return nvrtc


@pytest.mark.parametrize("dtype", list(cuda.DTYPES))
def test_kernel_compiles_to_ptx_with_nvrtc(dtype):
    """A real compile of the kernel source (NVRTC, sm_90 PTX): needs the library, not a GPU."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(cuda.kernel_source(dtype), f"{dtype}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, ["--gpu-architecture=compute_90", "-std=c++17"])
        except Exception:
            pytest.fail(nvrtc.getProgramLog(prog))
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert f".entry fiqa_quality_{dtype}" in ptx


def test_dispatch_rejects_unknown_arrays():
    with pytest.raises(TypeError, match="no quality kernel"):
        kernels.quality([[[1.0]]], "mean")


# ---------------------------------------------------------------------------------------------------- GPU

_reason = cuda.usable_device()


def gpu(test):
    """A test that needs a CUDA device: marked `gpu` (the device machine runs those alone), skipped without one."""
    return pytest.mark.gpu(pytest.mark.skipif(_reason is not None, reason=f"CuPy kernel needs a CUDA device: {_reason}")(test))


def _embeddings(n, k, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 1, d))
    emb = base + 0.3 * rng.standard_normal((n, 1 + k, d))  # views near their original: cosines around 0.9
    emb[1, :] = 0.0  # an image whose embeddings are all zero
    emb[2, 1 + k // 2] = 0.0  # one zero view
    emb[3, 0] = 0.0  # a zero original
    return emb.astype(dtype)


@gpu
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float16", 2e-3)])
@pytest.mark.parametrize("k", [1, 4, 16, 100])
@pytest.mark.parametrize("agg", ["mean", "min", "median"])
@pytest.mark.parametrize("sentinel", [float("nan"), 7.0])
def test_matches_reference(dtype, tol, k, agg, sentinel):
    import cupy as cp

    emb = _embeddings(37, k, 512, dtype)
    want_cos, want_q = reference(emb, agg)
    cos = cp.full((37, k), sentinel, cp.float32)
    q = cp.full((37,), sentinel, cp.float32)
    cuda.quality(cp.asarray(emb), agg, out=(cos, q))
    _assert_matches(cp.asnumpy(cos), cp.asnumpy(q), want_cos, want_q, tol, sentinel=7.0)
    assert np.isnan(want_q[[1, 2, 3]]).all()


def _assert_matches(got_cos, got_q, want_cos, want_q, tol, sentinel):
    """Every element written (no sentinel left), NaN exactly where the reference has NaN, the rest within tol."""
    np.testing.assert_array_equal(np.isnan(got_cos), np.isnan(want_cos))
    np.testing.assert_array_equal(np.isnan(got_q), np.isnan(want_q))
    assert not (got_cos == sentinel).any() and not (got_q == sentinel).any()
    ok_c, ok_q = ~np.isnan(want_cos), ~np.isnan(want_q)
    assert np.abs(got_cos[ok_c] - want_cos[ok_c]).max() <= tol
    assert np.abs(got_q[ok_q] - want_q[ok_q]).max() <= tol


@gpu
def test_dispatch_and_empty():
    import cupy as cp

    emb = _embeddings(8, 4, 128, "float32")
    cos, q = kernels.quality(cp.asarray(emb), "mean")
    assert isinstance(cos, cp.ndarray) and cos.dtype == cp.float32 and q.shape == (8,)
    cos, q = kernels.quality(cp.zeros((0, 3, 16), cp.float16), "median")
    assert cos.shape == (0, 2) and q.shape == (0,)


# ---- the kernel's CUDA source run on the CPU (tests/cuda_emulation.py): its logic, with the real launch config


def _emulation_reason():
    from tests.cuda_emulation import compiler_problem

    return compiler_problem()


emulated = pytest.mark.skipif(_emulation_reason() is not None, reason=str(_emulation_reason()))


TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "float64": 1e-5}


@emulated
@pytest.mark.parametrize("dtype, k", [("float32", k) for k in (1, 3, 4, 16, 64)] + [("float16", k) for k in (1, 4, 64)]
                         + [("float64", 4)])
@pytest.mark.parametrize("agg", ["mean", "min", "median"])
def test_emulated_kernel_matches_reference(dtype, k, agg):
    tol = TOLERANCE[dtype]
    from tests.cuda_emulation import quality as emulated_quality

    emb = _embeddings(6, k, 200, dtype, seed=k)  # D=200: not a multiple of the block or of a warp
    emb[4, 1] = np.nan  # a NaN inside one view
    want_cos, want_q = reference(emb, agg)
    got_cos, got_q, launch = emulated_quality(emb, agg)
    assert launch.fused
    _assert_matches(got_cos, got_q, want_cos, want_q, tol, sentinel=-7.0)
    assert np.isnan(want_q[[1, 2, 3, 4]]).all()


@emulated
def test_emulated_kernel_beyond_fused_k_writes_cosines_only():
    from tests.cuda_emulation import quality as emulated_quality

    emb = _embeddings(4, 70, 96, "float32")
    want_cos, _ = reference(emb, "median")
    got_cos, got_q, launch = emulated_quality(emb, "median")
    assert not launch.fused and launch.agg_code == cuda.AGG_CODES["none"]
    np.testing.assert_array_equal(np.isnan(got_cos), np.isnan(want_cos))
    ok = ~np.isnan(want_cos)
    assert np.abs(got_cos[ok] - want_cos[ok]).max() <= 1e-5
    assert (got_q == -7.0).all()  # left for CuPy's reduction


@emulated
def test_emulation_catches_a_broken_kernel(monkeypatch):
    """The emulation can fail: a reduction that skips the last warp's partial sum is caught."""
    from tests import cuda_emulation

    broken = cuda._SOURCE.replace("for (int w = 0; w < warps; ++w)", "for (int w = 0; w < warps - 1; ++w)")
    assert broken != cuda._SOURCE
    monkeypatch.setattr(cuda, "_SOURCE", broken)
    monkeypatch.setattr(cuda_emulation, "_LIBS", {})
    emb = _embeddings(6, 4, 512, "float32")
    got_cos, _, _ = cuda_emulation.quality(emb, "mean")
    want_cos, _ = reference(emb, "mean")
    ok = ~np.isnan(want_cos)
    assert np.abs(got_cos[ok] - want_cos[ok]).max() > 1e-3
