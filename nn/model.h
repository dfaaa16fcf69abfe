/* A model: a directed acyclic graph of named layers, its parameters, its
 * graph and its mode.
 *
 * Build a model in code (nn_model_add) or from a text spec, one layer per
 * line, "type key=value ...", '#' starting a comment:
 *     conv2d filters=32 kernel_size=3 activation=relu
 *     flatten
 *     dense units=10
 * then nn_model_build() with the per-sample input shape. Each line reads the
 * output of the line before it (the first line reads the model's input), so
 * the lines above are a sequential model. Two model-level keys, taken out of
 * the line before the layer's own config is parsed, make other graphs:
 *     name=N          the layer's name (default "<type>_<k>", k counting the
 *                     layers of that type from 1); letters, digits, '_' and
 *                     '-', unique, and not "input"
 *     inputs=A,B,...  the layers whose outputs it reads, by name; "input" is
 *                     the model's input (Keras calls it input_1). Merge
 *                     layers (add, concatenate) take 2 to NN_LAYER_MAX_INPUTS
 *                     names, any other layer exactly one.
 * A residual block:
 *     conv2d filters=16 kernel_size=3 padding=same activation=relu
 *     conv2d filters=16 kernel_size=3 padding=same
 *     add inputs=conv2d_1,conv2d_2
 * A model may have further inputs, as a Keras functional Model(inputs=[a,
 * b]): a line "input name=N shape=D1,D2,..." declares one (shape= is the
 * per-sample shape; it may be left out and given to nn_model_build_inputs
 * instead), and layers read it by name through inputs=:
 *     input name=b shape=8,8,16
 *     conv2d filters=16 kernel_size=3 padding=same
 *     add inputs=conv2d_1,b
 * "input" stays the first input's name; the others come after it in the
 * order of their lines, and every input must be read by some layer.
 * An input must be defined on an earlier line, which rules out cycles; the
 * layers run in spec order. The last line's output is the model's output,
 * and every other layer's output must be read by some later layer. Building allocates
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
 * nn_graph_reset (nn_model_train_step and nn_model_predict reset it first,
 * and so may nn_model_forward: see there).
 * Thread-safety: a model is used by one thread at a time.
 */
#ifndef NN_NN_MODEL_H
#define NN_NN_MODEL_H

#include <stdint.h>
#include <stdio.h>

#include "layers/layer.h"
#include "optim/optim.h"

#define NN_MODEL_MAX_LAYERS 64
/* Inputs of one model, the first ("input") included. */
#define NN_MODEL_MAX_INPUTS 8

typedef enum nn_mode {
    NN_MODE_DEFAULT = -1, /* the model's own mode */
    NN_MODE_EVAL = 0,
    NN_MODE_TRAIN = 1
} nn_mode;

/* A further input of the model (the first is in_rank, in_shape). */
typedef struct nn_model_input {
    char name[NN_NAME_LEN];
    int rank, shape[TENSOR_MAX_RANK]; /* per sample; rank 0 until it is known */
} nn_model_input;

typedef struct nn_model {
    nn_layer *layers[NN_MODEL_MAX_LAYERS];
    int n_layers;
    /* Layer i reads the outputs of layers inputs[i][0..n_inputs[i]), where
     * -1 is the model's first input and -2 - k its further input k
     * (extra_inputs[k]); a sequential model has inputs[i] = {i - 1}. */
    int n_inputs[NN_MODEL_MAX_LAYERS];
    int inputs[NN_MODEL_MAX_LAYERS][NN_LAYER_MAX_INPUTS];
    uint64_t seed;
    int training;
    int built;
    int in_rank, in_shape[TENSOR_MAX_RANK]; /* per sample */
    int n_extra_inputs;                     /* inputs after the first */
    nn_model_input extra_inputs[NN_MODEL_MAX_INPUTS - 1];
    float *params, *grads, *buffers;        /* the three blocks */
    size_t n_params, n_buffers;
    nn_graph *graph;
    /* What earlier forwards left in the graph, for nn_model_forward's rules:
     * the graph's generation at the last one (0: none yet), whether the
     * graph was empty when the first forward of that generation began, and
     * whether a training forward of that generation recorded nodes. */
    unsigned long pass_generation;
    int pass_alone, pass_taped_training;
} nn_model;

nn_model *nn_model_create(uint64_t seed);
void nn_model_free(nn_model *m);

/* Appends a layer of a registered type; config may hold the model-level
 * keys name= and inputs= (see above). Errors: unknown type, bad config,
 * model already built, too many layers, a bad or duplicate name, an input
 * not defined so far, the wrong number of inputs for the type.
 * Type "input" declares a further model input instead, config "name=N"
 * with an optional "shape=D1,D2,..."; errors: no name=, a name in use,
 * more than NN_MODEL_MAX_INPUTS inputs, a bad shape, another key. */
nn_status nn_model_add(nn_model *m, const char *type, const char *config);
/* Appends every layer of a spec text; the message gives the line number and,
 * for an input defined on a later line, says so. All or nothing. */
