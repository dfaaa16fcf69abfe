/* Spatial dropout kernels (see spatial_dropout_kernels.h): the plain scalar
 * reference first, then the fast kernels that the tests hold to it bit for
 * bit. Needs only the C library (OpenMP when built with -fopenmp, GCC/Clang
 * vector extensions), so these two files can be copied into any build:
 *     cc -std=c11 -O2 -march=native -fopenmp -c spatial_dropout_kernels.c
 * Reading order: the error and argument checks and the hash (short), the
 * definition (nn_sd_forward_reference, nn_sd_backward_reference), then the
 * vector helpers and the fast kernels.
 *
 * Fast kernel layout choices, for speed:
 *  - channels_first: every (n, c) map is one contiguous plane. Each thread
 *    takes a contiguous share of the N*C planes (what collapse(2) over
 *    (n, c) with a static schedule gives) and walks it in runs of planes
 *    with the same draw: a run of kept planes is one vectorised multiply, a
 *    run of dropped planes one memset that never reads x, only prefetches
 *    it so that the hardware prefetchers keep streaming (prefetch_span).
 *    Runs instead of a loop per plane matter for small maps (14x14 is 784
 *    bytes).
 *  - channels_last: maps interleave, so each thread takes a contiguous range
 *    of (n, p) rows of C values and applies a select per channel
 *    (keep ? x*s : 0), which is exact +0.0 for dropped channels whatever x
 *    holds (a multiply by 0 would turn Inf into NaN and -x into -0.0).
 *    Backward walks a sample's rows as one stream with a repeating pattern
 *    of channel lanes (masked_acc).
 *  - draws: a plain loop of hashes over a block of maps, which the compiler
 *    vectorises, so the N*C draws stay small next to the maps even at
 *    32x256 maps of 14x14.
 * Every element's result depends only on (seed, call, n, c) and x, so the
 * output is bit-identical for any thread count.
 *
 * Deliberately omitted: anything of nn (status codes, tensors, layers); the
 * vector helpers and the hash are small copies of nn's (see below) rather
 * than includes, so that nothing else has to travel with the pair.
 */
#include "spatial_dropout_kernels.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define SD_OMP(directive) _Pragma(#directive)
#else
/* Without OpenMP the pragmas go away (an unknown #pragma omp would be a
 * warning) and every kernel runs on the calling thread. */
#define SD_OMP(directive)
#endif

/* Below this many elements, a thread team costs more than it saves. */
#define PAR_MIN ((size_t)1 << 15)
/* Keep bytes handled at a time (a per-thread stack buffer). */
#define CHUNK ((size_t)2048)
/* Bytes between the prefetches that bridge a skipped map (prefetch_span). */
#define PF_STRIDE 128

/* ---- errors ---------------------------------------------------------------- */

static _Thread_local char spatial_dropout_kernels_message[256];

const char *nn_sd_last_error(void) { return spatial_dropout_kernels_message; }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int spatial_dropout_kernels_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spatial_dropout_kernels_message, sizeof spatial_dropout_kernels_message, fmt, ap);
    va_end(ap);
    return code;
}

static int spatial_dropout_kernels_check_rate(const char *fn, float rate)
{
    if (!(rate >= 0.0f && rate <= 1.0f)) /* NaN fails both comparisons */
        return spatial_dropout_kernels_fail(NN_SD_ERR_ARG, "%s: rate must be between 0 and 1, "
                                            "but got %g", fn, (double)rate);
    return NN_SD_OK;
}

/* Validates shape, rate and layout; *total = N*C*spatial. */
static int spatial_dropout_kernels_check_args(const char *fn, int N, int C, long spatial,
                                              int layout, float rate, size_t *total)
{
    if (N < 0 || C < 0 || spatial < 0)
        return spatial_dropout_kernels_fail(NN_SD_ERR_SHAPE, "%s: N, C and spatial must be >= 0, "
                                            "but got N=%d, C=%d, spatial=%ld", fn, N, C, spatial);
    const int e = spatial_dropout_kernels_check_rate(fn, rate);
    if (e) return e;
    if (layout != NN_SD_CHANNELS_FIRST && layout != NN_SD_CHANNELS_LAST)
        return spatial_dropout_kernels_fail(NN_SD_ERR_ARG, "%s: fmt must be NN_SD_CHANNELS_FIRST "
                                            "or NN_SD_CHANNELS_LAST, but got %d", fn, layout);
    const size_t nc = (size_t)N * (size_t)C;
    if (spatial && nc > SIZE_MAX / sizeof(float) / (size_t)spatial)
        return spatial_dropout_kernels_fail(NN_SD_ERR_SHAPE, "%s: N*C*spatial = %d*%d*%ld "
                                            "elements is too large", fn, N, C, spatial);
    *total = nc * (size_t)spatial;
    return NN_SD_OK;
}

