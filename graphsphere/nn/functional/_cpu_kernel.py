"""A compiled CPU kernel for one fused step of a Chebyshev recursion.

Why: a Chebyshev convolution is memory-bound. Done with separate torch calls,
each step reads and writes whole activations several times (sparse product,
combination with the previous term, channel mixing), and torch's kernels for
these thin shapes run well below memory bandwidth. This kernel does a whole
step in one pass over the vertices; for each vertex (row) i it forms

    t_i = alpha * sum_j L_ij X_j + beta * Y_i + E_i @ Wpre + obias     [P, C]

and then, as asked, stores t_i, accumulates ``acc_i (+)= t_i @ Wpost``, and
accumulates ``gram += G_i^T t_i``. Here X, Y, E, G are ``[V, P, channels]``
signals with arbitrary vertex and block strides (channels contiguous), so the
batch-major input of a layer is read in place; ``out`` and ``acc`` are
contiguous vertex-major ``[V, P, channels]``. ``out`` may be Y itself (row i of
Y is read before row i of out is written), never X.

It is plain C with GCC/Clang vector extensions (no torch headers), so it
compiles in about a second with the system C compiler; the library is cached
per source, flags and CPU, and called through ctypes (which releases the GIL).
Rows are split over ``nthreads`` pthreads. If no compiler is found or the
build fails, :func:`load` returns None and callers use pure torch instead. Set
``GRAPHSPHERE_NO_KERNEL=1`` to force that.
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

__all__ = ["load", "advise_hugepages", "SOURCE"]

_HEADER = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

/* 64-byte vectors, lowered to AVX-512, AVX2 or NEON as available; the _u
   types allow unaligned loads and stores. */
typedef float  vec_float   __attribute__((vector_size(64)));
typedef float  vecu_float  __attribute__((vector_size(64), aligned(4)));
typedef double vec_double  __attribute__((vector_size(64)));
typedef double vecu_double __attribute__((vector_size(64), aligned(8)));
#define MAXT 256
"""

