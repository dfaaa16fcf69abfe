/* add: y = act(x0 + x1 + ...) for two to NN_LAYER_MAX_INPUTS inputs of the
 * same shape (Keras's Add, a residual connection's join). The sum runs left
 * to right in input order, one element per lane, so it is the same for any
 * thread count. Backward: dxi += dy for every input, all inputs in one pass
 * over dy.
 * Config: activation and alpha, as dense's (linear | relu | sigmoid | tanh |
 * leaky_relu | elu | gelu | softmax; linear). relu is fused: y = max(0, sum)
 * in the same pass, and backward passes dy where the saved y > 0, bit for
 * bit what a relu layer after the add gives; every other activation is a
 * second graph node (nn_act_record), as after dense.
 *
 * inplace (false): y is written over the first input's storage, which
 * saves a tensor the size of y; the model refuses it when another layer
 * reads that input, and the forward when the input's producer reads it
 * backward (an output saved for backward, a parameter, a leaf that wants
 * a gradient). The sums and gradients are the same either way. Written
 * back only when true.
 *
 * Omits: broadcasting between shapes, weighted sums (a 1x1 conv before the
 * add does that), the other elementwise merges (subtract, multiply, max).
 */
#include <string.h>

#include "layers/activation.h"
#include "layers/layer.h"
#include "layers/simd.h"

typedef struct {
    int activation; /* an nn_activation */
    float alpha;    /* leaky_relu and elu */
    int inplace;
} add_state;

/* Below this many elements a loop stays on one thread. */
#define ADD_PAR_MIN 65536

static nn_status add_parse(nn_layer *l, nn_config *c)
{
    add_state *s = l->state;
    NN_TRY(nn_config_get_choice(c, "activation", &s->activation, NN_ACT_LINEAR, nn_activation_names));
    NN_TRY(nn_config_get_bool(c, "inplace", &s->inplace, 0));
    return nn_act_config_alpha(c, s->activation, &s->alpha);
}

static void add_write(const nn_layer *l, nn_config_writer *w)
{
    const add_state *s = l->state;
    nn_config_write(w, "activation", "%s", nn_activation_names[s->activation]);
    if (nn_act_has_alpha(s->activation)) nn_config_write_float(w, "alpha", s->alpha);
    if (s->inplace) nn_config_write(w, "inplace", "true");
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
    /* A model refuses this when another layer reads the same input. */
    l->overwrites_input = ((const add_state *)l->state)->inplace;
    return nn_layer_build_identity(l, in_rank[0], in_shape[0]);
}

/* y = x[0] + x[1] + ... + x[n-1], then max(y, 0) with relu (+0 where
 * the sum is <= 0, as relu gives);  y, x[k] (size). */
INLINE void add_kernel_body(float *y, const float *const *x, int n, size_t size, int relu)
{
    const size_t nv = size / VL;
    #pragma omp parallel for schedule(static) if (size > ADD_PAR_MIN)
    for (size_t b = 0; b <= nv; b++) {
        const size_t i0 = b * VL;
        if (b < nv) {
            vf v = vload(x[0] + i0);
            for (int k = 1; k < n; k++) v += vload(x[k] + i0);
            if (relu) v = (vf)((vi)v & (vi)(v > splat(0.0f)));
            vstore(y + i0, v);
            continue;
        }
        for (size_t i = i0; i < size; i++) { /* the last size % VL */
            float v = x[0][i];
            for (int k = 1; k < n; k++) v += x[k][i];
            y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
        }
    }
}

/* dx[k] += g for every k with dx[k] != NULL, g = dy, or with relu dy where
 * y > 0 and +0 elsewhere (0 + dy: what relu's backward leaves in its input's
 * zeroed gradient);  dx[k], dy, y (size). */
INLINE void add_backward_body(float *const *dx, int n, const float *dy, const float *y,
                              size_t size, int relu)
{
    const size_t nv = size / VL;
    #pragma omp parallel for schedule(static) if (size > ADD_PAR_MIN)
    for (size_t b = 0; b <= nv; b++) {
        const size_t i0 = b * VL;
        if (b < nv) {
            vf g = vload(dy + i0);
            if (relu) g = (vf)((vi)(splat(0.0f) + g) & (vi)(vload(y + i0) > splat(0.0f)));
            for (int k = 0; k < n; k++)
                if (dx[k]) vstore(dx[k] + i0, vload(dx[k] + i0) + g);
            continue;
        }
        for (size_t i = i0; i < size; i++) {
            const float g = relu ? (y[i] > 0.0f ? 0.0f + dy[i] : 0.0f) : dy[i];
            for (int k = 0; k < n; k++)
                if (dx[k]) dx[k][i] += g;
        }
    }
}

static void add_backward(nn_node *node)
{
    const add_state *s = node->ctx;
    float *dx[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < node->n_in; k++) dx[k] = node->in[k]->grad;
    const tensor *y = node->out;
    if (s->activation == NN_ACT_RELU)
        add_backward_body(dx, node->n_in, y->grad, y->data, y->size, 1);
    else
        add_backward_body(dx, node->n_in, y->grad, NULL, y->size, 0);
}

static nn_status add_forward(nn_layer *l, nn_graph *g, int n_in, tensor **x, tensor **out,
                             int training)
{
    (void)training;
    const add_state *s = l->state;
    const float *src[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n_in; k++) src[k] = x[k]->data;
    if (s->inplace) NN_TRY(nn_layer_check_inplace(l, x[0], 0));
    /* In place, each element of every input is read before y's is written. */
    tensor *y = s->inplace ? nn_graph_view(g, x[0], x[0]->rank, x[0]->shape)
                           : nn_graph_tensor(g, x[0]->rank, x[0]->shape);
    if (!y) return NN_ERR_MEMORY;
    if (s->activation == NN_ACT_RELU) add_kernel_body(y->data, src, n_in, y->size, 1);
    else add_kernel_body(y->data, src, n_in, y->size, 0);
    nn_node *node = nn_graph_record(g, "add", y, x, n_in, add_backward, l->state);
    if (node) {
        node->saves_output = s->activation == NN_ACT_RELU;
        /* dx = dy (masked by y): a residual block's last batchnorm output,
         * which nothing else reads, can hold gradients in backward. */
        node->inputs_unread = 1;
    }
    if (s->activation > NN_ACT_RELU) return nn_act_record(g, s->activation, s->alpha, y, out, 1);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_add = {
    .name = "add",
    .summary = "elementwise sum of 2 or more inputs of one shape: y = act(x0 + x1 + ...)",
    .state_size = sizeof(add_state),
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
