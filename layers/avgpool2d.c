/* avgpool2d: the mean over each pool_size window, per channel.
 * x (N, H, W, C) channels_last or (N, C, H, W) channels_first.
 * Config: pool_size (2), strides (pool_size), padding valid | same (valid),
 * data_format (the framework default). With padding=same the mean is over
 * the window's elements inside the input only, as Keras/TensorFlow count it
 * (PyTorch's count_include_pad=True default would divide by the full window).
 * Backward: each element of a window gets dy / count.
 * channels_first runs the channels_last kernel on N*C one-channel samples;
 * loops are parallel over samples, so the overlapping windows of one sample
 * are summed in a fixed order by one thread.
 *
 * Omits: dilation, ceil_mode, count_include_pad.
 */
#include "layers/conv_core.h"

/* The valid part [ks, ke) of a window starting at s0 over an extent n. */
static inline void avgpool2d_window(int s0, int k, int n, int *ks, int *ke)
{
    *ks = s0 < 0 ? -s0 : 0;
    *ke = n - s0 < k ? n - s0 : k;
}

/* y (NP, OH, OW, C) = window means of x (NP, H, W, C). */
static void avgpool2d_forward_kernel(float *y, const float *x, const nn_conv_geom *g, int NP)
{
    const int H = g->H, W = g->W, C = g->C, OH = g->OH, OW = g->OW;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)NP * OH * OW * C > 32768)
    for (int n = 0; n < NP; n++)
        for (int oh = 0; oh < OH; oh++) {
            const float *xn = x + (size_t)n * H * W * C;
            const int h0 = oh * g->SH - g->PT;
            int khs, khe;
            avgpool2d_window(h0, g->KH, H, &khs, &khe);
            for (int ow = 0; ow < OW; ow++) {
                const int w0 = ow * g->SW - g->PL;
                int kws, kwe;
                avgpool2d_window(w0, g->KW, W, &kws, &kwe);
                float *restrict yo = y + (((size_t)n * OH + oh) * OW + ow) * C;
                for (int c = 0; c < C; c++) yo[c] = 0.0f;
                for (int kh = khs; kh < khe; kh++)
                    for (int kw = kws; kw < kwe; kw++) {
                        const float *restrict xp = xn + ((size_t)(h0 + kh) * W + (w0 + kw)) * C;
                        for (int c = 0; c < C; c++) yo[c] += xp[c];
                    }
                const float inv = 1.0f / (float)((khe - khs) * (kwe - kws));
                for (int c = 0; c < C; c++) yo[c] *= inv;
            }
        }
}

/* dx (NP, H, W, C) += dy (NP, OH, OW, C) / count, spread over each window. */
static void avgpool2d_backward_kernel(float *dx, const float *dy, const nn_conv_geom *g, int NP)
{
    const int H = g->H, W = g->W, C = g->C, OH = g->OH, OW = g->OW;
    #pragma omp parallel for schedule(static) if ((size_t)NP * OH * OW * C > 32768)
    for (int n = 0; n < NP; n++) {
        float *dxn = dx + (size_t)n * H * W * C;
        for (int oh = 0; oh < OH; oh++) {
            const int h0 = oh * g->SH - g->PT;
            int khs, khe;
            avgpool2d_window(h0, g->KH, H, &khs, &khe);
            for (int ow = 0; ow < OW; ow++) {
                const int w0 = ow * g->SW - g->PL;
                int kws, kwe;
                avgpool2d_window(w0, g->KW, W, &kws, &kwe);
                const float inv = 1.0f / (float)((khe - khs) * (kwe - kws));
                const float *restrict dyo = dy + (((size_t)n * OH + oh) * OW + ow) * C;
                for (int kh = khs; kh < khe; kh++)
                    for (int kw = kws; kw < kwe; kw++) {
                        float *restrict d = dxn + ((size_t)(h0 + kh) * W + (w0 + kw)) * C;
                        for (int c = 0; c < C; c++) d[c] += dyo[c] * inv;
                    }
            }
        }
    }
}

static nn_status avgpool2d_parse(nn_layer *l, nn_config *c)
{
    return nn_pool_parse(l->state, c);
}

static void avgpool2d_write(const nn_layer *l, nn_config_writer *w)
{
    nn_pool_write(l->state, w);
}

static nn_status avgpool2d_build(nn_layer *l, int in_rank, const int *in_shape)
{
    return nn_pool_build(l, l->state, in_rank, in_shape);
}

static void avgpool2d_backward(nn_node *n)
{
    tensor *x = n->in[0];
    if (!x->grad) return;
    int planes;
    const nn_conv_geom g = nn_pool_kernel_geom(n->ctx, x->shape[0], &planes);
    avgpool2d_backward_kernel(x->grad, n->out->grad, &g, planes);
}

static nn_status avgpool2d_forward(nn_layer *l, nn_graph *gr, tensor *x, tensor **out, int training)
{
    (void)training;
    int shape[4] = {x->shape[0], l->out_shape[0], l->out_shape[1], l->out_shape[2]};
    tensor *y = nn_graph_tensor(gr, 4, shape);
    if (!y) return NN_ERR_MEMORY;
    int planes;
    const nn_conv_geom g = nn_pool_kernel_geom(l->state, x->shape[0], &planes);
    avgpool2d_forward_kernel(y->data, x->data, &g, planes);
    nn_graph_record(gr, "avgpool2d", y, &x, 1, avgpool2d_backward, l->state);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_avgpool2d = {
    .name = "avgpool2d",
    .summary = "2-D average pooling over pool_size windows (same: valid elements only)",
    .state_size = sizeof(nn_pool_state),
    .parse = avgpool2d_parse,
    .write = avgpool2d_write,
    .build = avgpool2d_build,
    .forward = avgpool2d_forward,
    .test_config = "pool_size=2,3 strides=1,2 padding=same data_format=channels_first",
    .test_rank = 3,
    .test_shape = {2, 5, 6},
};
