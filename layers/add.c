/* add: y = x0 + x1 + ... for two to NN_LAYER_MAX_INPUTS inputs of the same
 * shape (Keras's Add, a residual connection's join). The sum runs left to
 * right in input order, one element per iteration, so it is the same for any
 * thread count. Backward: dxi += dy for every input.
 *
 * Omits: broadcasting between shapes, weighted sums (a 1x1 conv before the
 * add does that), the other elementwise merges (subtract, multiply, max).
 */
#include <string.h>

#include "layers/layer.h"

static nn_status add_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void add_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status add_build(nn_layer *l, int n_in, const int *in_rank,
                           const int (*in_shape)[TENSOR_MAX_RANK])
{
    int same = 1;
    for (int k = 1; same && k < n_in; k++) {
        same = in_rank[k] == in_rank[0];
        for (int d = 0; same && d < in_rank[0]; d++) same = in_shape[k][d] == in_shape[0][d];
    }
    if (!same) {
        char all[512] = "", b[96];
        for (int k = 0; k < n_in; k++) {
            size_t len = strlen(all);
            snprintf(all + len, sizeof all - len, "%s%s", k ? ", " : "",
                     tensor_shape_str(in_rank[k], in_shape[k], b, sizeof b));
        }
        return nn_error(NN_ERR_SHAPE, "%s: add needs inputs of one shape, got %s", l->name, all);
    }
    return nn_layer_build_identity(l, in_rank[0], in_shape[0]);
}

/* y[i] = sum over k of x[k][i], k in input order. x holds n pointers. */
static void add_kernel(float *y, const float *const *x, int n, size_t size)
{
    #pragma omp parallel for schedule(static) if (size > 65536)
    for (size_t i = 0; i < size; i++) {
        float s = x[0][i];
        for (int k = 1; k < n; k++) s += x[k][i];
        y[i] = s;
    }
}

static void add_backward(nn_node *node)
{
    const float *dy = node->out->grad;
    const size_t size = node->out->size;
    for (int k = 0; k < node->n_in; k++) {
        float *dx = node->in[k]->grad;
        if (!dx) continue;
        #pragma omp parallel for schedule(static) if (size > 65536)
        for (size_t i = 0; i < size; i++) dx[i] += dy[i];
    }
}

static nn_status add_forward(nn_layer *l, nn_graph *g, int n_in, tensor **x, tensor **out,
                             int training)
{
    (void)l;
    (void)training;
    const float *src[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n_in; k++) src[k] = x[k]->data;
    tensor *y = nn_graph_tensor(g, x[0]->rank, x[0]->shape);
    if (!y) return NN_ERR_MEMORY;
    add_kernel(y->data, src, n_in, y->size);
    nn_graph_record(g, "add", y, x, n_in, add_backward, NULL);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_add = {
    .name = "add",
    .summary = "elementwise sum of 2 or more inputs of one shape",
    .parse = add_parse,
    .write = add_write,
    .build_multi = add_build,
    .forward_multi = add_forward,
    .test_config = "",
    .test_rank = 3,
    .test_shape = {3, 2, 4},
    .test_inputs = 3,
    .test_shapes = {{3, 2, 4}, {3, 2, 4}, {3, 2, 4}},
};
