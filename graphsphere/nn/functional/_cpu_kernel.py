"""The compiled CPU kernels behind the Chebyshev convolution, the fused batch norm and max pooling.

Why: a Chebyshev convolution is memory-bound. Done with separate torch calls,
each term reads and writes whole activations several times (sparse product,
combination with the previous term, channel mixing), torch's kernels for these
thin shapes run well below memory bandwidth, and each call costs Python and
dispatch time that dominates on small pyramid levels. Here one C call runs a
whole recursion: each Chebyshev (or Clenshaw) term is one pass over the
vertices that, per block of vertices, forms

    t_i = alpha * sum_j L_ij X_j + beta * Y_i + E_i @ Wpre + obias     [P, C]

then, as asked, stores t_i, accumulates ``acc_i (+)= R_i @ Wpost_j``, and
accumulates ``gram_j += G_i^T R_i`` for up to three terms R = t, X, Y (a
recursion mixes T_{k-2}, T_{k-1} and T_k in one pass while their rows are in
cache: every third pass, so that acc is read and written K/3 times, not K).
Signals are ``[V, P, channels]`` with
arbitrary vertex and block strides (channels contiguous), so the batch-major
input of a layer is read in place.

It is plain C with GCC/Clang vector extensions (no torch headers), so it
compiles in about a second with the system C compiler. Work is split into
chunks of vertices that a pool of persistent threads (the caller included)
claims dynamically: a thread the OS has not scheduled costs nothing, the
others take its share. Chunks never depend on the thread count and partial
sums are reduced in chunk order, so results are bitwise the same for any
number of threads. Temporaries (two Chebyshev terms, scratch rows) are kept
between calls up to ``retain`` bytes (32 MB by default, largest freed first): no allocation in
steady state on small and medium layers. Where a batch's two terms exceed 16 MB, the recursions
run on slices of the batch (:func:`slicing`): the terms of one slice at a time.

The library is cached per source, flags and CPU (it is built with
``-march=native``) in ``$GRAPHSPHERE_CACHE/kernels`` (default
``~/.cache/graphsphere/kernels``), beside a SHA-256 of its bytes; a file that
does not verify (truncated, damaged) is rebuilt rather than loaded. If no
compiler is found or the build fails, :func:`load` returns None and callers
use pure torch. Set ``GRAPHSPHERE_NO_KERNEL=1`` to force that.

The module is long because it holds the C source (about 1,440 lines, as Python strings, so that
no separate data file has to be installed) beside the few functions that build and load it.
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
from types import SimpleNamespace

__all__ = ["SOURCE", "load", "release", "slicing"]

_HEADER = r"""/* ==== common part (type independent) ==== */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <time.h>
#include <stdatomic.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Vector width: the widest the target has registers for (64 bytes on
   AVX-512, else 32: AVX2, and NEON as register pairs). Narrower vectors
   (half, 16 bytes) and scalars handle channel counts that are not a
   multiple of it. GEMM register tiles are MR rows x NVW vectors. */
#if defined(__AVX512F__)
#define VBYTES 64
#define MR 4
#else
#define VBYTES 32
#define MR 2
#endif
#define NVW 4
/* Sparse sums run NA accumulator sets over alternating neighbours, in every tile and tail alike
   (see SPARSE_TILE): one constant, so that no tile can round differently from another. */
#define NA 2
/* AVX-512 masked loads and stores: a row's last, partial vector at full speed
   (elsewhere: narrower vectors, then scalars). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_MASK 1
#else
#define HAVE_MASK 0
#endif
enum { SRC_T, SRC_X, SRC_Y };  /* the rows a step mixes: its own term t, X's or Y's */
#define MAXT 64            /* threads, the caller included */
#define MAXCHUNKS 4096
#define CHUNK_WORK (1 << 16)       /* multiply-adds per chunk, at least */
#define PAR_MIN_WORK (1 << 17)     /* below this a step runs on the calling thread */
#define PARTIAL_BYTES (4 << 20)    /* cap on per-chunk Gram partials */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
/* The step of a K-term Chebyshev recursion that mixes term j (see recurse_one): 2, 5, 8, ... or the last. */
static inline int64_t mixed_by(int64_t j, int64_t K) { return imin(K - 1, j / 3 * 3 + 2); }

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

/* ---- buffers kept between calls (no allocation in steady state) ---- */
typedef struct { char *p; size_t cap; } buf_t;

static void buf_free(buf_t *b) { free(b->p); b->p = NULL; b->cap = 0; }

static void *buf_get(buf_t *b, size_t bytes) {
    if (bytes <= b->cap && b->p) return b->p;
    buf_free(b);
    /* Large buffers: 2 MB aligned and advised to huge pages before first
       touch; with 4 KB pages, faulting fresh memory in cost as much as a
       pass of the kernel. */
    const size_t align = bytes >= ((size_t)8 << 20) ? ((size_t)2 << 20) : 64;
    const size_t size = (bytes + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, size ? size : align)) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align > 64) madvise(p, size, MADV_HUGEPAGE);
#endif
    b->p = (char *)p;
    b->cap = size;
    return p;
}

/* ---- a pool of persistent threads, with dynamic chunks ----
   A job is n chunks; the caller and the helpers claim chunks with one
   compare-and-swap on `state` (generation | threads | chunks | next), so a
   helper the OS has not scheduled yet costs nothing: the others take its
   share. Helpers spin 200 us after a job, then sleep on a condition
   variable: a model's next layer, up to ~150 us of Python away, finds them
   awake (a sleeping helper wakes too late to help: SHREC'17 inference at
   batch 1 took 2.2 ms with 50 us, 1.8 ms with 200 us; training steps the same). The chunking never depends on the number of threads, and
   reductions run in chunk order: results are the same for any thread count.
   After fork() the child starts with no helpers (they are recreated). Where the library
   is built with OpenMP, jobs run on OpenMP's team instead (see use_openmp), except in a
   forked child. */
typedef void (*chunk_fn)(void *job, int64_t chunk, int tid);

static struct {
    pthread_mutex_t owner;   /* held by the call that uses the helpers and the arena */
    pthread_mutex_t m;
    pthread_cond_t cv;
    int nworkers;
    uint64_t gen;
    _Atomic uint64_t state;  /* gen:28 | threads:6 | chunks:15 | next:15 */
    _Atomic int64_t done;
    _Atomic uint32_t bell;
    _Atomic int sleepers;
    chunk_fn fn;
    void *job;
    uint32_t start_bell[MAXT];
    double spin_us;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0,
          NULL, NULL, {0}, 200.0};

#define ST_NEXT(s) ((int64_t)((s) & 0x7fff))
#define ST_N(s) ((int64_t)(((s) >> 15) & 0x7fff))
#define ST_THREADS(s) ((int)(((s) >> 30) & 63))

/* Threads (bit tid) that ran a chunk since the last gs_threads_seen(1): for tests. */
static _Atomic uint64_t threads_seen;

static void claim_chunks(int tid) {
    uint64_t s = atomic_load_explicit(&pool.state, memory_order_acquire);
    int ran = 0;
    for (;;) {
        if (ST_NEXT(s) >= ST_N(s) || tid >= ST_THREADS(s)) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* chunk ST_NEXT(s) of this job is ours: the job cannot end before it is done */
        if (!ran++) atomic_fetch_or_explicit(&threads_seen, (uint64_t)1 << tid, memory_order_relaxed);
        pool.fn(pool.job, ST_NEXT(s), tid);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_acq_rel);
        s = atomic_load_explicit(&pool.state, memory_order_acquire);
    }
}

static void *worker_main(void *arg) {
    const int tid = (int)(intptr_t)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* signals go to the caller's threads */
    uint32_t seen = pool.start_bell[tid];
    for (;;) {
        uint32_t b;
        double t0 = -1;
        int spins = 0;
        while ((b = atomic_load_explicit(&pool.bell, memory_order_acquire)) == seen) {
            cpu_relax();
            if (++spins & 63) continue;
            if (t0 < 0) t0 = now_us();
            else if (now_us() - t0 > pool.spin_us) {
                atomic_fetch_add(&pool.sleepers, 1);
                pthread_mutex_lock(&pool.m);
                while (atomic_load(&pool.bell) == seen) pthread_cond_wait(&pool.cv, &pool.m);
                pthread_mutex_unlock(&pool.m);
                atomic_fetch_sub(&pool.sleepers, 1);
                t0 = -1;
            }
        }
        seen = b;
        claim_chunks(tid);
    }
    return NULL;
}

static void pool_after_fork(void) {
    pool.nworkers = 0;
    atomic_store(&pool.state, 0);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.sleepers, 0);
    pthread_mutex_init(&pool.owner, NULL);
    pthread_mutex_init(&pool.m, NULL);
    pthread_cond_init(&pool.cv, NULL);
}

static void grow_pool(int want) {
    while (pool.nworkers < want && pool.nworkers < MAXT - 1) {
        const int tid = pool.nworkers + 1;
        pool.start_bell[tid] = atomic_load(&pool.bell);
        pthread_attr_t at;
        pthread_t th;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 1 << 20);
        const int err = pthread_create(&th, &at, worker_main, (void *)(intptr_t)tid);
        pthread_attr_destroy(&at);
        if (err) break;  /* fewer threads: the caller does their share */
        pool.nworkers++;
    }
}

/* Where the library is built with OpenMP (it then shares the process's libgomp, and so
   PyTorch's team of threads): whether jobs run on that team (1) or on the pool above (0).
   PyTorch's threads spin for a while after each of its parallel operations; a pool of our
   own then competes with them for the same cores (10 % of the CPU time of a layer's forward +
   backward on 2 threads, in a profile), where the team they spin in takes our chunks at once. */
#ifdef _OPENMP
#include <omp.h>
static int use_openmp = 1;
#else
static int use_openmp = 0;
#endif

/* In a child process, OpenMP's team is gone but libgomp does not know it (a parallel region
   there hangs, PyTorch's own included: its DataLoader workers run on one thread): a child runs
   its jobs on the pool, which it rebuilds. */
static void after_fork_in_child(void) {
    use_openmp = 0;
    pool_after_fork();
}
__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

/* Run chunks 0..n-1 of a job, on nthreads threads (the caller included)
   when `parallel`, else in order on the caller. */
static void run_chunks(chunk_fn fn, void *job, int64_t n, int nthreads, int parallel) {
    if (!parallel || nthreads <= 1 || n <= 1) {
        for (int64_t c = 0; c < n; c++) fn(job, c, 0);
        return;
    }
#ifdef _OPENMP
    if (use_openmp && !omp_in_parallel()) {
        _Atomic int64_t next = 0;
        #pragma omp parallel num_threads((int)imin(nthreads, n))
        {
            const int tid = omp_get_thread_num();  /* < nthreads: its scratch exists */
            int64_t c = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
            if (c < n) atomic_fetch_or_explicit(&threads_seen, (uint64_t)1 << tid, memory_order_relaxed);
            for (; c < n; c = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed)) fn(job, c, tid);
        }
        return;
    }
#endif
    if (pool.nworkers < nthreads - 1) grow_pool(nthreads - 1);
    const int lim = 1 + (int)imin(pool.nworkers, nthreads - 1);
    if (lim <= 1) {
        for (int64_t c = 0; c < n; c++) fn(job, c, 0);
        return;
    }
    pool.fn = fn;
    pool.job = job;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    pool.gen = (pool.gen + 1) & 0xfffffff;
    atomic_store_explicit(&pool.state, (pool.gen << 36) | ((uint64_t)lim << 30) | ((uint64_t)n << 15),
                          memory_order_release);
    atomic_fetch_add(&pool.bell, 1);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.m);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.m);
    }
    claim_chunks(0);
    /* Only chunks a helper has claimed are left: wait, yielding the core
       if that helper seems descheduled. */
    int spins = 0;
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < n) {
        if (++spins < 2000) cpu_relax();
        else sched_yield();
    }
}

/* Chebyshev temporaries of a whole batch larger than slice_min bytes: the recursions run on
   slices of the batch (see slice_samples), two or more, of at most slice_max bytes each. */
static int64_t slice_min = (int64_t)16 << 20, slice_max = (int64_t)16 << 20, slice_row_bytes = 256;

