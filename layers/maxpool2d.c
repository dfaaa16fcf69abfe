/* maxpool2d: the maximum over each pool_size window, per channel.
 * x (N, H, W, C) channels_last or (N, C, H, W) channels_first.
 * Config: pool_size (2), strides (pool_size), padding valid | same (valid),
 * data_format (the framework default). With padding=same (Keras's: output
 * ceil(in / stride), the odd padding row/column at the bottom/right) the
 * padded positions never win, as if they held -inf.
 *
 * Backward sends dy to each window's winner (dx += dy at the arg-max),
 * found again from x with the forward's comparisons rather than saved by
 * the forward: x is kept for the step anyway, the search costs about as much
 * as reading saved indices, and a 4-byte index per output would be the
 * layer's largest buffer. The first maximum wins a tie and a NaN wins over
 * numbers, as in PyTorch. channels_first is the same problem on N*C
 * samples of one channel (each (H, W) plane is contiguous), so there is no
 * transpose; its kernel takes 8 adjacent windows of a row at a time, one
 * per vector lane, where the channels_last kernel takes a block
 * of channels, and falls back to one window at a time (the channels_last
 * kernel with one channel, which the tests hold it to) where a window
 * crosses the left or right edge. Parallel over samples: windows of one sample may overlap, samples never
 * do, so backward's scatter is race-free and in a fixed order.
 *
 * Omits: dilation, ceil_mode, returning the indices to the caller.
 */
#include "layers/maxpool2d.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Channels per block: a constant trip count lets GCC's -O2 vectorizer (which
 * refuses loops that would need a scalar remainder) turn the
 * compare-and-select into vector blends; the last partial block runs the
 * same code with a run-time count. Local arrays, because stores into y
 * could alias x. */
#define MP_BLOCK 16

static inline __attribute__((always_inline)) void
maxpool2d_max_block(float *restrict y, int32_t *restrict io, const float *restrict xn, int C, int W,
                    int h0, int w0, int khs, int khe, int kws, int kwe, const int cb)
{
    float best[MP_BLOCK];
    int32_t arg[MP_BLOCK];
    const int32_t first = (h0 + khs) * W + (w0 + kws);
    for (int c = 0; c < cb; c++) {
        best[c] = -INFINITY;
        arg[c] = first;
    }
    for (int kh = khs; kh < khe; kh++)
        for (int kw = kws; kw < kwe; kw++) {
            const int32_t pos = (h0 + kh) * W + (w0 + kw);
            const float *xp = xn + (size_t)pos * C;
            for (int c = 0; c < cb; c++) {
                const float v = xp[c];
                const int take = (v > best[c]) | (v != v);
                best[c] = take ? v : best[c];
                arg[c] = take ? pos : arg[c];
            }
        }
    for (int c = 0; c < cb; c++) {
        y[c] = best[c];
        io[c] = arg[c];
    }
}

/* Row oh of sample n: y (NP, OH, OW, C) = max over windows of x (NP, H, W,
 * C); or, when dy is not NULL, dx (NP, H, W, C) += dy (NP, OH, OW, C)
 * routed to the winners. */
static inline __attribute__((always_inline)) void
maxpool2d_pool_row(float *y, float *dx, const float *dy, const float *x, const nn_conv_geom *g,
                   int n, int oh)
{
    const int H = g->H, W = g->W, C = g->C, OH = g->OH, OW = g->OW;
    const float *xn = x + (size_t)n * H * W * C;
    const int h0 = oh * g->SH - g->PT;
    const int khs = h0 < 0 ? -h0 : 0, khe = H - h0 < g->KH ? H - h0 : g->KH;
    for (int ow = 0; ow < OW; ow++) {
        const int w0 = ow * g->SW - g->PL;
        const int kws = w0 < 0 ? -w0 : 0, kwe = W - w0 < g->KW ? W - w0 : g->KW;
        const size_t o = (((size_t)n * OH + oh) * OW + ow) * C;
        for (int c0 = 0; c0 < C; c0 += MP_BLOCK) {
            const int cb = C - c0 < MP_BLOCK ? C - c0 : MP_BLOCK;
            float best[MP_BLOCK];
            int32_t arg[MP_BLOCK];
            float *yo = dy ? best : y + o + c0;
            if (cb == MP_BLOCK)
                maxpool2d_max_block(yo, arg, xn + c0, C, W, h0, w0, khs, khe, kws, kwe, MP_BLOCK);
            else
                maxpool2d_max_block(yo, arg, xn + c0, C, W, h0, w0, khs, khe, kws, kwe, cb);
            if (!dy) continue;
            float *dxn = dx + (size_t)n * H * W * C + c0;
            for (int c = 0; c < cb; c++) dxn[(size_t)arg[c] * C + c] += dy[o + c0 + c];
        }
    }
}