static int spatial_dropout_kernels_check_ptr(const char *fn, const char *name, const void *p)
{
    return p ? NN_SD_OK
             : spatial_dropout_kernels_fail(NN_SD_ERR_ARG, "%s: %s is NULL for a non-empty "
                                            "shape", fn, name);
}

#define SD_TRY(expr)                     \
    do {                                 \
        const int sd_try_e_ = (expr);    \
        if (sd_try_e_) return sd_try_e_; \
    } while (0)

/* ---- draws and scale --------------------------------------------------------- */

/* Inlined into every caller: the vector helpers must be, and a second
 * caller of the hash (nn_sd_uniform) would otherwise change how the compiler
 * inlines the draw loop, and with it the code of the fast kernels. */
#define SD_INLINE static inline __attribute__((always_inline))

/* The counter-based hash of nn's tensor/random.h (tensor_hash_mix,
 * tensor_hash3, tensor_hash_uniform), repeated here so that the pair
 * needs no other file; nn's tests check that both give the same bits, so
 * masks drawn here and by the rest of nn (layers/dropout.c) agree.
 * SplitMix64's finaliser: a bijective 64-bit mix. */
SD_INLINE uint64_t spatial_dropout_kernels_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 64 random bits for (seed, counter, index). */
SD_INLINE uint64_t spatial_dropout_kernels_hash3(uint64_t seed, uint64_t counter,
                                                 uint64_t index)
{
    const uint64_t z = spatial_dropout_kernels_mix(spatial_dropout_kernels_mix(seed) ^ counter);
    return spatial_dropout_kernels_mix(z ^ index);
}

/* Uniform in [0, 1) from the top 24 bits of hash3: exact in float. */
SD_INLINE float spatial_dropout_kernels_uniform(uint64_t seed, uint64_t counter, uint64_t index)
{
    return (float)(spatial_dropout_kernels_hash3(seed, counter, index) >> 40) *
           (1.0f / 16777216.0f);
}

float nn_sd_uniform(uint64_t seed, uint64_t call, uint64_t index)
{
    return spatial_dropout_kernels_uniform(seed, call, index);
}

float nn_sd_scale(float rate)
{
    return rate < 1.0f ? 1.0f / (float)(1.0 - (double)rate) : 0.0f;
}

/* ---- the definition ------------------------------------------------------------ */

/* Where element p of map (n, c) is, for C channels of S elements. */
static size_t spatial_dropout_kernels_at(int layout, size_t n, size_t c, size_t p, size_t C,
                                         size_t S)
{
    return layout == NN_SD_CHANNELS_FIRST ? (n * C + c) * S + p  /* x[n][c][p] */
                                          : (n * S + p) * C + c; /* x[n][p][c] */
}

int nn_sd_forward_reference(float *y, uint8_t *mask, const float *x, int N, int C, long spatial,
                            int layout, float rate, uint64_t seed, uint64_t call)
{
    static const char fn[] = "nn_sd_forward_reference";
    size_t total;
    SD_TRY(spatial_dropout_kernels_check_args(fn, N, C, spatial, layout, rate, &total));
    if (total) SD_TRY(spatial_dropout_kernels_check_ptr(fn, "y", y));
    if (total) SD_TRY(spatial_dropout_kernels_check_ptr(fn, "x", x));
    const float s = nn_sd_scale(rate);
    const size_t S = (size_t)spatial;
    for (size_t n = 0; n < (size_t)N; n++)
        for (size_t c = 0; c < (size_t)C; c++) {
            const size_t m = n * (size_t)C + c; /* the map's key and mask index */
            const int keep = spatial_dropout_kernels_uniform(seed, call, m) < 1.0f - rate;
            if (mask) mask[m] = (uint8_t)keep;
            for (size_t p = 0; p < S; p++) {
                const size_t i = spatial_dropout_kernels_at(layout, n, c, p, (size_t)C, S);
                y[i] = keep ? x[i] * s : 0.0f; /* +0.0 whatever x holds, even NaN */
            }
        }
    return NN_SD_OK;
}