/* ---- the context of one call: the shared arena, or private buffers ---- */
#define NTEMP 3
static buf_t ar_scratch[MAXT], ar_partial, ar_temp[NTEMP], ar_wt;
static size_t retain_bytes = (size_t)32 << 20;

typedef struct {
    int pooled, nthreads;
    buf_t *scratch, *partial, *temp, *wt;
    buf_t own_scratch, own_partial, own_temp[NTEMP], own_wt;
} ctx_t;

static void ctx_open(ctx_t *cx, int nthreads) {
    memset(cx, 0, sizeof *cx);
    nthreads = nthreads < 1 ? 1 : nthreads > MAXT - 1 ? MAXT - 1 : nthreads;
    if (pthread_mutex_trylock(&pool.owner) == 0) {
        cx->pooled = 1;
        cx->nthreads = nthreads;
        cx->scratch = ar_scratch;
        cx->partial = &ar_partial;
        cx->temp = ar_temp;
        cx->wt = &ar_wt;
    } else {  /* another thread of the process is in the kernel: run alone, on private buffers */
        cx->nthreads = 1;
        cx->scratch = &cx->own_scratch;
        cx->partial = &cx->own_partial;
        cx->temp = cx->own_temp;
        cx->wt = &cx->own_wt;
    }
}

static void ctx_close(ctx_t *cx) {
    if (cx->pooled) {
        /* keep temporaries up to retain_bytes, freeing the largest first: the same
           shapes then find the same buffers at every call */
        for (;;) {
            size_t kept = 0;
            int big = 0;
            for (int i = 0; i < NTEMP; i++) {
                kept += ar_temp[i].cap;
                if (ar_temp[i].cap > ar_temp[big].cap) big = i;
            }
            if (kept <= retain_bytes) break;
            buf_free(&ar_temp[big]);
        }
        /* the kept ones to the first slots, which the next call takes first (a buffer kept in
           the second slot while the first is fresh memory would cost a whole extra signal) */
        for (int i = 0, j = 0; i < NTEMP; i++)
            if (ar_temp[i].cap) {
                if (i != j) { ar_temp[j] = ar_temp[i]; memset(&ar_temp[i], 0, sizeof ar_temp[i]); }
                j++;
            }
        pthread_mutex_unlock(&pool.owner);
    } else {
        buf_free(&cx->own_scratch);
        buf_free(&cx->own_partial);
        for (int i = 0; i < NTEMP; i++) buf_free(&cx->own_temp[i]);
        buf_free(&cx->own_wt);
    }
}

/* Free the buffers kept between calls; set how many bytes of temporaries
   may be kept (negative: leave unchanged). */
void gs_release(int64_t retain) {
    pthread_mutex_lock(&pool.owner);
    for (int i = 0; i < MAXT; i++) buf_free(&ar_scratch[i]);
    buf_free(&ar_partial);
    for (int i = 0; i < NTEMP; i++) buf_free(&ar_temp[i]);
    buf_free(&ar_wt);
    if (retain >= 0) retain_bytes = (size_t)retain;
    pthread_mutex_unlock(&pool.owner);
}

/* Bytes of temporaries kept between calls (for tests). */
int64_t gs_kept_bytes(void) {
    pthread_mutex_lock(&pool.owner);
    size_t kept = 0;
    for (int i = 0; i < NTEMP; i++) kept += ar_temp[i].cap;
    pthread_mutex_unlock(&pool.owner);
    return (int64_t)kept;
}

/* How long idle helpers spin before they sleep (microseconds); returns the previous value. */
double gs_spin_us(double us) {
    const double old = pool.spin_us;
    if (us >= 0) pool.spin_us = us;
    return old;
}

/* Batches whose Chebyshev temporaries exceed min_bytes run in slices of at most max_bytes,
   of rows of at least row_bytes per vertex (negative: leave unchanged); returns the previous
   min_bytes. */
int64_t gs_slicing(int64_t min_bytes, int64_t max_bytes, int64_t row_bytes) {
    pthread_mutex_lock(&pool.owner);
    const int64_t old = slice_min;
    if (min_bytes >= 0) slice_min = min_bytes;
    if (max_bytes >= 1) slice_max = max_bytes;
    if (row_bytes >= 0) slice_row_bytes = row_bytes;
    pthread_mutex_unlock(&pool.owner);
    return old;
}

/* Run jobs on OpenMP's team (1) or on the pool (0), where built with OpenMP; negative: leave
   unchanged. Returns the previous setting, or -1 when the library has no OpenMP. */
int gs_openmp(int on) {
#ifdef _OPENMP
    pthread_mutex_lock(&pool.owner);
    const int old = use_openmp;
    if (on >= 0) use_openmp = on != 0;
    pthread_mutex_unlock(&pool.owner);
    return old;
#else
    (void)on;
    return -1;
#endif
}

/* How many threads ran chunks since the last reset; with `reset`, start counting anew. */
int gs_threads_seen(int reset) {
    const uint64_t m = reset ? atomic_exchange(&threads_seen, 0) : atomic_load(&threads_seen);
    return __builtin_popcountll(m);
}

/* How many helper threads exist (for tests). */
int gs_pool_threads(void) { return pool.nworkers; }
"""

# One copy per (T, I): @T@ is float or double, @I@ the index type, @S@ a suffix.
_CONV = r"""/* ==== one copy per (T, I): @T@ float or double, @I@ the index type, @S@ a suffix ==== */
typedef @T@ vA_@S@ __attribute__((vector_size(VBYTES)));
typedef @T@ vAu_@S@ __attribute__((vector_size(VBYTES), aligned(sizeof(@T@))));
typedef @T@ vB_@S@ __attribute__((vector_size(VBYTES / 2)));
typedef @T@ vBu_@S@ __attribute__((vector_size(VBYTES / 2), aligned(sizeof(@T@))));
typedef @T@ vC_@S@ __attribute__((vector_size(16)));
typedef @T@ vCu_@S@ __attribute__((vector_size(16), aligned(sizeof(@T@))));
#define LA_@S@ ((int64_t)(VBYTES / sizeof(@T@)))
#define LB_@S@ ((int64_t)(VBYTES / 2 / sizeof(@T@)))
#define LC_@S@ ((int64_t)(16 / sizeof(@T@)))
#if HAVE_MASK
static inline vA_@S@ mload_@S@(const @T@ *p, int64_t n) {
    return (vA_@S@)_mm512_maskz_loadu_@P@((@MK@)((1u << n) - 1), p);
}
static inline void mstore_@S@(@T@ *p, vA_@S@ v, int64_t n) {
    _mm512_mask_storeu_@P@(p, (@MK@)((1u << n) - 1), (__m512@PV@)v);
}
/* the last n < LA columns of sparse rows (see SPARSE_TILE) */
static inline void sp_mask_@S@(const @I@ *restrict idx, const @T@ *restrict val, @I@ j0, @I@ j1,
                               const @T@ *restrict x, int64_t xsv, @T@ alpha, const @T@ *restrict y, @T@ beta,
                               @T@ *restrict t, int64_t n) {
    vA_@S@ a[NA] = {{0}};  /* NA sums over alternating neighbours, as SPARSE_TILE: the same rounding */
    @I@ j = j0;
    for (; j + NA <= j1; j += NA)
        for (int u = 0; u < NA; u++) a[u] += val[j + u] * mload_@S@(x + (int64_t)idx[j + u] * xsv, n);
    for (; j < j1; j++) a[0] += val[j] * mload_@S@(x + (int64_t)idx[j] * xsv, n);
    for (int u = 1; u < NA; u++) a[0] += a[u];
    mstore_@S@(t, y ? alpha * a[0] + beta * mload_@S@(y, n) : alpha * a[0], n);
}
/* the last n < LA columns of a small matrix product (see GEMM_TILE): RB rows, then single rows */
static inline void gemm_mask_@S@(int64_t nr, int64_t nk, const @T@ *restrict A, int64_t ars, int64_t acs,
                                 const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds, int init,
                                 const @T@ *restrict bias, int64_t n) {
    enum { RB = 2 * MR };
    const vA_@S@ d0 = (init && bias) ? mload_@S@(bias, n) : (vA_@S@){0};
    int64_t r = 0;
    for (; r + RB <= nr; r += RB) {
        vA_@S@ a[RB];
        for (int u = 0; u < RB; u++) a[u] = init ? d0 : mload_@S@(D + (r + u) * ds, n);
        for (int64_t k = 0; k < nk; k++) {
            const vA_@S@ b = mload_@S@(B + k * bs, n);
            for (int u = 0; u < RB; u++) a[u] += A[(r + u) * ars + k * acs] * b;
        }
        for (int u = 0; u < RB; u++) mstore_@S@(D + (r + u) * ds, a[u], n);
    }
    for (; r < nr; r++) {  /* one sum in k order, as the tiles (see GEMM_ROW) */
        vA_@S@ a = init ? d0 : mload_@S@(D + r * ds, n);
        for (int64_t k = 0; k < nk; k++) a += A[r * ars + k * acs] * mload_@S@(B + k * bs, n);
        mstore_@S@(D + r * ds, a, n);
    }
}
#endif

/* -- sparse rows: t[0:NV*L] = alpha * sum_j v_j x_j[0:NV*L] (+ beta * y) over one row's
   neighbours, NA accumulator sets over alternating neighbours to hide the multiply-add latency.
   The same NA in every instance and in the masked and scalar tails: which tile a channel falls in
   depends on the batch size (the rows of P samples are merged), its rounding should not. With
   these two rules a model predicts the same maps at batch 1 and batch 8 (tests/test_patches.py);
   bitwise equality for every channel count is not promised (tails may contract multiply-adds
   differently). */
#define SPARSE_TILE(NAME, VT, VTU, NV)                                                              \
static inline void NAME(const @I@ *restrict idx, const @T@ *restrict val, @I@ j0, @I@ j1,             \
                        const @T@ *restrict x, int64_t xsv, @T@ alpha, const @T@ *restrict y,        \
                        @T@ beta, @T@ *restrict t) {                                                  \
    enum { L = sizeof(VT) / sizeof(@T@) };                                                           \
    VT a[NA][NV];                                                                                    \
    for (int u = 0; u < NA; u++) for (int w = 0; w < NV; w++) a[u][w] = (VT){0};                   \
    @I@ j = j0;                                                                                      \
    for (; j + NA <= j1; j += NA)                                                                    \
        for (int u = 0; u < NA; u++) {                                                               \
            const @T@ *xr = x + (int64_t)idx[j + u] * xsv;                                           \
            const @T@ v = val[j + u];                                                                \
            for (int w = 0; w < NV; w++) a[u][w] += v * (VT)(*(const VTU *)(xr + w * L));            \
        }                                                                                            \
    for (; j < j1; j++) {                                                                            \
        const @T@ *xr = x + (int64_t)idx[j] * xsv;                                                   \
        const @T@ v = val[j];                                                                        \
        for (int w = 0; w < NV; w++) a[0][w] += v * (VT)(*(const VTU *)(xr + w * L));                \
    }                                                                                                \
    for (int u = 1; u < NA; u++) for (int w = 0; w < NV; w++) a[0][w] += a[u][w];                   \
    if (y) for (int w = 0; w < NV; w++)                                                              \
        *(VTU *)(t + w * L) = alpha * a[0][w] + beta * (VT)(*(const VTU *)(y + w * L));             \
    else for (int w = 0; w < NV; w++) *(VTU *)(t + w * L) = alpha * a[0][w];                        \
}
SPARSE_TILE(sp_a4_@S@, vA_@S@, vAu_@S@, 4)
SPARSE_TILE(sp_a2_@S@, vA_@S@, vAu_@S@, 2)
SPARSE_TILE(sp_a1_@S@, vA_@S@, vAu_@S@, 1)

/* The last r < LA channels of sparse rows without masked loads (AVX2, NEON): NCV 16-byte vectors
   and NS scalars summed in one pass over the neighbours (a pass per vector width and per scalar
   channel cost the 6-channel input layer of a model at batch 1 a third more time). Each channel's
   sum is that of the tiles: NA sets over alternating neighbours, added in the same order. */
