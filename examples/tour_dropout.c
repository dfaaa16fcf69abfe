/* A guided tour of spatial dropout, to read top to bottom (about 15 minutes).
 *
 *   make build/examples/tour_dropout && ./build/examples/tour_dropout
 *
 * What you will see, in five steps:
 *   1. a data set small enough to make here: 8x8 pictures of four kinds of
 *      bar (horizontal, vertical, and the two diagonals), with noise;
 *   2. a small CNN with a spatial_dropout2d layer between its convolutions;
 *   3. a few epochs of training with nn_model_fit;
 *   4. the masks spatial dropout drew for one batch: one keep/drop decision
 *      per (image, feature map), never per pixel;
 *   5. two facts checked with numbers: in eval mode the layer is the
 *      identity, and backward reuses the mask of the forward pass.
 *
 * Every claim the program prints is also checked; if one fails it says so
 * and exits with status 1 (tests/test_tours.sh runs it). It takes well under
 * a second. For the why of spatial dropout, and when it helps, see the
 * README's "Why spatial dropout" and examples/dropout_study2.c.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"

#define SIDE 8     /* images are SIDE x SIDE, one channel */
#define KINDS 4    /* classes: -, |, \, / */
#define N_TRAIN 512
#define N_TEST 256
#define RATE 0.25f /* the spatial dropout rate */

static int failures = 0;

/* Prints a check and remembers whether it held. */
static void check(int ok, const char *what)
{
    printf("  [%s] %s\n", ok ? "ok" : "FAILED", what);
    failures += !ok;
}

/* ---- 1. The data --------------------------------------------------------
 * Image i of class k: a bar of kind k at a random place, value 1, on a
 * background of uniform noise in [0, 0.3). Stored as (n, 8, 8, 1): nn's
 * default layout is channels_last, Keras's (N, H, W, C). */
static void make_bars(float *x, int *labels, int n, uint64_t seed)
{
    tensor_rng rng;
    tensor_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        const int k = (int)tensor_rng_below(&rng, KINDS);
        const int at = (int)tensor_rng_below(&rng, SIDE); /* row, column or diagonal offset */
        float *img = x + (size_t)i * SIDE * SIDE;
        for (int p = 0; p < SIDE * SIDE; p++) img[p] = 0.3f * tensor_rng_uniform(&rng);
        for (int t = 0; t < SIDE; t++) {
            int r = 0, c = 0;
            if (k == 0) r = at, c = t;                            /* - */
            if (k == 1) r = t, c = at;                            /* | */
            if (k == 2) r = t, c = (t + at) % SIDE;               /* \ (wraps around) */
            if (k == 3) r = t, c = (SIDE - 1 - t + at) % SIDE;    /* / */
            img[r * SIDE + c] = 1.0f;
        }
        labels[i] = k;
    }
}

