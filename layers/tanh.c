/* tanh: y = tanh(x), the C library's tanhf (saturates to +-1, never
 * overflows). Backward reads the saved output: dx += dy * (1 - y^2).
 * No config keys. The kernels are in layers/activation.c. */
#include "layers/activation.h"
#include "layers/layer.h"

static nn_status tanh_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void tanh_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status tanh_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    return nn_act_record(g, NN_ACT_TANH, 0.0f, x, out, 0);
}

const nn_layer_type nn_layer_tanh = {
    .name = "tanh",
    .summary = "hyperbolic tangent: y = tanh(x)",
    .parse = tanh_parse,
    .write = tanh_write,
    .build = nn_layer_build_identity,
    .forward = tanh_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
