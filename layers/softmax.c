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

/* Rows and row length of t viewed as (size / last, last). */
static void softmax_rows(const tensor *t, size_t *rows, size_t *cols)
{
    *cols = (size_t)t->shape[t->rank - 1];
    *rows = *cols ? t->size / *cols : 0;
}

static void softmax_backward(nn_node *n)
{
    tensor *x = n->in[0], *y = n->out;
    if (!x->grad) return;
    size_t rows, cols;
    softmax_rows(y, &rows, &cols);
    nn_act_softmax_backward(x->grad, y->grad, y->data, rows, cols);
}

static nn_status softmax_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    size_t rows, cols;
    softmax_rows(x, &rows, &cols);
    nn_act_softmax_forward(y->data, x->data, rows, cols);
    nn_node *node = nn_graph_record(g, "softmax", y, &x, 1, softmax_backward, NULL);
    if (node) node->saves_output = 1;
    *out = y;
    return NN_OK;
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