# One copy per (T, I): @T@ is float or double, @I@ the index type, @S@ a suffix.
_BODY = r"""
typedef struct {
    const @I@ *indptr, *indices; const @T@ *vals;
    int64_t V, P, C;
    const @T@ *X; int64_t xsv, xsp; @T@ alpha;
    const @T@ *Y; int64_t ysv, ysp; @T@ beta;
    const @T@ *E; int64_t esv, esp, Ce; const @T@ *Wpre;
    const @T@ *obias; @T@ *out;
    const @T@ *Wpost; int64_t Co; @T@ *acc; int acc_init; const @T@ *abias;
    const @T@ *G; int64_t gsv, gsp, Cg; @T@ *gram;
    int64_t r0, r1;
} job_@S@;

/* NV vectors of one row's channels: sum_j v_j x_j over the row's neighbours,
   with NA independent accumulator sets to hide the multiply-add latency when
   the row is short. Writes alpha * sum (+ beta * y) to t. */
#define SPARSE_TILE(NV, NA)                                                    \
static inline void sparse_tile##NV##_@S@(const @I@ *restrict idx, const @T@ *restrict val, \
        @I@ j0, @I@ j1, const @T@ *restrict x, int64_t xsv, @T@ alpha,        \
        const @T@ *restrict y, @T@ beta, @T@ *restrict t) {                    \
    vec_@T@ a[NA][NV];                                                          \
    for (int u = 0; u < NA; u++) for (int w = 0; w < NV; w++) a[u][w] = (vec_@T@){0}; \
    @I@ j = j0;                                                                \
    for (; j + NA <= j1; j += NA)                                              \
        for (int u = 0; u < NA; u++) {                                         \
            const vecu_@T@ *xr = (const vecu_@T@ *)(x + (int64_t)idx[j + u] * xsv); \
            const @T@ v = val[j + u];                                          \
            for (int w = 0; w < NV; w++) a[u][w] += v * xr[w];                 \
        }                                                                      \
    for (; j < j1; j++) {                                                      \
        const vecu_@T@ *xr = (const vecu_@T@ *)(x + (int64_t)idx[j] * xsv);    \
        const @T@ v = val[j];                                                  \
        for (int w = 0; w < NV; w++) a[0][w] += v * xr[w];                     \
    }                                                                          \
    for (int u = 1; u < NA; u++) for (int w = 0; w < NV; w++) a[0][w] += a[u][w]; \
    vecu_@T@ *tv = (vecu_@T@ *)t;                                              \
    if (y) { const vecu_@T@ *yv = (const vecu_@T@ *)y;                         \
             for (int w = 0; w < NV; w++) tv[w] = alpha * a[0][w] + beta * yv[w]; } \
    else   { for (int w = 0; w < NV; w++) tv[w] = alpha * a[0][w]; }           \
}
SPARSE_TILE(4, 1)
SPARSE_TILE(2, 2)
SPARSE_TILE(1, 4)
#undef SPARSE_TILE

/* t[0:n] = alpha * sum_j v_j x_j[0:n] + beta * y[0:n] (y may be NULL). */
static void sparse_seg_@S@(const @I@ *restrict idx, const @T@ *restrict val, @I@ j0, @I@ j1,
                           const @T@ *restrict x, int64_t xsv, @T@ alpha,
                           const @T@ *restrict y, @T@ beta, @T@ *restrict t, int64_t n) {
    const int64_t L = 64 / sizeof(@T@);
    int64_t q = 0;
    for (; q + 4 * L <= n; q += 4 * L)
        sparse_tile4_@S@(idx, val, j0, j1, x + q, xsv, alpha, y ? y + q : NULL, beta, t + q);
    if (q + 2 * L <= n) {
        sparse_tile2_@S@(idx, val, j0, j1, x + q, xsv, alpha, y ? y + q : NULL, beta, t + q); q += 2 * L; }
    if (q + L <= n) {
        sparse_tile1_@S@(idx, val, j0, j1, x + q, xsv, alpha, y ? y + q : NULL, beta, t + q); q += L; }
    for (; q < n; q++) {  /* fewer channels left than one vector */
        @T@ s = 0;
        for (@I@ j = j0; j < j1; j++) s += val[j] * x[(int64_t)idx[j] * xsv + q];
        t[q] = y ? alpha * s + beta * y[q] : alpha * s;
    }
}

/* D[r, 0:no] += sum_k A(r, k) B[k, 0:no] for r < nr, with A(r, k) =
   A[r * ars + k * acs]: the small matrix products of one row (channel mixing,
   Gram accumulation). Tiles of RB rows x NV vectors: RB * NV independent
   accumulators in registers hide the multiply-add latency. */
#define GEMM_TILE(RB, NV)                                                      \
static inline void gemm_tile_##RB##_##NV##_@S@(int64_t nk, const @T@ *restrict A, int64_t ars, \
        int64_t acs, const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds) { \
    vec_@T@ a[RB][NV];                                                          \
    const int64_t L = 64 / sizeof(@T@);                                        \
    for (int u = 0; u < RB; u++)                                               \
        for (int w = 0; w < NV; w++) a[u][w] = *(const vecu_@T@ *)(D + u * ds + w * L); \
    for (int64_t k = 0; k < nk; k++) {                                         \
        vec_@T@ b[NV];                                                          \
        for (int w = 0; w < NV; w++) b[w] = *(const vecu_@T@ *)(B + k * bs + w * L); \
        for (int u = 0; u < RB; u++) {                                         \
            const @T@ s = A[u * ars + k * acs];                                \
            for (int w = 0; w < NV; w++) a[u][w] += s * b[w];                  \
        }                                                                      \
    }                                                                          \
    for (int u = 0; u < RB; u++)                                               \
        for (int w = 0; w < NV; w++) *(vecu_@T@ *)(D + u * ds + w * L) = a[u][w]; \
}
/* A single row: KA accumulator sets over alternating k break the chain of
   dependent multiply-adds. */
#define GEMM_TILE1(NV, KA)                                                     \
static inline void gemm_tile_1_##NV##_@S@(int64_t nk, const @T@ *restrict A, int64_t ars, \
        int64_t acs, const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds) { \
    vec_@T@ a[KA][NV];                                                          \
    const int64_t L = 64 / sizeof(@T@);                                        \
    (void)ars; (void)ds;                                                       \
    for (int w = 0; w < NV; w++) a[0][w] = *(const vecu_@T@ *)(D + w * L);    \
    for (int u = 1; u < KA; u++) for (int w = 0; w < NV; w++) a[u][w] = (vec_@T@){0}; \
    int64_t k = 0;                                                             \
    for (; k + KA <= nk; k += KA)                                              \
        for (int u = 0; u < KA; u++) {                                         \
            const @T@ s = A[(k + u) * acs];                                    \
            for (int w = 0; w < NV; w++) a[u][w] += s * *(const vecu_@T@ *)(B + (k + u) * bs + w * L); \
        }                                                                      \
    for (; k < nk; k++) {                                                      \
        const @T@ s = A[k * acs];                                              \
        for (int w = 0; w < NV; w++) a[0][w] += s * *(const vecu_@T@ *)(B + k * bs + w * L); \
    }                                                                          \
    for (int u = 1; u < KA; u++) for (int w = 0; w < NV; w++) a[0][w] += a[u][w]; \
    for (int w = 0; w < NV; w++) *(vecu_@T@ *)(D + w * L) = a[0][w];          \
}
GEMM_TILE(2, 4)
GEMM_TILE1(4, 2)
GEMM_TILE(4, 2)
GEMM_TILE1(2, 4)
GEMM_TILE(8, 1)
GEMM_TILE1(1, 8)
#undef GEMM_TILE1
#undef GEMM_TILE

static void small_gemm_@S@(int64_t nr, int64_t nk, int64_t no, const @T@ *restrict A, int64_t ars,
                           int64_t acs, const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds) {
    const int64_t L = 64 / sizeof(@T@);
    int64_t o = 0;
#define COLS(NV, RB)                                                           \
    for (; o + NV * L <= no; o += NV * L) {                                    \
        int64_t r = 0;                                                         \
        for (; r + RB <= nr; r += RB)                                          \
            gemm_tile_##RB##_##NV##_@S@(nk, A + r * ars, ars, acs, B + o, bs, D + r * ds + o, ds); \
        for (; r < nr; r++)                                                    \
            gemm_tile_1_##NV##_@S@(nk, A + r * ars, ars, acs, B + o, bs, D + r * ds + o, ds); \
    }
    COLS(4, 2)
    COLS(2, 4)
    COLS(1, 8)
#undef COLS
    for (; o < no; o++)  /* fewer columns left than one vector */
        for (int64_t r = 0; r < nr; r++) {
            @T@ s = D[r * ds + o];
            for (int64_t k = 0; k < nk; k++) s += A[r * ars + k * acs] * B[k * bs + o];
            D[r * ds + o] = s;
        }
}

/* Rows are handled in blocks of VB vertices (VB * P >= 16 block rows), so
   that the small matrix products have enough independent rows to fill the
   vector units even with batch 1. */
static void *rows_@S@(void *arg) {
    job_@S@ *a = (job_@S@ *)arg;
    const int64_t P = a->P, C = a->C, PC = P * C;
    const int64_t VB = P >= 16 ? 1 : (16 + P - 1) / P;
    /* Software prefetch of the sparse operand's row PF rows (128 KB) ahead:
       NESTED neighbours jump around within a few hundred rows, which the
       hardware stream prefetchers follow poorly (measured: 20-30% faster). */
    const int64_t row_bytes = PC * (int64_t)sizeof(@T@), PF = (128 << 10) / row_bytes + 1;
    @T@ *t = (@T@ *)aligned_alloc(64, ((VB * PC * sizeof(@T@) + 63) / 64) * 64);
    if (!t) { a->r1 = -1; return NULL; }
    /* Blocks of a row adjacent in X (and Y): one long segment per row. */
    const int merge = a->X && a->xsp == C && (!a->Y || a->ysp == C);
    /* Operands whose (vertex, block) rows are equally spaced: one product per vertex block. */
    const int e_flat = a->E && (P == 1 || a->esv == P * a->esp);
    const int g_flat = a->G && (P == 1 || a->gsv == P * a->gsp);
    for (int64_t i0 = a->r0; i0 < a->r1; i0 += VB) {
        const int64_t nb = a->r1 - i0 < VB ? a->r1 - i0 : VB;
        for (int64_t i = i0; i < i0 + nb; i++) {
            @T@ *ti = t + (i - i0) * PC;
            if (merge && i + PF < a->V) {
                const char *pp = (const char *)(a->X + (i + PF) * a->xsv);
                for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(pp + b);
            }
            if (a->X) {
                const @I@ j0 = a->indptr[i], j1 = a->indptr[i + 1];
                if (merge)
                    sparse_seg_@S@(a->indices, a->vals, j0, j1, a->X, a->xsv, a->alpha,
                                   a->Y ? a->Y + i * a->ysv : NULL, a->beta, ti, PC);
                else
                    for (int64_t p = 0; p < P; p++)
                        sparse_seg_@S@(a->indices, a->vals, j0, j1, a->X + p * a->xsp, a->xsv, a->alpha,
                                       a->Y ? a->Y + i * a->ysv + p * a->ysp : NULL, a->beta, ti + p * C, C);
            } else if (a->Y) {
                for (int64_t p = 0; p < P; p++) {
                    const @T@ *y = a->Y + i * a->ysv + p * a->ysp;
                    for (int64_t c = 0; c < C; c++) ti[p * C + c] = a->beta * y[c];
                }
            } else {
                memset(ti, 0, PC * sizeof(@T@));
            }
        }
        if (a->E) {  /* t[r, :] += E_r @ Wpre */
            const int64_t rs = P == 1 ? a->esv : a->esp;
            if (e_flat)
                small_gemm_@S@(nb * P, a->Ce, C, a->E + i0 * a->esv, rs, 1, a->Wpre, C, t, C);
            else
                for (int64_t v = 0; v < nb; v++)
                    small_gemm_@S@(P, a->Ce, C, a->E + (i0 + v) * a->esv, a->esp, 1, a->Wpre, C, t + v * PC, C);
        }
        if (a->obias)
            for (int64_t r = 0; r < nb * P; r++)
                for (int64_t c = 0; c < C; c++) t[r * C + c] += a->obias[c];
        if (a->out) memcpy(a->out + i0 * PC, t, nb * PC * sizeof(@T@));
        if (a->Wpost) {  /* acc[r, :] (+)= t[r, :] @ Wpost (+ abias) */
            const int64_t Co = a->Co;
            @T@ *acc = a->acc + i0 * P * Co;
            if (a->acc_init)
                for (int64_t r = 0; r < nb * P; r++)
                    for (int64_t o = 0; o < Co; o++) acc[r * Co + o] = a->abias ? a->abias[o] : 0;
            small_gemm_@S@(nb * P, C, Co, t, C, 1, a->Wpost, Co, acc, Co);
        }
        if (a->G) {  /* gram[cg, :] += sum_r G_r[cg] t[r, :] */
            const int64_t rs = P == 1 ? a->gsv : a->gsp;
            if (g_flat)
                small_gemm_@S@(a->Cg, nb * P, C, a->G + i0 * a->gsv, 1, rs, t, C, a->gram, C);
            else
                for (int64_t v = 0; v < nb; v++)
                    small_gemm_@S@(a->Cg, P, C, a->G + (i0 + v) * a->gsv, 1, a->gsp, t + v * PC, C, a->gram, C);
        }
    }
    free(t);
    return NULL;
}

/* Returns 0, or -1 where memory for a thread's scratch could not be had. */
int cheb_step_@S@(const @I@ *indptr, const @I@ *indices, const @T@ *vals,
                  int64_t V, int64_t P, int64_t C,
                  const @T@ *X, int64_t xsv, int64_t xsp, double alpha,
                  const @T@ *Y, int64_t ysv, int64_t ysp, double beta,
                  const @T@ *E, int64_t esv, int64_t esp, int64_t Ce, const @T@ *Wpre,
                  const @T@ *obias, @T@ *out,
                  const @T@ *Wpost, int64_t Co, @T@ *acc, int acc_init, const @T@ *abias,
                  const @T@ *G, int64_t gsv, int64_t gsp, int64_t Cg, @T@ *gram,
                  int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAXT) nthreads = MAXT;
    if (V < nthreads) nthreads = V > 0 ? (int)V : 1;
    job_@S@ jobs[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT];
    const int64_t gsize = G ? Cg * C : 0;
    @T@ *partial = NULL;  /* per-thread Gram matrices, summed at the end */
    if (G && nthreads > 1) {
        partial = (@T@ *)calloc((size_t)(nthreads - 1) * gsize, sizeof(@T@));
        if (!partial) nthreads = 1;
    }
    for (int k = 0; k < nthreads; k++) {
        job_@S@ j = {indptr, indices, vals, V, P, C, X, xsv, xsp, (@T@)alpha, Y, ysv, ysp, (@T@)beta,
                     E, esv, esp, Ce, Wpre, obias, out, Wpost, Co, acc, acc_init, abias,
                     G, gsv, gsp, Cg, k == 0 ? gram : partial + (k - 1) * gsize,
                     V * k / nthreads, V * (k + 1) / nthreads};
        jobs[k] = j;
    }
    started[0] = 0;
    for (int k = 1; k < nthreads; k++)
        started[k] = pthread_create(&tid[k], NULL, rows_@S@, &jobs[k]) == 0;
    rows_@S@(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else rows_@S@(&jobs[k]);  /* no thread: do its share here */
    }
    int status = 0;
    for (int k = 0; k < nthreads; k++) if (jobs[k].r1 < 0) status = -1;
    if (partial) {
        for (int k = 1; k < nthreads; k++)
            for (int64_t e = 0; e < gsize; e++) gram[e] += partial[(k - 1) * gsize + e];
        free(partial);
    }
    return status;
}
"""