nn_status nn_model_add_spec(nn_model *m, const char *text);
/* As nn_model_add_spec, reading the file at path. */
nn_status nn_model_load_spec(nn_model *m, const char *path);
/* Writes the spec (one layer per line, resolved configs) into buf; name= and
 * inputs= only where the defaults would not give the same graph, so a
 * sequential model's spec has neither. */
nn_status nn_model_spec_string(const nn_model *m, char *buf, size_t n);
/* The model-level keys of layer i as its spec line writes them ("name=...
 * inputs=...", or "" for a layer that reads the line before it under its
 * automatic name). */
nn_status nn_model_layer_keys(const nn_model *m, int i, char *buf, size_t n);
/* 1 when every layer reads the one before it (the first, the input). */
int nn_model_is_sequential(const nn_model *m);

/* Builds every layer for a per-sample input shape (no batch axis). Errors:
 * a layer's output that nothing reads (other than the last), a merge of
 * shapes that do not fit (the message lists the inputs and their shapes), a
 * layer that writes over its input (inplace=true) where another layer reads
 * that input too, an input no layer reads. The shape is the first input's;
 * further inputs must have declared theirs (shape=). */
nn_status nn_model_build(nn_model *m, int rank, const int *shape);
/* nn_model_build with every input's per-sample shape: n inputs in the
 * model's order (the first, then the further ones as declared), input q of
 * rank ranks[q] and shape shapes[q][0..ranks[q]). Errors as nn_model_build,
 * and: n other than the model's input count, a shape other than the one a
 * spec line declared (the message names the input and both shapes). */
nn_status nn_model_build_inputs(nn_model *m, int n, const int *ranks, const int *const *shapes);
/* The number of inputs (1 + n_extra_inputs) and the name of input q
 * ("input" for q = 0; NULL out of range). */
int nn_model_input_count(const nn_model *m);
const char *nn_model_input_name(const nn_model *m, int q);

void nn_model_set_training(nn_model *m, int training);
int nn_model_is_training(const nn_model *m);

/* y = model(x) for a batch x (axis 0: batch). y is in the graph's arena.
 * Memory stays bounded over any number of calls, by two rules about a
 * graph that has not been reset since the model's previous forward:
 * - A training forward (mode resolving to NN_MODE_TRAIN) after a training
 *   forward that recorded nodes is an error (NN_ERR_STATE): each training
 *   step starts with nn_graph_reset(nn_model_graph(m)), as
 *   nn_model_train_step does, since otherwise every step's tape would pile
 *   up in the arena.
 * - Any other forward first resets the graph itself when the graph holds
 *   only what the model's forwards made since it was empty, unless that is
 *   a training tape whose backward has not run, or x lives in the arena.
 *   So an eval-mode forward in a loop needs no reset, and the tensors an
 *   earlier forward returned (and any made from them) become invalid.
 * A graph you reset yourself, or that held your tensors when the model's
 * forward began, is never reset by the model. */
nn_status nn_model_forward(nn_model *m, tensor *x, tensor **y, nn_mode mode);
/* y = model(xs[0], ..., xs[n-1]) for a model with n inputs, xs in the
 * model's input order, all with one batch size; otherwise as
 * nn_model_forward (with n = 1, the same call). nn_model_forward on a
 * model with several inputs is an error that points here. Errors: n other
 * than the input count, a NULL xs[q], a per-sample shape other than the
 * built one or a different batch size (the message names xs[q], the input
 * and both shapes). */
nn_status nn_model_forward_inputs(nn_model *m, int n, tensor *const *xs, tensor **y,
                                  nn_mode mode);

/* Training and evaluation (train_step, predict, the _loss forms below and
 * nn_fit) take a model with one input; a model with several is refused
 * with a message saying so: run it with nn_model_forward_inputs. */

/* One training step on a batch: reset the graph, zero gradients, forward in
 * training mode, softmax cross-entropy against labels (n = x->shape[0]
 * values in [0, classes)), backward, optimizer step. Reports the mean loss
 * and the number of correct predictions (either pointer may be NULL).
 * Backward is nn_graph_backward_recycle: the step's activations hold its
 * intermediate gradients as they die, so after the step the graph's arena
 * holds nothing of use (nn_model_train_step_loss likewise). */
nn_status nn_model_train_step(nn_model *m, optim *opt, tensor *x, const int *labels,
                              float *loss, int *correct);
/* Eval-mode forward without recording gradients; returns the logits (in the
 * arena) and, if labels is not NULL, the summed loss and correct count.
 * After the first call with a given input shape it allocates nothing: the
 * arena already holds what the call needs, and a first call that had to grow
 * the arena runs its pass a second time in the grown arena. */
nn_status nn_model_predict(nn_model *m, tensor *x, const int *labels, tensor **logits,
                           double *loss_sum, int *correct);

void nn_model_zero_grad(nn_model *m);
nn_graph *nn_model_graph(nn_model *m);

/* Writes a table like Keras's model.summary(): layer (type), output shape,
 * parameter count, then the totals. A model that is not sequential gets a
 * first row for its input and a "Connected to" column, as Keras's summary
 * of a functional model (one row per input). */
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
