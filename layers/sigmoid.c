/* sigmoid: y = 1 / (1 + exp(-x)), without overflow for any x (the kernels
 * are in layers/activation.c). Backward reads the saved output:
 * dx += dy * y * (1 - y). No config keys. */
#include "layers/activation.h"
#include "layers/layer.h"

static nn_status sigmoid_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void sigmoid_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status sigmoid_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    return nn_act_record(g, NN_ACT_SIGMOID, 0.0f, x, out, 0);
}

const nn_layer_type nn_layer_sigmoid = {
    .name = "sigmoid",
    .summary = "logistic sigmoid: y = 1 / (1 + exp(-x))",
    .parse = sigmoid_parse,
    .write = sigmoid_write,
    .build = nn_layer_build_identity,
    .forward = sigmoid_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