_VARIANTS = [("float", "int32_t", "f32_i32"), ("double", "int32_t", "f64_i32"),
             ("float", "int64_t", "f32_i64"), ("double", "int64_t", "f64_i64")]
SOURCE = _HEADER + "".join(_BODY.replace("@T@", t).replace("@I@", i).replace("@S@", s) for t, i, s in _VARIANTS)

# gnu11 for the vector extensions; fp-contract for fused multiply-adds (no
# reassociation: results stay as accurate as the plain loops).
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
    target = _cache_dir() / f"cheb_step_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "cheb_step.c"
        src.write_text(SOURCE)
        lib = Path(tmp) / "cheb_step.so"
        subprocess.run([cc, *_FLAGS, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=300)
        os.replace(lib, target)  # atomic: concurrent builders race harmlessly
    return target


_HUGE = 2 << 20
_MADV_HUGEPAGE = 14


def advise_hugepages(t) -> None:
    """Ask Linux to back a large, not yet touched CPU tensor with 2 MB pages.

    Why: our buffers are fresh memory each call (glibc maps large blocks anew);
    with 4 KB pages, faulting them in costs as much as a pass of the kernel
    (one fault per 4 KB). A hint only: errors, other systems, or a kernel
    without transparent huge pages leave things as they were.
    """
    n = t.numel() * t.element_size()
    if n < 4 * _HUGE or t.device.type != "cpu" or not _state.get("madvise", True):
        return
    try:
        libc = _state.get("libc")
        if libc is None:
            libc = _state["libc"] = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = -(-t.data_ptr() // _HUGE) * _HUGE  # whole 2 MB pages inside the buffer
        end = (t.data_ptr() + n) // _HUGE * _HUGE
        if end > start:
            libc.madvise(start, end - start, _MADV_HUGEPAGE)
    except (OSError, AttributeError):
        _state["madvise"] = False


def load():
    """The compiled kernels as ``{(float dtype name, index dtype name): function}``,
    or None where they cannot be had (no compiler, build failure, opt-out)."""
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
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace")[-300:]
            warnings.warn(f"graphsphere: could not build the CPU Chebyshev kernel ({e}; {detail}); "
                          "using the slower pure-torch path", RuntimeWarning, stacklevel=3)
            return None
        p, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
        argtypes = [p, p, p, i64, i64, i64,          # CSR, V, P, C
                    p, i64, i64, dbl,                # X, strides, alpha
                    p, i64, i64, dbl,                # Y, strides, beta
                    p, i64, i64, i64, p,             # E, strides, Ce, Wpre
                    p, p,                            # obias, out
                    p, i64, p, cint, p,              # Wpost, Co, acc, acc_init, abias
                    p, i64, i64, i64, p,             # G, strides, Cg, gram
                    cint]                            # nthreads
        fns = {}
        for _, _, suffix in _VARIANTS:
            fn = getattr(dll, f"cheb_step_{suffix}")
            fn.argtypes = argtypes
            fn.restype = cint
            fl, ix = suffix.split("_")
            fns[("float32" if fl == "f32" else "float64", "int32" if ix == "i32" else "int64")] = fn
        _state["lib"] = fns
        return fns
