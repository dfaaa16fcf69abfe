/* Mean squared error (see ops.h): mean of (y - t)^2 over every element.
 *
 * Differences and squares are taken in double from the float inputs. The
 * sum runs over blocks of MEAN_SQUARED_ERROR_BLOCK elements, a split fixed by
 * the element count alone: each block is summed in order, then the blocks in
 * order, so any thread count gives the same bits. Backward reads the
 * predictions (kept until the graph's reset) and a copy of the targets.
 * Omitted: other reductions (sum, none) and per-element weights. */
#include <math.h>
#include <string.h>

#include "tensor/ops.h"

#define MEAN_SQUARED_ERROR_BLOCK 4096
/* Elements below which the backward pass runs on one thread. */
#define MEAN_SQUARED_ERROR_PARALLEL_MIN 16384

static void op_mean_squared_error_backward(nn_node *n)
{
    const float *t = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const size_t count = x->size;
    const double scale = 2.0 * (double)n->out->grad[0] / (double)count;
#pragma omp parallel for schedule(static) if (count >= MEAN_SQUARED_ERROR_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++)
        x->grad[i] += (float)(((double)x->data[i] - t[i]) * scale);
}

nn_status nn_op_mean_squared_error(nn_graph *g, tensor *pred, const tensor *targets, tensor **loss)
{
    if (!g) return nn_error(NN_ERR_ARG, "mean_squared_error: graph is NULL");
    if (!pred) return nn_error(NN_ERR_ARG, "mean_squared_error: predictions is NULL");
    if (!targets) return nn_error(NN_ERR_ARG, "mean_squared_error: targets is NULL");
    if (!loss) return nn_error(NN_ERR_ARG, "mean_squared_error: loss is NULL");
    char a[96], b[96];
    if (!tensor_same_shape(pred, targets))
        return nn_error(NN_ERR_SHAPE, "mean_squared_error: predictions %s and targets %s differ in shape",
                        tensor_shape_str(pred->rank, pred->shape, a, sizeof a),
                        tensor_shape_str(targets->rank, targets->shape, b, sizeof b));
    const size_t count = pred->size;
    if (count == 0)
        return nn_error(NN_ERR_SHAPE, "mean_squared_error: empty predictions %s",
                        tensor_shape_str(pred->rank, pred->shape, a, sizeof a));
    for (size_t i = 0; i < count; i++)
        if (!isfinite(targets->data[i]))
            return nn_error(NN_ERR_ARG, "mean_squared_error: targets[%zu] is %g, not finite", i,
                            (double)targets->data[i]);
    const size_t n_blocks = (count + MEAN_SQUARED_ERROR_BLOCK - 1) / MEAN_SQUARED_ERROR_BLOCK;
    int one = 1;
    tensor *y = nn_graph_tensor(g, 1, &one);
    float *saved = nn_graph_alloc(g, count * sizeof *saved);
    double *part = nn_graph_alloc(g, n_blocks * sizeof *part);
    if (!y || !saved || !part) return NN_ERR_MEMORY;
    memcpy(saved, targets->data, count * sizeof *saved);
    const float *p = pred->data;
#pragma omp parallel for schedule(static) if (n_blocks > 1)
    for (size_t blk = 0; blk < n_blocks; blk++) {
        const size_t lo = blk * MEAN_SQUARED_ERROR_BLOCK;
        const size_t hi = lo + MEAN_SQUARED_ERROR_BLOCK < count ? lo + MEAN_SQUARED_ERROR_BLOCK : count;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) {
            const double d = (double)p[i] - saved[i];
            s += d * d;
        }
        part[blk] = s;
    }
    double total = 0.0;
    for (size_t blk = 0; blk < n_blocks; blk++) total += part[blk];
    y->data[0] = (float)(total / (double)count);
    if (!isfinite(y->data[0]))
        return nn_error(NN_ERR_NUMERIC, "mean_squared_error: loss is %g (non-finite or too large predictions?)",
                        (double)y->data[0]);
    nn_graph_record(g, "mean_squared_error", y, &pred, 1, op_mean_squared_error_backward, saved);
    *loss = y;
    return NN_OK;
}
