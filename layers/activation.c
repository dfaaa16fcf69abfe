/* Elementwise activations and softmax (see layers/activation.h): for each
 * activation, first the scalar forward and derivative that define it, then
 * the loops that apply them to a buffer; at the end the node that dense and
 * conv2d record for their activation= key.
 *
 * Stability, for |x| up to 1e4 and beyond:
 *   sigmoid  exp(-|x|) lies in (0, 1], so neither branch overflows.
 *   tanh     the C library's tanhf saturates to +-1.
 *   elu      expm1f on the negative side: exact near 0, -1 far below it.
 *   gelu     0.5 x erfc(-x / sqrt 2), the same function as 0.5 x (1 +
 *            erf(x / sqrt 2)) but without the cancellation of 1 + erf for
 *            x < 0 (erf(-5 / sqrt 2) = -0.99999943 leaves 3 significant
 *            bits), so gelu(-10) is -7.7e-23, not 0.
 *   softmax  the row maximum is subtracted, so every exp is in (0, 1].
 * Parallelism: static OpenMP schedules over contiguous blocks of elements
 * (softmax: of rows); every element's arithmetic is the same whichever
 * thread does it, and softmax's sums run over one row in one thread, so the
 * results are bit-identical for any thread count.
 *
 * Omits: SIMD intrinsics (the loops are left to the compiler).
 */
#include "layers/activation.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Below this many elements a loop stays on one thread: the work would not
 * pay for waking the others. */
#define ACTIVATION_PAR_MIN 16384

#define ACTIVATION_SQRT1_2 0.707106781186547524f    /* 1 / sqrt(2) */
#define ACTIVATION_INV_SQRT_2PI 0.398942280401432678f /* 1 / sqrt(2 pi) */

const char *const nn_activation_names[] = {"linear",     "relu", "sigmoid", "tanh",
                                           "leaky_relu", "elu",  "gelu",    "softmax", NULL};

/* ---- scalar definitions ---- */

static inline float activation_sigmoid(float x)
{
    const float e = expf(-fabsf(x)); /* exp(-|x|) in (0, 1] */
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static inline float activation_sigmoid_grad(float y) { return y * (1.0f - y); }

static inline float activation_tanh_grad(float y) { return 1.0f - y * y; }

static inline float activation_leaky_relu(float x, float alpha) { return x > 0.0f ? x : alpha * x; }

static inline float activation_leaky_relu_grad(float x, float alpha) { return x > 0.0f ? 1.0f : alpha; }

static inline float activation_elu(float x, float alpha)
{
    return x > 0.0f ? x : alpha * expm1f(x);
}

static inline float activation_elu_grad(float x, float alpha)
{
    return x > 0.0f ? 1.0f : alpha * expf(x);
}

/* Phi(x), the standard normal CDF, without cancellation for x < 0. */
static inline float activation_normal_cdf(float x) { return 0.5f * erfcf(-x * ACTIVATION_SQRT1_2); }

static inline float activation_gelu(float x) { return x * activation_normal_cdf(x); }

/* Phi(x) + x phi(x). For |x| >= 14, x * x / 2 > 98 makes exp return 0, so
 * no inf appears for any finite x below 1.8e19. */
static inline float activation_gelu_grad(float x)
{
    const float pdf = ACTIVATION_INV_SQRT_2PI * expf(-0.5f * x * x);
    return activation_normal_cdf(x) + x * pdf;
}

/* ---- loops ---- */

void nn_act_sigmoid_forward(float *y, const float *x, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = activation_sigmoid(x[i]);
}

void nn_act_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * activation_sigmoid_grad(y[i]);
}

void nn_act_tanh_forward(float *y, const float *x, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

void nn_act_tanh_backward(float *dx, const float *dy, const float *y, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * activation_tanh_grad(y[i]);
}

void nn_act_leaky_relu_forward(float *y, const float *x, size_t n, float alpha)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = activation_leaky_relu(x[i], alpha);
}

void nn_act_leaky_relu_backward(float *dx, const float *dy, const float *x, size_t n, float alpha)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * activation_leaky_relu_grad(x[i], alpha);
}

void nn_act_elu_forward(float *y, const float *x, size_t n, float alpha)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = activation_elu(x[i], alpha);
}

void nn_act_elu_backward(float *dx, const float *dy, const float *x, size_t n, float alpha)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * activation_elu_grad(x[i], alpha);
}

void nn_act_gelu_forward(float *y, const float *x, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = activation_gelu(x[i]);
}

void nn_act_gelu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= ACTIVATION_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * activation_gelu_grad(x[i]);
}

/* The sums are accumulated in double, in index order: one rounding per
 * row instead of cols, and the same order on any thread. */
void nn_act_softmax_forward(float *y, const float *x, size_t rows, size_t cols)
{
    #pragma omp parallel for schedule(static) if (rows * cols >= ACTIVATION_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = xr[0];
        for (size_t j = 1; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        double sum = 0.0;
        for (size_t j = 0; j < cols; j++) {
            yr[j] = expf(xr[j] - m); /* in (0, 1], and 1 at the maximum */
            sum += yr[j];
        }
        const float s = (float)sum;
        for (size_t j = 0; j < cols; j++) yr[j] /= s;
    }
}

