/* Spatial dropout in nn: the nn_spatial_dropout_* raw-buffer API, thin
 * wrappers over the self-contained kernels of spatial_dropout_kernels.c
 * that turn their int codes into nn_status, and the layer hooks that
 * layers/spatial_dropout{1,2,3}d.c share (see spatial_dropout.h).
 *
 * Errors: the kernels keep their own thread-local message, written with
 * their own names (nn_sd_forward, NN_SD_CHANNELS_FIRST). A wrapper records
 * it for nn_last_error() with the library's names, which are the kernels'
 * with nn_spatial_dropout_ for nn_sd_ and NN_ for NN_SD_, as NN_ERR_SHAPE
 * (a negative extent, a size that overflows) or NN_ERR_ARG (anything else).
 *
 * Layer: training draws a fresh mask per call (l->calls), keeps N*C mask
 * bytes in the graph arena for backward, and records one node. Inference,
 * rate 0 and empty inputs return x itself. The in-place variant writes into
 * x's storage after checking that nothing the graph still needs lives there.
 *
 * Deliberately omitted: the kernels themselves (spatial_dropout_kernels.c),
 * Keras's noise_shape, PyTorch's unbatched inputs (a missing batch axis is
 * an error, never reinterpreted), other dtypes.
 */
#include "layers/spatial_dropout.h"

#include <string.h>

_Static_assert(NN_SD_CHANNELS_LAST == (int)NN_CHANNELS_LAST &&
                   NN_SD_CHANNELS_FIRST == (int)NN_CHANNELS_FIRST,
               "the kernels' layouts are nn_data_format's values");

/* The kernels' result as an nn_status, their message reworded with the
 * library's names (see above). */
static nn_status spatial_dropout_status(int code)
{
    if (code == NN_SD_OK) return NN_OK;
    static const struct {
        const char *from, *to;
    } names[] = {{"nn_sd_", "nn_spatial_dropout_"}, {"NN_SD_", "NN_"}};
    char msg[512];
    size_t n = 0;
    for (const char *p = nn_sd_last_error(); *p && n + 1 < sizeof msg;) {
        size_t k = 0;
        while (k < 2 && strncmp(p, names[k].from, strlen(names[k].from))) k++;
        if (k < 2) {
            const size_t len = strlen(names[k].to);
            if (n + len >= sizeof msg) break;
            memcpy(msg + n, names[k].to, len);
            n += len;
            p += strlen(names[k].from);
        } else {
            msg[n++] = *p++;
        }
    }
    msg[n] = '\0';
    return nn_error(code == NN_SD_ERR_SHAPE ? NN_ERR_SHAPE : NN_ERR_ARG, "%s", msg);
}

float nn_spatial_dropout_scale(float rate) { return nn_sd_scale(rate); }

nn_status nn_spatial_dropout_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed,
                                  uint64_t call)
{
    return spatial_dropout_status(nn_sd_mask(mask, N, C, rate, seed, call));
}

nn_status nn_spatial_dropout_forward(float *y, uint8_t *mask, const float *x, int N, int C,
                                     long spatial, nn_data_format fmt, float rate, uint64_t seed,
                                     uint64_t call)
{
    return spatial_dropout_status(
        nn_sd_forward(y, mask, x, N, C, spatial, (int)fmt, rate, seed, call));
}

nn_status nn_spatial_dropout_apply(float *y, const uint8_t *mask, const float *x, int N, int C,
                                   long spatial, nn_data_format fmt, float rate)
{
    return spatial_dropout_status(nn_sd_apply(y, mask, x, N, C, spatial, (int)fmt, rate));
}

nn_status nn_spatial_dropout_backward(float *dx, const uint8_t *mask, const float *dy, int N,
                                      int C, long spatial, nn_data_format fmt, float rate)
{
    return spatial_dropout_status(nn_sd_backward(dx, mask, dy, N, C, spatial, (int)fmt, rate));
}

/* ---- the layers ---- */

typedef struct {
    uint8_t *mask; /* (N, C) in the arena */
    int N, C;
    long spatial;
    nn_data_format fmt;
    float rate;
} spatial_dropout_ctx;

/* Shapes as the messages spell them, by [dims - 1][format]. */
static const char *const spatial_dropout_batch_desc[3][2] = {
    {"(N, L, C)", "(N, C, L)"},
    {"(N, H, W, C)", "(N, C, H, W)"},
    {"(N, D, H, W, C)", "(N, C, D, H, W)"},
};
static const char *const spatial_dropout_sample_desc[3][2] = {
    {"(L, C)", "(C, L)"},
    {"(H, W, C)", "(C, H, W)"},
    {"(D, H, W, C)", "(C, D, H, W)"},
};

nn_status nn_spatial_dropout_layer_parse(nn_layer *l, nn_config *c, int dims)
{
    static const char *const formats[] = {"channels_last", "channels_first", NULL};
    if (dims < 1 || dims > 3)
        return nn_error(NN_ERR_ARG, "nn_spatial_dropout_layer_parse: dims must be 1, 2 or 3, "
                        "but got %d", dims);
    nn_spatial_dropout_state *s = l->state;
    s->dims = dims;
    NN_TRY(nn_config_get_float(c, "rate", &s->rate, 0.0f, 1, 0.0f, 1.0f));
    if (dims == 1) {
        /* Sequences are not images: like Keras's SpatialDropout1D, (N, L, C)
         * unless asked otherwise, whatever the image default is. */
        int f;
        NN_TRY(nn_config_get_choice(c, "data_format", &f, NN_CHANNELS_LAST, formats));
        s->format = (nn_data_format)f;
    } else {
        NN_TRY(nn_config_get_data_format(c, &s->format));
    }
    NN_TRY(nn_config_get_bool(c, "inplace", &s->inplace, 0));
    unsigned long long seed = 0;
    int present = 0;
    NN_TRY(nn_config_get_u64(c, "seed", &seed, &present));
    if (present) {
        l->seed = seed;
        l->seed_fixed = 1;
    }
    return NN_OK;
}

