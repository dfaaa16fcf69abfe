/* Graph operations that are not layers: arithmetic and the loss.
 * Each records a node when the graph is recording (tensor/graph.h); outputs live
 * in the graph's arena until the next reset. Errors name the op and shapes.
 * Thread-safety: as the graph's, one graph per thread. */
#ifndef NN_TENSOR_OPS_H
#define NN_TENSOR_OPS_H

#include "tensor/graph.h"

/* out = a + b, same shapes. */
nn_status nn_op_add(nn_graph *g, tensor *a, tensor *b, tensor **out);
/* out = a * b elementwise, same shapes. */
nn_status nn_op_mul(nn_graph *g, tensor *a, tensor *b, tensor **out);
/* out = sum of all elements of a weighted by w (same shape as a; w is a
 * constant): a scalar. Used as a loss by the gradient checks. */
nn_status nn_op_weighted_sum(nn_graph *g, tensor *a, const tensor *w, tensor **out);

/* Mean softmax cross-entropy of logits (N, K) against labels[N] in [0, K):
 *   loss = -(1/N) sum_n log softmax(logits_n)[labels_n]
 * computed as logsumexp - logit with the maximum subtracted first, so large
 * logits do not overflow. Backward: (softmax - onehot) / N.
 * *correct (may be NULL) gets the number of rows whose arg-max (the first
 * on ties) equals the label. */
nn_status nn_op_softmax_cross_entropy(nn_graph *g, tensor *logits, const int *labels,
                                      tensor **loss, int *correct);

#endif