void nn_act_softmax_backward(float *dx, const float *dy, const float *y, size_t rows, size_t cols)
{
    #pragma omp parallel for schedule(static) if (rows * cols >= ACTIVATION_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * cols, *yr = y + r * cols;
        float *dxr = dx + r * cols;
        double dot = 0.0;
        for (size_t j = 0; j < cols; j++) dot += (double)dyr[j] * yr[j];
        const float d = (float)dot;
        for (size_t j = 0; j < cols; j++) dxr[j] += yr[j] * (dyr[j] - d);
    }
}

/* ---- the activation= key of dense and conv2d ---- */

int nn_act_has_alpha(nn_activation a) { return a == NN_ACT_LEAKY_RELU || a == NN_ACT_ELU; }

nn_status nn_act_config_alpha(nn_config *c, nn_activation a, float *alpha)
{
    if (nn_act_has_alpha(a))
        return nn_config_get_float(c, "alpha", alpha,
                                   a == NN_ACT_ELU ? NN_ACT_ELU_ALPHA : NN_ACT_LEAKY_RELU_ALPHA, 0,
                                   0.0f, FLT_MAX);
    *alpha = 0.0f;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->kv[i].key, "alpha"))
            return nn_error(NN_ERR_CONFIG, "%s: alpha applies only with activation=leaky_relu "
                            "or activation=elu, not activation=%s", c->layer,
                            nn_activation_names[a]);
    return NN_OK;
}

typedef struct {
    nn_activation a;
    float alpha;
} activation_ctx;

/* Rows and columns of softmax over t's last axis. */
static void activation_rows(const tensor *t, size_t *rows, size_t *cols)
{
    *cols = (size_t)t->shape[t->rank - 1];
    *rows = *cols ? t->size / *cols : 0;
}

static void activation_forward(nn_activation a, float alpha, float *y, const tensor *x)
{
    const size_t n = x->size;
    size_t rows, cols;
    switch (a) {
    case NN_ACT_SIGMOID: nn_act_sigmoid_forward(y, x->data, n); break;
    case NN_ACT_TANH: nn_act_tanh_forward(y, x->data, n); break;
    case NN_ACT_LEAKY_RELU: nn_act_leaky_relu_forward(y, x->data, n, alpha); break;
    case NN_ACT_ELU: nn_act_elu_forward(y, x->data, n, alpha); break;
    case NN_ACT_GELU: nn_act_gelu_forward(y, x->data, n); break;
    case NN_ACT_SOFTMAX:
        activation_rows(x, &rows, &cols);
        nn_act_softmax_forward(y, x->data, rows, cols);
        break;
    default: NN_ASSERT(0 && "nn_act_record: not an elementwise activation");
    }
}

static void activation_backward(nn_node *node)
{
    const activation_ctx *c = node->ctx;
    tensor *x = node->in[0], *y = node->out;
    if (!x->grad) return;
    const size_t n = y->size;
    size_t rows, cols;
    switch (c->a) {
    case NN_ACT_SIGMOID: nn_act_sigmoid_backward(x->grad, y->grad, y->data, n); break;
    case NN_ACT_TANH: nn_act_tanh_backward(x->grad, y->grad, y->data, n); break;
    case NN_ACT_LEAKY_RELU: nn_act_leaky_relu_backward(x->grad, y->grad, x->data, n, c->alpha); break;
    case NN_ACT_ELU: nn_act_elu_backward(x->grad, y->grad, x->data, n, c->alpha); break;
    case NN_ACT_GELU: nn_act_gelu_backward(x->grad, y->grad, x->data, n); break;
    case NN_ACT_SOFTMAX:
        activation_rows(y, &rows, &cols);
        nn_act_softmax_backward(x->grad, y->grad, y->data, rows, cols);
        break;
    default: NN_ASSERT(0 && "nn_act_record: not an elementwise activation");
    }
}

nn_status nn_act_record(nn_graph *g, nn_activation a, float alpha, tensor *x, tensor **y,
                        int may_overwrite_x)
{
    if (may_overwrite_x && !nn_graph_needs_grad(g, &x, 1)) {
        activation_forward(a, alpha, x->data, x);
        *y = x;
        return NN_OK;
    }
    tensor *out = nn_graph_tensor(g, x->rank, x->shape);
    activation_ctx *c = nn_graph_alloc(g, sizeof *c);
    if (!out || !c) return NN_ERR_MEMORY;
    c->a = a;
    c->alpha = alpha;
    activation_forward(a, alpha, out->data, x);
    nn_node *node = nn_graph_record(g, nn_activation_names[a], out, &x, 1, activation_backward, c);
    if (node) node->saves_output = a == NN_ACT_SIGMOID || a == NN_ACT_TANH || a == NN_ACT_SOFTMAX;
    *y = out;
    return NN_OK;
}