int nn_sd_backward_reference(float *dx, const uint8_t *mask, const float *dy, int N, int C,
                             long spatial, int layout, float rate)
{
    static const char fn[] = "nn_sd_backward_reference";
    size_t total;
    SD_TRY(spatial_dropout_kernels_check_args(fn, N, C, spatial, layout, rate, &total));
    if (total == 0 || rate == 1.0f) return NN_SD_OK; /* rate 1: every map dropped */
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "dx", dx));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "mask", mask));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "dy", dy));
    const float s = nn_sd_scale(rate);
    const size_t S = (size_t)spatial;
    for (size_t n = 0; n < (size_t)N; n++)
        for (size_t c = 0; c < (size_t)C; c++) {
            const size_t m = n * (size_t)C + c;
            if (!mask[m]) continue; /* dx untouched, dy never read */
            for (size_t p = 0; p < S; p++) {
                const size_t i = spatial_dropout_kernels_at(layout, n, c, p, (size_t)C, S);
                dx[i] += dy[i] * s;
            }
        }
    return NN_SD_OK;
}

/* ---- vector helpers ------------------------------------------------------------- */

/* The vector type of nn's layers/simd.h, repeated here for the same reason
 * as the hash: 16 floats with AVX-512, 8 with AVX, 4 otherwise, through
 * GCC/Clang vector extensions, so -march decides. Loads and stores go
 * through memcpy, so any alignment works. */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

SD_INLINE vf spatial_dropout_kernels_vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

SD_INLINE void spatial_dropout_kernels_vstore(float *p, vf v)
{
    memcpy(p, &v, sizeof v);
}

static inline vi spatial_dropout_kernels_viload(const int32_t *p)
{
    vi v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A vector of copies of a: x - 0 is x for every float (0 + x is not, for
 * x = -0), so this folds to a single broadcast. */
SD_INLINE vf spatial_dropout_kernels_splat(float a)
{
    return a - (vf){0};
}

/* ---- the fast kernels ----------------------------------------------------------- */

/* keep[j] = keep(i0 + j) for j < n: the draws of maps i0 .. i0+n-1. The
 * loop vectorises (the seed/call part of the hash is loop-invariant and the
 * rest is 64-bit multiplies and shifts), so N*C draws stay cheap next to the
 * maps themselves even for 14x14 maps. */
static void spatial_dropout_kernels_draw(uint8_t *keep, size_t i0, size_t n, uint64_t seed,
                                         uint64_t call, float p_keep)
{
    SD_OMP(omp simd)
    for (size_t j = 0; j < n; j++)
        keep[j] = spatial_dropout_kernels_uniform(seed, call, i0 + j) < p_keep;
}

/* Where the keep bytes come from: a given mask, or fresh draws (stored in
 * `out` when it is not NULL). */
typedef struct {
    const uint8_t *given;
    uint8_t *out;
    uint64_t seed, call;
    float keep;
} keep_src;

/* The keep bytes of maps [i0, i0 + n), n <= CHUNK; buf is scratch. */
static const uint8_t *spatial_dropout_kernels_keep_bytes(const keep_src *k, size_t i0, size_t n,
                                                         uint8_t *buf)
{
    if (k->given) return k->given + i0;
    uint8_t *dst = k->out ? k->out + i0 : buf;
    spatial_dropout_kernels_draw(dst, i0, n, k->seed, k->call, k->keep);
    return dst;
}

/* The hardware prefetchers follow unbroken address streams. A dropped map
 * that a kernel skips leaves a hole that ends the stream, and the next kept
 * map then starts with misses at full memory latency: read from memory,
 * 3 maps in 4 with holes took 1.5x as long as all 4 maps. Touching every
 * other line of the hole with a prefetch (no load, no use of the values)
 * keeps the stream going for much less than reading it.
 *   p (n floats) */
static inline void spatial_dropout_kernels_prefetch_span(const float *p, size_t n)
{
    const char *c = (const char *)p;
    for (size_t o = 0; o < n * sizeof(float); o += PF_STRIDE) __builtin_prefetch(c + o);
}

/* This thread's share [*i0, *i1) of n items, split evenly and in order, as
 * schedule(static) splits a loop. */
static void spatial_dropout_kernels_thread_range(size_t n, size_t *i0, size_t *i1)
{
#ifdef _OPENMP
    const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
#else
    const size_t nt = 1, t = 0;
#endif
    const size_t q = n / nt, rem = n % nt;
    *i0 = t * q + (t < rem ? t : rem);
    *i1 = *i0 + q + (t < rem);
}

int nn_sd_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed, uint64_t call)
{
    static const char fn[] = "nn_sd_mask";
    if (N < 0 || C < 0)
        return spatial_dropout_kernels_fail(NN_SD_ERR_SHAPE, "%s: N and C must be >= 0, but got "
                                            "N=%d, C=%d", fn, N, C);
    SD_TRY(spatial_dropout_kernels_check_rate(fn, rate));
    const size_t nc = (size_t)N * (size_t)C;
    if (nc == 0) return NN_SD_OK;
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "mask", mask));
    SD_OMP(omp parallel if (nc >= PAR_MIN / 4))
    {
        size_t i0, i1;
        spatial_dropout_kernels_thread_range(nc, &i0, &i1);
        spatial_dropout_kernels_draw(mask + i0, i0, i1 - i0, seed, call, 1.0f - rate);
    }
    return NN_SD_OK;
}

