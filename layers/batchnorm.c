/* batchnorm: batch normalization over the channel axis, Keras's
 * BatchNormalization.
 *   y = gamma * (x - mean) / sqrt(var + epsilon) + beta        per channel
 * Training: mean and var are the batch's (var biased, dividing by the count
 * M = N * positions), and the moving statistics are updated as Keras does,
 *   moving = moving * momentum + batch * (1 - momentum),
 * where the batch variance for the moving average is the unbiased one,
 * var * M / (M - 1) (what TensorFlow's fused kernel, the Keras default for
 * images, and PyTorch's running_var store; Keras 3 stores the biased one;
 * with M = 1 the biased value is used). Eval: the moving statistics.
 *
 * Config: momentum (0.99), epsilon (1e-3, > 0), center (true: beta), scale
 * (true: gamma), data_format (the framework default; it places the channel
 * axis of image input). Per-sample input: (C) or (L, C), channel last; or an
 * image (H, W, C) / (C, H, W).
 * Parameters, in Keras's order: "gamma" (ones), "beta" (zeros) -- trainable,
 * present when scale / center -- then "moving_mean" (zeros) and
 * "moving_variance" (ones), not trainable.
 *
 * Backward, training (x_hat = (x - mean) * inv_std, M values per channel):
 *   dbeta += sum(dy);  dgamma += sum(dy * x_hat)
 *   dx += gamma * inv_std * (dy - sum(dy)/M - x_hat * sum(dy * x_hat)/M)
 * eval: dx += gamma * inv_std * dy. Per-channel sums use conv_core's fixed
 * blocking (double accumulators), so results do not depend on the thread
 * count.
 *
 * Omits: renorm, virtual batches, an axis other than the channel axis,
 * synchronised statistics across devices.
 */
#include <math.h>
#include <string.h>

#include "layers/conv_core.h"

typedef struct {
    float momentum, epsilon;
    int center, scale;
    nn_data_format format;
    int C, pre, inner; /* per sample: (pre, C, inner); set by build */
    int i_gamma, i_beta, i_mean, i_var;
} bn_state;

typedef struct {
    const bn_state *s;
    nn_layer *l;
    float *mean, *inv_std; /* (C): what forward normalised with */
    int training;
    double *part;          /* per-block sums, and 2*C results */
} bn_ctx;

static nn_status batchnorm_parse(nn_layer *l, nn_config *c)
{
    bn_state *s = l->state;
    NN_TRY(nn_config_get_float(c, "momentum", &s->momentum, 0.99f, 0, 0.0f, 1.0f));
    NN_TRY(nn_config_get_float(c, "epsilon", &s->epsilon, 1e-3f, 0, 0.0f, 1e6f));
    if (!(s->epsilon > 0.0f))
        return nn_error(NN_ERR_CONFIG, "%s: epsilon must be greater than 0, but got %g", c->layer,
                        (double)s->epsilon);
    NN_TRY(nn_config_get_bool(c, "center", &s->center, 1));
    NN_TRY(nn_config_get_bool(c, "scale", &s->scale, 1));
    return nn_config_get_data_format(c, &s->format);
}

static void batchnorm_write(const nn_layer *l, nn_config_writer *w)
{
    const bn_state *s = l->state;
    nn_config_write_float(w, "momentum", s->momentum);
    nn_config_write_float(w, "epsilon", s->epsilon);
    nn_config_write(w, "center", "%s", s->center ? "true" : "false");
    nn_config_write(w, "scale", "%s", s->scale ? "true" : "false");
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
}

