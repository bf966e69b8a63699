"""A compiled CPU kernel for ``out = alpha * A @ X + beta * Y`` with A in CSR.

Why: the sparse product dominates the Chebyshev convolution, and torch's CPU
CSR product runs several times below memory bandwidth on the small, fixed
degree graphs of sampled spheres. This kernel walks rows in parallel, gathers
each neighbour's row of X (contiguous channels), accumulates in registers and
fuses the Chebyshev recursion's ``2 L T_{k-1} - T_{k-2}`` into the same pass.

It is plain C (no torch headers), so it compiles in about a second with the
system C compiler, is cached per source, compiler flags and CPU, and is called
through ctypes (which releases the GIL). If no compiler is found or the build
fails, :func:`load` returns ``None`` and callers fall back to pure torch.
Set ``GRAPHSPHERE_NO_KERNEL=1`` to force the fallback.

X, Y and out are contiguous ``[P, V, Q]`` (``P`` independent blocks such as
the batch, ``Q`` channels); Y may be out itself (each row of Y is read before
that row of out is written), X may not.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["load", "SOURCE"]

SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

/* 64-byte vectors (GCC/Clang vector extensions: lowered to AVX-512, AVX2 or
   NEON as available); the _u types allow unaligned loads and stores. */
typedef float  vf   __attribute__((vector_size(64)));
typedef float  vf_u __attribute__((vector_size(64), aligned(4)));
typedef double vd   __attribute__((vector_size(64)));
typedef double vd_u __attribute__((vector_size(64), aligned(8)));

/* One output row, NV vectors of channels. The accumulators are named
   vectors, so they stay in registers across the loop over neighbours; NA
   independent sets of them (neighbours j, j+1, ... in turn) hide the latency
   of the fused multiply-add chain when a row has few channels. */
#define TILE_FN(NAME, T, VT, VTU, I, NV, NA)                                   \
static inline void NAME(const I *restrict idx, const T *restrict val,          \
                        I j0, I j1, const T *restrict X, int64_t Q,            \
                        const T *restrict y, T *restrict o, T alpha, T beta) { \
    VT acc[NA][NV];                                                            \
    for (int a = 0; a < NA; a++)                                               \
        for (int u = 0; u < NV; u++) acc[a][u] = (VT){0};                      \
    I j = j0;                                                                  \
    for (; j + NA <= j1; j += NA)                                              \
        for (int a = 0; a < NA; a++) {                                         \
            const T v = val[j + a];                                            \
            const VTU *xr = (const VTU *)(X + (int64_t)idx[j + a] * Q);        \
            for (int u = 0; u < NV; u++) acc[a][u] += v * xr[u];               \
        }                                                                      \
    for (; j < j1; j++) {                                                      \
        const T v = val[j];                                                    \
        const VTU *xr = (const VTU *)(X + (int64_t)idx[j] * Q);                \
        for (int u = 0; u < NV; u++) acc[0][u] += v * xr[u];                   \
    }                                                                          \
    for (int a = 1; a < NA; a++)                                               \
        for (int u = 0; u < NV; u++) acc[0][u] += acc[a][u];                   \
    VTU *ov = (VTU *)o;                                                        \
    if (y) { const VTU *yv = (const VTU *)y;                                   \
             for (int u = 0; u < NV; u++) ov[u] = alpha * acc[0][u] + beta * yv[u]; } \
    else   { for (int u = 0; u < NV; u++) ov[u] = alpha * acc[0][u]; }         \
}

#define KERNEL(SUF, T, VT, VTU, I)                                             \
TILE_FN(tile4_##SUF, T, VT, VTU, I, 4, 1)                                         \
TILE_FN(tile2_##SUF, T, VT, VTU, I, 2, 2)                                         \
TILE_FN(tile1_##SUF, T, VT, VTU, I, 1, 4)                                         \
typedef struct {                                                               \
    const I *indptr, *indices; const T *vals, *X, *Y; T *out;                  \
    int64_t V, Q, r0, r1; T alpha, beta;                                       \
} job_##SUF;                                                                   \
static void *rows_##SUF(void *arg) {                                           \
    const job_##SUF *a = (const job_##SUF *)arg;                               \
    const int64_t V = a->V, Q = a->Q, L = 64 / sizeof(T);                      \
    const I *restrict idx = a->indices; const T *restrict val = a->vals;       \
    const T alpha = a->alpha, beta = a->beta;                                  \
    int64_t p = a->r0 / V, i = a->r0 - p * V;                                  \
    for (int64_t r = a->r0; r < a->r1; r++, i++) {                             \
        if (i == V) { i = 0; p++; }                                            \
        const T *Xp = a->X + p * V * Q;                                        \
        const I j0 = a->indptr[i], j1 = a->indptr[i + 1];                      \
        T *o = a->out + r * Q;                                                 \
        const T *y = a->Y ? a->Y + r * Q : NULL;                               \
        int64_t q = 0;                                                         \
        for (; q + 4 * L <= Q; q += 4 * L)                                     \
            tile4_##SUF(idx, val, j0, j1, Xp + q, Q, y ? y + q : NULL, o + q, alpha, beta); \
        if (q + 2 * L <= Q) {                                                  \
            tile2_##SUF(idx, val, j0, j1, Xp + q, Q, y ? y + q : NULL, o + q, alpha, beta); \
            q += 2 * L; }                                                      \
        if (q + L <= Q) {                                                      \
            tile1_##SUF(idx, val, j0, j1, Xp + q, Q, y ? y + q : NULL, o + q, alpha, beta); \
            q += L; }                                                          \
        for (; q < Q; q++) {  /* fewer channels left than one vector */        \
            T s = 0;                                                           \
            for (I j = j0; j < j1; j++) s += val[j] * Xp[(int64_t)idx[j] * Q + q]; \
            o[q] = y ? alpha * s + beta * y[q] : alpha * s;                    \
        }                                                                      \
    }                                                                          \
    return NULL;                                                               \
}                                                                              \
int csrmm_##SUF(const I *indptr, const I *indices, const T *vals,              \
                const T *X, const T *Y, T *out, int64_t P, int64_t V,          \
                int64_t Q, double alpha, double beta, int nthreads) {          \
    enum { MAXT = 256 };                                                       \
    if (nthreads < 1) nthreads = 1;                                            \
    if (nthreads > MAXT) nthreads = MAXT;                                      \
    const int64_t R = P * V;                                                   \
    if (R < nthreads) nthreads = R > 0 ? (int)R : 1;                           \
    job_##SUF jobs[MAXT];                                                      \
    pthread_t tid[MAXT];                                                       \
    int started[MAXT];                                                         \
    for (int t = 0; t < nthreads; t++) {                                       \
        job_##SUF j = {indptr, indices, vals, X, Y, out, V, Q,                 \
                       R * t / nthreads, R * (t + 1) / nthreads,               \
                       (T)alpha, (T)beta};                                     \
        jobs[t] = j;                                                           \
    }                                                                          \
    for (int t = 1; t < nthreads; t++)                                         \
        started[t] = pthread_create(&tid[t], NULL, rows_##SUF, &jobs[t]) == 0; \
    rows_##SUF(&jobs[0]);                                                      \
    for (int t = 1; t < nthreads; t++) {                                       \
        if (started[t]) pthread_join(tid[t], NULL);                            \
        else rows_##SUF(&jobs[t]);  /* no thread: do its share here */         \
    }                                                                          \
    return 0;                                                                  \
}

KERNEL(f32_i32, float, vf, vf_u, int32_t)
KERNEL(f64_i32, double, vd, vd_u, int32_t)
KERNEL(f32_i64, float, vf, vf_u, int64_t)
KERNEL(f64_i64, double, vd, vd_u, int64_t)
"""