/* y = keep ? x * s : +0.0 over channels_first planes.
 *   y, x (N*C, spatial);  keep bytes (N*C) from k
 * Each thread takes a contiguous range of the N*C planes, as collapse(2)
 * over (n, c) with a static schedule would, and walks it in runs of
 * consecutive planes with the same draw: a run of kept planes is one long
 * multiply loop, a run of dropped ones one memset that never reads x. Long
 * unbroken streams keep the hardware prefetchers busy where a loop per
 * 14x14 plane would not. */
static void spatial_dropout_kernels_forward_first(float *y, const float *x, const keep_src *k,
                                                  size_t nc, size_t spatial, float s, size_t total)
{
    (void)total; /* only the OpenMP clause reads it */
    SD_OMP(omp parallel if (total >= PAR_MIN))
    {
        uint8_t buf[CHUNK];
        size_t i0, i1;
        spatial_dropout_kernels_thread_range(nc, &i0, &i1);
        for (size_t c0 = i0; c0 < i1; c0 += CHUNK) {
            const size_t n = i1 - c0 < CHUNK ? i1 - c0 : CHUNK;
            const uint8_t *kb = spatial_dropout_kernels_keep_bytes(k, c0, n, buf);
            for (size_t a = 0, b; a < n; a = b) {
                for (b = a + 1; b < n && kb[b] == kb[a]; b++) {}
                float *yp = y + (c0 + a) * spatial;
                const float *xp = x + (c0 + a) * spatial;
                const size_t len = (b - a) * spatial;
                if (kb[a]) {
                    SD_OMP(omp simd)
                    for (size_t p = 0; p < len; p++) yp[p] = xp[p] * s;
                } else {
                    spatial_dropout_kernels_prefetch_span(xp, len);
                    memset(yp, 0, len * sizeof(float));
                }
            }
        }
    }
}

/* pat[j] = keep(j mod C) ? all ones : 0 for j < period + VL - 1, where the
 * period is the least multiple of C that is >= VL: VL lanes read from any
 * offset j < period are the lanes of VL consecutive values of a row stream
 * whose first value is at channel j mod C. Returns the period.
 *   pat (period + VL - 1) out;  kb (C) keep bytes */
static size_t spatial_dropout_kernels_channel_pattern(int32_t *pat, const uint8_t *kb, size_t C)
{
    const size_t period = (VL + C - 1) / C * C;
    for (size_t j = 0; j < period + VL - 1; j++) pat[j] = -(int32_t)kb[j % C];
    return period;
}

/* dx = pat ? dx + dy * s : dx over whole rows of one sample taken as one
 * flat stream, the pattern read at an offset that cycles with its period
 * (at fixed offsets when the period is whole vectors, as for C = 32 or 64).
 * A select, not dx + 0, which would turn a -0.0 in a dropped channel into
 * +0.0.
 *   dx, dy (n) with n a multiple of C, starting at channel 0 */