#define SP_TAIL(NAME, NCV, NS)                                                                        \
static inline void NAME(const @I@ *restrict idx, const @T@ *restrict val, @I@ j0, @I@ j1,             \
                        const @T@ *restrict x, int64_t xsv, @T@ alpha, const @T@ *restrict y,        \
                        @T@ beta, @T@ *restrict t) {                                                  \
    enum { L = 16 / sizeof(@T@), NV = NCV ? NCV : 1, NSC = NS ? NS : 1 };                           \
    vC_@S@ a[NA][NV];                                                                                \
    @T@ sc[NA][NSC];                                                                                 \
    for (int u = 0; u < NA; u++) {                                                                   \
        for (int w = 0; w < NV; w++) a[u][w] = (vC_@S@){0};                                          \
        for (int c = 0; c < NSC; c++) sc[u][c] = 0;                                                  \
    }                                                                                                \
    @I@ j = j0;                                                                                      \
    for (; j + NA <= j1; j += NA)                                                                    \
        for (int u = 0; u < NA; u++) {                                                               \
            const @T@ *xr = x + (int64_t)idx[j + u] * xsv;                                           \
            const @T@ v = val[j + u];                                                                \
            for (int w = 0; w < NCV; w++) a[u][w] += v * (vC_@S@)(*(const vCu_@S@ *)(xr + w * L));   \
            for (int c = 0; c < NS; c++) sc[u][c] += v * xr[NCV * L + c];                            \
        }                                                                                            \
    for (; j < j1; j++) {                                                                            \
        const @T@ *xr = x + (int64_t)idx[j] * xsv;                                                   \
        const @T@ v = val[j];                                                                        \
        for (int w = 0; w < NCV; w++) a[0][w] += v * (vC_@S@)(*(const vCu_@S@ *)(xr + w * L));       \
        for (int c = 0; c < NS; c++) sc[0][c] += v * xr[NCV * L + c];                                \
    }                                                                                                \
    for (int u = 1; u < NA; u++) {                                                                   \
        for (int w = 0; w < NCV; w++) a[0][w] += a[u][w];                                            \
        for (int c = 0; c < NS; c++) sc[0][c] += sc[u][c];                                           \
    }                                                                                                \
    for (int w = 0; w < NCV; w++)                                                                    \
        *(vCu_@S@ *)(t + w * L) = y ? alpha * a[0][w] + beta * (vC_@S@)(*(const vCu_@S@ *)(y + w * L)) \
                                    : alpha * a[0][w];                                               \
    for (int c = 0; c < NS; c++)                                                                     \
        t[NCV * L + c] = y ? alpha * sc[0][c] + beta * y[NCV * L + c] : alpha * sc[0][c];            \
}
SP_TAIL(sp_t01_@S@, 0, 1)
SP_TAIL(sp_t02_@S@, 0, 2)
SP_TAIL(sp_t03_@S@, 0, 3)
SP_TAIL(sp_t10_@S@, 1, 0)
SP_TAIL(sp_t11_@S@, 1, 1)
SP_TAIL(sp_t12_@S@, 1, 2)
SP_TAIL(sp_t13_@S@, 1, 3)
#undef SP_TAIL

/* t[0:n] = alpha * sum_j v_j x_j[0:n] + beta * y[0:n] (y may be NULL). */
static void sparse_seg_@S@(const @I@ *restrict idx, const @T@ *restrict val, @I@ j0, @I@ j1,
                           const @T@ *restrict x, int64_t xsv, @T@ alpha, const @T@ *restrict y, @T@ beta,
                           @T@ *restrict t, int64_t n) {
    int64_t q = 0;
#define SEG(FN, W) for (; q + (W) <= n; q += (W)) FN(idx, val, j0, j1, x + q, xsv, alpha, y ? y + q : NULL, beta, t + q);
    SEG(sp_a4_@S@, 4 * LA_@S@)
    SEG(sp_a2_@S@, 2 * LA_@S@)
    SEG(sp_a1_@S@, LA_@S@)
#if HAVE_MASK
    if (q < n) sp_mask_@S@(idx, val, j0, j1, x + q, xsv, alpha, y ? y + q : NULL, beta, t + q, n - q);
    return;
#endif
#undef SEG
    /* r < LA = 2 LC channels left: at most one 16-byte vector and LC - 1 scalars, in one pass */
    const int64_t r = n - q;
    const @T@ *xq = x + q, *yq = y ? y + q : NULL;
    switch ((r / LC_@S@) * 4 + r % LC_@S@) {
    case 1: sp_t01_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 2: sp_t02_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 3: sp_t03_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 4: sp_t10_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 5: sp_t11_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 6: sp_t12_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    case 7: sp_t13_@S@(idx, val, j0, j1, xq, xsv, alpha, yq, beta, t + q); break;
    default: break;  /* r = 0 */
    }
}

/* -- small matrix products: D[r, 0:no] (=|+=) sum_k A(r, k) B[k, 0:no] for r < nr, with
   A(r, k) = A[r * ars + k * acs]. `init`: start from `bias` (or 0) instead of D.
   Tiles of RB rows x NV vectors keep RB * NV accumulators in registers. */
#define GEMM_TILE(NAME, VT, VTU, RB, NV)                                                             \
static inline void NAME(int64_t nk, const @T@ *restrict A, int64_t ars, int64_t acs,                 \
                        const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds, int init,     \
                        const @T@ *restrict bias) {                                                  \
    enum { L = sizeof(VT) / sizeof(@T@) };                                                           \
    VT a[RB][NV];                                                                                    \
    for (int w = 0; w < NV; w++) {                                                                   \
        const VT d0 = (init && bias) ? (VT)(*(const VTU *)(bias + w * L)) : (VT){0};                 \
        for (int u = 0; u < RB; u++) a[u][w] = init ? d0 : (VT)(*(const VTU *)(D + u * ds + w * L)); \
    }                                                                                                \
    for (int64_t k = 0; k < nk; k++) {                                                               \
        VT b[NV];                                                                                    \
        for (int w = 0; w < NV; w++) b[w] = *(const VTU *)(B + k * bs + w * L);                      \
        for (int u = 0; u < RB; u++) {                                                               \
            const @T@ s = A[u * ars + k * acs];                                                      \
            for (int w = 0; w < NV; w++) a[u][w] += s * b[w];                                        \
        }                                                                                            \
    }                                                                                                \
    for (int u = 0; u < RB; u++) for (int w = 0; w < NV; w++) *(VTU *)(D + u * ds + w * L) = a[u][w]; \
}
/* One row, one sum in k order as in the tiles, so that the rows a tile leaves over round as the tile
   would have rounded them (which rows those are depends on the batch size); accumulator sets over
   alternating k would break the chain of multiply-adds but round differently. */
#define GEMM_ROW(NAME, VT, VTU, NV)                                                                  \
static inline void NAME(int64_t nk, const @T@ *restrict A, int64_t acs, const @T@ *restrict B,        \
                        int64_t bs, @T@ *restrict D, int init, const @T@ *restrict bias) {            \
    enum { L = sizeof(VT) / sizeof(@T@) };                                                           \
    VT a[NV];                                                                                        \
    for (int w = 0; w < NV; w++)                                                                     \
        a[w] = init ? (bias ? (VT)(*(const VTU *)(bias + w * L)) : (VT){0}) : (VT)(*(const VTU *)(D + w * L)); \
    for (int64_t k = 0; k < nk; k++) {                                                               \
        const @T@ s = A[k * acs];                                                                    \
        for (int w = 0; w < NV; w++) a[w] += s * (VT)(*(const VTU *)(B + k * bs + w * L));           \
    }                                                                                                \
    for (int w = 0; w < NV; w++) *(VTU *)(D + w * L) = a[w];                                         \
}
#if VBYTES == 64
GEMM_TILE(gt_a_@S@, vA_@S@, vAu_@S@, MR, NVW)  /* AVX-512 only: AVX2 mixes every width two vectors at a time */
GEMM_ROW(gr_a_@S@, vA_@S@, vAu_@S@, NVW)
#endif
GEMM_TILE(gt_a2_@S@, vA_@S@, vAu_@S@, 3 * MR, 2)
GEMM_TILE(gt_a2h_@S@, vA_@S@, vAu_@S@, MR, 2)
GEMM_ROW(gr_a2_@S@, vA_@S@, vAu_@S@, 2)
GEMM_TILE(gt_a1_@S@, vA_@S@, vAu_@S@, 2 * MR, 1)
GEMM_ROW(gr_a1_@S@, vA_@S@, vAu_@S@, 1)
GEMM_TILE(gt_b1_@S@, vB_@S@, vBu_@S@, 2 * MR, 1)
GEMM_ROW(gr_b1_@S@, vB_@S@, vBu_@S@, 1)
GEMM_TILE(gt_c1_@S@, vC_@S@, vCu_@S@, 2 * MR, 1)
GEMM_ROW(gr_c1_@S@, vC_@S@, vCu_@S@, 1)

static void small_gemm_@S@(int64_t nr, int64_t nk, int64_t no, const @T@ *restrict A, int64_t ars,
                           int64_t acs, const @T@ *restrict B, int64_t bs, @T@ *restrict D, int64_t ds,
                           int init, const @T@ *restrict bias) {
    int64_t o = 0;
#define COLS(TILE, ROW, RB, W)                                                                       \
    for (; o + (W) <= no; o += (W)) {                                                                \
        const @T@ *bo = bias ? bias + o : NULL;                                                      \
        int64_t r = 0;                                                                               \
        for (; r + (RB) <= nr; r += (RB))                                                            \
            TILE(nk, A + r * ars, ars, acs, B + o, bs, D + r * ds + o, ds, init, bo);                \
        for (; r < nr; r++) ROW(nk, A + r * ars, acs, B + o, bs, D + r * ds + o, init, bo);         \
    }
#if VBYTES == 64
    COLS(gt_a_@S@, gr_a_@S@, MR, NVW * LA_@S@)  /* 4 rows x 4 vectors: 16 accumulators of AVX-512's 32 */
#endif
    /* two vectors at a time (on AVX2 every width: its 2 rows x 4 vectors were 8 accumulators, too few
       multiply-adds in flight; 5-34 % slower layers with 64-256 outputs): 3 MR rows x 2 vectors (12
       accumulators on AVX2, of 16 registers), then MR-row tiles, then single rows */
    for (; o + 2 * LA_@S@ <= no; o += 2 * LA_@S@) {
        const @T@ *bo = bias ? bias + o : NULL;
        int64_t r = 0;
        for (; r + 3 * MR <= nr; r += 3 * MR)
            gt_a2_@S@(nk, A + r * ars, ars, acs, B + o, bs, D + r * ds + o, ds, init, bo);
        for (; r + MR <= nr; r += MR)
            gt_a2h_@S@(nk, A + r * ars, ars, acs, B + o, bs, D + r * ds + o, ds, init, bo);
        for (; r < nr; r++) gr_a2_@S@(nk, A + r * ars, acs, B + o, bs, D + r * ds + o, init, bo);
    }
    COLS(gt_a1_@S@, gr_a1_@S@, 2 * MR, LA_@S@)
#if HAVE_MASK
    if (o < no) gemm_mask_@S@(nr, nk, A, ars, acs, B + o, bs, D + o, ds, init, bias ? bias + o : NULL, no - o);
    return;
#endif
    COLS(gt_b1_@S@, gr_b1_@S@, 2 * MR, LB_@S@)
    COLS(gt_c1_@S@, gr_c1_@S@, 2 * MR, LC_@S@)
#undef COLS
    for (; o < no; o++)  /* fewer columns left than the narrowest vector */
        for (int64_t r = 0; r < nr; r++) {
            @T@ s = init ? (bias ? bias[o] : 0) : D[r * ds + o];
            for (int64_t k = 0; k < nk; k++) s += A[r * ars + k * acs] * B[k * bs + o];
            D[r * ds + o] = s;
        }
}