# gnu11 and fp-contract: fused multiply-adds in the accumulation (not reassociation).
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fPIC", "-shared", "-pthread",
          "-std=gnu11"]
_lock = threading.Lock()
_state: dict = {}


def _cpu_signature() -> str:
    """What -march=native depends on: a cached build must not move to another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("GRAPHSPHERE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "graphsphere")
    return Path(root) / "kernels"


def _build(cc: str) -> Path:
    key = hashlib.sha256("\n".join([SOURCE, cc, " ".join(_FLAGS), platform.machine(),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"csrmm_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "csrmm.c"
        src.write_text(SOURCE)
        lib = Path(tmp) / "csrmm.so"
        subprocess.run([cc, *_FLAGS, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=120)
        os.replace(lib, target)  # atomic: concurrent builders race harmlessly
    return target


def load():
    """The compiled kernels as ``{(float_dtype_name, index_dtype_name): function}``,
    or ``None`` where they cannot be had (no compiler, build failure, opt-out)."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        _state["lib"] = None
        if os.environ.get("GRAPHSPHERE_NO_KERNEL", "") not in ("", "0"):
            return None
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return None
        try:
            dll = ctypes.CDLL(str(_build(cc)))
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            warnings.warn(f"graphsphere: could not build the CPU sparse kernel ({e}; "
                          f"{detail.decode(errors='replace')[-300:]}); using the slower pure-torch product",
                          RuntimeWarning, stacklevel=3)
            return None
        fns = {}
        p, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
        for fl in ("f32", "f64"):
            for ix in ("i32", "i64"):
                fn = getattr(dll, f"csrmm_{fl}_{ix}")
                fn.argtypes = [p, p, p, p, p, p, i64, i64, i64, dbl, dbl, cint]
                fn.restype = cint
                fns[("float32" if fl == "f32" else "float64", "int32" if ix == "i32" else "int64")] = fn
        _state["lib"] = fns
        return fns