static void spatial_dropout_kernels_masked_acc(float *dx, const float *dy, size_t n,
                                               const int32_t *pat, size_t period, float s)
{
    const vf sv = spatial_dropout_kernels_splat(s);
    size_t i = 0, j = 0;
    if (period % VL == 0)
        for (; i + period <= n; i += period)
            for (size_t v = 0; v < period; v += VL) {
                const vf d = spatial_dropout_kernels_vload(dx + i + v);
                const vi m = spatial_dropout_kernels_viload(pat + v);
                const vi r = (vi)(d + spatial_dropout_kernels_vload(dy + i + v) * sv);
                spatial_dropout_kernels_vstore(dx + i + v, (vf)((r & m) | ((vi)d & ~m)));
            }
    for (; i + VL <= n; i += VL) {
        const vf d = spatial_dropout_kernels_vload(dx + i);
        const vi m = spatial_dropout_kernels_viload(pat + j);
        const vi r = (vi)(d + spatial_dropout_kernels_vload(dy + i) * sv);
        spatial_dropout_kernels_vstore(dx + i, (vf)((r & m) | ((vi)d & ~m)));
        j = j + VL < period ? j + VL : j + VL - period;
    }
    for (; i < n; i++, j++)
        if (pat[j]) dx[i] += dy[i] * s;
}

/* The same over channels_last rows.
 *   y, x (N, spatial, C);  keep bytes (N*C) from k (k->out must be NULL:
 *   two threads may share a sample, so the rows never store draws) */
static void spatial_dropout_kernels_forward_last(float *y, const float *x, const keep_src *k,
                                                 int N, int C, size_t spatial, float s,
                                                 size_t total)
{
    (void)total; /* only the OpenMP clause reads it */
    SD_OMP(omp parallel if (total >= PAR_MIN))
    {
        uint8_t buf[CHUNK];
        size_t r0, r1;
        spatial_dropout_kernels_thread_range((size_t)N * spatial, &r0, &r1);
        for (size_t r = r0; r < r1;) {
            const size_t n = r / spatial, end = (n + 1) * spatial < r1 ? (n + 1) * spatial : r1;
            for (size_t c0 = 0; c0 < (size_t)C; c0 += CHUNK) {
                const size_t cn = (size_t)C - c0 < CHUNK ? (size_t)C - c0 : CHUNK;
                const uint8_t *kb =
                    spatial_dropout_kernels_keep_bytes(k, n * (size_t)C + c0, cn, buf);
                for (size_t q = r; q < end; q++) {
                    float *yr = y + q * (size_t)C + c0;
                    const float *xr = x + q * (size_t)C + c0;
                    SD_OMP(omp simd)
                    for (size_t j = 0; j < cn; j++) yr[j] = kb[j] ? xr[j] * s : 0.0f;
                }
            }
            r = end;
        }
    }
}

int nn_sd_forward(float *y, uint8_t *mask, const float *x, int N, int C, long spatial, int layout,
                  float rate, uint64_t seed, uint64_t call)
{
    static const char fn[] = "nn_sd_forward";
    size_t total;
    SD_TRY(spatial_dropout_kernels_check_args(fn, N, C, spatial, layout, rate, &total));
    if (total) SD_TRY(spatial_dropout_kernels_check_ptr(fn, "y", y));
    if (total) SD_TRY(spatial_dropout_kernels_check_ptr(fn, "x", x));
    if (total == 0 || rate == 0.0f) {
        if (mask) SD_TRY(nn_sd_mask(mask, N, C, rate, seed, call));
        if (total && y != x) memcpy(y, x, total * sizeof(float));
        return NN_SD_OK;
    }
    const float s = nn_sd_scale(rate);
    const size_t nc = (size_t)N * (size_t)C;
    if (layout == NN_SD_CHANNELS_FIRST) {
        /* Each thread draws the maps it writes (and stores their mask bytes). */
        const keep_src k = {NULL, mask, seed, call, 1.0f - rate};
        spatial_dropout_kernels_forward_first(y, x, &k, nc, (size_t)spatial, s, total);
    } else if (mask) {
        SD_TRY(nn_sd_mask(mask, N, C, rate, seed, call));
        const keep_src k = {mask, NULL, 0, 0, 0.0f};
        spatial_dropout_kernels_forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    } else {
        const keep_src k = {NULL, NULL, seed, call, 1.0f - rate};
        spatial_dropout_kernels_forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    }
    return NN_SD_OK;
}

