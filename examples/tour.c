/* A tour of the nn API: build a small classifier, train it with Adam,
 * predict, and see what an error looks like. The README's "API tour" is this
 * file. Runs in well under a second:  make && ./build/examples/tour
 *
 * The task: points in [-1, 1]^2 labelled by the sign of x*y (XOR), which no
 * linear model separates. Deliberately omitted: mini-batches, a test split,
 * checkpoints (see examples/mnist.c for those). */
#include <stdio.h>

#include "nn/nn.h"

#define N 256

/* Every call that can fail returns an nn_status; the message says why. */
#define TRY(call)                                                                       \
    do {                                                                                \
        nn_status s_ = (call);                                                          \
        if (s_ != NN_OK) {                                                              \
            fprintf(stderr, "%s: %s\n", nn_status_str(s_), nn_last_error());            \
            goto done;                                                                  \
        }                                                                               \
    } while (0)

int main(void)
{
    int ret = 1;
    nn_model *m = NULL;
    optim *adam = NULL;
    tensor *x = NULL, *query = NULL;

    /* Data: x is (N, 2), labels[i] in {0, 1}. */
    int x_shape[2] = {N, 2};
    int labels[N];
    x = tensor_create(2, x_shape);
    if (!x) goto done;
    tensor_rng rng;
    tensor_rng_seed(&rng, 1);
    tensor_init_uniform(x, &rng, -1.0f, 1.0f);
    for (int i = 0; i < N; i++) labels[i] = x->data[2 * i] * x->data[2 * i + 1] > 0.0f;

    /* The model: 2 -> 16 -> 16 -> 2 logits. The seed fixes the initial
     * weights and the dropout masks. */
    m = nn_model_create(42);
    if (!m) goto done;
    TRY(nn_model_add(m, "dense", "units=16 activation=relu"));
    TRY(nn_model_add(m, "dense", "units=16 activation=relu"));
    TRY(nn_model_add(m, "dense", "units=2"));
    int in_shape[1] = {2}; /* per sample, no batch axis */
    TRY(nn_model_build(m, 1, in_shape));
    TRY(nn_model_summary(m, stdout));

    /* Train: each step runs forward, softmax cross-entropy, backward and
     * one Adam update on the whole batch. */
    adam = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    if (!adam) goto done;
    for (int step = 1; step <= 600; step++) {
        float loss;
        int correct;
        TRY(nn_model_train_step(m, adam, x, labels, &loss, &correct));
        if (step % 100 == 0)
            printf("step %3d  loss %.4f  accuracy %5.1f%%\n", step, (double)loss,
                   100.0 * correct / N);
    }

    /* Predict: eval mode, nothing recorded. The logits live in the model's
     * arena until its next step or prediction. */
    float points[4][2] = {{0.5f, 0.5f}, {-0.5f, 0.5f}, {-0.5f, -0.5f}, {0.5f, -0.7f}};
    int q_shape[2] = {4, 2};
    query = tensor_wrap(&points[0][0], 2, q_shape); /* borrows points */
    if (!query) goto done;
    tensor *logits;
    TRY(nn_model_predict(m, query, NULL, &logits, NULL, NULL));
    for (int i = 0; i < 4; i++) {
        const float *z = logits->data + 2 * i;
        printf("(%+.1f, %+.1f) -> class %d (expected %d)\n", (double)points[i][0],
               (double)points[i][1], z[1] > z[0], points[i][0] * points[i][1] > 0.0f);
    }

    /* Errors name the layer, the key and the value. */
    nn_layer *bad = nn_layer_create("dense", "units=0");
    if (!bad) printf("as expected: %s\n", nn_last_error());
    nn_layer_free(bad);
    ret = 0;
done:
    tensor_free(query);
    tensor_free(x);
    optim_free(adam);
    nn_model_free(m);
    return ret;
}
