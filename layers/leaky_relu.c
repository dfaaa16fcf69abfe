/* leaky_relu: y = x if x > 0 else alpha * x.
 * Config: alpha >= 0 (0.3, Keras's LeakyReLU default; PyTorch's is 0.01).
 * Backward reads the input: dx += dy if x > 0 else alpha * dy, so the
 * derivative at 0 is alpha, as in PyTorch. The kernels are in
 * layers/activation.c. */
#include <float.h>

#include "layers/activation.h"
#include "layers/layer.h"

typedef struct {
    float alpha;
} leaky_relu_state;

static nn_status leaky_relu_parse(nn_layer *l, nn_config *c)
{
    leaky_relu_state *s = l->state;
    return nn_config_get_float(c, "alpha", &s->alpha, NN_ACT_LEAKY_RELU_ALPHA, 0, 0.0f, FLT_MAX);
}

static void leaky_relu_write(const nn_layer *l, nn_config_writer *w)
{
    const leaky_relu_state *s = l->state;
    nn_config_write_float(w, "alpha", s->alpha);
}

static nn_status leaky_relu_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    (void)training;
    const leaky_relu_state *s = l->state;
    return nn_act_record(g, NN_ACT_LEAKY_RELU, s->alpha, x, out, 0);
}

const nn_layer_type nn_layer_leaky_relu = {
    .name = "leaky_relu",
    .summary = "leaky rectified linear unit: y = x if x > 0 else alpha * x",
    .state_size = sizeof(leaky_relu_state),
    .parse = leaky_relu_parse,
    .write = leaky_relu_write,
    .build = nn_layer_build_identity,
    .forward = leaky_relu_forward,
    .test_config = "alpha=0.2",
    .test_rank = 3,
    .test_shape = {2, 3, 4},
};
