/* flatten: (N, d1, d2, ...) -> (N, d1*d2*...), a view of x's storage in C
 * order (so channels_last input flattens as Keras does). Its gradient is
 * x's gradient storage too (nn_node.grad_is_input), so backward has nothing
 * left to do; when x's gradient is separate, it adds dy to dx unchanged. */
#include "layers/layer.h"

static nn_status flatten_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void flatten_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status flatten_build(nn_layer *l, int in_rank, const int *in_shape)
{
    size_t size = 1;
    for (int i = 0; i < in_rank; i++) size *= (size_t)in_shape[i];
    if (size > (size_t)1 << 30)
        return nn_error(NN_ERR_SHAPE, "%s: %zu features per sample is too many", l->name, size);
    l->out_rank = 1;
    l->out_shape[0] = (int)size;
    return NN_OK;
}

static void flatten_backward(nn_node *n)
{
    tensor *x = n->in[0];
    if (!x->grad || x->grad == n->out->grad) return; /* shared: already added */
    for (size_t i = 0; i < x->size; i++) x->grad[i] += n->out->grad[i];
}

static nn_status flatten_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)training;
    int shape[2] = {x->shape[0], l->out_shape[0]};
    tensor *y = nn_graph_view(g, x, 2, shape);
    if (!y) return NN_ERR_MEMORY;
    nn_node *n = nn_graph_record(g, "flatten", y, &x, 1, flatten_backward, NULL);
    if (n) n->grad_is_input = 1;
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_flatten = {
    .name = "flatten",
    .summary = "reshape each sample to a vector (a view, no copy)",
    .parse = flatten_parse,
    .write = flatten_write,
    .build = flatten_build,
    .forward = flatten_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {3, 2, 2},
};
