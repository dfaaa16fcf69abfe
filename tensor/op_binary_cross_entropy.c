/* Binary cross-entropy on logits (see ops.h), the stable form
 *   max(z, 0) - z t + log1p(exp(-|z|))
 * which equals -t log sigmoid(z) - (1-t) log(1 - sigmoid(z)) but never takes
 * the exponential of a positive number, so logits of any size give finite
 * terms. Each term is computed in double from the float inputs.
 *
 * The sum runs over blocks of BINARY_CROSS_ENTROPY_BLOCK elements, a split
 * fixed by the element count alone: each block is summed in order, then the
 * blocks in order, so any thread count gives the same bits.
 * Backward recomputes sigmoid(z) from the logits (kept until the graph's
 * reset) rather than saving it.
 * Omitted: per-element and positive-class weights, and smoothing of binary
 * targets (Keras's label_smoothing on this loss). */
#include <math.h>
#include <string.h>

#include "tensor/ops.h"

#define BINARY_CROSS_ENTROPY_BLOCK 4096
/* Elements below which the backward pass runs on one thread. */
#define BINARY_CROSS_ENTROPY_PARALLEL_MIN 16384

static void op_binary_cross_entropy_backward(nn_node *n)
{
    const float *t = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const size_t count = x->size;
    const double scale = (double)n->out->grad[0] / (double)count;
#pragma omp parallel for schedule(static) if (count >= BINARY_CROSS_ENTROPY_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) {
        /* sigmoid(z) - t, with e = exp(-|z|) <= 1 so nothing overflows, and
         * for z >= 0 as (1 - t) - e/(1+e): sigmoid(z) = 1 - e/(1+e), and
         * subtracting t from a sigmoid rounded near 1 would lose the small
         * difference that a target of 1 leaves. */
        const double z = x->data[i], e = exp(-fabs(z)), q = e / (1.0 + e);
        const double d = z >= 0.0 ? (1.0 - t[i]) - q : q - t[i];
        x->grad[i] += (float)(d * scale);
    }
}

nn_status nn_op_binary_cross_entropy(nn_graph *g, tensor *logits, const tensor *targets,
                                     tensor **loss, int *correct)
{
    if (!g) return nn_error(NN_ERR_ARG, "binary_cross_entropy: graph is NULL");
    if (!logits) return nn_error(NN_ERR_ARG, "binary_cross_entropy: logits is NULL");
    if (!targets) return nn_error(NN_ERR_ARG, "binary_cross_entropy: targets is NULL");
    if (!loss) return nn_error(NN_ERR_ARG, "binary_cross_entropy: loss is NULL");
    char a[96], b[96];
    if (!tensor_same_shape(logits, targets))
        return nn_error(NN_ERR_SHAPE, "binary_cross_entropy: logits %s and targets %s differ in shape",
                        tensor_shape_str(logits->rank, logits->shape, a, sizeof a),
                        tensor_shape_str(targets->rank, targets->shape, b, sizeof b));
    const size_t count = logits->size;
    if (count == 0)
        return nn_error(NN_ERR_SHAPE, "binary_cross_entropy: empty logits %s",
                        tensor_shape_str(logits->rank, logits->shape, a, sizeof a));
    for (size_t i = 0; i < count; i++) {
        const float t = targets->data[i];
        if (!(t >= 0.0f && t <= 1.0f))
            return nn_error(NN_ERR_ARG, "binary_cross_entropy: targets[%zu] is %g, outside [0, 1]", i,
                            (double)t);
    }
    const size_t n_blocks = (count + BINARY_CROSS_ENTROPY_BLOCK - 1) / BINARY_CROSS_ENTROPY_BLOCK;
    int one = 1;
    tensor *y = nn_graph_tensor(g, 1, &one);
    float *saved = nn_graph_alloc(g, count * sizeof *saved);
    double *part = nn_graph_alloc(g, n_blocks * sizeof *part);
    size_t *hits = nn_graph_alloc(g, n_blocks * sizeof *hits);
    if (!y || !saved || !part || !hits) return NN_ERR_MEMORY;
    memcpy(saved, targets->data, count * sizeof *saved);
    const float *z = logits->data;
#pragma omp parallel for schedule(static) if (n_blocks > 1)
    for (size_t blk = 0; blk < n_blocks; blk++) {
        const size_t lo = blk * BINARY_CROSS_ENTROPY_BLOCK;
        const size_t hi = lo + BINARY_CROSS_ENTROPY_BLOCK < count ? lo + BINARY_CROSS_ENTROPY_BLOCK : count;
        double s = 0.0;
        size_t h = 0;
        for (size_t i = lo; i < hi; i++) {
            const double zi = z[i], ti = saved[i];
            s += fmax(zi, 0.0) - zi * ti + log1p(exp(-fabs(zi)));
            h += (z[i] > 0.0f) == (saved[i] >= 0.5f);
        }
        part[blk] = s;
        hits[blk] = h;
    }
    double total = 0.0;
    size_t right = 0;
    for (size_t blk = 0; blk < n_blocks; blk++) {
        total += part[blk];
        right += hits[blk];
    }
    y->data[0] = (float)(total / (double)count);
    if (!isfinite(y->data[0]))
        return nn_error(NN_ERR_NUMERIC, "binary_cross_entropy: loss is %g (non-finite logits?)",
                        (double)y->data[0]);
    nn_graph_record(g, "binary_cross_entropy", y, &logits, 1, op_binary_cross_entropy_backward, saved);
    if (correct) *correct = (int)right;
    *loss = y;
    return NN_OK;
}
