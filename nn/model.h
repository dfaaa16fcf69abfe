/* A model: a sequence of layers, its parameters, its graph and its mode.
 *
 * Build a model in code (nn_model_add) or from a text spec, one layer per
 * line, "type key=value ...", '#' starting a comment:
 *     conv2d filters=32 kernel_size=3 activation=relu
 *     flatten
 *     dense units=10
 * then nn_model_build() with the per-sample input shape. Building allocates
 * all trainable parameters in one 64-byte aligned block and their gradients
 * in another (so the optimizer is one flat loop and zeroing is one memset),
 * and non-trainable buffers (batchnorm statistics) in a third; it then
 * initialises them from the model's seed.
 *
 * Mode: a new model is in eval mode (nn_model_set_training turns training
 * on). This is the opposite of PyTorch, where modules start in training
 * mode: a forgotten call never adds dropout noise to predictions. Each
 * forward call may override the mode (NN_MODE_TRAIN / NN_MODE_EVAL), as the
 * `training` argument of a Keras call does.
 *
 * Ownership: the model owns its layers, parameters and graph. Tensors that
 * nn_model_forward returns live in the graph's arena until the next
 * nn_graph_reset (nn_model_train_step and nn_model_predict reset it first).
 * Thread-safety: a model is used by one thread at a time.
 */
#ifndef NN_NN_MODEL_H
#define NN_NN_MODEL_H

#include <stdint.h>
#include <stdio.h>

#include "layers/layer.h"
#include "optim/optim.h"

#define NN_MODEL_MAX_LAYERS 64

typedef enum nn_mode {
    NN_MODE_DEFAULT = -1, /* the model's own mode */
    NN_MODE_EVAL = 0,
    NN_MODE_TRAIN = 1
} nn_mode;

typedef struct nn_model {
    nn_layer *layers[NN_MODEL_MAX_LAYERS];
    int n_layers;
    uint64_t seed;
    int training;
    int built;
    int in_rank, in_shape[TENSOR_MAX_RANK]; /* per sample */
    float *params, *grads, *buffers;        /* the three blocks */
    size_t n_params, n_buffers;
    nn_graph *graph;
} nn_model;

nn_model *nn_model_create(uint64_t seed);
void nn_model_free(nn_model *m);

/* Appends a layer of a registered type; named "<type>_<k>". Errors: unknown
 * type, bad config, model already built, too many layers. */
nn_status nn_model_add(nn_model *m, const char *type, const char *config);
/* Appends every layer of a spec text; the message gives the line number. */
nn_status nn_model_add_spec(nn_model *m, const char *text);
/* As nn_model_add_spec, reading the file at path. */
nn_status nn_model_load_spec(nn_model *m, const char *path);
/* Writes the spec (one layer per line, resolved configs) into buf. */
nn_status nn_model_spec_string(const nn_model *m, char *buf, size_t n);

/* Builds every layer for a per-sample input shape (no batch axis). */
nn_status nn_model_build(nn_model *m, int rank, const int *shape);

void nn_model_set_training(nn_model *m, int training);
int nn_model_is_training(const nn_model *m);

/* y = model(x) for a batch x (axis 0: batch). y is in the graph's arena. */
nn_status nn_model_forward(nn_model *m, tensor *x, tensor **y, nn_mode mode);

/* One training step on a batch: reset the graph, zero gradients, forward in
 * training mode, softmax cross-entropy against labels (n = x->shape[0]
 * values in [0, classes)), backward, optimizer step. Reports the mean loss
 * and the number of correct predictions (either pointer may be NULL). */
nn_status nn_model_train_step(nn_model *m, optim *opt, tensor *x, const int *labels,
                              float *loss, int *correct);
/* Eval-mode forward without recording gradients; returns the logits (in the
 * arena) and, if labels is not NULL, the summed loss and correct count. */
nn_status nn_model_predict(nn_model *m, tensor *x, const int *labels, tensor **logits,
                           double *loss_sum, int *correct);

void nn_model_zero_grad(nn_model *m);
nn_graph *nn_model_graph(nn_model *m);

/* Writes a table like Keras's model.summary(): layer (type), output shape,
 * parameter count, then the totals. */
nn_status nn_model_summary(const nn_model *m, FILE *out);

#include "tensor/loss.h"

/* Training and evaluation with a chosen loss (tensor/loss.h). labels[n]
 * (n = x->shape[0]) serve softmax cross-entropy; targets, a float tensor of
 * the model output's shape (the batch axis included), serve binary
 * cross-entropy and mean squared error; pass NULL for the one the loss does
 * not take. With loss {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0} these are
 * nn_model_train_step and nn_model_predict, bit for bit.
 * One step: reset the graph, zero gradients, forward in training mode, the
 * loss, backward, optimizer step. *loss_value gets the mean loss, *correct
 * the count nn_op_loss defines (either pointer may be NULL). */
nn_status nn_model_train_step_loss(nn_model *m, optim *opt, tensor *x, const nn_loss *loss,
                                   const int *labels, const tensor *targets, float *loss_value,
                                   int *correct);
/* Eval-mode forward without recording gradients; *pred (may be NULL) gets
 * the output (in the arena). When loss is not NULL it also computes the
 * loss: *loss_sum gets the mean loss times the batch size, so sums over
 * batches divided by the sample count give the mean over a data set (for
 * binary cross-entropy and mean squared error, whose mean runs over every
 * output element, that is the mean per sample of the per-sample means). */
nn_status nn_model_evaluate_loss(nn_model *m, tensor *x, const nn_loss *loss, const int *labels,
                                 const tensor *targets, tensor **pred, double *loss_sum, int *correct);

#endif