/* -- one fused pass over the vertices (one Chebyshev or Clenshaw step). Per vertex i,
   with signals [V, P, channels] (channels contiguous, any vertex and block strides):
       t_i = alpha L~_i X + beta Y_i + E_i @ Wpre + obias        [P, C]
       out_i = t_i;  for each mixed term j (rows R = t, X or Y, as src[j] says), in order:
       acc_i (=|+=) R_i @ Wpost[j] (+ abias);  gram[j] += G_i^T R_i
   Any of X, Y, E, out, Wpost[j], G may be NULL; out and acc have any vertex and block strides
   (0: contiguous); out may be Y, never X (Y's rows are mixed before t overwrites them, so a
   term mixed as Y comes first). The Gram matrices are summed per chunk, then over chunks in
   order. */
typedef struct {
    const @I@ *indptr, *indices;
    const @T@ *vals;
    int64_t V, P, C;
    const @T@ *X; int64_t xsv, xsp; @T@ alpha;
    const @T@ *Y; int64_t ysv, ysp; @T@ beta;
    const @T@ *E; int64_t esv, esp, Ce; const @T@ *Wpre;
    const @T@ *obias; @T@ *out; int64_t osv, osp;
    int nmix, src[3];        /* the mixed terms: their rows (SRC_T, SRC_X or SRC_Y), in order */
    const @T@ *Wpost[3]; int64_t Co; @T@ *acc; int64_t asv, asp; int acc_init; const @T@ *abias;
    const @T@ *G; int64_t gsv, gsp, Cg; @T@ *gram[3]; int gram_tr, gram_init;
    _Atomic int *nonfinite;  /* if set: raised when the rows of `check` hold NaN or Inf */
    int check;               /* SRC_T, SRC_X or SRC_Y */
    /* set by run_step */
    int64_t vb, chunk_v, nchunks, gsize, pack_off, mpack_off, acc_off;
    int part_tr;
    @T@ *partials;
    buf_t *scratch;
} step_@S@;

/* Rows of a [V, P, n] operand for vertices i0..i0+nb: a pointer and row stride, packed
   into `pk` when the rows are not equally spaced. Packed rather than multiplied block by
   block: in a batch-major operand the P blocks lie V n floats apart, often a multiple of a
   large power of two, and products reading P such streams at once thrash the cache sets they
   share (the Gram and pre-mix products ran 1.2-1.3x slower per block at nside 32 and 64). */
static const @T@ *rows_of_@S@(const @T@ *S, int64_t sv, int64_t sp, int64_t P, int64_t n, int64_t i0, int64_t nb,
                              @T@ *pk, int64_t *rs) {
    if (P == 1) { *rs = sv; return S + i0 * sv; }
    if (sv == P * sp) { *rs = sp; return S + i0 * sv; }
    for (int64_t v = 0; v < nb; v++)
        for (int64_t p = 0; p < P; p++) memcpy(pk + (v * P + p) * n, S + (i0 + v) * sv + p * sp, n * sizeof(@T@));
    *rs = n;
    return pk;
}

/* 1 when some of M rows (stride rs) of C numbers holds NaN or Inf: v - v is 0 unless v is NaN
   or Inf (compares and an OR: vectorised). */
static int nonfinite_rows_@S@(const @T@ *R, int64_t rs, int64_t M, int64_t C) {
    int bad = 0;
    for (int64_t r = 0; r < M; r++)
        for (int64_t q = 0; q < C; q++) bad |= R[r * rs + q] - R[r * rs + q] != 0;
    return bad;
}

/* Mixed term j of a block of nb vertices from i0, its M = nb P rows R (row r at R + r rs):
   acc (=|+=) R @ Wpost[j] (+ abias) and part + j gsize += G^T R (gr: G's rows, stride grs). */
static void mix_@S@(const step_@S@ *a, int j, const @T@ *R, int64_t rs, int64_t i0, int64_t nb, @T@ *h,
                    @T@ *part, const @T@ *gr, int64_t grs) {
    const int64_t P = a->P, C = a->C, M = nb * P, Co = a->Co;
    const @T@ *W = a->Wpost[j];
    const int init = a->acc_init && j == 0;
    const @T@ *bias = init ? a->abias : NULL;
    if (W && (P == 1 || (a->asp == Co && a->asv == P * Co)))  /* acc's rows equally spaced: one product */
        small_gemm_@S@(M, C, Co, R, rs, 1, W, Co, a->acc + i0 * a->asv, P == 1 ? a->asv : Co, init, bias);
    else if (W && nb >= 16)  /* one product per block p, its rows asv apart */
        for (int64_t p = 0; p < P; p++)
            small_gemm_@S@(nb, C, Co, R + p * rs, P * rs, 1, W, Co, a->acc + i0 * a->asv + p * a->asp, a->asv,
                           init, bias);
    else if (W) {  /* few vertices, many blocks: one product into scratch, its rows added where they go */
        small_gemm_@S@(M, C, Co, R, rs, 1, W, Co, h, Co, 1, bias);
        for (int64_t p = 0; p < P; p++)
            for (int64_t v = 0; v < nb; v++) {
                @T@ *restrict d = a->acc + (i0 + v) * a->asv + p * a->asp;
                const @T@ *restrict hr = h + (v * P + p) * Co;
                if (init) memcpy(d, hr, Co * sizeof(@T@));
                else for (int64_t q = 0; q < Co; q++) d[q] += hr[q];
            }
    }
    if (a->G && a->gram[j]) {  /* kept as [Cg, C] or (part_tr) [C, Cg] */
        @T@ *pj = part + j * a->gsize;
        if (!a->part_tr) small_gemm_@S@(a->Cg, M, C, gr, 1, grs, R, rs, pj, C, 0, NULL);
        else small_gemm_@S@(C, M, a->Cg, R, 1, rs, gr, grs, pj, a->Cg, 0, NULL);
    }
}

/* The rows of the block's X or Y (src), packed into mpk when not equally spaced, checked for
   NaN and Inf when they are the rows to check (x itself, read whole for the first time). */
static const @T@ *operand_rows_@S@(const step_@S@ *a, int src, int64_t i0, int64_t nb, @T@ *mpk, int64_t *rs) {
    const @T@ *R = src == SRC_X ? rows_of_@S@(a->X, a->xsv, a->xsp, a->P, a->C, i0, nb, mpk, rs)
                                : rows_of_@S@(a->Y, a->ysv, a->ysp, a->P, a->C, i0, nb, mpk, rs);
    if (a->nonfinite && a->check == src && nonfinite_rows_@S@(R, *rs, nb * a->P, a->C))
        atomic_store_explicit(a->nonfinite, 1, memory_order_relaxed);
    return R;
}

static void step_chunk_@S@(void *arg, int64_t c, int tid) {
    const step_@S@ *a = (const step_@S@ *)arg;
    const int64_t P = a->P, C = a->C, PC = P * C, VB = a->vb;
    @T@ *const scratch = (@T@ *)a->scratch[tid].p;
    @T@ *const pk = scratch + a->pack_off;
    const int64_t v0 = c * a->chunk_v, v1 = imin(a->V, v0 + a->chunk_v);
    /* t, a block's rows: written straight into `out` when its rows are equally spaced, else
       formed in scratch (packed) and copied out. Row (v, p) of t is at t + v tv + p C. */
    const int direct = a->out && (P == 1 || (a->osp == C && a->osv == PC));
    const int64_t tv = direct ? a->osv : PC, rt = P == 1 ? tv : C;
    @T@ *part = a->partials ? a->partials + c * a->nmix * a->gsize : NULL;
    if (part) memset(part, 0, a->nmix * a->gsize * sizeof(@T@));
    @T@ *const mpk = scratch + a->mpack_off, *const h = scratch + a->acc_off;
    /* Blocks of a row adjacent in X (and Y): one long segment per vertex. */
    const int merge = a->X && (P == 1 || a->xsp == C) && (!a->Y || P == 1 || a->ysp == C);
    /* Software prefetch of X's row PF rows (~128 KB) ahead: NESTED neighbours jump around
       within a few hundred rows, which hardware prefetchers follow poorly. */
    const int64_t row_bytes = imax(PC * (int64_t)sizeof(@T@), 1), PF = (128 << 10) / row_bytes + 1;
    for (int64_t i0 = v0; i0 < v1; i0 += VB) {
        const int64_t nb = imin(VB, v1 - i0), M = nb * P;
        /* t: the block's rows, written straight into `out` when it is stored */
        @T@ *const t = direct ? a->out + i0 * a->osv : scratch;
        int64_t grs = 0;
        const @T@ *gr = a->G && a->nmix ? rows_of_@S@(a->G, a->gsv, a->gsp, P, a->Cg, i0, nb, pk, &grs) : NULL;
        int j = 0;
        for (; j < a->nmix && a->src[j] == SRC_Y; j++) {  /* before out (which may be Y) is written */
            int64_t rs;
            const @T@ *R = operand_rows_@S@(a, SRC_Y, i0, nb, mpk, &rs);
            mix_@S@(a, j, R, rs, i0, nb, h, part, gr, grs);
        }
        for (int64_t i = i0; i < i0 + nb; i++) {
            @T@ *ti = t + (i - i0) * tv;
            if (a->X) {
                if (merge && i + PF < a->V) {
                    const char *pp = (const char *)(a->X + (i + PF) * a->xsv);
                    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(pp + b);
                }
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
                    if (a->beta == 1) memcpy(ti + p * C, y, C * sizeof(@T@));
                    else for (int64_t q = 0; q < C; q++) ti[p * C + q] = a->beta * y[q];
                }
            } else if (!a->E) {
                memset(ti, 0, PC * sizeof(@T@));
            }
        }
        if (a->E) {  /* t (=|+=) E @ Wpre (+ obias) */
            const int first = !a->X && !a->Y;
            int64_t rs;
            const @T@ *er = rows_of_@S@(a->E, a->esv, a->esp, P, a->Ce, i0, nb, pk, &rs);
            small_gemm_@S@(M, a->Ce, C, er, rs, 1, a->Wpre, C, t, rt, first, first ? a->obias : NULL);
            if (!first && a->obias)
                for (int64_t r = 0; r < M; r++) for (int64_t q = 0; q < C; q++) t[r * rt + q] += a->obias[q];
        } else if (a->obias) {
            for (int64_t r = 0; r < M; r++) for (int64_t q = 0; q < C; q++) t[r * rt + q] += a->obias[q];
        }
        if (a->nonfinite && a->check == SRC_T && nonfinite_rows_@S@(t, rt, M, C))
            atomic_store_explicit(a->nonfinite, 1, memory_order_relaxed);
        if (a->out && !direct)
            for (int64_t v = 0; v < nb; v++)
                for (int64_t p = 0; p < P; p++)
                    memcpy(a->out + (i0 + v) * a->osv + p * a->osp, t + (v * P + p) * C, C * sizeof(@T@));
        for (; j < a->nmix; j++) {  /* X's rows (the previous term), then t's */
            int64_t rs = rt;
            const @T@ *R = a->src[j] == SRC_X ? operand_rows_@S@(a, SRC_X, i0, nb, mpk, &rs) : t;
            mix_@S@(a, j, R, rs, i0, nb, h, part, gr, grs);
        }
    }
}

/* Vector-friendliness of a row length: whole vectors first, then length. */
static int64_t vec_score_@S@(int64_t n) { return (n % LA_@S@ == 0 ? 4 : n % LC_@S@ == 0 ? 2 : 1) * n; }

