"""CuPy implementation of `quality(emb, agg)`: one fused CUDA kernel for L2 norm, per-view cosine and aggregation.

NOT YET EXECUTED ON A GPU. Tested here: argument validation, launch configuration, NVRTC compilation to PTX, and
the kernel source itself run on the CPU by `tests/cuda_emulation.py` (compiled as C++ with one OS thread per CUDA
thread, block barriers for __syncthreads and per-warp barriers for the shuffles) against the NumPy reference.
`tests/test_kernels_cuda.py` compares the real kernel with the reference where a CUDA device is usable, and
`benchmarks/device_check.py` measures it.

Layout: one thread block per image. Phase 1: the block loads the original's D values into shared memory as float32
and reduces its squared norm. Phase 2: one warp per view (warps stride over the K views) accumulates dot(x0, xk) and
|xk|^2 in float32 and reduces them with warp shuffles, so no block-wide synchronisation per view. Phase 3: thread 0
aggregates the K cosines held in shared memory (mean, min, or median by insertion sort, K <= MAX_FUSED_K). For
larger K the same kernel writes the cosines only and CuPy reduces them. Inputs: float16, float32 (float64 is read
as double and accumulated in float32). Same NaN rule as the reference: a view or original with a zero norm gives a
NaN cosine, and any NaN cosine gives a NaN quality, whatever the aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa_trt.errors import FiqaError
from fiqa_trt.kernels.reference import AGGREGATIONS

MAX_FUSED_K = 64  # cosines kept in shared memory and aggregated in the kernel up to this K
MAX_D = 8192  # D floats of the original in shared memory (32 KiB) stay under the 48 KiB default limit
AGG_CODES = {"mean": 0, "min": 1, "median": 2, "none": 3}  # none: cosines only (K > MAX_FUSED_K)
DTYPES = {"float16": "unsigned short", "float32": "float", "float64": "double"}


class KernelArgumentError(FiqaError, ValueError):
    """Bad arguments to the kernel: a FiqaError for the CLI, a ValueError like the reference raises."""


@dataclass(frozen=True)
class Launch:
    grid: tuple[int]
    block: tuple[int]
    shared_mem: int  # bytes of dynamic shared memory
    agg_code: int  # what the kernel aggregates (AGG_CODES); 3: cosines only, CuPy aggregates
    fused: bool


def validate(shape: tuple, dtype_name: str, agg: str) -> tuple[int, int, int]:
    """(N, K, D) of an (N, 1+K, D) embedding array, or KernelArgumentError."""
    if agg not in AGGREGATIONS:
        raise KernelArgumentError(f"unknown aggregation {agg!r}; use one of {', '.join(AGGREGATIONS)}")
    if len(shape) != 3 or shape[1] < 2:
        raise KernelArgumentError(f"expected (N, 1+K, D) embeddings with K >= 1, got shape {tuple(shape)}")
    if dtype_name not in DTYPES:
        raise KernelArgumentError(f"embeddings must be float16, float32 or float64, not {dtype_name}")
    n, views, d = (int(v) for v in shape)
    if d < 1:
        raise KernelArgumentError(f"embedding size must be at least 1, got shape {tuple(shape)}")
    if d > MAX_D:
        raise KernelArgumentError(f"embedding size {d} is over the CUDA kernel's limit of {MAX_D}")
    return n, views - 1, d


def launch_config(n: int, k: int, d: int, agg: str) -> Launch:
    """Grid, block and shared memory for N images of K views of size D."""
    warps = min(8, max(4, k))  # 128..256 threads: enough loads in flight for phase 1, a warp per view in phase 2
    fused = k <= MAX_FUSED_K
    shared = 4 * (d + 32 + (k if fused else 0))  # original + per-warp partial norms + cosines
    return Launch((n,), (32 * warps,), shared, AGG_CODES[agg] if fused else AGG_CODES["none"], fused)


_SOURCE = r"""
__device__ __forceinline__ float load(const unsigned short* p, long long i) {
#ifdef FIQA_CPU_EMULATION
    return fiqa_half_to_float(p[i]);
#else
    float f; unsigned short h = p[i];
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}
__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load(const double* p, long long i) { return (float)p[i]; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void fiqa_quality_T(const T* __restrict__ emb, float* __restrict__ cos_out,
                                          float* __restrict__ q_out, int K, int D, int agg) {
    extern __shared__ float smem[];
    float* x0 = smem;            // D
    float* part = smem + D;      // 32
    float* cs = part + 32;       // K (fused only)
    const long long n = blockIdx.x;
    const T* base = emb + n * (long long)(K + 1) * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float nan = __int_as_float(0x7fc00000);

    float s = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) { float v = load(base, i); x0[i] = v; s += v * v; }
    s = warp_sum(s);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) { float t = 0.f; for (int w = 0; w < warps; ++w) t += part[w]; part[31] = t; }
    __syncthreads();
    const float n0 = part[31];

    for (int k = warp; k < K; k += warps) {
        const T* xk = base + (long long)(k + 1) * D;
        float dot = 0.f, nk = 0.f;
        for (int i = lane; i < D; i += 32) { float v = load(xk, i); dot += x0[i] * v; nk += v * v; }
        dot = warp_sum(dot); nk = warp_sum(nk);
        if (lane == 0) {
            float c = (n0 > 0.f && nk > 0.f) ? dot / (sqrtf(n0) * sqrtf(nk)) : nan;  // NaN inputs stay NaN
            c = c > 1.f ? 1.f : (c < -1.f ? -1.f : c);  // a clip that keeps NaN (fminf/fmaxf would drop it)
            cos_out[n * K + k] = c;
            if (agg != 3) cs[k] = c;
        }
    }
    if (agg == 3) return;
    __syncthreads();
    if (threadIdx.x != 0) return;
    bool any_nan = false;
    for (int k = 0; k < K; ++k) any_nan |= (cs[k] != cs[k]);
    float q;
    if (any_nan) q = nan;
    else if (agg == 0) { float t = 0.f; for (int k = 0; k < K; ++k) t += cs[k]; q = t / K; }
    else if (agg == 1) { q = cs[0]; for (int k = 1; k < K; ++k) q = cs[k] < q ? cs[k] : q; }
    else {
        for (int a = 1; a < K; ++a) { float v = cs[a]; int b = a - 1;
            while (b >= 0 && cs[b] > v) { cs[b + 1] = cs[b]; --b; } cs[b + 1] = v; }
        q = (K & 1) ? cs[K / 2] : 0.5f * (cs[K / 2 - 1] + cs[K / 2]);
    }
    q_out[n] = q;
}
"""


def kernel_source(dtype_name: str) -> str:
    """The CUDA source for one input dtype (the kernel is named fiqa_quality_<dtype>)."""
    return _SOURCE.replace("fiqa_quality_T", f"fiqa_quality_{dtype_name}").replace(
        "const T*", f"const {DTYPES[dtype_name]}*")


_KERNELS: dict = {}


def _cupy():
    from fiqa_trt.errors import require

    return require("cupy", extra="gpu")


def _kernel(dtype_name: str):
    if dtype_name not in _KERNELS:
        cp = _cupy()
        _KERNELS[dtype_name] = cp.RawKernel(kernel_source(dtype_name), f"fiqa_quality_{dtype_name}")
    return _KERNELS[dtype_name]


def quality(emb, agg: str = "mean", out=None, stream=None):
    """emb: cupy (N, 1+K, D) float16/32/64, originals first -> (cos (N, K) float32, quality (N,) float32) on the GPU.

    out: optional preallocated (cos, quality) float32 CuPy arrays (tests fill them with sentinels first).
    """
    cp = _cupy()
    n, k, d = validate(emb.shape, str(emb.dtype), agg)
    emb = cp.ascontiguousarray(emb)
    if out is None:
        cos, q = cp.empty((n, k), cp.float32), cp.empty((n,), cp.float32)
    else:
        cos, q = out
        if cos.shape != (n, k) or q.shape != (n,) or cos.dtype != cp.float32 or q.dtype != cp.float32 \
                or not (cos.flags.c_contiguous and q.flags.c_contiguous):
            raise KernelArgumentError(f"out must be contiguous float32 arrays of shapes {(n, k)} and {(n,)}")
    if n == 0:
        return cos, q
    launch = launch_config(n, k, d, agg)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        _kernel(str(emb.dtype))(launch.grid, launch.block, (emb, cos, q, cp.int32(k), cp.int32(d),
                                                            cp.int32(launch.agg_code)), shared_mem=launch.shared_mem)
        if not launch.fused:
            reduce = {"mean": cp.mean, "min": cp.min, "median": cp.median}[agg]
            value = reduce(cos, axis=1).astype(cp.float32)
            q[...] = cp.where(cp.isnan(cos).any(axis=1), cp.float32(float("nan")), value)
    return cos, q


def usable_device() -> str | None:
    """None when a CUDA device is usable through CuPy, else the reason it is not."""
    try:
        cp = _cupy()
    except FiqaError as exc:
        return str(exc)
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return f"no CUDA device: {str(exc)[:200]}"
    if count < 1:
        return "no CUDA device"
    try:
        cp.zeros(1).sum()
    except Exception as exc:
        return f"CUDA device not usable: {str(exc)[:200]}"
    return None