int nn_sd_apply(float *y, const uint8_t *mask, const float *x, int N, int C, long spatial,
                int layout, float rate)
{
    static const char fn[] = "nn_sd_apply";
    size_t total;
    SD_TRY(spatial_dropout_kernels_check_args(fn, N, C, spatial, layout, rate, &total));
    if (total == 0) return NN_SD_OK;
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "y", y));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "mask", mask));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "x", x));
    const keep_src k = {mask, NULL, 0, 0, 0.0f};
    const float s = nn_sd_scale(rate);
    if (layout == NN_SD_CHANNELS_FIRST)
        spatial_dropout_kernels_forward_first(y, x, &k, (size_t)N * (size_t)C, (size_t)spatial, s,
                                              total);
    else
        spatial_dropout_kernels_forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    return NN_SD_OK;
}

int nn_sd_backward(float *dx, const uint8_t *mask, const float *dy, int N, int C, long spatial,
                   int layout, float rate)
{
    static const char fn[] = "nn_sd_backward";
    size_t total;
    SD_TRY(spatial_dropout_kernels_check_args(fn, N, C, spatial, layout, rate, &total));
    if (total == 0 || rate == 1.0f) return NN_SD_OK; /* every map dropped: dx += 0 */
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "dx", dx));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "mask", mask));
    SD_TRY(spatial_dropout_kernels_check_ptr(fn, "dy", dy));
    const float s = nn_sd_scale(rate);
    const size_t sp = (size_t)spatial;
    if (layout == NN_SD_CHANNELS_FIRST) {
        /* dx, dy (N*C, spatial): runs of kept planes as in forward_first;
         * dropped planes are neither read nor written, only prefetched. */
        SD_OMP(omp parallel if (total >= PAR_MIN))
        {
            size_t i0, i1;
            spatial_dropout_kernels_thread_range((size_t)N * (size_t)C, &i0, &i1);
            for (size_t a = i0, b; a < i1; a = b) {
                for (b = a + 1; b < i1 && mask[b] == mask[a]; b++) {}
                float *dxp = dx + a * sp;
                const float *dyp = dy + a * sp;
                const size_t len = (b - a) * sp;
                if (!mask[a]) {
                    spatial_dropout_kernels_prefetch_span(dxp, len);
                    spatial_dropout_kernels_prefetch_span(dyp, len);
                    continue;
                }
                SD_OMP(omp simd)
                for (size_t p = 0; p < len; p++) dxp[p] += dyp[p] * s;
            }
        }
        return NN_SD_OK;
    }
    /* dx, dy (N, spatial, C): each thread's rows of a sample as one stream
     * (masked_acc); a loop per row of 32 or 64 channels spent its time
     * starting loops (1.1-1.2x the time for 8 x 112 x 112 x 64). */
    const size_t c = (size_t)C;
    SD_OMP(omp parallel if (total >= PAR_MIN))
    {
        int32_t pat[CHUNK + 2 * VL];
        size_t r0, r1;
        spatial_dropout_kernels_thread_range((size_t)N * sp, &r0, &r1);
        for (size_t r = r0; r < r1;) {
            const size_t n = r / sp, end = (n + 1) * sp < r1 ? (n + 1) * sp : r1;
            const uint8_t *m = mask + n * c;
            if (c <= CHUNK) {
                const size_t period = spatial_dropout_kernels_channel_pattern(pat, m, c);
                spatial_dropout_kernels_masked_acc(dx + r * c, dy + r * c, (end - r) * c, pat,
                                                   period, s);
            } else {
                for (size_t q = r; q < end; q++) {
                    float *dxr = dx + q * c;
                    const float *dyr = dy + q * c;
                    SD_OMP(omp simd)
                    for (size_t j = 0; j < c; j++) dxr[j] = m[j] ? dxr[j] + dyr[j] * s : dxr[j];
                }
            }
            r = end;
        }
    }
    return NN_SD_OK;
}