static int run_step_@S@(ctx_t *cx, step_@S@ *s) {
    const int64_t V = s->V, P = s->P, C = s->C, sz = sizeof(@T@);
    int nw = 0, ng = 0;  /* mixed terms with a product into acc, with a Gram matrix */
    for (int j = 0; j < s->nmix; j++) {
        nw += s->Wpost[j] != NULL;
        ng += s->G && s->gram[j];
        if (s->G && s->gram[j] && s->gram_init) memset(s->gram[j], 0, s->Cg * C * sz);
    }
    if (V <= 0 || P <= 0) return 0;
    if (!s->osv) { s->osv = P * C; s->osp = C; }
    if (!s->asv) { s->asv = P * s->Co; s->asp = s->Co; }
    const int64_t Cw = imax(C, 1);
    /* Blocks of ~16 KB of rows (at least 16 rows, so that batch 1 fills the vector units) */
    const int64_t mrows = imax(16, imin(512, (16 << 10) / (Cw * sz)));
    s->vb = imax(1, mrows / P);
    const int64_t M = s->vb * P;
    const int64_t npack = (s->E ? s->Ce : 0) > (s->G ? s->Cg : 0) ? s->Ce : (s->G ? s->Cg : 0);
    s->pack_off = (M * Cw + 15) / 16 * 16;
    s->mpack_off = s->pack_off + (M * imax(npack, 1) + 15) / 16 * 16;
    s->acc_off = s->mpack_off + (s->nmix ? (M * Cw + 15) / 16 * 16 : 0);
    const size_t each = (size_t)(s->acc_off + (nw ? M * s->Co : 0)) * sz;
    /* Chunks: enough work each to amortise claiming one; never dependent on the thread count. */
    const int64_t nnz = (int64_t)s->indptr[V];
    const int64_t work = (s->X ? nnz * P * C : 0) + V * P * C * (1 + (s->E ? s->Ce : 0) + nw * s->Co + ng * s->Cg);
    const int64_t nblocks = (V + s->vb - 1) / s->vb;
    int64_t nch = imax(1, imin(imin(nblocks, MAXCHUNKS), work / CHUNK_WORK));
    s->gsize = ng ? s->Cg * C : 0;
    if (s->gsize) {
        nch = imin(nch, imax(1, (V * P) / 64));                      /* summing partials: <= 1/64 of the Gram work */
        nch = imin(nch, imax(1, PARTIAL_BYTES / (s->nmix * s->gsize * sz)));
    }
    const int64_t bpc = (nblocks + nch - 1) / nch;
    s->chunk_v = bpc * s->vb;
    s->nchunks = (V + s->chunk_v - 1) / s->chunk_v;
    const int parallel = cx->nthreads > 1 && s->nchunks > 1 && work >= PAR_MIN_WORK;
    const int nt = parallel ? cx->nthreads : 1;
    for (int k = 0; k < nt; k++)
        if (!buf_get(&cx->scratch[k], each)) return -1;
    s->scratch = cx->scratch;
    s->partials = NULL;
    if (s->gsize) {  /* per chunk, a [Cg, C] partial for each mixed term */
        s->part_tr = vec_score_@S@(s->Cg) > vec_score_@S@(C);
        s->partials = (@T@ *)buf_get(cx->partial, (size_t)s->nchunks * s->nmix * s->gsize * sz);
        if (!s->partials) return -1;
    }
    run_chunks(step_chunk_@S@, s, s->nchunks, nt, parallel);
    for (int j = 0; s->partials && j < s->nmix; j++) {  /* sum in chunk order, into gram[j] (transposed as asked) */
        if (!s->gram[j]) continue;
        @T@ *p0 = s->partials + j * s->gsize, *gram = s->gram[j];
        for (int64_t c = 1; c < s->nchunks; c++) {
            const @T@ *pc = p0 + c * s->nmix * s->gsize;
            for (int64_t e = 0; e < s->gsize; e++) p0[e] += pc[e];
        }
        /* p0 is [Cg, C] (part_tr = 0) or [C, Cg]; gram is [Cg, C] (gram_tr = 0) or [C, Cg] */
        const int64_t R = s->part_tr ? C : s->Cg, Q = s->part_tr ? s->Cg : C;
        if (s->part_tr == s->gram_tr)
            for (int64_t e = 0; e < s->gsize; e++) gram[e] += p0[e];
        else
            for (int64_t r = 0; r < R; r++)
                for (int64_t q = 0; q < Q; q++) gram[q * R + r] += p0[r * Q + q];
    }
    return 0;
}

static step_@S@ step0_@S@(const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P, int64_t C) {
    step_@S@ s;
    memset(&s, 0, sizeof s);
    s.indptr = indptr; s.indices = indices; s.vals = vals;
    s.V = V; s.P = P; s.C = C;
    s.alpha = 1; s.beta = 1;
    return s;
}

/* One step, as a library call (laplacian_matmul). Returns 0, or -1 without memory. */
int cheb_step_@S@(const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P, int64_t C,
                  const @T@ *X, int64_t xsv, int64_t xsp, double alpha,
                  const @T@ *Y, int64_t ysv, int64_t ysp, double beta,
                  @T@ *out, int nthreads) {
    ctx_t cx;
    ctx_open(&cx, nthreads);
    step_@S@ s = step0_@S@(indptr, indices, vals, V, P, C);
    s.X = X; s.xsv = xsv; s.xsp = xsp; s.alpha = (@T@)alpha;
    s.Y = Y; s.ysv = ysv; s.ysp = ysp; s.beta = (@T@)beta;
    s.out = out;
    const int st = run_step_@S@(&cx, &s);
    ctx_close(&cx);
    return st;
}

/* Chebyshev recursion T_0 x .. T_{K-1} x on x [V, P, C], with the per-term mixing (Wpost +
   k * wstride into acc) and Gram (G into gram + k * gstride). Two temporaries: T_k is written
   over T_{k-2} (over x only when x is ours: own), and the last term is never stored. x is read
   in place when a vertex's rows are adjacent, else copied to vertex-major order by a first
   step. Terms are mixed three at a time, by the step that forms the third (it reads T_{k-2}
   and T_{k-1} anyway): terms 0-2 by step 2, 3-5 by step 5, ..., the rest by the last step.
   acc is then read and written ceil(K / 3) times instead of K, G read as often, and x needs
   no pass of its own (K = 5, nside 32: the forward 1.2x faster). Terms are still added to acc
   in order, so the results are those of one term per step. */

static int recurse_one_@S@(ctx_t *cx, const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V,
                           int64_t P, int64_t C, int64_t K, const @T@ *x, int64_t xsv, int64_t xsp, int own,
                           const @T@ *Wpost, int64_t wstride, int64_t Co, @T@ *acc, int64_t asv, int64_t asp,
                           const @T@ *abias, const @T@ *G, int64_t gsv, int64_t gsp, int64_t Cg, @T@ *gram,
                           int64_t gstride, int gram_tr, int gram_init, _Atomic int *nonfinite) {
    const size_t bytes = (size_t)V * P * C * sizeof(@T@);
    const int copy = K > 1 && P > 1 && xsp != C;
    int used = 0;
#define TEMP() (used < 2 ? (@T@ *)buf_get(&cx->temp[used++], bytes) : NULL)
    /* a signal: pointer and vertex / block strides */
    typedef struct { @T@ *p; int64_t sv, sp; } sg_t;
    step_@S@ s;
    sg_t prev = {(@T@ *)x, xsv, xsp}, cur = {NULL, P * C, C};
    int prev_own = own;  /* x itself may be overwritten when it is ours */
    for (int64_t k = 0; k < K; k++) {
        if (k == 0 && !copy && K > 1) continue;  /* x is read where it is, by steps 1 and 2 */
        s = step0_@S@(indptr, indices, vals, V, P, C);
        if (k == 0) { s.Y = prev.p; s.ysv = prev.sv; s.ysp = prev.sp; }
        else if (k == 1) { s.X = prev.p; s.xsv = prev.sv; s.xsp = prev.sp; }
        else {
            s.X = cur.p; s.xsv = cur.sv; s.xsp = cur.sp; s.alpha = 2;
            s.Y = prev.p; s.ysv = prev.sv; s.ysp = prev.sp; s.beta = -1;
        }
        sg_t o = {NULL, P * C, C};
        if (k == 0 ? copy : k < K - 1) {  /* stored: over T_{k-2} when that is ours, else a temporary */
            if (k >= 2 && prev_own) o = prev;
            else if (!(o.p = TEMP())) return -1;
            s.out = o.p; s.osv = o.sv; s.osp = o.sp;
        }
        s.Co = Co; s.acc = acc; s.asv = asv; s.asp = asp;
        s.G = G; s.gsv = gsv; s.gsp = gsp; s.Cg = Cg; s.gram_tr = gram_tr; s.gram_init = gram_init;
        for (int64_t j = imax(0, k - 2); j <= k; j++) {  /* the terms this step mixes: T_{k-2} is Y, T_{k-1} X */
            if (mixed_by(j, K) != k) continue;
            s.src[s.nmix] = j == k ? SRC_T : j == k - 1 ? SRC_X : SRC_Y;
            s.Wpost[s.nmix] = Wpost ? Wpost + j * wstride : NULL;
            s.gram[s.nmix] = G ? gram + j * gstride : NULL;
            if (j == 0) { s.acc_init = 1; s.abias = abias; }
            s.nmix++;
        }
        if (k == 0 && copy) { s.nonfinite = nonfinite; s.check = SRC_T; }  /* x is read by this step */
        else if (!copy && k == mixed_by(0, K)) {  /* ... or by this one first, as T_0's rows */
            s.nonfinite = nonfinite;
            s.check = s.src[0];
        }
        if (run_step_@S@(cx, &s)) return -1;
        if (k == 0) {
            if (copy) { prev = o; prev_own = 1; }
        } else if (k == 1) {
            cur = o;
        } else {  /* from here on the previous term is one of our temporaries */
            prev = cur; prev_own = 1;
            cur = o;
        }
    }
#undef TEMP
    return 0;
}

/* How many samples of a batch of P one pass takes: all of them while their temporaries are
   at most slice_min bytes, else slices (two or more) of at most slice_max bytes, of rows of at
   least slice_row_bytes per vertex (thinner rows: the sparse product pays its per-row cost on
   less). Why not always: slicing layers of 4-16 MB cost a SHREC'17 training step 7%. */
static int64_t slice_samples_@S@(int64_t V, int64_t P, int64_t C, int64_t K) {
    const int64_t sz = sizeof(@T@), total = V * P * C * sz;
    if (P <= 1 || K <= 1 || total <= slice_min) return P;
    const int64_t n = imax(2, (total + slice_max - 1) / slice_max);
    return imin(P, imax((P + n - 1) / n, (slice_row_bytes + C * sz - 1) / (C * sz)));
}

/* The recursion over the whole batch, or slice by slice of samples (see slice_samples):
   acc [V, P, Co] with any strides; each slice's Gram terms summed into gram (zeroed once). */
static int recurse_@S@(ctx_t *cx, const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P,
                       int64_t C, int64_t K, const @T@ *x, int64_t xsv, int64_t xsp, int own,
                       const @T@ *Wpost, int64_t wstride, int64_t Co, @T@ *acc, int64_t asv, int64_t asp,
                       const @T@ *abias, const @T@ *G, int64_t gsv, int64_t gsp, int64_t Cg, @T@ *gram,
                       int64_t gstride, int gram_tr, _Atomic int *nonfinite) {
    const int64_t ps = slice_samples_@S@(V, P, C, K);
    for (int64_t p0 = 0; p0 < P; p0 += ps) {
        const int64_t n = imin(ps, P - p0);
        if (recurse_one_@S@(cx, indptr, indices, vals, V, n, C, K, x + p0 * xsp, xsv, xsp, own, Wpost, wstride, Co,
                            acc ? acc + p0 * asp : NULL, asv, asp, abias, G ? G + p0 * gsp : NULL, gsv, gsp, Cg,
                            gram, gstride, gram_tr, p0 == 0, nonfinite))
            return -1;
    }
    return 0;
}

/* Clenshaw summation S = sum_k T_k (E @ W_k) (+ bias) into out [V, P, C]:
   b_{K-1} = E W_{K-1}; b_k = E W_k + 2 L~ b_{k+1} - b_{k+2}; S = E W_0 + L~ b_1 - b_2. */
