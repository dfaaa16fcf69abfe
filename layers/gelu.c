/* gelu: y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form
 * (PyTorch's approximate='none', Keras's approximate=False), computed as
 * 0.5 x erfc(-x / sqrt 2) to keep its precision for x < 0. Backward reads
 * the input: dx += dy * (Phi(x) + x phi(x)). No config keys. The kernels are
 * in layers/activation.c. Omits: the tanh approximation. */
#include "layers/activation.h"
#include "layers/layer.h"

static nn_status gelu_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void gelu_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status gelu_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    return nn_act_record(g, NN_ACT_GELU, 0.0f, x, out, 0);
}

const nn_layer_type nn_layer_gelu = {
    .name = "gelu",
    .summary = "Gaussian error linear unit: y = x * Phi(x) (exact erf form)",
    .parse = gelu_parse,
    .write = gelu_write,
    .build = nn_layer_build_identity,
    .forward = gelu_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
