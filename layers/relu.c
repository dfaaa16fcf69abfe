/* relu: y = max(x, 0). Backward passes dy where y > 0 (the subgradient at 0
 * is 0, as in PyTorch). It may run in place (grad_in_place): when x has no
 * gradient yet the graph hands it dy's storage, and backward overwrites dy
 * with dx instead of zeroing a new buffer and adding into it; the values are
 * the same, 0 + dy or +0. The loops use layers/simd.h's vectors.
 * Batchnorm, add, dense and conv2d fuse relu into their own passes
 * (activation=relu). */
#include "layers/layer.h"
#include "layers/simd.h"

/* Below this many elements a loop stays on one thread. */
#define RELU_PAR_MIN 65536

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

/* dx = (or +=, unless in place) dy where y > 0, else +0;  dx, dy, y (n).
 * 0 + dy: what adding into a zeroed buffer gives (dy = -0 becomes +0). */
INLINE void relu_backward_body(float *dx, const float *dy, const float *y, size_t n, int add)
{
    const size_t nv = n / VL;
    #pragma omp parallel for schedule(static) if (n > RELU_PAR_MIN)
    for (size_t b = 0; b <= nv; b++) {
        const size_t i0 = b * VL;
        if (b < nv) {
            const vf g = (vf)((vi)(splat(0.0f) + vload(dy + i0)) & (vi)(vload(y + i0) > splat(0.0f)));
            vstore(dx + i0, add ? vload(dx + i0) + g : g);
            continue;
        }
        for (size_t i = i0; i < n; i++) {
            const float g = y[i] > 0.0f ? 0.0f + dy[i] : 0.0f;
            dx[i] = add ? dx[i] + g : g;
        }
    }
}

static void relu_backward(nn_node *n)
{
    tensor *x = n->in[0], *y = n->out;
    if (!x->grad) return;
    if (x->grad == y->grad) relu_backward_body(x->grad, y->grad, y->data, y->size, 0);
    else relu_backward_body(x->grad, y->grad, y->data, y->size, 1);
}

static nn_status relu_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)l;
    (void)training;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    const size_t n = x->size, nv = n / VL;
    const float *xd = x->data;
    float *yd = y->data;
    #pragma omp parallel for schedule(static) if (n > RELU_PAR_MIN)
    for (size_t b = 0; b <= nv; b++) {
        const size_t i0 = b * VL;
        if (b < nv) {
            const vf v = vload(xd + i0);
            vstore(yd + i0, (vf)((vi)v & (vi)(v > splat(0.0f))));
            continue;
        }
        for (size_t i = i0; i < n; i++) yd[i] = xd[i] > 0.0f ? xd[i] : 0.0f;
    }
    nn_node *node = nn_graph_record(g, "relu", y, &x, 1, relu_backward, NULL);
    if (node) {
        node->saves_output = 1;
        node->grad_in_place = 1;
    }
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
