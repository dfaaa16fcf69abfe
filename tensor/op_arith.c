/* Elementwise add and multiply, and the weighted sum used as a test loss. */
#include <string.h>

#include "tensor/ops.h"

static nn_status op_arith_same_shape(const char *op, const char *a_name, const tensor *a,
                                     const char *b_name, const tensor *b)
{
    if (!a || !b)
        return nn_error(NN_ERR_ARG, "%s: NULL tensor: %s is NULL", op, !a ? a_name : b_name);
    if (tensor_same_shape(a, b)) return NN_OK;
    char x[96], y[96];
    return nn_error(NN_ERR_SHAPE, "%s: shapes %s and %s differ", op,
                    tensor_shape_str(a->rank, a->shape, x, sizeof x),
                    tensor_shape_str(b->rank, b->shape, y, sizeof y));
}

static void op_arith_add_backward(nn_node *n)
{
    const float *dy = n->out->grad;
    for (int k = 0; k < 2; k++) {
        float *dx = n->in[k]->grad;
        if (!dx) continue;
        for (size_t i = 0; i < n->out->size; i++) dx[i] += dy[i];
    }
}

nn_status nn_op_add(nn_graph *g, tensor *a, tensor *b, tensor **out)
{
    NN_TRY(op_arith_same_shape("add", "a", a, "b", b));
    tensor *y = nn_graph_tensor(g, a->rank, a->shape);
    if (!y) return NN_ERR_MEMORY;
    for (size_t i = 0; i < a->size; i++) y->data[i] = a->data[i] + b->data[i];
    tensor *in[2] = {a, b};
    nn_node *n = nn_graph_record(g, "add", y, in, 2, op_arith_add_backward, NULL);
    if (n) n->inputs_unread = 1; /* dx = dy */
    *out = y;
    return NN_OK;
}

static void op_arith_mul_backward(nn_node *n)
{
    const float *dy = n->out->grad;
    tensor *a = n->in[0], *b = n->in[1];
    if (a->grad)
        for (size_t i = 0; i < a->size; i++) a->grad[i] += dy[i] * b->data[i];
    if (b->grad)
        for (size_t i = 0; i < b->size; i++) b->grad[i] += dy[i] * a->data[i];
}

nn_status nn_op_mul(nn_graph *g, tensor *a, tensor *b, tensor **out)
{
    NN_TRY(op_arith_same_shape("mul", "a", a, "b", b));
    tensor *y = nn_graph_tensor(g, a->rank, a->shape);
    if (!y) return NN_ERR_MEMORY;
    for (size_t i = 0; i < a->size; i++) y->data[i] = a->data[i] * b->data[i];
    tensor *in[2] = {a, b};
    nn_graph_record(g, "mul", y, in, 2, op_arith_mul_backward, NULL);
    *out = y;
    return NN_OK;
}

static void op_arith_weighted_sum_backward(nn_node *n)
{
    const tensor *w = n->ctx;
    tensor *a = n->in[0];
    const float dy = n->out->grad[0];
    if (a->grad)
        for (size_t i = 0; i < a->size; i++) a->grad[i] += dy * w->data[i];
}

nn_status nn_op_weighted_sum(nn_graph *g, tensor *a, const tensor *w, tensor **out)
{
    NN_TRY(op_arith_same_shape("weighted_sum", "a", a, "w", w));
    int one = 1;
    tensor *y = nn_graph_tensor(g, 1, &one);
    if (!y) return NN_ERR_MEMORY;
    double s = 0.0;
    for (size_t i = 0; i < a->size; i++) s += (double)a->data[i] * w->data[i];
    y->data[0] = (float)s;
    nn_graph_record(g, "weighted_sum", y, &a, 1, op_arith_weighted_sum_backward, (void *)w);
    *out = y;
    return NN_OK;
}
