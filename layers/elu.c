/* elu: y = x if x > 0 else alpha * (exp(x) - 1), with expm1f on the
 * negative side (exact near 0, -alpha far below it).
 * Config: alpha >= 0 (1.0, as Keras and PyTorch).
 * Backward reads the input: dx += dy if x > 0 else alpha * exp(x) * dy, so
 * the derivative at 0 is alpha, as in PyTorch. The kernels are in
 * layers/activation.c. */
#include <float.h>

#include "layers/activation.h"
#include "layers/layer.h"

typedef struct {
    float alpha;
} elu_state;

static nn_status elu_parse(nn_layer *l, nn_config *c)
{
    elu_state *s = l->state;
    return nn_config_get_float(c, "alpha", &s->alpha, NN_ACT_ELU_ALPHA, 0, 0.0f, FLT_MAX);
}

static void elu_write(const nn_layer *l, nn_config_writer *w)
{
    const elu_state *s = l->state;
    nn_config_write_float(w, "alpha", s->alpha);
}

static nn_status elu_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)training;
    const elu_state *s = l->state;
    return nn_act_record(g, NN_ACT_ELU, s->alpha, x, out, 0);
}

const nn_layer_type nn_layer_elu = {
    .name = "elu",
    .summary = "exponential linear unit: y = x if x > 0 else alpha * (exp(x) - 1)",
    .state_size = sizeof(elu_state),
    .parse = elu_parse,
    .write = elu_write,
    .build = nn_layer_build_identity,
    .forward = elu_forward,
    .test_config = "alpha=0.5",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
