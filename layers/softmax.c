/* softmax: over the last axis (Keras's default axis=-1; for a conv2d output
 * in channels_last format that is the channels), each row y = exp(x - max x)
 * / sum exp(x - max x). Backward reads the saved output and is not
 * elementwise: per row, dx += y * (dy - sum(dy * y)). No config keys.
 * The kernels are in layers/activation.c. Omits: an axis key; a loss that
 * takes logits (nn_op_softmax_cross_entropy in tensor/ops.h) is the stable
 * and cheaper way to train a classifier. */
#include "layers/activation.h"
#include "layers/layer.h"

static nn_status softmax_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void softmax_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status softmax_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    return nn_act_record(g, NN_ACT_SOFTMAX, 0.0f, x, out, 0);
}

const nn_layer_type nn_layer_softmax = {
    .name = "softmax",
    .summary = "softmax over the last axis: y = exp(x) / sum exp(x)",
    .parse = softmax_parse,
    .write = softmax_write,
    .build = nn_layer_build_identity,
    .forward = softmax_forward,
    .test_config = "",
    .test_rank = 2,
    .test_shape = {3, 5},
};
