/* Fused softmax + cross-entropy (see ops.h). Forward saves the softmax
 * probabilities so backward is one pass: dlogits += (p - onehot) * dloss / N. */
#include <math.h>
#include <string.h>

#include "tensor/ops.h"

typedef struct {
    float *prob;   /* (N, K) softmax */
    const int *labels;
} xent_ctx;

static void op_softmax_cross_entropy_backward(nn_node *n)
{
    const xent_ctx *c = n->ctx;
    tensor *x = n->in[0];
    if (!x->grad) return;
    const int N = x->shape[0], K = x->shape[1];
    const float scale = n->out->grad[0] / (float)N;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            float d = c->prob[(size_t)i * K + k] - (k == c->labels[i] ? 1.0f : 0.0f);
            x->grad[(size_t)i * K + k] += d * scale;
        }
}

nn_status nn_op_softmax_cross_entropy(nn_graph *g, tensor *logits, const int *labels,
                                      tensor **loss, int *correct)
{
    if (!g || !logits || !labels || !loss)
        return nn_error(NN_ERR_ARG, "softmax_cross_entropy: NULL argument");
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
    if (!y || !saved || !c || !prob) return NN_ERR_MEMORY;
    memcpy(saved, labels, (size_t)N * sizeof *saved);
    c->prob = prob;
    c->labels = saved;
    double total = 0.0;
    int right = 0;
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
        total += log(sum) - (double)(z[labels[i]] - max);
        right += arg == labels[i];
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