static int clenshaw_one_@S@(ctx_t *cx, const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V,
                            int64_t P, int64_t C, int64_t K, const @T@ *E, int64_t esv, int64_t esp, int64_t Ce,
                            const @T@ *W, const @T@ *bias, @T@ *out, int64_t osv, int64_t osp,
                            _Atomic int *nonfinite) {
    const size_t bytes = (size_t)V * P * C * sizeof(@T@);
    step_@S@ s = step0_@S@(indptr, indices, vals, V, P, C);
    s.E = E; s.esv = esv; s.esp = esp; s.Ce = Ce;
    s.nonfinite = nonfinite;  /* E W_k is non-finite wherever E is (Inf * 0 = NaN) */
    if (K == 1) {
        s.Wpre = W; s.obias = bias; s.out = out; s.osv = osv; s.osp = osp;
        return run_step_@S@(cx, &s);
    }
    s.Wpre = W + (K - 1) * Ce * C;
    if (!(s.out = (@T@ *)buf_get(&cx->temp[0], bytes))) return -1;
    if (run_step_@S@(cx, &s)) return -1;
    @T@ *b1 = s.out, *b2 = NULL;
    for (int64_t k = K - 2; k >= 0; k--) {
        @T@ *o = k == 0 ? out : b2 ? b2 : (@T@ *)buf_get(&cx->temp[1], bytes);
        if (!o) return -1;
        s = step0_@S@(indptr, indices, vals, V, P, C);
        s.X = b1; s.xsv = P * C; s.xsp = C; s.alpha = k == 0 ? 1 : 2;
        if (b2) { s.Y = b2; s.ysv = P * C; s.ysp = C; s.beta = -1; }
        s.E = E; s.esv = esv; s.esp = esp; s.Ce = Ce; s.Wpre = W + k * Ce * C;
        s.obias = k == 0 ? bias : NULL;
        s.out = o;
        if (k == 0) { s.osv = osv; s.osp = osp; }
        if (run_step_@S@(cx, &s)) return -1;
        b2 = b1;
        b1 = o;
    }
    return 0;
}

/* Clenshaw's summation into out [V, P, C] (any strides), over the whole batch or slice by slice. */
static int clenshaw_@S@(ctx_t *cx, const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P,
                        int64_t C, int64_t K, const @T@ *E, int64_t esv, int64_t esp, int64_t Ce,
                        const @T@ *W, const @T@ *bias, @T@ *out, int64_t osv, int64_t osp, _Atomic int *nonfinite) {
    const int64_t ps = slice_samples_@S@(V, P, C, K);
    for (int64_t p0 = 0; p0 < P; p0 += ps)
        if (clenshaw_one_@S@(cx, indptr, indices, vals, V, imin(ps, P - p0), C, K, E + p0 * esp, esv, esp, Ce, W,
                             bias, out + p0 * osp, osv, osp, nonfinite))
            return -1;
    return 0;
}

/* Forward of a Chebyshev convolution: y [V, P, Cout] (contiguous) from x [V, P, Cin] (any
   strides, channels contiguous) and W [K, Cin, Cout]; by the recursion on x, or (clenshaw)
   by Clenshaw's recurrence on x W_k (fewer output channels). With `check`, the first pass
   also looks for NaN or Inf in what it reads. Returns 0, -1 (no memory) or 2 (non-finite). */
int cheb_forward_@S@(const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P,
                     int64_t Cin, int64_t Cout, int64_t K, const @T@ *x, int64_t xsv, int64_t xsp,
                     const @T@ *W, const @T@ *bias, @T@ *y, int clenshaw, int check, int nthreads) {
    ctx_t cx;
    ctx_open(&cx, nthreads);
    _Atomic int bad = 0;
    int st;
    if (clenshaw)
        st = clenshaw_@S@(&cx, indptr, indices, vals, V, P, Cout, K, x, xsv, xsp, Cin, W, bias, y, P * Cout, Cout,
                          check ? &bad : NULL);
    else
        st = recurse_@S@(&cx, indptr, indices, vals, V, P, Cin, K, x, xsv, xsp, 0, W, Cin * Cout, Cout, y, P * Cout,
                         Cout, bias, NULL, 0, 0, 0, NULL, 0, 0, check ? &bad : NULL);
    ctx_close(&cx);
    return st ? st : atomic_load(&bad) ? 2 : 0;
}

/* Backward: from g = dL/dy [V, P, Cout] (any strides) and x, gx [V, P, Cin] (strides gxsv,
   gxsp, channels contiguous; or NULL) and gw [K, Cin, Cout] (or NULL). on_x = 0: one
   recursion on g, Z_k = T_k g, gives gw_k = x^T Z_k and gx += Z_k W_k^T. on_x = 1: the recursion on x gives gw_k = (T_k x)^T g,
   and Clenshaw on g W_k^T gives gx. own_g: g is a private copy the recursion may overwrite.
   Returns 0 or -1. */
int cheb_backward_@S@(const @I@ *indptr, const @I@ *indices, const @T@ *vals, int64_t V, int64_t P,
                      int64_t Cin, int64_t Cout, int64_t K, const @T@ *x, int64_t xsv, int64_t xsp,
                      const @T@ *g, int64_t gsv, int64_t gsp, int own_g, const @T@ *W, @T@ *gx, int64_t gxsv,
                      int64_t gxsp, @T@ *gw, int on_x, int nthreads) {
    ctx_t cx;
    ctx_open(&cx, nthreads);
    int st = 0;
    @T@ *wt = NULL;
    if (gx) {  /* W_k^T, [K, Cout, Cin] */
        wt = (@T@ *)buf_get(cx.wt, (size_t)K * Cin * Cout * sizeof(@T@));
        if (!wt) st = -1;
        else  /* in 16 x 16 blocks, which stay in L1 */
            for (int64_t k = 0; k < K; k++)
                for (int64_t i0 = 0; i0 < Cin; i0 += 16)
                    for (int64_t o0 = 0; o0 < Cout; o0 += 16)
                        for (int64_t i = i0; i < imin(Cin, i0 + 16); i++)
                            for (int64_t o = o0; o < imin(Cout, o0 + 16); o++)
                                wt[(k * Cout + o) * Cin + i] = W[(k * Cin + i) * Cout + o];
    }
    if (st == 0 && !on_x)
        st = recurse_@S@(&cx, indptr, indices, vals, V, P, Cout, K, g, gsv, gsp, own_g, wt, Cin * Cout, Cin, gx, gxsv,
                         gxsp, NULL, gw ? x : NULL, xsv, xsp, Cin, gw, Cin * Cout, 0, NULL);
    if (st == 0 && on_x && gw)
        st = recurse_@S@(&cx, indptr, indices, vals, V, P, Cin, K, x, xsv, xsp, 0, NULL, 0, 0, NULL, 0, 0, NULL,
                         g, gsv, gsp, Cout, gw, Cin * Cout, 1, NULL);
    if (st == 0 && on_x && gx)
        st = clenshaw_@S@(&cx, indptr, indices, vals, V, P, Cin, K, g, gsv, gsp, Cout, wt, NULL, gx, gxsv, gxsp, NULL);
    ctx_close(&cx);
    return st;
}

#undef SPARSE_TILE
#undef GEMM_TILE
#undef GEMM_ROW
"""

# Batch norm (+ ReLU) over [N, C] rows: one copy per floating type.
_BN = r"""/* -- batch norm (+ ReLU) over the channels of [N, C] rows (channels contiguous, row stride C):
   the [batch, vertices, channels] layout, whatever the order of batch and vertices in memory. */
typedef struct {
    const @T@ *x, *g; @T@ *y;
    int64_t N, C, rows;      /* rows per chunk */
    const @T@ *scale, *shift, *a, *b, *d;
    int relu;
    double *part;            /* per chunk: [3, C] (count-weighted mean, M2) or [2, C] sums */
    const @T@ *mean_f;
} bn_@S@;

/* Per chunk: mean and M2 by two passes over blocks of <= 64 rows (in L1), merged with
   Chan's formula in double: accurate without a second read of memory. */
static void bn_stats_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bn_@S@ *a = (const bn_@S@ *)arg;
    const int64_t C = a->C, r0 = c * a->rows, r1 = imin(a->N, r0 + a->rows);
    double *mean = a->part + c * 2 * C, *m2 = mean + C;
    double n = 0;
    for (int64_t q = 0; q < C; q++) mean[q] = m2[q] = 0;
    @T@ bm[1024], bs[1024];
    for (int64_t q0 = 0; q0 < C; q0 += 1024) {
        const int64_t qn = imin(1024, C - q0);
        n = 0;
        for (int64_t b0 = r0; b0 < r1; b0 += 64) {
            const int64_t nb = imin(64, r1 - b0);
            for (int64_t q = 0; q < qn; q++) bm[q] = 0;
            for (int64_t r = b0; r < b0 + nb; r++) {
                const @T@ *xr = a->x + r * C + q0;
                for (int64_t q = 0; q < qn; q++) bm[q] += xr[q];
            }
            for (int64_t q = 0; q < qn; q++) { bm[q] /= (@T@)nb; bs[q] = 0; }
            for (int64_t r = b0; r < b0 + nb; r++) {
                const @T@ *xr = a->x + r * C + q0;
                for (int64_t q = 0; q < qn; q++) { const @T@ e = xr[q] - bm[q]; bs[q] += e * e; }
            }
            for (int64_t q = 0; q < qn; q++) {  /* merge (n, mean, m2) with (nb, bm, bs) */
                const double delta = (double)bm[q] - mean[q0 + q], tot = n + nb;
                mean[q0 + q] += delta * nb / tot;
                m2[q0 + q] += (double)bs[q] + delta * delta * n * nb / tot;
            }
            n += nb;
        }
    }
}

static void bn_apply_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bn_@S@ *a = (const bn_@S@ *)arg;
    const int64_t C = a->C, r0 = c * a->rows, r1 = imin(a->N, r0 + a->rows);
    /* local restrict pointers: stores to y cannot change the coefficients (vectorizes) */
    const @T@ *restrict sc = a->scale, *restrict sh = a->shift;
    for (int64_t r = r0; r < r1; r++) {
        const @T@ *xr = a->x + r * C;
        @T@ *yr = a->y + r * C;
        if (a->relu)
            for (int64_t q = 0; q < C; q++) { const @T@ z = xr[q] * sc[q] + sh[q]; yr[q] = z > 0 ? z : 0; }
        else
            for (int64_t q = 0; q < C; q++) yr[q] = xr[q] * sc[q] + sh[q];
    }
}

/* sums of dz and dz * x per channel, dz = g * relu'(x * scale + shift) */
static void bn_bsums_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bn_@S@ *a = (const bn_@S@ *)arg;
    const int64_t C = a->C, r0 = c * a->rows, r1 = imin(a->N, r0 + a->rows);
    double *sg = a->part + c * 2 * C, *sgx = sg + C;
    for (int64_t q = 0; q < C; q++) sg[q] = sgx[q] = 0;
    @T@ bg[1024], bgx[1024];
    for (int64_t q0 = 0; q0 < C; q0 += 1024) {
        const int64_t qn = imin(1024, C - q0);
        for (int64_t b0 = r0; b0 < r1; b0 += 64) {
            const int64_t nb = imin(64, r1 - b0);
            for (int64_t q = 0; q < qn; q++) bg[q] = bgx[q] = 0;
            for (int64_t r = b0; r < b0 + nb; r++) {
                const @T@ *xr = a->x + r * C + q0, *gr = a->g + r * C + q0;
                const @T@ *sc = a->scale + q0, *sh = a->shift + q0, *mu = a->mean_f + q0;
                if (a->relu)
                    for (int64_t q = 0; q < qn; q++) {
                        const @T@ dz = xr[q] * sc[q] + sh[q] > 0 ? gr[q] : 0;
                        bg[q] += dz; bgx[q] += dz * (xr[q] - mu[q]);
                    }
                else
                    for (int64_t q = 0; q < qn; q++) { bg[q] += gr[q]; bgx[q] += gr[q] * (xr[q] - mu[q]); }
            }
            for (int64_t q = 0; q < qn; q++) { sg[q0 + q] += bg[q]; sgx[q0 + q] += bgx[q]; }
        }
    }
}

/* dx = a * dz + b * x + d */
static void bn_bapply_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bn_@S@ *a = (const bn_@S@ *)arg;
    const int64_t C = a->C, r0 = c * a->rows, r1 = imin(a->N, r0 + a->rows);
    const @T@ *restrict sc = a->scale, *restrict sh = a->shift, *restrict ca = a->a, *restrict cb = a->b,
              *restrict cd = a->d;
    for (int64_t r = r0; r < r1; r++) {
        const @T@ *xr = a->x + r * C, *gr = a->g + r * C;
        @T@ *yr = a->y + r * C;
        if (a->relu)
            for (int64_t q = 0; q < C; q++) {
                const @T@ dz = xr[q] * sc[q] + sh[q] > 0 ? gr[q] : 0;
                yr[q] = ca[q] * dz + cb[q] * xr[q] + cd[q];
            }
        else
            for (int64_t q = 0; q < C; q++) yr[q] = ca[q] * gr[q] + cb[q] * xr[q] + cd[q];
    }
}

