/* dropout: element-wise inverted dropout with Keras Dropout semantics.
 * Training: each element is kept with probability 1-rate and scaled by
 * 1/(1-rate) (PyTorch's float formula), or set to exactly 0. Inference, and
 * rate 0: the identity, returning x itself with no copy and no draw.
 * Each keep/drop draw is a counter-based hash of (seed, call, element), so
 * the mask does not depend on the thread count. The element index counts
 * from the whole batch's first sample (l->sample_offset), so a micro-shard
 * of a sharded step draws the whole batch's mask for its rows. Backward reuses the forward's
 * byte mask: dx += dy * mask * scale.
 * Config: rate in [0, 1] (required), seed (optional; else from the model). */
#include <math.h>
#include <stdint.h>

#include "layers/layer.h"
#include "tensor/random.h"

typedef struct {
    float rate;
} dropout_state;

typedef struct {
    uint8_t *mask;
    float scale;
} dropout_ctx;

static nn_status dropout_parse(nn_layer *l, nn_config *c)
{
    dropout_state *s = l->state;
    NN_TRY(nn_config_get_float(c, "rate", &s->rate, 0.0f, 1, 0.0f, 1.0f));
    unsigned long long seed = 0;
    int present = 0;
    NN_TRY(nn_config_get_u64(c, "seed", &seed, &present));
    if (present) {
        l->seed = seed;
        l->seed_fixed = 1;
    }
    return NN_OK;
}

static void dropout_write(const nn_layer *l, nn_config_writer *w)
{
    const dropout_state *s = l->state;
    nn_config_write_float(w, "rate", s->rate);
    if (l->seed_fixed) nn_config_write(w, "seed", "%llu", (unsigned long long)l->seed);
}

static void dropout_backward(nn_node *n)
{
    const dropout_ctx *c = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const float *dy = n->out->grad;
    #pragma omp parallel for schedule(static) if (x->size > 65536)
    for (size_t i = 0; i < x->size; i++)
        if (c->mask[i]) x->grad[i] += dy[i] * c->scale;
}

static nn_status dropout_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    const dropout_state *s = l->state;
    if (!training) {
        *out = x;
        return NN_OK;
    }
    const uint64_t call = l->calls++;
    if (s->rate == 0.0f) {
        *out = x;
        return NN_OK;
    }
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    dropout_ctx *c = nn_graph_alloc(g, sizeof *c);
    uint8_t *mask = nn_graph_alloc(g, x->size ? x->size : 1);
    if (!y || !c || !mask) return NN_ERR_MEMORY;
    const float scale = s->rate < 1.0f ? 1.0f / (float)(1.0 - (double)s->rate) : 0.0f;
    const float keep = 1.0f - s->rate;
    const uint64_t seed = l->seed;
    const uint64_t base = x->shape[0] > 0 ? l->sample_offset * (x->size / (size_t)x->shape[0]) : 0;
    #pragma omp parallel for schedule(static) if (x->size > 65536)
    for (size_t i = 0; i < x->size; i++) {
        mask[i] = tensor_hash_uniform(seed, call, base + i) < keep;
        y->data[i] = mask[i] ? x->data[i] * scale : 0.0f;
    }
    c->mask = mask;
    c->scale = scale;
    nn_graph_record(g, "dropout", y, &x, 1, dropout_backward, c);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_dropout = {
    .name = "dropout",
    .summary = "element-wise dropout, kept values scaled by 1/(1-rate)",
    .state_size = sizeof(dropout_state),
    .parse = dropout_parse,
    .write = dropout_write,
    .build = nn_layer_build_identity,
    .forward = dropout_forward,
    .test_config = "rate=0.3 seed=7",
    .test_rank = 2,
    .test_shape = {3, 5},
};