void nn_spatial_dropout_layer_write(const nn_layer *l, nn_config_writer *w)
{
    const nn_spatial_dropout_state *s = l->state;
    nn_config_write_float(w, "rate", s->rate);
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
    nn_config_write(w, "inplace", "%s", s->inplace ? "true" : "false");
    if (l->seed_fixed) nn_config_write(w, "seed", "%llu", (unsigned long long)l->seed);
}

nn_status nn_spatial_dropout_layer_build(nn_layer *l, int in_rank, const int *in_shape)
{
    const nn_spatial_dropout_state *s = l->state;
    if (in_rank != s->dims + 1) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "%s: expected a per-sample input of rank %d %s for %s, "
                        "got rank %d with shape %s", l->name, s->dims + 1,
                        spatial_dropout_sample_desc[s->dims - 1][s->format],
                        nn_data_format_name(s->format), in_rank,
                        tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    /* A model refuses this when another layer reads the same input. */
    l->overwrites_input = s->inplace;
    return nn_layer_build_identity(l, in_rank, in_shape);
}

static void spatial_dropout_node_backward(nn_node *node)
{
    const spatial_dropout_ctx *c = node->ctx;
    tensor *x = node->in[0];
    if (!x->grad) return;
    /* The forward validated every argument. The graph may have given x's
     * gradient dy's storage (grad_in_place): then dx = dy * mask * s is
     * written over dy. */
    const int e = x->grad == node->out->grad
                      ? nn_sd_apply(x->grad, c->mask, node->out->grad, c->N, c->C, c->spatial,
                                    (int)c->fmt, c->rate)
                      : nn_sd_backward(x->grad, c->mask, node->out->grad, c->N, c->C, c->spatial,
                                       (int)c->fmt, c->rate);
    NN_ASSERT(e == NN_SD_OK);
}

nn_status nn_spatial_dropout_layer_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out,
                                           int training)
{
    const nn_spatial_dropout_state *s = l->state;
    NN_TRY(nn_layer_check_rank(l, x, s->dims + 2,
                               spatial_dropout_batch_desc[s->dims - 1][s->format]));
    if (!training) {
        *out = x;
        return NN_OK;
    }
    /* A kept map stays positive where it was (scaled by 1 / (1 - rate)) and
     * a dropped one, now zero, gets no gradient either way: the sign is
     * kept. */
    if (s->inplace) NN_TRY(nn_layer_check_inplace(l, x, 1));
    const uint64_t call = l->calls++;
    if (s->rate == 0.0f || x->size == 0) {
        *out = x;
        return NN_OK;
    }
    const int N = x->shape[0];
    const int C = s->format == NN_CHANNELS_FIRST ? x->shape[1] : x->shape[x->rank - 1];
    const long spatial = (long)(x->size / ((size_t)N * (size_t)C));
    tensor *y = s->inplace ? nn_graph_view(g, x, x->rank, x->shape)
                           : nn_graph_tensor(g, x->rank, x->shape);
    if (!y) return NN_ERR_MEMORY;
    spatial_dropout_ctx *c = NULL;
    if (nn_graph_needs_grad(g, &x, 1)) {
        c = nn_graph_alloc(g, sizeof *c);
        if (!c) return NN_ERR_MEMORY;
        c->mask = nn_graph_alloc(g, (size_t)N * (size_t)C);
        if (!c->mask) return NN_ERR_MEMORY;
        c->N = N;
        c->C = C;
        c->spatial = spatial;
        c->fmt = s->format;
        c->rate = s->rate;
    }
    if (l->sample_offset) {
        /* Rows of a larger batch: the keys of samples offset + n, drawn here
         * by the definition nn_sd_mask uses, then applied. */
        uint8_t *mask = c ? c->mask : nn_graph_alloc(g, (size_t)N * (size_t)C);
        if (!mask) return NN_ERR_MEMORY;
        const uint64_t base = l->sample_offset * (uint64_t)C;
        const float keep = 1.0f - s->rate;
        for (size_t i = 0; i < (size_t)N * (size_t)C; i++)
            mask[i] = nn_sd_uniform(l->seed, call, base + i) < keep;
        NN_TRY(spatial_dropout_status(nn_sd_apply(y->data, mask, x->data, N, C, spatial,
                                                  (int)s->format, s->rate)));
    } else {
        NN_TRY(spatial_dropout_status(nn_sd_forward(y->data, c ? c->mask : NULL, x->data, N, C,
                                                    spatial, (int)s->format, s->rate, l->seed,
                                                    call)));
    }
    if (c) {
        nn_node *n = nn_graph_record(g, l->type->name, y, &x, 1, spatial_dropout_node_backward, c);
        if (n) n->grad_in_place = 1;
    }
    *out = y;
    return NN_OK;
}
