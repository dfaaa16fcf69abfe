/* relu: y = max(x, 0). Backward passes dy where y > 0 (the subgradient at 0
 * is 0, as in PyTorch). */
#include "layers/layer.h"

static nn_status relu_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void relu_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static void relu_backward(nn_node *n)
{
    tensor *x = n->in[0], *y = n->out;
    if (!x->grad) return;
    #pragma omp parallel for schedule(static) if (y->size > 65536)
    for (size_t i = 0; i < y->size; i++)
        if (y->data[i] > 0.0f) x->grad[i] += y->grad[i];
}

static nn_status relu_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    #pragma omp parallel for schedule(static) if (x->size > 65536)
    for (size_t i = 0; i < x->size; i++) y->data[i] = x->data[i] > 0.0f ? x->data[i] : 0.0f;
    nn_node *node = nn_graph_record(g, "relu", y, &x, 1, relu_backward, NULL);
    if (node) node->saves_output = 1;
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_relu = {
    .name = "relu",
    .summary = "rectified linear unit: y = max(x, 0)",
    .parse = relu_parse,
    .write = relu_write,
    .build = nn_layer_build_identity,
    .forward = relu_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
