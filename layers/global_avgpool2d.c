/* global_avgpool2d: the mean of each channel over all positions.
 * x (N, H, W, C) channels_last or (N, C, H, W) channels_first -> y (N, C).
 * Config: data_format (the framework default).
 * Sums are taken in double, one sample per thread in a fixed order, so the
 * result does not depend on the thread count. Backward: dx += dy / (H*W) at
 * every position.
 *
 * Omits: keepdims (a reshape layer gives (N, 1, 1, C)).
 */
#include "layers/conv_core.h"

typedef struct {
    nn_data_format format;
    int H, W, C;
} gap_state;

/* y (N, C) = mean over HW of x: channels_last (N, HW, C) or channels_first
 * (N, C, HW). part holds N*C doubles. */
static void global_avgpool2d_forward_kernel(float *y, const float *x, int N, int C, int HW, int cf,
                                            double *part)
{
    const double div = HW ? (double)HW : 1.0;
    #pragma omp parallel for schedule(static) if ((size_t)N * C * HW > 32768)
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * HW * C;
        double *restrict s = part + (size_t)n * C;
        if (cf) {
            for (int c = 0; c < C; c++) {
                double acc = 0.0;
                for (int p = 0; p < HW; p++) acc += xn[(size_t)c * HW + p];
                s[c] = acc;
            }
        } else {
            for (int c = 0; c < C; c++) s[c] = 0.0;
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < C; c++) s[c] += xn[(size_t)p * C + c];
        }
        for (int c = 0; c < C; c++) y[(size_t)n * C + c] = (float)(s[c] / div);
    }
}

static nn_status global_avgpool2d_parse(nn_layer *l, nn_config *c)
{
    gap_state *s = l->state;
    return nn_config_get_data_format(c, &s->format);
}

static void global_avgpool2d_write(const nn_layer *l, nn_config_writer *w)
{
    const gap_state *s = l->state;
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
}

static nn_status global_avgpool2d_build(nn_layer *l, int in_rank, const int *in_shape)
{
    gap_state *s = l->state;
    NN_TRY(nn_conv_image_shape(l->name, in_rank, in_shape, s->format == NN_CHANNELS_FIRST, &s->H,
                               &s->W, &s->C));
    l->out_rank = 1;
    l->out_shape[0] = s->C;
    return NN_OK;
}

static void global_avgpool2d_backward(nn_node *n)
{
    const gap_state *s = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const float *dy = n->out->grad;
    const int N = x->shape[0], C = s->C, HW = s->H * s->W, cf = s->format == NN_CHANNELS_FIRST;
    const float inv = HW ? 1.0f / (float)HW : 0.0f;
    #pragma omp parallel for schedule(static) if (x->size > 32768)
    for (int n = 0; n < N; n++) {
        float *dx = x->grad + (size_t)n * HW * C;
        const float *d = dy + (size_t)n * C;
        for (int p = 0; p < HW; p++)
            for (int c = 0; c < C; c++) {
                const float v = d[c] * inv;
                if (cf)
                    dx[(size_t)c * HW + p] += v;
                else
                    dx[(size_t)p * C + c] += v;
            }
    }
}

static nn_status global_avgpool2d_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out,
                                          int training)
{
    (void)training;
    const gap_state *s = l->state;
    const int N = x->shape[0];
    int shape[2] = {N, s->C};
    tensor *y = nn_graph_tensor(g, 2, shape);
    double *part = nn_graph_alloc(g, ((size_t)N * s->C + 1) * sizeof(double));
    if (!y || !part) return NN_ERR_MEMORY;
    global_avgpool2d_forward_kernel(y->data, x->data, N, s->C, s->H * s->W,
                                    s->format == NN_CHANNELS_FIRST, part);
    nn_graph_record(g, "global_avgpool2d", y, &x, 1, global_avgpool2d_backward, l->state);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_global_avgpool2d = {
    .name = "global_avgpool2d",
    .summary = "mean of each channel over all positions: (N, C)",
    .state_size = sizeof(gap_state),
    .parse = global_avgpool2d_parse,
    .write = global_avgpool2d_write,
    .build = global_avgpool2d_build,
    .forward = global_avgpool2d_forward,
    .test_config = "data_format=channels_first",
    .test_rank = 3,
    .test_shape = {3, 4, 2},
};