void nn_maxpool2d_forward_nhwc(float *y, const float *x, const nn_conv_geom *g, int NP)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)NP * g->OH * g->OW * g->C > 32768)
    for (int n = 0; n < NP; n++)
        for (int oh = 0; oh < g->OH; oh++) maxpool2d_pool_row(y, NULL, NULL, x, g, n, oh);
}

void nn_maxpool2d_backward_nhwc(float *dx, const float *dy, const float *x, const nn_conv_geom *g,
                                int NP)
{
    /* Windows of one sample may overlap: one thread owns each sample, so
     * the adds into dx run in a fixed order. */
    #pragma omp parallel for schedule(static) if ((size_t)NP * g->OH * g->OW * g->C > 32768)
    for (int n = 0; n < NP; n++)
        for (int oh = 0; oh < g->OH; oh++) maxpool2d_pool_row(NULL, dx, dy, x, g, n, oh);
}

/* ---- one-channel planes (channels_first): windows along a row in lanes ---- */

/* Eight lanes of floats and of positions. Vectors stay inside always-inline
 * functions and pass through pointers (a vector argument has another ABI in
 * builds without AVX, -Wpsabi). */
typedef float maxpool2d_f8 __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t maxpool2d_i8 __attribute__((vector_size(8 * sizeof(int32_t))));

/* *v = p[0], p[sw], ..., p[7 sw], reading nothing past p[7 sw]. */
static inline __attribute__((always_inline)) void maxpool2d_load(maxpool2d_f8 *v, const float *p,
                                                                 const int sw)
{
    if (sw == 1) {
        memcpy(v, p, sizeof *v);
    } else if (sw == 2) {
        maxpool2d_f8 a, b; /* p[0..7], p[7..14] */
        memcpy(&a, p, sizeof a);
        memcpy(&b, p + 7, sizeof b);
        *v = __builtin_shufflevector(a, b, 0, 2, 4, 6, 9, 11, 13, 15);
    } else {
        float t[8];
        for (int i = 0; i < 8; i++) t[i] = p[(size_t)i * sw];
        memcpy(v, t, sizeof *v);
    }
}

/* The 8 windows from column w0 of plane xn (H, W), sw (a constant where
 * specialized) columns apart, each inside the row range: maxima into y,
 * flat positions of the first winners into io. The comparisons of
 * maxpool2d_max_block, lane by lane, in the same (kh, kw) order, so the
 * results equal its, one window at a time. */
static inline __attribute__((always_inline)) void
maxpool2d_lanes(float *restrict y, int32_t *restrict io, const float *restrict xn, int W, int h0,
                int w0, int khs, int khe, int KW, const int sw)
{
    const maxpool2d_i8 lane = {0, sw, 2 * sw, 3 * sw, 4 * sw, 5 * sw, 6 * sw, 7 * sw};
    maxpool2d_f8 best = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                         -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    maxpool2d_i8 arg = lane + ((h0 + khs) * W + w0);
    for (int kh = khs; kh < khe; kh++)
        for (int kw = 0; kw < KW; kw++) {
            const int32_t pos = (h0 + kh) * W + w0 + kw;
            maxpool2d_f8 v;
            maxpool2d_load(&v, xn + pos, sw);
            const maxpool2d_i8 take = (v > best) | (v != v);
            best = (maxpool2d_f8)(((maxpool2d_i8)v & take) | ((maxpool2d_i8)best & ~take));
            arg = ((lane + pos) & take) | (arg & ~take);
        }
    memcpy(y, &best, sizeof best);
    memcpy(io, &arg, sizeof arg);
}

/* Row oh of plane n: y (NP, OH, OW) = max over windows of x (NP, H, W); or,
 * when dy is not NULL, dx (NP, H, W) += dy routed to the winners, in
 * column order as maxpool2d_pool_row adds them. Columns whose window lies
 * inside the row go 8 at a time; a last partial block is the 8 ending at
 * the last such column, of which only the new lanes are used. */
