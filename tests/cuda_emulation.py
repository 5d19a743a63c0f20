"""Runs the quality kernel's CUDA source on the CPU: the source of `fiqa_trt.kernels.cuda` compiled as C++ under a
small emulation of the CUDA execution model (one OS thread per CUDA thread of a block, blocks one after another,
`__syncthreads` as a block-wide barrier, `__shfl_down_sync` through a per-warp exchange buffer and barrier, shared
memory as one array). It checks the kernel's logic (indexing, reductions, the NaN rule, the median) with the launch
configuration the real launch uses; it says nothing of GPU timing or memory ordering beyond what barriers give.
Needs a C++20 compiler (`c++`); `emulator()` says why not when there is none.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from fiqa_trt.kernels import cuda

PRELUDE = r"""
#include <barrier>
#include <cstring>
#include <math.h>
#include <memory>
#include <thread>
#include <vector>
#define FIQA_CPU_EMULATION 1
#define __device__
#define __forceinline__ inline
#define __global__
#define __restrict__
#define __shared__
struct Dim3 { unsigned x, y, z; };
static thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim;
static std::barrier<>* block_barrier;
struct Warp { std::unique_ptr<std::barrier<>> bar; float vals[32]; };
static std::vector<Warp>* warp_state;
float smem[MAX_SHARED_FLOATS];
#define __syncthreads() block_barrier->arrive_and_wait()
static inline float __shfl_down_sync(unsigned, float v, int offset) {
    Warp& w = (*warp_state)[threadIdx.x >> 5];
    int lane = threadIdx.x & 31;
    w.vals[lane] = v;
    w.bar->arrive_and_wait();
    float r = lane + offset < 32 ? w.vals[lane + offset] : v;
    w.bar->arrive_and_wait();
    return r;
}
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float fiqa_half_to_float(unsigned short h) {
    unsigned sign = (h >> 15) & 1, exp = (h >> 10) & 31, man = h & 1023;
    float v;
    if (exp == 0) v = ldexpf((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 1024), (int)exp - 25);
    return sign ? -v : v;
}
"""

ENTRY = r"""
extern "C" void emulate(const void* emb, float* cos_out, float* q_out, int N, int K, int D, int agg, int threads) {
    blockDim = {(unsigned)threads, 1, 1};
    std::barrier<> bar(threads);
    block_barrier = &bar;
    std::vector<Warp> warps(threads / 32);
    for (auto& w : warps) w.bar.reset(new std::barrier<>(32));
    warp_state = &warps;
    for (int n = 0; n < N; ++n) {
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([=] {
                threadIdx = {(unsigned)t, 0, 0};
                blockIdx = {(unsigned)n, 0, 0};
                KERNEL((const ELEMENT*)emb, cos_out, q_out, K, D, agg);
            });
        for (auto& th : pool) th.join();
    }
}
"""

_LIBS: dict[str, ctypes.CDLL] = {}


def compiler_problem() -> str | None:
    return None if shutil.which("c++") else "no C++ compiler (c++) to build the CPU emulation of the CUDA kernel"


def _library(dtype_name: str) -> ctypes.CDLL:
    if dtype_name not in _LIBS:
        element = cuda.DTYPES[dtype_name]
        max_floats = cuda.MAX_D + 32 + cuda.MAX_FUSED_K
        source = (PRELUDE.replace("MAX_SHARED_FLOATS", str(max_floats)) + cuda.kernel_source(dtype_name)
                  + ENTRY.replace("KERNEL", f"fiqa_quality_{dtype_name}").replace("ELEMENT", element))
        folder = Path(tempfile.gettempdir()) / "fiqa-trt-cuda-emulation"
        folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        lib = folder / f"kernel_{dtype_name}_{digest}.so"
        if not lib.exists():
            src = folder / f"kernel_{dtype_name}_{digest}.cpp"
            src.write_text(source)
            subprocess.run(["c++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", str(lib), str(src)],
                           check=True, capture_output=True, text=True)
        _LIBS[dtype_name] = ctypes.CDLL(str(lib))
    return _LIBS[dtype_name]


def quality(emb: np.ndarray, agg: str, cos: np.ndarray | None = None, q: np.ndarray | None = None):
    """The kernel's outputs for (N, 1+K, D) embeddings, launched as `kernels.cuda.quality` would launch it.

    cos / q: preallocated float32 outputs (fill them with sentinels to see what the kernel writes). For K over
    MAX_FUSED_K the kernel writes the cosines only (the real launch reduces them with CuPy afterwards)."""
    n, k, d = cuda.validate(emb.shape, str(emb.dtype), agg)
    launch = cuda.launch_config(n, k, d, agg)
    emb = np.ascontiguousarray(emb)
    cos = np.full((n, k), -7.0, np.float32) if cos is None else cos
    q = np.full((n,), -7.0, np.float32) if q is None else q
    data = emb.view(np.uint16) if emb.dtype == np.float16 else emb
    _library(str(emb.dtype)).emulate(
        data.ctypes.data_as(ctypes.c_void_p), cos.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        q.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, k, d, launch.agg_code, launch.block[0])
    return cos, q, launch