static int64_t bn_rows_@S@(int64_t N, int64_t C) {
    /* chunks of >= 16k elements, at most MAXCHUNKS; independent of the thread count */
    int64_t rows = imax(64, ((1 << 14) + C - 1) / imax(C, 1));
    rows = (rows + 63) / 64 * 64;
    while ((N + rows - 1) / rows > MAXCHUNKS) rows *= 2;
    return rows;
}

/* Batch norm (+ ReLU) forward over x [N, C] into y (may be x). Training: the batch's mean
   and biased variance (running stats updated with the unbiased one, factor `momentum`);
   else the running stats. Saves mean and 1/sqrt(var + eps) for the backward. */
int bn_forward_@S@(const @T@ *x, @T@ *y, int64_t N, int64_t C, const @T@ *weight, const @T@ *bias,
                   @T@ *running_mean, @T@ *running_var, int training, double momentum, double eps, int relu,
                   @T@ *save_mean, @T@ *save_invstd, int nthreads) {
    if (C <= 0) return 0;
    ctx_t cx;
    ctx_open(&cx, nthreads);
    bn_@S@ a;
    memset(&a, 0, sizeof a);
    a.x = x; a.y = y; a.N = N; a.C = C; a.rows = bn_rows_@S@(N, C); a.relu = relu;
    const int64_t n = N > 0 ? (N + a.rows - 1) / a.rows : 0;
    const int par = N * C >= PAR_MIN_WORK / 4;
    /* partials: [n, 2, C] doubles, then mean, var (double) and scale, shift (T) */
    char *mem = (char *)buf_get(cx.partial, ((size_t)n * 2 * C + 2 * C) * sizeof(double) + 2 * C * sizeof(@T@));
    if (!mem) { ctx_close(&cx); return -1; }
    a.part = (double *)mem;
    double *mean = a.part + n * 2 * C, *var = mean + C;
    @T@ *scale = (@T@ *)(var + C), *shift = scale + C;
    if (training) {
        run_chunks(bn_stats_chunk_@S@, &a, n, cx.nthreads, par);
        double cnt = 0;
        for (int64_t q = 0; q < C; q++) mean[q] = var[q] = 0;
        for (int64_t c = 0; c < n; c++) {  /* Chan's merge, in chunk order */
            const double nb = (double)(imin(N, (c + 1) * a.rows) - c * a.rows), tot = cnt + nb;
            const double *pm = a.part + c * 2 * C, *pv = pm + C;
            for (int64_t q = 0; q < C; q++) {
                const double delta = pm[q] - mean[q];
                mean[q] += delta * nb / tot;
                var[q] += pv[q] + delta * delta * cnt * nb / tot;
            }
            cnt = tot;
        }
        for (int64_t q = 0; q < C; q++) {
            var[q] = N > 0 ? var[q] / (double)N : 0;
            if (running_mean) running_mean[q] = (@T@)((1 - momentum) * running_mean[q] + momentum * mean[q]);
            if (running_var && N > 1)
                running_var[q] = (@T@)((1 - momentum) * running_var[q] + momentum * var[q] * N / (N - 1));
        }
    } else {
        for (int64_t q = 0; q < C; q++) { mean[q] = running_mean[q]; var[q] = running_var[q]; }
    }
    for (int64_t q = 0; q < C; q++) {
        const double inv = 1.0 / __builtin_sqrt(var[q] + eps), w = weight ? weight[q] : 1.0;
        save_mean[q] = (@T@)mean[q];
        save_invstd[q] = (@T@)inv;
        scale[q] = (@T@)(w * inv);
        shift[q] = (@T@)((bias ? bias[q] : 0.0) - mean[q] * w * inv);
    }
    a.scale = scale; a.shift = shift;
    run_chunks(bn_apply_chunk_@S@, &a, n, cx.nthreads, par);
    ctx_close(&cx);
    return 0;
}

/* Backward of bn_forward from g = dL/dy: dx (may be g; NULL: not needed), dweight and
   dbias (NULL: not needed). The ReLU mask is recomputed from x. */
int bn_backward_@S@(const @T@ *x, const @T@ *g, @T@ *dx, int64_t N, int64_t C, const @T@ *weight,
                    const @T@ *bias, const @T@ *mean, const @T@ *invstd, int training, int relu,
                    @T@ *dweight, @T@ *dbias, int nthreads) {
    if (C <= 0) return 0;
    ctx_t cx;
    ctx_open(&cx, nthreads);
    bn_@S@ a;
    memset(&a, 0, sizeof a);
    a.x = x; a.g = g; a.y = dx; a.N = N; a.C = C; a.rows = bn_rows_@S@(N, C); a.relu = relu; a.mean_f = mean;
    const int64_t n = N > 0 ? (N + a.rows - 1) / a.rows : 0;
    const int par = N * C >= PAR_MIN_WORK / 4;
    char *mem = (char *)buf_get(cx.partial, ((size_t)n * 2 * C + 2 * C) * sizeof(double) + 5 * C * sizeof(@T@));
    if (!mem) { ctx_close(&cx); return -1; }
    a.part = (double *)mem;
    double *sg = a.part + n * 2 * C, *sgx = sg + C;
    @T@ *scale = (@T@ *)(sgx + C), *shift = scale + C, *ca = shift + C, *cb = ca + C, *cd = cb + C;
    for (int64_t q = 0; q < C; q++) {
        const double w = weight ? weight[q] : 1.0;
        scale[q] = (@T@)(w * invstd[q]);
        shift[q] = (@T@)((bias ? bias[q] : 0.0) - (double)mean[q] * w * invstd[q]);
    }
    a.scale = scale; a.shift = shift;
    run_chunks(bn_bsums_chunk_@S@, &a, n, cx.nthreads, par);
    for (int64_t q = 0; q < C; q++) sg[q] = sgx[q] = 0;
    for (int64_t c = 0; c < n; c++)
        for (int64_t q = 0; q < C; q++) { sg[q] += a.part[c * 2 * C + q]; sgx[q] += a.part[c * 2 * C + C + q]; }
    for (int64_t q = 0; q < C; q++) {
        /* sums of dz and dz * xhat, xhat = (x - mean) * invstd */
        const double s1 = sg[q], s2 = sgx[q] * invstd[q], k = scale[q];
        if (dweight) dweight[q] = (@T@)s2;
        if (dbias) dbias[q] = (@T@)s1;
        if (training && N > 0) {  /* dx = k (dz - mean(dz) - xhat mean(dz xhat)) */
            const double m1 = s1 / N, m2 = s2 / N;
            ca[q] = (@T@)k;
            cb[q] = (@T@)(-k * invstd[q] * m2);
            cd[q] = (@T@)(k * ((double)mean[q] * invstd[q] * m2 - m1));
        } else {
            ca[q] = (@T@)k; cb[q] = 0; cd[q] = 0;
        }
    }
    if (dx) {
        a.a = ca; a.b = cb; a.d = cd;
        run_chunks(bn_bapply_chunk_@S@, &a, n, cx.nthreads, par);
    }
    ctx_close(&cx);
    return 0;
}
"""

_POOL = r"""/* -- pooling over consecutive blocks of m vertices (NESTED HEALPix and other nested pyramids):
   x [B, Vc * m, C] -> y [B, Vc, C], the max (with, per output, the position 0..m-1 of its maximum:
   the first one, NaN counting as the largest, as in torch.max) or the mean (idx == NULL). Batch
   and vertex strides are free (a convolution's vertex-major output is read in place), channels
   contiguous. */
typedef struct {
    const @T@ *x, *g; @T@ *y, *gx; uint8_t *idx;
    int64_t B, Vc, m, C, sxb, sxv, syb, syv, rows;  /* rows: coarse vertices per chunk */
} bpool_job_@S@;

/* One output row, channels in vectors (GCC vector extensions: comparisons give lane masks),
   the remainder in scalars; m is a constant where inlined for m == 4 (the loop over the
   block then unrolls). */
typedef @T@ vbm_@S@ __attribute__((vector_size(VBYTES)));
typedef @IT@ vbmi_@S@ __attribute__((vector_size(VBYTES)));
#define BML_@S@ ((int64_t)(VBYTES / sizeof(@T@)))

static inline __attribute__((always_inline)) void bmax_row_@S@(const @T@ *restrict x0, int64_t sxv,
        @T@ *restrict y, uint8_t *restrict ix, int64_t C, const int64_t m) {
    int64_t q = 0;
    for (; q + BML_@S@ <= C; q += BML_@S@) {
        vbm_@S@ w, u;
        vbmi_@S@ p = {0};
        memcpy(&w, x0 + q, sizeof w);
        for (int64_t j = 1; j < m; j++) {
            memcpy(&u, x0 + j * sxv + q, sizeof u);
            const vbmi_@S@ take = (u > w) | ((u != u) & (w == w));
            w = (vbm_@S@)(((vbmi_@S@)u & take) | ((vbmi_@S@)w & ~take));
            p = (p & ~take) | ((vbmi_@S@){0} + (@IT@)j & take);
        }
        memcpy(y + q, &w, sizeof w);
        for (int64_t k = 0; k < BML_@S@; k++) ix[q + k] = (uint8_t)p[k];
    }
    for (; q < C; q++) {
        @T@ w = x0[q];
        int p = 0;
        for (int64_t j = 1; j < m; j++) {
            const @T@ u = x0[j * sxv + q];
            const int take = (u > w) | ((u != u) & (w == w));
            w = take ? u : w;
            p = take ? (int)j : p;
        }
        y[q] = w;
        ix[q] = (uint8_t)p;
    }
}

static inline __attribute__((always_inline)) void bmax_row_back_@S@(const @T@ *restrict g,
        const uint8_t *restrict ix, @T@ *restrict gx, int64_t sxv, int64_t C, const int64_t m) {
    int64_t q = 0;
    for (; q + BML_@S@ <= C; q += BML_@S@) {
        vbm_@S@ gv;
        vbmi_@S@ p;
        memcpy(&gv, g + q, sizeof gv);
        for (int64_t k = 0; k < BML_@S@; k++) p[k] = ix[q + k];
        for (int64_t j = 0; j < m; j++) {
            const vbm_@S@ r = (vbm_@S@)((vbmi_@S@)gv & (p == (@IT@)j));
            memcpy(gx + j * sxv + q, &r, sizeof r);
        }
    }
    for (; q < C; q++)
        for (int64_t j = 0; j < m; j++) gx[j * sxv + q] = ix[q] == j ? g[q] : (@T@)0;
}

static inline __attribute__((always_inline)) void bavg_row_@S@(const @T@ *restrict x0, int64_t sxv,
        @T@ *restrict y, int64_t C, const int64_t m) {
    for (int64_t q = 0; q < C; q++) {
        @T@ s = x0[q];
        for (int64_t j = 1; j < m; j++) s += x0[j * sxv + q];
        y[q] = s / (@T@)m;
    }
}

static inline __attribute__((always_inline)) void bavg_row_back_@S@(const @T@ *restrict g, @T@ *restrict gx,
        int64_t sxv, int64_t C, const int64_t m) {
    for (int64_t j = 0; j < m; j++)
        for (int64_t q = 0; q < C; q++) gx[j * sxv + q] = g[q] / (@T@)m;
}

static void bmax_fwd_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bpool_job_@S@ *a = (const bpool_job_@S@ *)arg;
    const int64_t v0 = c * a->rows, v1 = imin(a->Vc, v0 + a->rows);
    for (int64_t v = v0; v < v1; v++)
        for (int64_t b = 0; b < a->B; b++) {
            const @T@ *x0 = a->x + b * a->sxb + v * a->m * a->sxv;
            const int64_t o = b * a->syb + v * a->syv;
            if (a->m == 4) bmax_row_@S@(x0, a->sxv, a->y + o, a->idx + o, a->C, 4);
            else bmax_row_@S@(x0, a->sxv, a->y + o, a->idx + o, a->C, a->m);
        }
}

