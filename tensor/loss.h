/* A loss chosen by name: a small descriptor (which loss, its options), the
 * parser of its text form, and one call that runs the chosen op of
 * tensor/ops.h on a graph.
 *
 * Names, as Keras spells them:
 *   sparse_categorical_crossentropy   softmax cross-entropy of logits (N, K)
 *   categorical_crossentropy          against integer labels[N] in [0, K). The
 *                                     two names give the same loss: nn passes
 *                                     classes as integers, never as one-hot
 *                                     tensors. Option label_smoothing=E, E in
 *                                     [0, 1] (default 0): target (1-E) onehot + E/K.
 *   binary_crossentropy               sigmoid cross-entropy of logits against
 *                                     float targets in [0, 1] of the same shape.
 *   mean_squared_error, mse           mean of (y - t)^2 against float targets
 *                                     of the same shape.
 * The text form is the name, then options as key=value, separated by spaces:
 * "categorical_crossentropy label_smoothing=0.1". Every loss takes the
 * network's raw output, as Keras's from_logits=True: the model ends without a
 * softmax or sigmoid, and the loss applies it in a form that cannot overflow.
 * Thread-safety: parse and string are pure; nn_op_loss as the graph's.
 */
#ifndef NN_TENSOR_LOSS_H
#define NN_TENSOR_LOSS_H

#include <stddef.h>

#include "tensor/graph.h"

typedef enum nn_loss_kind {
    NN_LOSS_SOFTMAX_CROSS_ENTROPY = 0, /* integer labels */
    NN_LOSS_BINARY_CROSS_ENTROPY = 1,  /* float targets in [0, 1] */
    NN_LOSS_MEAN_SQUARED_ERROR = 2     /* float targets */
} nn_loss_kind;

/* A zeroed nn_loss is plain softmax cross-entropy. */
typedef struct nn_loss {
    nn_loss_kind kind;
    float label_smoothing; /* softmax cross-entropy only, in [0, 1]; 0 for the others */
} nn_loss;

/* Reads "name key=value ..." into *loss. Errors (NN_ERR_CONFIG) name the
 * text: an unknown name (the message lists the valid ones), an unknown or
 * repeated option, a value out of range. *loss is untouched on error. */
nn_status nn_loss_parse(const char *text, nn_loss *loss);
/* Writes the text form that nn_loss_parse reads back to an equal loss, e.g.
 * "sparse_categorical_crossentropy label_smoothing=0.1" (options only when
 * not the default). Errors: a bad descriptor, a buffer too small. */
nn_status nn_loss_string(const nn_loss *loss, char *buf, size_t n);
/* The loss's name ("sparse_categorical_crossentropy", "binary_crossentropy",
 * "mean_squared_error"), or NULL for a kind that does not exist. */
const char *nn_loss_name(nn_loss_kind kind);

/* out = the chosen loss of pred, a one-element mean (tensor/ops.h):
 *   softmax cross-entropy   labels[N] (targets must be NULL)
 *   binary cross-entropy    targets of pred's shape (labels must be NULL)
 *   mean squared error      targets of pred's shape (labels must be NULL)
 * *correct (may be NULL): rows whose arg-max is the label; for binary
 * cross-entropy, elements with (pred > 0) == (target >= 0.5); 0 for mean
 * squared error, which has no notion of a correct prediction. Errors name
 * the loss and the argument: a bad descriptor, a missing or unexpected
 * labels/targets, and the op's own errors. */
nn_status nn_op_loss(nn_graph *g, const nn_loss *loss, tensor *pred, const int *labels,
                     const tensor *targets, tensor **out, int *correct);

#endif
