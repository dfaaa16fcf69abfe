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

static void sigmoid_backward(nn_node *n)
{
    tensor *x = n->in[0], *y = n->out;
    if (x->grad) nn_act_sigmoid_backward(x->grad, y->grad, y->data, y->size);
}

static nn_status sigmoid_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    nn_act_sigmoid_forward(y->data, x->data, x->size);
    nn_node *node = nn_graph_record(g, "sigmoid", y, &x, 1, sigmoid_backward, NULL);
    if (node) node->saves_output = 1;
    *out = y;
    return NN_OK;
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
