/* Spatial dropout: the one kernel behind spatial_dropout1d/2d/3d, and the
 * layer hooks those three files share (see spatial_dropout.h).
 *
 * Kernel layout choices, for speed:
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
 * Layer: training draws a fresh mask per call (l->calls), keeps N*C mask
 * bytes in the graph arena for backward, and records one node. Inference,
 * rate 0 and empty inputs return x itself. The in-place variant writes into
 * x's storage after checking that nothing the graph still needs lives there.
 *
 * Deliberately omitted: Keras's noise_shape, PyTorch's unbatched inputs
 * (a missing batch axis is an error, never reinterpreted), other dtypes.
 */
#include "layers/spatial_dropout.h"

#include <omp.h>
#include <string.h>

#include "layers/simd.h"
#include "tensor/random.h"

static inline vi viload(const int32_t *p)
{
    vi v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Below this many elements, a thread team costs more than it saves. */
#define PAR_MIN ((size_t)1 << 15)
/* Keep bytes handled at a time (a per-thread stack buffer). */
#define CHUNK ((size_t)2048)
/* Bytes between the prefetches that bridge a skipped map (prefetch_span). */
#define PF_STRIDE 128

float nn_spatial_dropout_scale(float rate)
{
    return rate < 1.0f ? 1.0f / (float)(1.0 - (double)rate) : 0.0f;
}

static nn_status check_rate(const char *fn, float rate)
{
    if (!(rate >= 0.0f && rate <= 1.0f)) /* NaN fails both comparisons */
        return nn_error(NN_ERR_ARG, "%s: rate must be between 0 and 1, but got %g", fn,
                        (double)rate);
    return NN_OK;
}

/* Validates shape, rate and format; *total = N*C*spatial. */
static nn_status check_args(const char *fn, int N, int C, long spatial, nn_data_format fmt,
                            float rate, size_t *total)
{
    if (N < 0 || C < 0 || spatial < 0)
        return nn_error(NN_ERR_SHAPE, "%s: N, C and spatial must be >= 0, but got N=%d, C=%d, "
                        "spatial=%ld", fn, N, C, spatial);
    NN_TRY(check_rate(fn, rate));
    if (fmt != NN_CHANNELS_FIRST && fmt != NN_CHANNELS_LAST)
        return nn_error(NN_ERR_ARG, "%s: fmt must be NN_CHANNELS_FIRST or NN_CHANNELS_LAST, "
                        "but got %d", fn, (int)fmt);
    const size_t nc = (size_t)N * (size_t)C;
    if (spatial && nc > SIZE_MAX / sizeof(float) / (size_t)spatial)
        return nn_error(NN_ERR_SHAPE, "%s: N*C*spatial = %d*%d*%ld elements is too large", fn, N,
                        C, spatial);
    *total = nc * (size_t)spatial;
    return NN_OK;
}

static nn_status check_ptr(const char *fn, const char *name, const void *p)
{
    return p ? NN_OK : nn_error(NN_ERR_ARG, "%s: %s is NULL for a non-empty shape", fn, name);
}

/* keep[j] = keep(i0 + j) for j < n: the draws of maps i0 .. i0+n-1. The
 * loop vectorises (the seed/call part of the hash is loop-invariant and the
 * rest is 64-bit multiplies and shifts), so N*C draws stay cheap next to the
 * maps themselves even for 14x14 maps. */
static void draw(uint8_t *keep, size_t i0, size_t n, uint64_t seed, uint64_t call, float p_keep)
{
    #pragma omp simd
    for (size_t j = 0; j < n; j++) keep[j] = tensor_hash_uniform(seed, call, i0 + j) < p_keep;
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
static const uint8_t *keep_bytes(const keep_src *k, size_t i0, size_t n, uint8_t *buf)
{
    if (k->given) return k->given + i0;
    uint8_t *dst = k->out ? k->out + i0 : buf;
    draw(dst, i0, n, k->seed, k->call, k->keep);
    return dst;
}

/* The hardware prefetchers follow unbroken address streams. A dropped map
 * that a kernel skips leaves a hole that ends the stream, and the next kept
 * map then starts with misses at full memory latency: read from memory,
 * 3 maps in 4 with holes took 1.5x as long as all 4 maps. Touching every
 * other line of the hole with a prefetch (no load, no use of the values)
 * keeps the stream going for much less than reading it.
 *   p (n floats) */
static inline void prefetch_span(const float *p, size_t n)
{
    const char *c = (const char *)p;
    for (size_t o = 0; o < n * sizeof(float); o += PF_STRIDE) __builtin_prefetch(c + o);
}

/* This thread's share [*i0, *i1) of n items, split evenly and in order, as
 * schedule(static) splits a loop. */
static void thread_range(size_t n, size_t *i0, size_t *i1)
{
    const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
    const size_t q = n / nt, rem = n % nt;
    *i0 = t * q + (t < rem ? t : rem);
    *i1 = *i0 + q + (t < rem);
}

nn_status nn_spatial_dropout_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed,
                                  uint64_t call)
{
    static const char fn[] = "nn_spatial_dropout_mask";
    if (N < 0 || C < 0)
        return nn_error(NN_ERR_SHAPE, "%s: N and C must be >= 0, but got N=%d, C=%d", fn, N, C);
    NN_TRY(check_rate(fn, rate));
    const size_t nc = (size_t)N * (size_t)C;
    if (nc == 0) return NN_OK;
    NN_TRY(check_ptr(fn, "mask", mask));
    #pragma omp parallel if (nc >= PAR_MIN / 4)
    {
        size_t i0, i1;
        thread_range(nc, &i0, &i1);
        draw(mask + i0, i0, i1 - i0, seed, call, 1.0f - rate);
    }
    return NN_OK;
}

/* y = keep ? x * s : +0.0 over channels_first planes.
 *   y, x (N*C, spatial);  keep bytes (N*C) from k
 * Each thread takes a contiguous range of the N*C planes, as collapse(2)
 * over (n, c) with a static schedule would, and walks it in runs of
 * consecutive planes with the same draw: a run of kept planes is one long
 * multiply loop, a run of dropped ones one memset that never reads x. Long
 * unbroken streams keep the hardware prefetchers busy where a loop per
 * 14x14 plane would not. */
static void forward_first(float *y, const float *x, const keep_src *k, size_t nc, size_t spatial,
                          float s, size_t total)
{
    #pragma omp parallel if (total >= PAR_MIN)
    {
        uint8_t buf[CHUNK];
        size_t i0, i1;
        thread_range(nc, &i0, &i1);
        for (size_t c0 = i0; c0 < i1; c0 += CHUNK) {
            const size_t n = i1 - c0 < CHUNK ? i1 - c0 : CHUNK;
            const uint8_t *kb = keep_bytes(k, c0, n, buf);
            for (size_t a = 0, b; a < n; a = b) {
                for (b = a + 1; b < n && kb[b] == kb[a]; b++) {}
                float *yp = y + (c0 + a) * spatial;
                const float *xp = x + (c0 + a) * spatial;
                const size_t len = (b - a) * spatial;
                if (kb[a]) {
                    #pragma omp simd
                    for (size_t p = 0; p < len; p++) yp[p] = xp[p] * s;
                } else {
                    prefetch_span(xp, len);
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
static size_t channel_pattern(int32_t *pat, const uint8_t *kb, size_t C)
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
static void masked_acc(float *dx, const float *dy, size_t n, const int32_t *pat, size_t period,
                       float s)
{
    const vf sv = splat(s);
    size_t i = 0, j = 0;
    if (period % VL == 0)
        for (; i + period <= n; i += period)
            for (size_t v = 0; v < period; v += VL) {
                const vf d = vload(dx + i + v);
                const vi m = viload(pat + v), r = (vi)(d + vload(dy + i + v) * sv);
                vstore(dx + i + v, (vf)((r & m) | ((vi)d & ~m)));
            }
    for (; i + VL <= n; i += VL) {
        const vf d = vload(dx + i);
        const vi m = viload(pat + j), r = (vi)(d + vload(dy + i) * sv);
        vstore(dx + i, (vf)((r & m) | ((vi)d & ~m)));
        j = j + VL < period ? j + VL : j + VL - period;
    }
    for (; i < n; i++, j++)
        if (pat[j]) dx[i] += dy[i] * s;
}

/* The same over channels_last rows.
 *   y, x (N, spatial, C);  keep bytes (N*C) from k (k->out must be NULL:
 *   two threads may share a sample, so the rows never store draws) */
static void forward_last(float *y, const float *x, const keep_src *k, int N, int C,
                         size_t spatial, float s, size_t total)
{
    #pragma omp parallel if (total >= PAR_MIN)
    {
        uint8_t buf[CHUNK];
        size_t r0, r1;
        thread_range((size_t)N * spatial, &r0, &r1);
        for (size_t r = r0; r < r1;) {
            const size_t n = r / spatial, end = (n + 1) * spatial < r1 ? (n + 1) * spatial : r1;
            for (size_t c0 = 0; c0 < (size_t)C; c0 += CHUNK) {
                const size_t cn = (size_t)C - c0 < CHUNK ? (size_t)C - c0 : CHUNK;
                const uint8_t *kb = keep_bytes(k, n * (size_t)C + c0, cn, buf);
                for (size_t q = r; q < end; q++) {
                    float *yr = y + q * (size_t)C + c0;
                    const float *xr = x + q * (size_t)C + c0;
                    #pragma omp simd
                    for (size_t j = 0; j < cn; j++) yr[j] = kb[j] ? xr[j] * s : 0.0f;
                }
            }
            r = end;
        }
    }
}

nn_status nn_spatial_dropout_forward(float *y, uint8_t *mask, const float *x, int N, int C,
                                     long spatial, nn_data_format fmt, float rate, uint64_t seed,
                                     uint64_t call)
{
    static const char fn[] = "nn_spatial_dropout_forward";
    size_t total;
    NN_TRY(check_args(fn, N, C, spatial, fmt, rate, &total));
    if (total == 0 || rate == 0.0f) {
        if (mask) NN_TRY(nn_spatial_dropout_mask(mask, N, C, rate, seed, call));
        if (total == 0) return NN_OK;
        NN_TRY(check_ptr(fn, "y", y));
        NN_TRY(check_ptr(fn, "x", x));
        if (y != x) memcpy(y, x, total * sizeof(float));
        return NN_OK;
    }
    NN_TRY(check_ptr(fn, "y", y));
    NN_TRY(check_ptr(fn, "x", x));
    const float s = nn_spatial_dropout_scale(rate);
    const size_t nc = (size_t)N * (size_t)C;
    if (fmt == NN_CHANNELS_FIRST) {
        /* Each thread draws the maps it writes (and stores their mask bytes). */
        const keep_src k = {NULL, mask, seed, call, 1.0f - rate};
        forward_first(y, x, &k, nc, (size_t)spatial, s, total);
    } else if (mask) {
        NN_TRY(nn_spatial_dropout_mask(mask, N, C, rate, seed, call));
        const keep_src k = {mask, NULL, 0, 0, 0.0f};
        forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    } else {
        const keep_src k = {NULL, NULL, seed, call, 1.0f - rate};
        forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    }
    return NN_OK;
}

nn_status nn_spatial_dropout_apply(float *y, const uint8_t *mask, const float *x, int N, int C,
                                   long spatial, nn_data_format fmt, float rate)
{
    static const char fn[] = "nn_spatial_dropout_apply";
    size_t total;
    NN_TRY(check_args(fn, N, C, spatial, fmt, rate, &total));
    if (total == 0) return NN_OK;
    NN_TRY(check_ptr(fn, "y", y));
    NN_TRY(check_ptr(fn, "mask", mask));
    NN_TRY(check_ptr(fn, "x", x));
    const keep_src k = {mask, NULL, 0, 0, 0.0f};
    const float s = nn_spatial_dropout_scale(rate);
    if (fmt == NN_CHANNELS_FIRST)
        forward_first(y, x, &k, (size_t)N * (size_t)C, (size_t)spatial, s, total);
    else
        forward_last(y, x, &k, N, C, (size_t)spatial, s, total);
    return NN_OK;
}

nn_status nn_spatial_dropout_backward(float *dx, const uint8_t *mask, const float *dy, int N,
                                      int C, long spatial, nn_data_format fmt, float rate)
{
    static const char fn[] = "nn_spatial_dropout_backward";
    size_t total;
    NN_TRY(check_args(fn, N, C, spatial, fmt, rate, &total));
    if (total == 0 || rate == 1.0f) return NN_OK; /* every map dropped: dx += 0 */
    NN_TRY(check_ptr(fn, "dx", dx));
    NN_TRY(check_ptr(fn, "mask", mask));
    NN_TRY(check_ptr(fn, "dy", dy));
    const float s = nn_spatial_dropout_scale(rate);
    const size_t sp = (size_t)spatial;
    if (fmt == NN_CHANNELS_FIRST) {
        /* dx, dy (N*C, spatial): runs of kept planes as in forward_first;
         * dropped planes are neither read nor written, only prefetched. */
        #pragma omp parallel if (total >= PAR_MIN)
        {
            size_t i0, i1;
            thread_range((size_t)N * (size_t)C, &i0, &i1);
            for (size_t a = i0, b; a < i1; a = b) {
                for (b = a + 1; b < i1 && mask[b] == mask[a]; b++) {}
                float *dxp = dx + a * sp;
                const float *dyp = dy + a * sp;
                const size_t len = (b - a) * sp;
                if (!mask[a]) {
                    prefetch_span(dxp, len);
                    prefetch_span(dyp, len);
                    continue;
                }
                #pragma omp simd
                for (size_t p = 0; p < len; p++) dxp[p] += dyp[p] * s;
            }
        }
        return NN_OK;
    }
    /* dx, dy (N, spatial, C): each thread's rows of a sample as one stream
     * (masked_acc); a loop per row of 32 or 64 channels spent its time
     * starting loops (1.1-1.2x the time for 8 x 112 x 112 x 64). */
    const size_t c = (size_t)C;
    #pragma omp parallel if (total >= PAR_MIN)
    {
        int32_t pat[CHUNK + 2 * VL];
        size_t r0, r1;
        thread_range((size_t)N * sp, &r0, &r1);
        for (size_t r = r0; r < r1;) {
            const size_t n = r / sp, end = (n + 1) * sp < r1 ? (n + 1) * sp : r1;
            const uint8_t *m = mask + n * c;
            if (c <= CHUNK) {
                const size_t period = channel_pattern(pat, m, c);
                masked_acc(dx + r * c, dy + r * c, (end - r) * c, pat, period, s);
            } else {
                for (size_t q = r; q < end; q++) {
                    float *dxr = dx + q * c;
                    const float *dyr = dy + q * c;
                    #pragma omp simd
                    for (size_t j = 0; j < c; j++) dxr[j] = m[j] ? dxr[j] + dyr[j] * s : dxr[j];
                }
            }
            r = end;
        }
    }
    return NN_OK;
}

/* ---- the layers ---- */

typedef struct {
    uint8_t *mask; /* (N, C) in the arena */
    int N, C;
    long spatial;
    nn_data_format fmt;
    float rate;
} sd_ctx;

/* Shapes as the messages spell them, by [dims - 1][format]. */
static const char *const batch_desc[3][2] = {
    {"(N, L, C)", "(N, C, L)"},
    {"(N, H, W, C)", "(N, C, H, W)"},
    {"(N, D, H, W, C)", "(N, C, D, H, W)"},
};
static const char *const sample_desc[3][2] = {
    {"(L, C)", "(C, L)"},
    {"(H, W, C)", "(C, H, W)"},
    {"(D, H, W, C)", "(C, D, H, W)"},
};

nn_status nn_spatial_dropout_layer_parse(nn_layer *l, nn_config *c, int dims)
{
    static const char *const formats[] = {"channels_last", "channels_first", NULL};
    if (dims < 1 || dims > 3)
        return nn_error(NN_ERR_ARG, "nn_spatial_dropout_layer_parse: dims must be 1, 2 or 3, "
                        "but got %d", dims);
    nn_spatial_dropout_state *s = l->state;
    s->dims = dims;
    NN_TRY(nn_config_get_float(c, "rate", &s->rate, 0.0f, 1, 0.0f, 1.0f));
    if (dims == 1) {
        /* Sequences are not images: like Keras's SpatialDropout1D, (N, L, C)
         * unless asked otherwise, whatever the image default is. */
        int f;
        NN_TRY(nn_config_get_choice(c, "data_format", &f, NN_CHANNELS_LAST, formats));
        s->format = (nn_data_format)f;
    } else {
        NN_TRY(nn_config_get_data_format(c, &s->format));
    }
    NN_TRY(nn_config_get_bool(c, "inplace", &s->inplace, 0));
    unsigned long long seed = 0;
    int present = 0;
    NN_TRY(nn_config_get_u64(c, "seed", &seed, &present));
    if (present) {
        l->seed = seed;
        l->seed_fixed = 1;
    }
    return NN_OK;
}

void nn_spatial_dropout_layer_write(const nn_layer *l, nn_config_writer *w)
{
    const nn_spatial_dropout_state *s = l->state;
    nn_config_write_float(w, "rate", s->rate);
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
    nn_config_write(w, "inplace", "%s", s->inplace ? "true" : "false");
    if (l->seed_fixed) nn_config_write(w, "seed", "%llu", (unsigned long long)l->seed);
}

nn_status nn_spatial_dropout_layer_build(nn_layer *l, int in_rank, const int *in_shape)
{
    const nn_spatial_dropout_state *s = l->state;
    if (in_rank != s->dims + 1) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "%s: expected a per-sample input of rank %d %s for %s, "
                        "got rank %d with shape %s", l->name, s->dims + 1,
                        sample_desc[s->dims - 1][s->format], nn_data_format_name(s->format),
                        in_rank, tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    return nn_layer_build_identity(l, in_rank, in_shape);
}

static void sd_backward(nn_node *node)
{
    const sd_ctx *c = node->ctx;
    tensor *x = node->in[0];
    if (!x->grad) return;
    /* The forward validated every argument. The graph may have given x's
     * gradient dy's storage (grad_in_place): then dx = dy * mask * s is
     * written over dy. */
    nn_status s = x->grad == node->out->grad
                      ? nn_spatial_dropout_apply(x->grad, c->mask, node->out->grad, c->N, c->C,
                                                 c->spatial, c->fmt, c->rate)
                      : nn_spatial_dropout_backward(x->grad, c->mask, node->out->grad, c->N, c->C,
                                                    c->spatial, c->fmt, c->rate);
    NN_ASSERT(s == NN_OK);
}

/* In place is safe only when nothing else needs x's values: not a parameter
 * or a leaf the user wants a gradient for, and not an output that its
 * producer's backward reads (relu, dense with relu). */
static nn_status check_inplace(const nn_layer *l, const tensor *x)
{
    if (x->flags & TENSOR_PARAM)
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite a model parameter; "
                        "use inplace=false", l->name);
    if ((x->flags & TENSOR_REQUIRES_GRAD) && !x->node)
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite a leaf tensor that "
                        "requires a gradient; use inplace=false", l->name);
    if (x->node && x->node->saves_output)
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite the output of '%s', "
                        "whose backward reads it; use inplace=false", l->name, x->node->op);
    return NN_OK;
}

nn_status nn_spatial_dropout_layer_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out,
                                           int training)
{
    const nn_spatial_dropout_state *s = l->state;
    NN_TRY(nn_layer_check_rank(l, x, s->dims + 2, batch_desc[s->dims - 1][s->format]));
    if (!training) {
        *out = x;
        return NN_OK;
    }
    if (s->inplace) NN_TRY(check_inplace(l, x));
    const uint64_t call = l->calls++;
    if (s->rate == 0.0f || x->size == 0) {
        *out = x;
        return NN_OK;
    }
    const int N = x->shape[0];
    const int C = s->format == NN_CHANNELS_FIRST ? x->shape[1] : x->shape[x->rank - 1];
    const long spatial = (long)(x->size / ((size_t)N * (size_t)C));
    tensor *y = s->inplace ? nn_graph_view(g, x, x->rank, x->shape)
                           : nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    sd_ctx *c = NULL;
    if (nn_graph_needs_grad(g, &x, 1)) {
        c = nn_graph_alloc(g, sizeof *c);
        if (!c) return NN_ERR_MEMORY;
        c->mask = nn_graph_alloc(g, (size_t)N * (size_t)C);
        if (!c->mask) return NN_ERR_MEMORY;
        c->N = N;
        c->C = C;
        c->spatial = spatial;
        c->fmt = s->format;
        c->rate = s->rate;
    }
    NN_TRY(nn_spatial_dropout_forward(y->data, c ? c->mask : NULL, x->data, N, C, spatial,
                                      s->format, s->rate, l->seed, call));
    if (c) {
        nn_node *n = nn_graph_record(g, l->type->name, y, &x, 1, sd_backward, c);
        if (n) n->grad_in_place = 1;
    }
    *out = y;
    return NN_OK;
}
