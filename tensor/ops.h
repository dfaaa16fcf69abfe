/* Graph operations that are not layers: arithmetic and the losses.
 * Each records a node when the graph is recording (tensor/graph.h); outputs live
 * in the graph's arena until the next reset. Errors name the op and shapes.
 * Losses return a one-element tensor holding a mean; their sums run over fixed
 * blocks (rows, or runs of elements) combined in a fixed order, so the result
 * is the same bits for any thread count. Labels and targets are constants:
 * the ops copy them and no gradient flows to them. tensor/loss.h picks one of
 * the losses by name.
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
/* The same with label smoothing e in [0, 1], target_n = (1-e) onehot(labels_n) + e/K:
 *   loss = (1/N) sum_n [(1-e)(lse_n - z_n,label) + e (lse_n - mean_k z_n,k)]
 * (PyTorch's F.cross_entropy(label_smoothing=e), Keras's
 * CategoricalCrossentropy(from_logits=True, label_smoothing=e)). Backward:
 * (softmax - target) / N. e = 0 gives nn_op_softmax_cross_entropy's bits. */
nn_status nn_op_softmax_cross_entropy_smoothed(nn_graph *g, tensor *logits, const int *labels,
                                               float label_smoothing, tensor **loss, int *correct);

/* Mean binary cross-entropy of logits z against targets t in [0, 1], same shape, any rank:
 *   loss = (1/count) sum_i max(z_i, 0) - z_i t_i + log1p(exp(-|z_i|))
 * (= -t log sigmoid(z) - (1-t) log(1 - sigmoid(z)) without overflow; PyTorch's
 * F.binary_cross_entropy_with_logits, Keras's BinaryCrossentropy(from_logits=True)).
 * Backward: (sigmoid(z) - t) / count. A target outside [0, 1] or NaN is an
 * error naming its flat index. *correct (may be NULL) gets the number of
 * elements whose prediction is on the target's side: (z > 0) == (t >= 0.5),
 * i.e. sigmoid(z) > 0.5 for targets of 0.5 and above. */
nn_status nn_op_binary_cross_entropy(nn_graph *g, tensor *logits, const tensor *targets,
                                     tensor **loss, int *correct);

/* Mean squared error of predictions y against targets t, same shape, any rank:
 *   loss = (1/count) sum_i (y_i - t_i)^2
 * Backward: 2 (y - t) / count. A non-finite target is an error naming its index. */
nn_status nn_op_mean_squared_error(nn_graph *g, tensor *pred, const tensor *targets, tensor **loss);

#endif
