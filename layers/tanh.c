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

static void tanh_backward(nn_node *n)
{
    tensor *x = n->in[0], *y = n->out;
    if (x->grad) nn_act_tanh_backward(x->grad, y->grad, y->data, y->size);
}

static nn_status tanh_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    nn_act_tanh_forward(y->data, x->data, x->size);
    nn_node *node = nn_graph_record(g, "tanh", y, &x, 1, tanh_backward, NULL);
    if (node) node->saves_output = 1;
    *out = y;
    return NN_OK;
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
