/* Elementwise activations and softmax: raw-buffer kernels shared by the
 * activation layers (layers/sigmoid.c, tanh.c, leaky_relu.c, elu.c, gelu.c,
 * softmax.c) and by the activation= key of dense and conv2d.
 *
 * Every kernel takes its outputs first, then inputs, then sizes. Forward
 * kernels may run in place (y == x). Backward kernels ADD into dx, reading
 * whichever of x or y gives the derivative exactly and cheaply: the output
 * for sigmoid, tanh and softmax, the input for leaky_relu, elu and gelu.
 * Each element (softmax: each row) is computed by one thread with a fixed
 * order of operations, so results do not depend on the thread count.
 * The forms are stable for any finite x of moderate size (|x| <= 1e4 is
 * tested): no overflow and no NaN.
 *
 * Omits: relu (layers/relu.c, and fused into dense and conv2d), softmax over
 * an axis other than the last, the tanh approximation of gelu.
 */
#ifndef NN_LAYERS_ACTIVATION_H
#define NN_LAYERS_ACTIVATION_H

#include <stddef.h>

#include "layers/config.h"
#include "tensor/graph.h"

/* Values of the activation= key of dense and conv2d, in the order of
 * nn_activation_names. linear and relu are handled by those layers. */
typedef enum nn_activation {
    NN_ACT_LINEAR,
    NN_ACT_RELU,
    NN_ACT_SIGMOID,
    NN_ACT_TANH,
    NN_ACT_LEAKY_RELU,
    NN_ACT_ELU,
    NN_ACT_GELU,
    NN_ACT_SOFTMAX
} nn_activation;

/* "linear", "relu", "sigmoid", ...; NULL-terminated, for nn_config_get_choice. */
extern const char *const nn_activation_names[];

/* Default alpha: Keras's LeakyReLU (0.3) and ELU (1.0). */
#define NN_ACT_LEAKY_RELU_ALPHA 0.3f
#define NN_ACT_ELU_ALPHA 1.0f

/* y = 1 / (1 + exp(-x));  x, y (n) */
void nn_act_sigmoid_forward(float *y, const float *x, size_t n);
/* dx += dy * y * (1 - y);  dx, dy, y (n) */
void nn_act_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n);

/* y = tanh(x);  x, y (n) */
void nn_act_tanh_forward(float *y, const float *x, size_t n);
/* dx += dy * (1 - y^2);  dx, dy, y (n) */
void nn_act_tanh_backward(float *dx, const float *dy, const float *y, size_t n);

/* y = x if x > 0 else alpha x;  x, y (n) */
void nn_act_leaky_relu_forward(float *y, const float *x, size_t n, float alpha);
/* dx += dy if x > 0 else alpha dy (alpha at 0, as PyTorch);  dx, dy, x (n) */
void nn_act_leaky_relu_backward(float *dx, const float *dy, const float *x, size_t n,
                                float alpha);

/* y = x if x > 0 else alpha (exp(x) - 1);  x, y (n) */
void nn_act_elu_forward(float *y, const float *x, size_t n, float alpha);
/* dx += dy if x > 0 else alpha exp(x) dy (alpha at 0, as PyTorch);  dx, dy, x (n) */
void nn_act_elu_backward(float *dx, const float *dy, const float *x, size_t n, float alpha);

/* y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's approximate='none');  x, y (n) */
void nn_act_gelu_forward(float *y, const float *x, size_t n);
/* dx += dy (Phi(x) + x phi(x));  dx, dy, x (n) */
void nn_act_gelu_backward(float *dx, const float *dy, const float *x, size_t n);

/* Per row r: y[r] = exp(x[r] - max x[r]) / sum exp(x[r] - max x[r]);
 * x, y (rows, cols), row-major (softmax over the last axis). */
void nn_act_softmax_forward(float *y, const float *x, size_t rows, size_t cols);
/* Per row: dx += y * (dy - sum(dy * y));  dx, dy, y (rows, cols) */
void nn_act_softmax_backward(float *dx, const float *dy, const float *y, size_t rows,
                             size_t cols);

/* Whether activation a has the alpha key (leaky_relu, elu). */
int nn_act_has_alpha(nn_activation a);
/* For dense and conv2d's parse hooks: reads alpha (>= 0, finite; default
 * NN_ACT_*_ALPHA) when a has one; an alpha key given with any other
 * activation is an error naming the layer. */
nn_status nn_act_config_alpha(nn_config *c, nn_activation a, float *alpha);

/* *y = a(x) as a graph node of its own (op named after the activation), for
 * the activation layers and after dense's and conv2d's linear output. When
 * may_overwrite_x is set (x is that layer's fresh output, read by no one
 * else) and the graph records nothing, a(x) is computed in place and *y is
 * x; otherwise *y is a new arena tensor. a is one of sigmoid .. softmax;
 * softmax runs over x's last axis. Errors: out of arena memory. */
nn_status nn_act_record(nn_graph *g, nn_activation a, float alpha, tensor *x, tensor **y,
                        int may_overwrite_x);

#endif