static nn_status batchnorm_build(nn_layer *l, int in_rank, const int *in_shape)
{
    bn_state *s = l->state;
    if (in_rank < 1 || in_rank > 3) {
        char b[96];
        return nn_error(NN_ERR_SHAPE,
                        "%s: expected a per-sample input of rank 1 (features), 2 (steps, "
                        "features) or 3 (an image), got %s",
                        l->name, tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    long pre = 1;
    int cax = in_rank - 1;
    if (in_rank == 3 && s->format == NN_CHANNELS_FIRST) cax = 0;
    for (int i = 0; i < cax; i++) pre *= in_shape[i];
    long inner = 1;
    for (int i = cax + 1; i < in_rank; i++) inner *= in_shape[i];
    s->C = in_shape[cax];
    s->pre = (int)pre;
    s->inner = (int)inner;
    s->i_gamma = s->i_beta = -1;
    const int C = s->C;
    if (s->scale) {
        s->i_gamma = l->n_params;
        NN_TRY(nn_layer_add_param(l, "gamma", 1, &C, NN_INIT_ONES, 0, 0, 1));
    }
    if (s->center) {
        s->i_beta = l->n_params;
        NN_TRY(nn_layer_add_param(l, "beta", 1, &C, NN_INIT_ZEROS, 0, 0, 1));
    }
    s->i_mean = l->n_params;
    NN_TRY(nn_layer_add_param(l, "moving_mean", 1, &C, NN_INIT_ZEROS, 0, 0, 0));
    s->i_var = l->n_params;
    NN_TRY(nn_layer_add_param(l, "moving_variance", 1, &C, NN_INIT_ONES, 0, 0, 0));
    l->out_rank = in_rank;
    memcpy(l->out_shape, in_shape, (size_t)in_rank * sizeof *in_shape);
    return NN_OK;
}

static void batchnorm_backward(nn_node *n)
{
    const bn_ctx *c = n->ctx;
    const bn_state *s = c->s;
    nn_layer *l = c->l;
    tensor *x = n->in[0], *y = n->out;
    tensor *gamma = s->i_gamma >= 0 ? l->params[s->i_gamma].t : NULL;
    tensor *beta = s->i_beta >= 0 ? l->params[s->i_beta].t : NULL;
    const int C = s->C;
    const size_t outer = (size_t)x->shape[0] * s->pre, inner = (size_t)s->inner;
    const double M = (double)outer * inner;
    const float *dy = y->grad;
    double *sum_dy = c->part, *sum_dyxc = c->part + C, *part = c->part + 2 * C;
    /* sum(dy * (x - mean)); times inv_std it is sum(dy * x_hat). */
    nn_conv_channel_sums(sum_dy, dy, NULL, NULL, NULL, outer, C, inner, part);
    nn_conv_channel_sums(sum_dyxc, dy, NULL, x->data, c->mean, outer, C, inner, part);
    if (gamma && gamma->grad)
        for (int k = 0; k < C; k++) gamma->grad[k] += (float)(sum_dyxc[k] * c->inv_std[k]);
    if (beta && beta->grad)
        for (int k = 0; k < C; k++) beta->grad[k] += (float)sum_dy[k];
    if (!x->grad || M == 0) return;
    /* dx += k1 * (dy - k2 - (x - mean) * k3), per channel coefficients; the
     * batch terms k2, k3 vanish in eval mode, where mean and var are
     * constants. Reuses part for the three (C) float vectors. */
    float *k1 = (float *)part, *k2 = k1 + C, *k3 = k2 + C;
    for (int k = 0; k < C; k++) {
        const double is = c->inv_std[k];
        k1[k] = (float)((gamma ? gamma->data[k] : 1.0f) * is);
        k2[k] = c->training ? (float)(sum_dy[k] / M) : 0.0f;
        k3[k] = c->training ? (float)(is * is * sum_dyxc[k] / M) : 0.0f;
    }
    const float *mean = c->mean, *xd = x->data;
    float *dx = x->grad;
    #pragma omp parallel for schedule(static) if (x->size > 32768)
    for (size_t o = 0; o < outer; o++)
        for (int k = 0; k < C; k++) {
            const size_t base = (o * C + k) * inner;
            for (size_t i = 0; i < inner; i++)
                dx[base + i] += k1[k] * (dy[base + i] - k2[k] - (xd[base + i] - mean[k]) * k3[k]);
        }
}

static nn_status batchnorm_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    const bn_state *s = l->state;
    const int C = s->C;
    const size_t outer = (size_t)x->shape[0] * s->pre, inner = (size_t)s->inner;
    const size_t M = outer * inner;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    bn_ctx *c = nn_graph_alloc(g, sizeof *c);
    const size_t n_part = 2 * (size_t)C + nn_conv_sum_scratch(outer, C, inner) + 2 * (size_t)C;
    double *part = nn_graph_alloc(g, n_part * sizeof(double));
    float *mean = nn_graph_alloc(g, (size_t)C * sizeof(float));
    float *inv_std = nn_graph_alloc(g, (size_t)C * sizeof(float));
    if (!y || !c || !part || !mean || !inv_std) return NN_ERR_MEMORY;
    tensor *gamma = s->i_gamma >= 0 ? l->params[s->i_gamma].t : NULL;
    tensor *beta = s->i_beta >= 0 ? l->params[s->i_beta].t : NULL;
    float *mm = l->params[s->i_mean].t->data, *mv = l->params[s->i_var].t->data;
    const int batch = training && M > 0;
    if (batch) {
        double *sum = part, *ssd = part + C, *blocks = part + 2 * C;
        nn_conv_channel_sums(sum, x->data, NULL, NULL, NULL, outer, C, inner, blocks);
        for (int k = 0; k < C; k++) mean[k] = (float)(sum[k] / (double)M);
        /* Second pass about the mean: no cancellation, unlike E[x^2]-E[x]^2. */
        nn_conv_channel_sums(ssd, x->data, mean, x->data, mean, outer, C, inner, blocks);
        const double mom = s->momentum;
        for (int k = 0; k < C; k++) {
            const double var = ssd[k] / (double)M;
            const double unbiased = M > 1 ? ssd[k] / (double)(M - 1) : var;
            inv_std[k] = (float)(1.0 / sqrt(var + s->epsilon));
            mm[k] = (float)(mm[k] * mom + (double)mean[k] * (1.0 - mom));
            mv[k] = (float)(mv[k] * mom + unbiased * (1.0 - mom));
        }
    } else {
        for (int k = 0; k < C; k++) {
            mean[k] = mm[k];
            inv_std[k] = (float)(1.0 / sqrt((double)mv[k] + s->epsilon));
        }
    }
    /* y = (x - mean) * a + beta with a = gamma * inv_std. */
    float *a = (float *)part, *bb = a + C;
    for (int k = 0; k < C; k++) {
        a[k] = (gamma ? gamma->data[k] : 1.0f) * inv_std[k];
        bb[k] = beta ? beta->data[k] : 0.0f;
    }
    const float *xd = x->data;
    float *yd = y->data;
    #pragma omp parallel for schedule(static) if (x->size > 32768)
    for (size_t o = 0; o < outer; o++)
        for (int k = 0; k < C; k++) {
            const size_t base = (o * C + k) * inner;
            for (size_t i = 0; i < inner; i++) yd[base + i] = (xd[base + i] - mean[k]) * a[k] + bb[k];
        }
    c->s = s;
    c->l = l;
    c->mean = mean;
    c->inv_std = inv_std;
    c->training = batch;
    c->part = part;
    tensor *in[3] = {x, gamma, beta};
    int n_in = 1;
    if (gamma) in[n_in++] = gamma;
    if (beta) in[n_in++] = beta;
    nn_graph_record(g, "batchnorm", y, in, n_in, batchnorm_backward, c);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_batchnorm = {
    .name = "batchnorm",
    .summary = "batch normalization over the channel axis (Keras semantics)",
    .state_size = sizeof(bn_state),
    .parse = batchnorm_parse,
    .write = batchnorm_write,
    .build = batchnorm_build,
    .forward = batchnorm_forward,
    .test_config = "momentum=0.9 data_format=channels_first",
    .test_rank = 3,
    .test_shape = {3, 2, 2},
};
