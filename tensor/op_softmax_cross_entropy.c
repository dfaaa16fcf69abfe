/* Fused softmax + cross-entropy, with optional label smoothing (see ops.h).
 * Forward saves the softmax probabilities so backward is one pass:
 * dlogits += (p - target) * dloss / N.
 *
 * Rows are independent and run in parallel; each row's loss is kept in
 * double and the rows are summed afterwards in row order, which is the
 * order (and so the rounding) of a plain serial loop for any thread count.
 * Smoothing 0 is the unsmoothed loss itself: the smoothing term is not
 * computed and the target values are exactly 1 and 0.
 * Omitted: soft (probability) targets and class weights. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor/ops.h"

/* Logits (N*K) below which one thread does all the work: starting the
 * threads costs more than a few thousand exponentials. */
#define SOFTMAX_CROSS_ENTROPY_PARALLEL_MIN 16384

typedef struct {
    float *prob;       /* (N, K) softmax */
    const int *labels; /* [N] */
    float on, off;     /* target of the label's class and of the others */
} xent_ctx;

static void op_softmax_cross_entropy_backward(nn_node *n)
{
    const xent_ctx *c = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const int N = x->shape[0], K = x->shape[1];
    const float scale = n->out->grad[0] / (float)N;
#pragma omp parallel for schedule(static) if (x->size >= SOFTMAX_CROSS_ENTROPY_PARALLEL_MIN)
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            float d = c->prob[(size_t)i * K + k] - (k == c->labels[i] ? c->on : c->off);
            x->grad[(size_t)i * K + k] += d * scale;
        }
}

nn_status nn_op_softmax_cross_entropy_smoothed(nn_graph *g, tensor *logits, const int *labels,
                                               float label_smoothing, tensor **loss, int *correct)
{
    if (!g) return nn_error(NN_ERR_ARG, "softmax_cross_entropy: graph is NULL");
    if (!logits) return nn_error(NN_ERR_ARG, "softmax_cross_entropy: logits is NULL");
    if (!labels) return nn_error(NN_ERR_ARG, "softmax_cross_entropy: labels is NULL");
    if (!loss) return nn_error(NN_ERR_ARG, "softmax_cross_entropy: loss is NULL");
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
        return nn_error(NN_ERR_ARG, "softmax_cross_entropy: label_smoothing must be in [0, 1], got %g",
                        (double)label_smoothing);
    if (logits->rank != 2) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "softmax_cross_entropy: logits must be (batch, classes), got %s",
                        tensor_shape_str(logits->rank, logits->shape, b, sizeof b));
    }
    const int N = logits->shape[0], K = logits->shape[1];
    if (N == 0 || K == 0)
        return nn_error(NN_ERR_SHAPE, "softmax_cross_entropy: empty logits (%d, %d)", N, K);
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= K)
            return nn_error(NN_ERR_ARG, "softmax_cross_entropy: label %d of row %d is outside [0, %d)",
                            labels[i], i, K);
    int one = 1;
    tensor *y = nn_graph_tensor(g, 1, &one);
    int *saved = nn_graph_alloc(g, (size_t)N * sizeof *saved);
    xent_ctx *c = nn_graph_alloc(g, sizeof *c);
    float *prob = nn_graph_alloc(g, logits->size * sizeof(float));
    double *row_loss = nn_graph_alloc(g, (size_t)N * sizeof *row_loss);
    uint8_t *hit = nn_graph_alloc(g, (size_t)N);
    if (!y || !saved || !c || !prob || !row_loss || !hit) return NN_ERR_MEMORY;
    memcpy(saved, labels, (size_t)N * sizeof *saved);
    const double e = label_smoothing;
    c->prob = prob;
    c->labels = saved;
    c->off = label_smoothing / (float)K;
    c->on = (1.0f - label_smoothing) + c->off;
#pragma omp parallel for schedule(static) if (logits->size >= SOFTMAX_CROSS_ENTROPY_PARALLEL_MIN)
    for (int i = 0; i < N; i++) {
        const float *z = logits->data + (size_t)i * K;
        float *p = prob + (size_t)i * K;
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg]) arg = k;
        float max = z[arg];
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            p[k] = expf(z[k] - max);
            sum += p[k];
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) p[k] *= inv;
        /* -log p[label] = logsumexp - z[label], both shifted by max. */
        double r = log(sum) - (double)(z[labels[i]] - max);
        if (e != 0.0) {
            /* The e/K share of every class: e * (logsumexp - mean_k z[k]). */
            double zsum = 0.0;
            for (int k = 0; k < K; k++) zsum += (double)(z[k] - max);
            r = (1.0 - e) * r + e * (log(sum) - zsum / K);
        }
        row_loss[i] = r;
        hit[i] = arg == labels[i];
    }
    double total = 0.0;
    int right = 0;
    for (int i = 0; i < N; i++) {
        total += row_loss[i];
        right += hit[i];
    }
    y->data[0] = (float)(total / N);
    if (!isfinite(y->data[0]))
        return nn_error(NN_ERR_NUMERIC, "softmax_cross_entropy: loss is %g (non-finite logits?)",
                        (double)y->data[0]);
    nn_graph_record(g, "softmax_cross_entropy", y, &logits, 1, op_softmax_cross_entropy_backward, c);
    if (correct) *correct = right;
    *loss = y;
    return NN_OK;
}

nn_status nn_op_softmax_cross_entropy(nn_graph *g, tensor *logits, const int *labels,
                                      tensor **loss, int *correct)
{
    return nn_op_softmax_cross_entropy_smoothed(g, logits, labels, 0.0f, loss, correct);
}