static void maxpool2d_plane_row(float *y, float *dx, const float *dy, const float *x,
                                const nn_conv_geom *g, int n, int oh)
{
    const int H = g->H, W = g->W, OW = g->OW, SW = g->SW, KW = g->KW;
    const float *xn = x + (size_t)n * H * W;
    const int h0 = oh * g->SH - g->PT;
    const int khs = h0 < 0 ? -h0 : 0, khe = H - h0 < g->KH ? H - h0 : g->KH;
    /* Columns whose window lies inside the row: ow in [lo, hi). */
    const int lo = (g->PL + SW - 1) / SW;
    const int hi = W + g->PL - KW >= 0 ? (W + g->PL - KW) / SW + 1 : 0;
    const size_t o = ((size_t)n * g->OH + oh) * OW;
    float *dxn = dx ? dx + (size_t)n * H * W : NULL;
    for (int ow = 0; ow < OW;) {
        float best[8];
        int32_t arg[8];
        if (ow >= lo && ow < hi && hi - lo >= 8) {
            const int b = ow + 8 <= hi ? ow : hi - 8; /* first column of the block */
            const int w0 = b * SW - g->PL;
            if (SW == 1)
                maxpool2d_lanes(best, arg, xn, W, h0, w0, khs, khe, KW, 1);
            else if (SW == 2)
                maxpool2d_lanes(best, arg, xn, W, h0, w0, khs, khe, KW, 2);
            else
                maxpool2d_lanes(best, arg, xn, W, h0, w0, khs, khe, KW, SW);
            for (int v = ow - b; v < 8; v++) {
                if (dy)
                    dxn[arg[v]] += dy[o + b + v];
                else
                    y[o + b + v] = best[v];
            }
            ow = b + 8;
            continue;
        }
        const int w0 = ow * SW - g->PL;
        const int kws = w0 < 0 ? -w0 : 0, kwe = W - w0 < KW ? W - w0 : KW;
        maxpool2d_max_block(best, arg, xn, 1, W, h0, w0, khs, khe, kws, kwe, 1);
        if (dy)
            dxn[arg[0]] += dy[o + ow];
        else
            y[o + ow] = best[0];
        ow++;
    }
}

void nn_maxpool2d_forward_planes(float *y, const float *x, const nn_conv_geom *g, int NP)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)NP * g->OH * g->OW > 32768)
    for (int n = 0; n < NP; n++)
        for (int oh = 0; oh < g->OH; oh++) maxpool2d_plane_row(y, NULL, NULL, x, g, n, oh);
}

void nn_maxpool2d_backward_planes(float *dx, const float *dy, const float *x, const nn_conv_geom *g,
                                  int NP)
{
    #pragma omp parallel for schedule(static) if ((size_t)NP * g->OH * g->OW > 32768)
    for (int n = 0; n < NP; n++)
        for (int oh = 0; oh < g->OH; oh++) maxpool2d_plane_row(NULL, dx, dy, x, g, n, oh);
}

static nn_status maxpool2d_parse(nn_layer *l, nn_config *c)
{
    return nn_pool_parse(l->state, c);
}

static void maxpool2d_write(const nn_layer *l, nn_config_writer *w)
{
    nn_pool_write(l->state, w);
}

static nn_status maxpool2d_build(nn_layer *l, int in_rank, const int *in_shape)
{
    return nn_pool_build(l, l->state, in_rank, in_shape);
}

static void maxpool2d_backward(nn_node *n)
{
    const nn_pool_state *s = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    int planes;
    const nn_conv_geom g = nn_pool_kernel_geom(s, x->shape[0], &planes);
    if (s->format == NN_CHANNELS_FIRST)
        nn_maxpool2d_backward_planes(x->grad, n->out->grad, x->data, &g, planes);
    else
        nn_maxpool2d_backward_nhwc(x->grad, n->out->grad, x->data, &g, planes);
}

static nn_status maxpool2d_forward(nn_layer *l, nn_graph *gr, tensor *x, tensor **out, int training)
{
    (void)training;
    const nn_pool_state *s = l->state;
    int shape[4] = {x->shape[0], l->out_shape[0], l->out_shape[1], l->out_shape[2]};
    tensor *y = nn_graph_tensor(gr, 4, shape);
    if (!y) return NN_ERR_MEMORY;
    int planes;
    const nn_conv_geom g = nn_pool_kernel_geom(s, x->shape[0], &planes);
    if (s->format == NN_CHANNELS_FIRST)
        nn_maxpool2d_forward_planes(y->data, x->data, &g, planes);
    else
        nn_maxpool2d_forward_nhwc(y->data, x->data, &g, planes);
    /* The layer's state outlives the step, so it serves as the context. */
    nn_graph_record(gr, "maxpool2d", y, &x, 1, maxpool2d_backward, (void *)s);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_maxpool2d = {
    .name = "maxpool2d",
    .summary = "2-D max pooling over pool_size windows",
    .state_size = sizeof(nn_pool_state),
    .parse = maxpool2d_parse,
    .write = maxpool2d_write,
    .build = maxpool2d_build,
    .forward = maxpool2d_forward,
    .test_config = "pool_size=3 strides=2 padding=same data_format=channels_last",
    .test_rank = 3,
    .test_shape = {6, 5, 2},
};
