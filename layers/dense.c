/* dense: y = act(x W + b), x (N, in), W (in, units), b (units).
 * Config: units (required), use_bias (true), activation (linear | relu).
 * The activation is fused so the bias, the ReLU and their backward are one
 * pass over y; backward reads y for the ReLU mask (y > 0). GEMMs go to
 * OpenBLAS, which threads them itself. */
#include <cblas.h>
#include <string.h>

#include "nn/layer.h"

typedef struct {
    int units, use_bias, activation; /* activation: 0 linear, 1 relu */
} dense_state;

static const char *const activations[] = {"linear", "relu", NULL};

static nn_status dense_parse(nn_layer *l, nn_config *c)
{
    dense_state *s = l->state;
    NN_TRY(nn_config_get_int(c, "units", &s->units, 0, 1, 1, 1 << 24));
    NN_TRY(nn_config_get_bool(c, "use_bias", &s->use_bias, 1));
    return nn_config_get_choice(c, "activation", &s->activation, 0, activations);
}

static void dense_write(const nn_layer *l, nn_config_writer *w)
{
    const dense_state *s = l->state;
    nn_config_write(w, "units", "%d", s->units);
    nn_config_write(w, "use_bias", "%s", s->use_bias ? "true" : "false");
    nn_config_write(w, "activation", "%s", activations[s->activation]);
}

static nn_status dense_build(nn_layer *l, int in_rank, const int *in_shape)
{
    dense_state *s = l->state;
    if (in_rank != 1) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "%s: expected a per-sample input of rank 1 (features), got %s; "
                        "add a flatten layer before it", l->name,
                        tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    int wshape[2] = {in_shape[0], s->units};
    NN_TRY(nn_layer_add_param(l, "kernel", 2, wshape, NN_INIT_GLOROT_UNIFORM, in_shape[0], s->units, 1));
    if (s->use_bias) NN_TRY(nn_layer_add_param(l, "bias", 1, &s->units, NN_INIT_ZEROS, 0, 0, 1));
    l->out_rank = 1;
    l->out_shape[0] = s->units;
    return NN_OK;
}

static void dense_backward(nn_node *n)
{
    nn_layer *l = n->ctx;
    const dense_state *s = l->state;
    tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL, *y = n->out;
    const int N = x->shape[0], In = x->shape[1], U = s->units;
    /* dz = dy * relu'(z), computed in place: every consumer of y has run its
     * backward already, so nothing reads y->grad after this. */
    float *dz = y->grad;
    if (s->activation == 1)
        for (size_t i = 0; i < y->size; i++)
            if (!(y->data[i] > 0.0f)) dz[i] = 0.0f;
    if (b && b->grad)
        for (int i = 0; i < N; i++)
            for (int u = 0; u < U; u++) b->grad[u] += dz[(size_t)i * U + u];
    if (w->grad)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, In, U, N, 1.0f, x->data, In, dz, U, 1.0f,
                    w->grad, U);
    if (x->grad)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, In, U, 1.0f, dz, U, w->data, U, 1.0f,
                    x->grad, In);
}

static nn_status dense_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)training;
    const dense_state *s = l->state;
    const int N = x->shape[0], In = x->shape[1], U = s->units;
    int shape[2] = {N, U};
    tensor *y = nn_graph_tensor(g, 2, shape);
    if (!y) return NN_ERR_MEMORY;
    tensor *w = l->params[0].t, *b = s->use_bias ? l->params[1].t : NULL;
    if (N > 0) {
        if (b)
            for (int i = 0; i < N; i++) memcpy(y->data + (size_t)i * U, b->data, (size_t)U * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, U, In, 1.0f, x->data, In, w->data, U,
                    b ? 1.0f : 0.0f, y->data, U);
        if (s->activation == 1)
            for (size_t i = 0; i < y->size; i++) y->data[i] = y->data[i] > 0.0f ? y->data[i] : 0.0f;
    }
    tensor *in[3] = {x, w, b};
    nn_node *node = nn_graph_record(g, "dense", y, in, b ? 3 : 2, dense_backward, l);
    if (node) node->saves_output = s->activation == 1;
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_dense = {
    .name = "dense",
    .summary = "fully connected: y = act(x W + b)",
    .state_size = sizeof(dense_state),
    .parse = dense_parse,
    .write = dense_write,
    .build = dense_build,
    .forward = dense_forward,
    .test_config = "units=5 activation=relu",
    .test_rank = 1,
    .test_shape = {7},
};
