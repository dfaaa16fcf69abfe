/* concatenate: joins two to NN_LAYER_MAX_INPUTS inputs along the channel
 * axis (Keras's Concatenate, DenseNet's and Inception's join). The channel
 * axis is the sample's last axis for channels_last and its first for
 * channels_first (PyTorch's torch.cat(dim=1)); a rank-1 sample (dense
 * features) has one axis, the same in both formats. Every other axis must
 * agree.
 *   channels_last  x_k (N, ..., C_k)   -> y (N, ..., sum C_k)
 *   channels_first x_k (N, C_k, ...)   -> y (N, sum C_k, ...)
 * Config: data_format (the framework default, resolved at creation).
 * Both formats are one copy: y is `rows` rows, each the inputs' blocks side
 * by side, where a block is C_k values (channels_last, rows = N * positions)
 * or C_k * positions values (channels_first, rows = N). Backward adds each
 * block of dy back into its input's grad.
 *
 * Omits: an `axis` key (other axes than the channels), inputs of different
 * ranks.
 */
#include <string.h>

#include "layers/format.h"
#include "layers/layer.h"

typedef struct {
    nn_data_format format;
} concatenate_state;

/* The copy plan of one forward call: rows, and block k's width in floats. */
typedef struct {
    size_t rows, width[NN_LAYER_MAX_INPUTS], total;
} concatenate_plan;

static nn_status concatenate_parse(nn_layer *l, nn_config *c)
{
    concatenate_state *s = l->state;
    return nn_config_get_data_format(c, &s->format);
}

static void concatenate_write(const nn_layer *l, nn_config_writer *w)
{
    const concatenate_state *s = l->state;
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
}

/* The channel axis of a per-sample shape of rank `rank`. */
static int concatenate_axis(const concatenate_state *s, int rank)
{
    return s->format == NN_CHANNELS_FIRST ? 0 : rank - 1;
}

static nn_status concatenate_build(nn_layer *l, int n_in, const int *in_rank,
                                   const int (*in_shape)[TENSOR_MAX_RANK])
{
    const concatenate_state *s = l->state;
    const int rank = in_rank[0], axis = concatenate_axis(s, rank);
    int ok = 1;
    long channels = 0;
    for (int k = 0; k < n_in; k++) {
        ok = ok && in_rank[k] == rank;
        for (int d = 0; ok && d < rank; d++) ok = d == axis || in_shape[k][d] == in_shape[0][d];
        if (ok) channels += in_shape[k][axis];
    }
    if (!ok || channels > (1L << 30)) {
        char all[512] = "", b[96];
        for (int k = 0; k < n_in; k++) {
            size_t len = strlen(all);
            snprintf(all + len, sizeof all - len, "%s%s", k ? ", " : "",
                     tensor_shape_str(in_rank[k], in_shape[k], b, sizeof b));
        }
        if (ok)
            return nn_error(NN_ERR_SHAPE, "%s: %ld channels in all is too many (inputs %s)",
                            l->name, channels, all);
        return nn_error(NN_ERR_SHAPE, "%s: concatenate along the channel axis (%s, axis %d of the "
                        "sample) needs inputs of one rank that agree on every other axis, got %s",
                        l->name, nn_data_format_name(s->format), axis, all);
    }
    l->out_rank = rank;
    memcpy(l->out_shape, in_shape[0], (size_t)rank * sizeof(int));
    l->out_shape[axis] = (int)channels;
    return NN_OK;
}

static void concatenate_make_plan(const concatenate_state *s, int n_in, tensor **x,
                                  concatenate_plan *p)
{
    const int rank = x[0]->rank, axis = 1 + concatenate_axis(s, rank - 1);
    size_t rows = 1, inner = 1;
    for (int d = 0; d < axis; d++) rows *= (size_t)x[0]->shape[d];
    for (int d = axis + 1; d < rank; d++) inner *= (size_t)x[0]->shape[d];
    p->rows = rows;
    p->total = 0;
    for (int k = 0; k < n_in; k++) {
        p->width[k] = (size_t)x[k]->shape[axis] * inner;
        p->total += p->width[k];
    }
}

/* y (rows, total): row r is x_0[r], x_1[r], ... with x_k (rows, width[k]). */
static void concatenate_kernel(float *y, const float *const *x, int n, const concatenate_plan *p)
{
    #pragma omp parallel for schedule(static) if (p->rows * p->total > 65536)
    for (size_t r = 0; r < p->rows; r++) {
        float *yr = y + r * p->total;
        for (int k = 0; k < n; k++) {
            memcpy(yr, x[k] + r * p->width[k], p->width[k] * sizeof(float));
            yr += p->width[k];
        }
    }
}

static void concatenate_backward(nn_node *node)
{
    const concatenate_plan *p = node->ctx;
    const float *dy = node->out->grad;
    size_t offset = 0;
    for (int k = 0; k < node->n_in; k++) {
        float *dx = node->in[k]->grad;
        const size_t w = p->width[k];
        if (dx) {
            #pragma omp parallel for schedule(static) if (p->rows * w > 65536)
            for (size_t r = 0; r < p->rows; r++) {
                const float *d = dy + r * p->total + offset;
                float *o = dx + r * w;
                for (size_t i = 0; i < w; i++) o[i] += d[i];
            }
        }
        offset += w;
    }
}

static nn_status concatenate_forward(nn_layer *l, nn_graph *g, int n_in, tensor **x,
                                     tensor **out, int training)
{
    (void)training;
    const concatenate_state *s = l->state;
    concatenate_plan *p = nn_graph_alloc(g, sizeof *p);
    if (!p) return NN_ERR_MEMORY;
    concatenate_make_plan(s, n_in, x, p);
    int shape[TENSOR_MAX_RANK];
    shape[0] = x[0]->shape[0];
    memcpy(shape + 1, l->out_shape, (size_t)l->out_rank * sizeof(int));
    tensor *y = nn_graph_tensor(g, l->out_rank + 1, shape);
    if (!y) return NN_ERR_MEMORY;
    const float *src[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n_in; k++) src[k] = x[k]->data;
    concatenate_kernel(y->data, src, n_in, p);
    nn_graph_record(g, "concatenate", y, x, n_in, concatenate_backward, p);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_concatenate = {
    .name = "concatenate",
    .summary = "joins 2 or more inputs along the channel axis",
    .state_size = sizeof(concatenate_state),
    .parse = concatenate_parse,
    .write = concatenate_write,
    .build_multi = concatenate_build,
    .forward_multi = concatenate_forward,
    .test_config = "data_format=channels_first",
    .test_rank = 3,
    .test_shape = {2, 3, 2},
    .test_inputs = 2,
    .test_shapes = {{2, 3, 2}, {3, 3, 2}},
};