int main(void)
{
    static float train_x[N_TRAIN * SIDE * SIDE], test_x[N_TEST * SIDE * SIDE];
    static int train_y[N_TRAIN], test_y[N_TEST];
    make_bars(train_x, train_y, N_TRAIN, 1);
    make_bars(test_x, test_y, N_TEST, 2);

    /* ---- 2. The network -------------------------------------------------
     * One layer per line, "type key=value ...". spatial_dropout2d sits where
     * it is meant to: after a convolution, before the next one. Its input is
     * (N, 8, 8, 8): 8 feature maps of 8x8 per image. The model's seed (7)
     * fixes the initial weights and every dropout mask. */
    nn_model *m = nn_model_create(7);
    optim *adam = optim_adam_create(3e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    if (!m || !adam) return 1;
    const char *spec = "conv2d filters=8 kernel_size=3 padding=same activation=relu\n"
                       "spatial_dropout2d rate=0.25\n"
                       "conv2d filters=8 kernel_size=3 padding=same activation=relu\n"
                       "maxpool2d pool_size=2\n"
                       "flatten\n"
                       "dense units=4\n";
    const int in_shape[3] = {SIDE, SIDE, 1}; /* per image: no batch axis */
    if (nn_model_add_spec(m, spec) != NN_OK || nn_model_build(m, 3, in_shape) != NN_OK) {
        fprintf(stderr, "%s\n", nn_last_error());
        return 1;
    }
    printf("1-2. %d training and %d test images of 4 kinds of bar; the network:\n", N_TRAIN,
           N_TEST);
    nn_model_summary(m, stdout);
    nn_layer *drop = m->layers[1]; /* the spatial_dropout2d layer */

    /* ---- 3. Training ----------------------------------------------------
     * nn_model_fit runs the epochs: shuffled batches of 32, each a forward
     * pass in training mode (dropout on), the loss, backward, an Adam step.
     * Evaluation runs in eval mode (dropout off). */
    nn_dataset train, test;
    nn_dataset_init_f32(&train, train_x, N_TRAIN, 3, in_shape);
    nn_dataset_set_labels_int(&train, train_y);
    nn_dataset_init_f32(&test, test_x, N_TEST, 3, in_shape);
    nn_dataset_set_labels_int(&test, test_y);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 4;
    o.batch = 32;
    o.shuffle_seed = 3;
    o.progress = stdout; /* one line per epoch */
    printf("\n3. Training, %d epochs:\n", o.epochs);
    const uint64_t calls_before = drop->calls;
    double test_loss = 0.0, test_acc = 0.0;
    if (nn_model_fit(m, adam, &train, &o, NULL) != NN_OK ||
        nn_model_evaluate(m, &test, 64, NULL, &test_loss, &test_acc) != NN_OK) {
        fprintf(stderr, "%s\n", nn_last_error());
        return 1;
    }
    printf("test accuracy %.1f %% (chance: 25 %%)\n", 100.0 * test_acc);
    /* The layer counts its training-mode calls: one per batch. That count is
     * the second half of the key of every mask, so no two batches share one. */
    const int batches = o.epochs * ((N_TRAIN + o.batch - 1) / o.batch);
    printf("the dropout layer ran %llu times in training mode (%d epochs x %d batches)\n",
           (unsigned long long)(drop->calls - calls_before), o.epochs, batches / o.epochs);
    check(test_acc > 0.5, "the network learned (test accuracy above 50 %)");
    check(drop->calls - calls_before == (uint64_t)batches, "one mask per training batch");

    /* ---- 4. The masks of one batch --------------------------------------
     * Run the first layer on 8 test images, then the dropout layer in
     * training mode (last argument 1) by hand, on the model's graph. */
    enum { B = 8, C = 8 };
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    const int bshape[4] = {B, SIDE, SIDE, 1};
    tensor *x = tensor_wrap(test_x, 4, bshape); /* borrows test_x */
    tensor *a = NULL, *y = NULL;
    if (!x || nn_layer_forward(m->layers[0], g, x, &a, 0) != NN_OK) return 1;
    const uint64_t call = drop->calls; /* the key this call will draw with */
    if (nn_layer_forward(drop, g, a, &y, 1) != NN_OK) return 1;
    /* The keep/drop decisions are a pure function of (seed, call, n*C + c):
     * nn_spatial_dropout_mask recomputes them without touching any data. */
    uint8_t mask[B * C];
    nn_spatial_dropout_mask(mask, B, C, RATE, drop->seed, call);
    printf("\n4. Masks of one batch (rate %.2f): rows are images, columns feature maps; "
           "1 = kept, . = dropped\n      map 0 1 2 3 4 5 6 7\n", (double)RATE);
    for (int n = 0; n < B; n++) {
        printf("  image %d  ", n);
        for (int c = 0; c < C; c++) printf("%c ", mask[n * C + c] ? '1' : '.');
        printf("  (kind %d)\n", test_y[n]);
    }
    /* What the layer did to each map: a kept map is multiplied by
     * 1/(1-rate) = 1.3333 everywhere, a dropped one is 0 everywhere. The
     * ratio y/a is printed for the first image, at two pixels of each map. */
    const float scale = 1.0f / (float)(1.0 - RATE);
    int maps_agree = 1;
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < SIDE * SIDE; p++) {
                const size_t i = ((size_t)n * SIDE * SIDE + p) * C + c; /* (n, h, w, c) */
                const float want = mask[n * C + c] ? a->data[i] * scale : 0.0f;
                maps_agree &= y->data[i] == want;
            }
    printf("  image 0, output / input at the first nonzero pixel of each map:\n  ");
    for (int c = 0; c < C; c++) {
        int p = 0;
        while (p < SIDE * SIDE && a->data[(size_t)p * C + c] == 0.0f) p++;
        if (p == SIDE * SIDE)
            printf(" map %d: all 0  ", c);
        else
            printf(" map %d: %.4f", c, (double)(y->data[(size_t)p * C + c] / a->data[(size_t)p * C + c]));
    }
    printf("\n");
    check(maps_agree, "every pixel of a map is kept and scaled by 1/(1-rate), or every one is 0");

    /* ---- 5a. Eval mode is the identity ----------------------------------
     * In eval mode (last argument 0) the layer returns its input itself: no
     * copy, no draw, and the call counter does not move. */
    printf("\n5. Two facts, with numbers:\n");
    tensor *e = NULL;
    const uint64_t calls = drop->calls;
    if (nn_layer_forward(drop, g, a, &e, 0) != NN_OK) return 1;
    float max_diff = 0.0f;
    for (size_t i = 0; i < a->size; i++) max_diff = fmaxf(max_diff, fabsf(e->data[i] - a->data[i]));
    printf("  eval mode: output %s the input tensor; max |output - input| = %g; calls %llu -> "
           "%llu\n", e == a ? "is" : "is NOT", (double)max_diff, (unsigned long long)calls,
           (unsigned long long)drop->calls);
    check(e == a && max_diff == 0.0f && drop->calls == calls, "eval mode is the identity");
    /* The model as a whole in eval mode: the same input twice gives the same
     * logits to the last bit, since nothing random runs. */
    tensor *logits = NULL;
    float first[B * KINDS];
    int same = nn_model_predict(m, x, NULL, &logits, NULL, NULL) == NN_OK;
    if (same) memcpy(first, logits->data, sizeof first);
    same = same && nn_model_predict(m, x, NULL, &logits, NULL, NULL) == NN_OK &&
           memcmp(first, logits->data, sizeof first) == 0;
    check(same, "two eval-mode predictions of the same batch are bit-identical");

    /* ---- 5b. Backward reuses the forward's mask -------------------------
     * Take a leaf v (a copy of the maps above) that asks for a gradient, run
     * the dropout layer on it in training mode, and use loss = sum(output).
     * Then d loss / d v = mask * 1/(1-rate): 1.3333 in kept maps, 0 in
     * dropped ones. If backward drew a new mask, the zeros would land in
     * other maps than the forward's. */
    nn_graph_reset(g); /* a, y and e lived in the graph; they are gone now */
    const int ashape[4] = {B, SIDE, SIDE, C};
    tensor *v = tensor_create(4, ashape), *w = tensor_create(4, ashape), *out = NULL, *loss = NULL;
    if (!v || !w) return 1;
    tensor_rng r;
    tensor_rng_seed(&r, 5);
    tensor_init_uniform(v, &r, 0.1f, 1.0f);
    for (size_t i = 0; i < w->size; i++) w->data[i] = 1.0f; /* loss = plain sum */
    v->flags |= TENSOR_REQUIRES_GRAD;
    const uint64_t call2 = drop->calls;
    if (nn_layer_forward(drop, g, v, &out, 1) != NN_OK ||
        nn_op_weighted_sum(g, out, w, &loss) != NN_OK) return 1;
    const uint64_t calls_after_forward = drop->calls;
    if (nn_graph_backward(g, loss) != NN_OK || !v->grad) {
        fprintf(stderr, "%s\n", nn_last_error());
        return 1;
    }
    nn_spatial_dropout_mask(mask, B, C, RATE, drop->seed, call2);
    int grad_agree = 1, zeros_match = 1, kept = 0;
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++) {
            kept += mask[n * C + c];
            for (int p = 0; p < SIDE * SIDE; p++) {
                const size_t i = ((size_t)n * SIDE * SIDE + p) * C + c;
                grad_agree &= v->grad[i] == (mask[n * C + c] ? scale : 0.0f);
                zeros_match &= (out->data[i] == 0.0f) == (v->grad[i] == 0.0f);
            }
        }
    printf("  backward: d sum(output) / d input is %.4f in the %d kept maps and 0 in the %d "
           "dropped ones; its zeros are where the forward output's are: %s; calls %llu -> %llu "
           "over forward and backward (one draw)\n", (double)scale, kept, B * C - kept,
           zeros_match ? "yes" : "NO", (unsigned long long)call2,
           (unsigned long long)drop->calls);
    check(grad_agree && zeros_match, "backward multiplies by the forward's mask");
    check(calls_after_forward == call2 + 1 && drop->calls == calls_after_forward,
          "backward draws nothing (the call counter moved once, in the forward)");

    tensor_free(v);
    tensor_free(w);
    tensor_free(x);
    optim_free(adam);
    nn_model_free(m);
    printf("\n%s\n", failures ? "SOME CHECKS FAILED" : "all checks held");
    return failures ? 1 : 0;
}