static void bavg_fwd_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bpool_job_@S@ *a = (const bpool_job_@S@ *)arg;
    const int64_t v0 = c * a->rows, v1 = imin(a->Vc, v0 + a->rows);
    for (int64_t v = v0; v < v1; v++)
        for (int64_t b = 0; b < a->B; b++) {
            const @T@ *x0 = a->x + b * a->sxb + v * a->m * a->sxv;
            const int64_t o = b * a->syb + v * a->syv;
            if (a->m == 4) bavg_row_@S@(x0, a->sxv, a->y + o, a->C, 4);
            else bavg_row_@S@(x0, a->sxv, a->y + o, a->C, a->m);
        }
}

static void bavg_bwd_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bpool_job_@S@ *a = (const bpool_job_@S@ *)arg;
    const int64_t v0 = c * a->rows, v1 = imin(a->Vc, v0 + a->rows);
    for (int64_t v = v0; v < v1; v++)
        for (int64_t b = 0; b < a->B; b++) {
            const int64_t o = b * a->syb + v * a->syv;
            @T@ *gx = a->gx + b * a->sxb + v * a->m * a->sxv;
            if (a->m == 4) bavg_row_back_@S@(a->g + o, gx, a->sxv, a->C, 4);
            else bavg_row_back_@S@(a->g + o, gx, a->sxv, a->C, a->m);
        }
}

static void bmax_bwd_chunk_@S@(void *arg, int64_t c, int tid) {
    (void)tid;
    const bpool_job_@S@ *a = (const bpool_job_@S@ *)arg;
    const int64_t v0 = c * a->rows, v1 = imin(a->Vc, v0 + a->rows);
    for (int64_t v = v0; v < v1; v++)
        for (int64_t b = 0; b < a->B; b++) {
            const int64_t o = b * a->syb + v * a->syv;
            @T@ *gx = a->gx + b * a->sxb + v * a->m * a->sxv;
            if (a->m == 4) bmax_row_back_@S@(a->g + o, a->idx + o, gx, a->sxv, a->C, 4);
            else bmax_row_back_@S@(a->g + o, a->idx + o, gx, a->sxv, a->C, a->m);
        }
}

/* forward (g == NULL: y, and idx for the max, from x) or backward (gx from g, and idx for the
   max) of the block max (idx != NULL) or mean (idx == NULL) */
int block_pool_@S@(const @T@ *x, const @T@ *g, @T@ *y, @T@ *gx, uint8_t *idx, int64_t B, int64_t Vc, int64_t m,
             int64_t C, int64_t sxb, int64_t sxv, int64_t syb, int64_t syv, int nthreads) {
    if (B <= 0 || Vc <= 0 || C <= 0) return 0;
    if (m < 1 || m > 255) return -2;
    ctx_t cx;
    ctx_open(&cx, nthreads);
    bpool_job_@S@ a = {x, g, y, gx, idx, B, Vc, m, C, sxb, sxv, syb, syv, 1};
    const int64_t per_vertex = B * m * C;
    a.rows = imax(1, imax(CHUNK_WORK / per_vertex, (Vc + MAXCHUNKS - 1) / MAXCHUNKS));
    const int64_t n = (Vc + a.rows - 1) / a.rows;
    chunk_fn fn = idx ? (g ? bmax_bwd_chunk_@S@ : bmax_fwd_chunk_@S@) : (g ? bavg_bwd_chunk_@S@ : bavg_fwd_chunk_@S@);
    run_chunks(fn, &a, n, cx.nthreads, Vc * per_vertex >= PAR_MIN_WORK);
    ctx_close(&cx);
    return 0;
}
"""

_VARIANTS = [("float", "int32_t", "f32_i32"), ("double", "int32_t", "f64_i32"),
             ("float", "int64_t", "f32_i64"), ("double", "int64_t", "f64_i64")]
# AVX-512 intrinsic names per type: suffix, mask type, vector type suffix.
_MASK = {"float": ("ps", "__mmask16", ""), "double": ("pd", "__mmask8", "d")}


def _instance(body: str, t: str, i: str, s: str) -> str:
    ps, mk, pv = _MASK[t]
    return (body.replace("@T@", t).replace("@I@", i).replace("@S@", s).replace("@P@", ps).replace("@MK@", mk)
            .replace("@PV@", pv))


SOURCE = (_HEADER
          + "".join(_instance(_CONV, t, i, s) for t, i, s in _VARIANTS)
          + "".join((_BN + _POOL).replace("@T@", t).replace("@IT@", it).replace("@S@", s)
                    for t, it, s in (("float", "int32_t", "f32"), ("double", "int64_t", "f64"))))

# gnu11 for the vector extensions; fp-contract for fused multiply-adds (no
# reassociation: results stay as accurate as the plain loops).
# GRAPHSPHERE_KERNEL_MARCH overrides -march=native (e.g. x86-64-v3 to run under
# valgrind, which does not decode AVX-512).
_FLAGS = ["-O3", "-march=" + (os.environ.get("GRAPHSPHERE_KERNEL_MARCH") or "native"), "-ffp-contract=fast",
          "-fno-math-errno", "-fPIC", "-shared", "-pthread", "-std=gnu11"]
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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(target: Path) -> bool:
    """The cached library exists and its bytes match the digest stored beside it."""
    try:
        return (target.with_name(target.name + ".sha256").read_text().strip() == _digest(target))
    except OSError:
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(cc: str) -> Path:
    """Path of a verified library for this source, compiler, flags and CPU (built if needed).

    A library that does not match its digest (truncated by a full disk, damaged)
    would crash the process when loaded (SIGBUS): it is rebuilt instead. Both
    files are written atomically, so concurrent builders race harmlessly.
    """
    key = hashlib.sha256("\n".join([SOURCE, cc, " ".join(_FLAGS), platform.machine(),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"cheb_step_{key}.so"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "cheb_step.c"
        src.write_text(SOURCE)
        lib = Path(tmp) / "cheb_step.so"
        try:  # with OpenMP where the compiler has it: jobs then run on PyTorch's own threads (see gs_openmp)
            subprocess.run([cc, *_FLAGS, "-fopenmp", str(src), "-o", str(lib)], check=True, capture_output=True,
                           timeout=300)
        except subprocess.CalledProcessError:
            subprocess.run([cc, *_FLAGS, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=300)
        data = lib.read_bytes()
    _write_atomic(target, data)
    _write_atomic(target.with_name(target.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())
    return target


def _bind(dll) -> SimpleNamespace:
    p, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    sig = {
        "cheb_step": [p, p, p, i64, i64, i64, p, i64, i64, dbl, p, i64, i64, dbl, p, cint],
        "cheb_forward": [p, p, p, i64, i64, i64, i64, i64, p, i64, i64, p, p, p, cint, cint, cint],
        "cheb_backward": [p, p, p, i64, i64, i64, i64, i64, p, i64, i64, p, i64, i64, cint, p, p, i64, i64, p, cint,
                          cint],
    }
    bn_sig = {
        "bn_forward": [p, p, i64, i64, p, p, p, p, cint, dbl, dbl, cint, p, p, cint],
        "bn_backward": [p, p, p, i64, i64, p, p, p, p, cint, cint, p, p, cint],
    }
    block_pool_sig = [p, p, p, p, p, i64, i64, i64, i64, i64, i64, i64, i64, cint]

    def fn(name, argtypes):
        f = getattr(dll, name)
        f.argtypes, f.restype = argtypes, cint
        return f

    conv = {}
    for _, _, suffix in _VARIANTS:
        fl, ix = suffix.split("_")
        key = ("float32" if fl == "f32" else "float64", "int32" if ix == "i32" else "int64")
        conv[key] = SimpleNamespace(**{n: fn(f"{n}_{suffix}", a) for n, a in sig.items()})
    bn = {dt: SimpleNamespace(**{n: fn(f"{n}_{s}", a) for n, a in bn_sig.items()})
          for dt, s in (("float32", "f32"), ("float64", "f64"))}
    block_pool = {dt: fn(f"block_pool_{s}", block_pool_sig) for dt, s in (("float32", "f32"), ("float64", "f64"))}
    dll.gs_release.argtypes, dll.gs_release.restype = [i64], None
    dll.gs_pool_threads.argtypes, dll.gs_pool_threads.restype = [], cint
    dll.gs_kept_bytes.argtypes, dll.gs_kept_bytes.restype = [], i64
    dll.gs_spin_us.argtypes, dll.gs_spin_us.restype = [dbl], dbl
    dll.gs_slicing.argtypes, dll.gs_slicing.restype = [i64, i64, i64], i64
    dll.gs_openmp.argtypes, dll.gs_openmp.restype = [cint], cint
    dll.gs_threads_seen.argtypes, dll.gs_threads_seen.restype = [cint], cint
    return SimpleNamespace(conv=conv, bn=bn, block_pool=block_pool, release=dll.gs_release,
                           pool_threads=dll.gs_pool_threads, kept_bytes=dll.gs_kept_bytes, spin_us=dll.gs_spin_us,
                           slicing=dll.gs_slicing, openmp=dll.gs_openmp, threads_seen=dll.gs_threads_seen, dll=dll)


def load():
    """The compiled kernels, or None where they cannot be had (no compiler,
    build failure, ``GRAPHSPHERE_NO_KERNEL=1``).

    Returns a namespace: ``conv[(float dtype name, index dtype name)]`` holds
    ``cheb_step``, ``cheb_forward``, ``cheb_backward``; ``bn[float dtype name]``
    the batch-norm passes; ``block_pool[float dtype name]`` block max and mean pooling;
    ``release(retain)`` frees the kept temporaries.
    """
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        _state["lib"] = None
        if os.environ.get("GRAPHSPHERE_NO_KERNEL", "") not in ("", "0"):
            return None
        cc = _compiler()
        if cc is None:
            return None
        try:
            _state["lib"] = _bind(ctypes.CDLL(str(_build(cc))))
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace")[-300:]
            warnings.warn(f"graphsphere: could not build the CPU Chebyshev kernel ({e}; {detail}); "
                          "using the slower pure-torch path", RuntimeWarning, stacklevel=3)
        return _state["lib"]


def release(retain: int | None = None) -> None:
    """Free the temporaries the kernels keep between calls (and, with
    ``retain`` bytes, set how much they may keep from now on; 0: nothing).

    >>> release()          # e.g. before measuring peak memory
    """
    lib = load()
    if lib is not None:
        lib.release(-1 if retain is None else int(retain))


def slicing(min_bytes: int | None = None, max_bytes: int | None = None) -> int | None:
    """Set when the Chebyshev recursions run on slices of the batch: a layer whose two
    temporaries (one batch's signal each) exceed ``min_bytes`` (16 MB by default) runs in two
    or more slices of at most ``max_bytes`` (16 MB), so its peak memory falls from 3 to about 2
    signals. Lower ``min_bytes`` for the leanest memory on mid-sized layers: slicing layers of
    4-16 MB cost a SHREC'17 training step 7% on 2 cores. None leaves a value unchanged; returns
    the previous ``min_bytes`` (None without the kernel).

    >>> old = slicing(min_bytes=4 << 20)     # slice layers above 4 MB
    >>> _ = slicing(min_bytes=old)
    """
    lib = load()
    if lib is None:
        return None
    return int(lib.slicing(-1 if min_bytes is None else int(min_bytes), -1 if max_bytes is None else int(max_bytes),
                           -1))


def openmp(on: bool | None = None) -> bool | None:
    """Whether the kernels run their threads on OpenMP's team, which is PyTorch's (True, the default
    where the library was built with OpenMP), or on a pool of their own (False). PyTorch's threads
    spin for a while after each of its parallel operations and compete with a pool of ours for the
    cores; on its team they take the kernel's work instead. Results are the same either way (the
    work is cut into the same chunks, reduced in the same order). None only reads the setting;
    returns the previous one (None without the kernel or without OpenMP).

    >>> old = openmp(False)      # our own pool of threads
    >>> _ = openmp(old)
    """
    lib = load()
    if lib is None:
        return None
    old = int(lib.openmp(-1 if on is None else int(bool(on))))
    return None if old < 0 else bool(old)
