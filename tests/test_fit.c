/* nn_model_fit, nn_model_evaluate, nn_model_predict_dataset and the data
 * set type (nn/fit.h).
 *
 * Data: 6x6 byte images in 4 classes; class c has a bright 3x3 quadrant c
 * over background noise, so a small CNN learns it in a few epochs while a
 * model that guesses gets about 1 in 4. Checked: it is learnt; the same
 * seeds give bit-identical histories and weights with 1 and 2 threads; fit
 * equals a hand-written loop of nn_model_train_step over the same batches
 * bit for bit; the order is the seeded stream of examples/mnist.c and a pure
 * function of (seed, epoch); byte and float images, byte and int labels
 * give the same bits; the callback stops and changes the rate; evaluation
 * and prediction agree with nn_model_predict; every bad argument is named.
 * Not covered: MNIST itself (examples/mnist_min.c, run by the install test). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define SIDE TEST_TOY_SIDE
#define PIX (SIDE * SIDE)
#define CLASSES TEST_TOY_CLASSES
#define N_TRAIN 200
#define N_VAL 100

static const char spec[] = "conv2d filters=4 kernel_size=3 activation=relu\n"
                           "flatten\n"
                           "dropout rate=0.25\n"
                           "dense units=4\n";
static const int in_shape[3] = {SIDE, SIDE, 1};

typedef struct toy {
    uint8_t images[N_TRAIN * PIX];
    uint8_t labels[N_TRAIN];
    int labels_int[N_TRAIN];
} toy;

static void toy_make(toy *t, int n, uint64_t seed)
{
    test_toy_quadrants(t->images, t->labels, n, seed);
    for (int i = 0; i < n; i++) t->labels_int[i] = t->labels[i];
}

static nn_model *make_model(uint64_t seed) { return test_make_model(spec, 3, in_shape, seed); }

static optim *make_adam(void)
{
    optim *o = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_non_null(o);
    return o;
}

static void dataset_u8(nn_dataset *d, const toy *t, int n)
{
    assert_ok(nn_dataset_init_u8(d, t->images, n, 3, in_shape, 1.0f / 255.0f, 0.0f));
    assert_ok(nn_dataset_set_labels_u8(d, t->labels));
}

static void assert_same_history(const nn_history *a, const nn_history *b)
{
    assert_int_equal(a->epochs, b->epochs);
    const size_t n = (size_t)a->epochs;
    assert_memory_equal(a->lr, b->lr, n * sizeof(float));
    assert_memory_equal(a->train_loss, b->train_loss, n * sizeof(double));
    assert_memory_equal(a->train_accuracy, b->train_accuracy, n * sizeof(double));
    assert_memory_equal(a->val_loss, b->val_loss, n * sizeof(double));
    assert_memory_equal(a->val_accuracy, b->val_accuracy, n * sizeof(double));
}

static void assert_same_weights(const nn_model *a, const nn_model *b)
{
    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
}

static toy train_set, val_set;

static int setup(void **state)
{
    (void)state;
    toy_make(&train_set, N_TRAIN, 11);
    toy_make(&val_set, N_VAL, 12);
    return 0;
}

/* Measured with these seeds: validation accuracy 0.03 before training,
 * 1.00 from the first epoch on (validation loss 0.83 -> 0.003 over 6
 * epochs, training accuracy 0.57 -> 1.00). A model that guesses gets about
 * 0.25; 0.9 of 100 samples is far beyond its reach. */
static void test_fit_learns(void **state)
{
    (void)state;
    nn_model *m = make_model(3);
    optim *opt = make_adam();
    nn_dataset train, val;
    dataset_u8(&train, &train_set, N_TRAIN);
    dataset_u8(&val, &val_set, N_VAL);
    double before;
    assert_ok(nn_model_evaluate(m, &val, 64, NULL, NULL, &before));
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 6;
    o.batch = 16;
    o.shuffle_seed = 5;
    o.validation = &val;
    nn_history h;
    assert_ok(nn_model_fit(m, opt, &train, &o, &h));
    assert_int_equal(h.epochs, 6);
    assert_true(before < 0.5);
    assert_true(h.val_accuracy[5] >= 0.9);
    assert_true(h.train_loss[5] < h.train_loss[0]);
    for (int e = 0; e < 6; e++) assert_true(h.lr[e] == 0.01f);
    /* Evaluating the trained model again gives the last validation entry. */
    double loss, acc;
    assert_ok(nn_model_evaluate(m, &val, 16, NULL, &loss, &acc));
    assert_true(loss == h.val_loss[5]);
    assert_true(acc == h.val_accuracy[5]);
    nn_history_free(&h);
    assert_null(h.lr);
    nn_history_free(NULL);
    optim_free(opt);
    nn_model_free(m);
}

static void fit_with_threads(int threads, nn_model **m, nn_history *h)
{
    assert_ok(nn_set_threads(threads));
    *m = make_model(21);
    optim *opt = make_adam();
    nn_dataset train, val;
    dataset_u8(&train, &train_set, N_TRAIN);
    dataset_u8(&val, &val_set, N_VAL);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 3;
    o.batch = 32;
    o.shuffle_seed = 99;
    o.validation = &val;
    o.lr_step = 2;
    o.lr_decay = 0.5f;
    assert_ok(nn_model_fit(*m, opt, &train, &o, h));
    optim_free(opt);
}

static void test_fit_threads_identical(void **state)
{
    (void)state;
    const int saved = nn_get_threads();
    nn_model *m1, *m2;
    nn_history h1, h2;
    fit_with_threads(1, &m1, &h1);
    fit_with_threads(2, &m2, &h2);
    assert_ok(nn_set_threads(saved));
    assert_same_history(&h1, &h2);
    assert_same_weights(m1, m2);
    assert_true(h1.lr[2] == 0.005f);
    nn_history_free(&h1);
    nn_history_free(&h2);
    nn_model_free(m1);
    nn_model_free(m2);
}

/* The loop a user would write with nn_model_train_step: lr per epoch,
 * the epoch's order, batches of B converted by hand. */
static void test_fit_equals_manual_loop(void **state)
{
    (void)state;
    enum { EPOCHS = 3, B = 24, N = 100 }; /* the last batch holds 4 */
    const uint64_t seed = 7;
    nn_model *mf = make_model(8), *mm = make_model(8);
    optim *of = make_adam(), *om = make_adam();
    nn_dataset train;
    dataset_u8(&train, &train_set, N);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = EPOCHS;
    o.batch = B;
    o.shuffle_seed = seed;
    o.lr = 0.02f;
    o.lr_step = 1;
    o.lr_decay = 0.5f;
    nn_history h;
    assert_ok(nn_model_fit(mf, of, &train, &o, &h));

    float x[B * PIX];
    int labels[B], order[N];
    for (int e = 0; e < EPOCHS; e++) {
        const float lr = (float)(0.02 * pow(0.5, e));
        assert_ok(optim_set_lr(om, lr));
        assert_ok(nn_fit_order(seed, e, N, order));
        double sum = 0.0;
        int correct = 0;
        for (int start = 0; start < N; start += B) {
            const int b = N - start < B ? N - start : B;
            for (int i = 0; i < b; i++) {
                const int k = order[start + i];
                for (int j = 0; j < PIX; j++)
                    x[i * PIX + j] = (float)train_set.images[k * PIX + j] * (1.0f / 255.0f);
                labels[i] = train_set.labels[k];
            }
            tensor *t = tensor_wrap(x, 4, (int[]){b, SIDE, SIDE, 1});
            float loss;
            int c;
            assert_ok(nn_model_train_step(mm, om, t, labels, &loss, &c));
            tensor_free(t);
            sum += (double)loss * b;
            correct += c;
        }
        assert_true(h.lr[e] == lr);
        assert_true(h.train_loss[e] == sum / N);
        assert_true(h.train_accuracy[e] == (double)correct / N);
        assert_true(isnan(h.val_loss[e]) && isnan(h.val_accuracy[e]));
    }
    assert_same_weights(mf, mm);
    nn_history_free(&h);
    optim_free(of);
    optim_free(om);
    nn_model_free(mf);
    nn_model_free(mm);
}

static int is_permutation(const int *order, int n)
{
    char seen[512] = {0};
    for (int i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n || seen[order[i]]) return 0;
        seen[order[i]] = 1;
    }
    return 1;
}

/* The order of epoch e is the (e+1)-th Fisher-Yates permutation of the
 * xoshiro stream keyed (seed, "order"), drawn as examples/mnist.c draws it;
 * recomputing it for any (seed, epoch), in any sequence, gives the same. */
static void test_fit_order(void **state)
{
    (void)state;
    enum { N = 300, EPOCHS = 4 };
    int ref[EPOCHS][N], got[N];
    tensor_rng r;
    tensor_rng_seed(&r, tensor_hash3(42, 0x6f72646572ull, 0));
    for (int e = 0; e < EPOCHS; e++) {
        for (int i = 0; i < N; i++) ref[e][i] = i;
        for (int i = N - 1; i > 0; i--) {
            const int j = (int)tensor_rng_below(&r, (uint32_t)i + 1), t = ref[e][i];
            ref[e][i] = ref[e][j];
            ref[e][j] = t;
        }
    }
    for (int e = EPOCHS - 1; e >= 0; e--) {
        assert_ok(nn_fit_order(42, e, N, got));
        assert_true(is_permutation(got, N));
        assert_memory_equal(got, ref[e], sizeof got);
    }
    assert_true(memcmp(ref[0], ref[1], sizeof got) != 0);
    assert_ok(nn_fit_order(43, 1, N, got));
    assert_true(memcmp(got, ref[1], sizeof got) != 0);

    /* Shuffle off: the data set's order, as one hand-made batch. */
    nn_model *a = make_model(4), *b = make_model(4);
    optim *oa = make_adam(), *ob = make_adam();
    nn_dataset d;
    dataset_u8(&d, &train_set, 40);
    nn_fit_options o = nn_fit_defaults();
    o.shuffle = 0;
    o.batch = 40;
    assert_ok(nn_model_fit(a, oa, &d, &o, NULL));
    float x[40 * PIX];
    int labels[40];
    for (int i = 0; i < 40 * PIX; i++) x[i] = (float)train_set.images[i] * (1.0f / 255.0f);
    for (int i = 0; i < 40; i++) labels[i] = train_set.labels[i];
    tensor *t = tensor_wrap(x, 4, (int[]){40, SIDE, SIDE, 1});
    assert_ok(nn_model_train_step(b, ob, t, labels, NULL, NULL));
    tensor_free(t);
    assert_same_weights(a, b);
    optim_free(oa);
    optim_free(ob);
    nn_model_free(a);
    nn_model_free(b);
}

/* The same samples as bytes with byte or int labels, and as floats made
 * with the same x * scale + shift, train to the same bits. */
static void test_fit_input_types(void **state)
{
    (void)state;
    enum { N = 120 };
    const float scale = 1.0f / 128.0f, shift = -1.0f;
    static float images_f32[N * PIX];
    for (int i = 0; i < N * PIX; i++) images_f32[i] = (float)train_set.images[i] * scale + shift;
    nn_dataset val;
    assert_ok(nn_dataset_init_u8(&val, val_set.images, N_VAL, 3, in_shape, scale, shift));
    assert_ok(nn_dataset_set_labels_int(&val, val_set.labels_int));
    nn_history ref;
    nn_model *mref = NULL;
    for (int kind = 0; kind < 4; kind++) {
        nn_dataset d;
        if (kind < 2) assert_ok(nn_dataset_init_u8(&d, train_set.images, N, 3, in_shape, scale, shift));
        else assert_ok(nn_dataset_init_f32(&d, images_f32, N, 3, in_shape));
        if (kind % 2) assert_ok(nn_dataset_set_labels_int(&d, train_set.labels_int));
        else assert_ok(nn_dataset_set_labels_u8(&d, train_set.labels));
        nn_model *m = make_model(31);
        optim *opt = make_adam();
        nn_fit_options o = nn_fit_defaults();
        o.epochs = 2;
        o.batch = 25;
        o.shuffle_seed = 3;
        o.validation = &val;
        nn_history h;
        assert_ok(nn_model_fit(m, opt, &d, &o, &h));
        optim_free(opt);
        if (!mref) {
            mref = m;
            ref = h;
            continue;
        }
        assert_same_history(&ref, &h);
        assert_same_weights(mref, m);
        nn_history_free(&h);
        nn_model_free(m);
    }
    nn_history_free(&ref);
    nn_model_free(mref);
}

typedef struct cb_state {
    int stop_before, stop_after; /* epoch, or -1 */
    int set_epoch;               /* epoch whose lr is replaced, or -1 */
    float set_lr;
    int calls_before, calls_after;
    int fail;                    /* return this instead of continuing */
} cb_state;

static int callback(nn_fit_epoch *ev, void *user)
{
    cb_state *c = user;
    if (ev->end) {
        assert_int_equal(ev->history->epochs, ev->epoch + 1);
        assert_true(ev->history->lr[ev->epoch] == ev->lr);
        c->calls_after++;
        return ev->epoch == c->stop_after ? NN_FIT_STOP : NN_FIT_CONTINUE;
    }
    assert_int_equal(ev->history->epochs, ev->epoch);
    assert_non_null(ev->model);
    assert_non_null(ev->optim);
    c->calls_before++;
    if (c->fail) {
        nn_error(NN_ERR_IO, "saving checkpoint x.ckpt failed");
        return c->fail;
    }
    if (ev->epoch == c->set_epoch) ev->lr = c->set_lr;
    return ev->epoch == c->stop_before ? NN_FIT_STOP : NN_FIT_CONTINUE;
}

static nn_status fit_cb(cb_state *c, nn_history *h, optim **opt_out)
{
    nn_model *m = make_model(5);
    optim *opt = make_adam();
    nn_dataset d;
    dataset_u8(&d, &train_set, 64);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 5;
    o.lr_step = 1;
    o.lr_decay = 0.5f;
    o.on_epoch = callback;
    o.user = c;
    nn_status s = nn_model_fit(m, opt, &d, &o, h);
    nn_model_free(m);
    if (opt_out) *opt_out = opt;
    else optim_free(opt);
    return s;
}

static void test_fit_callback(void **state)
{
    (void)state;
    nn_history h;
    /* Stop before epoch 3: epochs 0..2 ran, each seen before and after. */
    cb_state c = {2, -1, -1, 0, 0, 0, 0};
    assert_ok(fit_cb(&c, &h, NULL));
    assert_int_equal(h.epochs, 2);
    assert_int_equal(c.calls_before, 3);
    assert_int_equal(c.calls_after, 2);
    nn_history_free(&h);
    /* Stop after epoch 0. */
    c = (cb_state){-1, 0, -1, 0, 0, 0, 0};
    assert_ok(fit_cb(&c, &h, NULL));
    assert_int_equal(h.epochs, 1);
    assert_int_equal(c.calls_after, 1);
    nn_history_free(&h);
    /* Replace epoch 1's rate; the others follow the schedule; the
     * optimizer keeps the last epoch's rate. */
    c = (cb_state){-1, -1, 1, 0.123f, 0, 0, 0};
    optim *opt;
    assert_ok(fit_cb(&c, &h, &opt));
    assert_int_equal(h.epochs, 5);
    assert_true(h.lr[0] == 0.01f && h.lr[1] == 0.123f && h.lr[2] == 0.0025f);
    assert_true(optim_get_lr(opt) == h.lr[4]);
    optim_free(opt);
    nn_history_free(&h);
    /* A rate the optimizer cannot take, and a failing callback. */
    c = (cb_state){-1, -1, 2, 0.0f, 0, 0, 0};
    assert_int_equal(fit_cb(&c, &h, NULL), NN_ERR_ARG);
    assert_error_contains("callback set lr to 0 before epoch 3");
    assert_int_equal(h.epochs, 2); /* the epochs completed are kept */
    nn_history_free(&h);
    c = (cb_state){-1, -1, -1, 0, 0, 0, -1};
    assert_int_equal(fit_cb(&c, &h, NULL), NN_ERR_STATE);
    assert_error_contains("callback returned -1 before epoch 1: saving checkpoint x.ckpt failed");
    assert_int_equal(h.epochs, 0);
    nn_history_free(&h);
}

static void test_predict_dataset(void **state)
{
    (void)state;
    enum { N = 50 };
    nn_model *m = make_model(9);
    optim *opt = make_adam();
    nn_dataset d;
    dataset_u8(&d, &train_set, N);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 2;
    assert_ok(nn_model_fit(m, opt, &d, &o, NULL));
    assert_int_equal(nn_model_output_size(m), CLASSES);
    static float raw[N * CLASSES], raw7[N * CLASSES], prob[N * CLASSES], sig[N * CLASSES];
    assert_ok(nn_model_predict_dataset(m, &d, N, NN_OUTPUT_RAW, raw, N * CLASSES));
    assert_ok(nn_model_predict_dataset(m, &d, 7, NN_OUTPUT_RAW, raw7, N * CLASSES));
    assert_ok(nn_model_predict_dataset(m, &d, 16, NN_OUTPUT_SOFTMAX, prob, N * CLASSES));
    assert_ok(nn_model_predict_dataset(m, &d, 16, NN_OUTPUT_SIGMOID, sig, N * CLASSES));
    /* One batch of all samples: nn_model_predict's logits, bit for bit. */
    float x[N * PIX];
    for (int i = 0; i < N * PIX; i++) x[i] = (float)train_set.images[i] * (1.0f / 255.0f);
    tensor *t = tensor_wrap(x, 4, (int[]){N, SIDE, SIDE, 1}), *logits;
    int correct;
    assert_ok(nn_model_predict(m, t, train_set.labels_int, &logits, NULL, &correct));
    assert_memory_equal(raw, logits->data, sizeof raw);
    tensor_free(t);
    int right = 0;
    for (int i = 0; i < N; i++) {
        double sum = 0.0;
        int best = 0, best_p = 0;
        for (int k = 0; k < CLASSES; k++) {
            const int j = i * CLASSES + k;
            assert_float_equal(raw7[j], raw[j], 1e-5f * (1.0f + fabsf(raw[j])));
            assert_float_equal(sig[j], 1.0f / (1.0f + expf(-raw[j])), 1e-6f);
            assert_true(prob[j] >= 0.0f && prob[j] <= 1.0f);
            sum += prob[j];
            if (raw[j] > raw[i * CLASSES + best]) best = k;
            if (prob[j] > prob[i * CLASSES + best_p]) best_p = k;
        }
        assert_float_equal(sum, 1.0, 1e-6);
        assert_int_equal(best, best_p);
        right += best == train_set.labels[i];
    }
    assert_int_equal(right, correct);
    double acc;
    assert_ok(nn_model_evaluate(m, &d, 13, NULL, NULL, &acc));
    assert_true(acc == (double)correct / N);
    optim_free(opt);
    nn_model_free(m);
}

/* Targets instead of labels: mean squared error against one-hot rows. */
static void test_fit_targets(void **state)
{
    (void)state;
    enum { N = 80 };
    static float onehot[N * CLASSES];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < CLASSES; k++) onehot[i * CLASSES + k] = train_set.labels[i] == k;
    nn_model *m = make_model(12);
    optim *opt = make_adam();
    nn_dataset d;
    assert_ok(nn_dataset_init_u8(&d, train_set.images, N, 3, in_shape, 1.0f / 255.0f, 0.0f));
    assert_ok(nn_dataset_set_targets(&d, onehot, CLASSES));
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 4;
    o.batch = 16;
    assert_ok(nn_loss_parse("mse", &o.loss));
    nn_history h;
    assert_ok(nn_model_fit(m, opt, &d, &o, &h));
    assert_true(h.train_loss[3] < h.train_loss[0]);
    assert_true(isnan(h.train_accuracy[0]));
    double loss;
    assert_ok(nn_model_evaluate(m, &d, 16, &o.loss, &loss, NULL));
    assert_true(loss > 0.0 && loss < h.train_loss[0]);
    /* Softmax cross-entropy needs labels, which d no longer has. */
    assert_int_equal(nn_model_evaluate(m, &d, 16, NULL, &loss, NULL), NN_ERR_ARG);
    assert_error_contains("d has no labels");
    nn_history_free(&h);
    optim_free(opt);
    nn_model_free(m);
}

#define EXPECT_ERR(call, needle)                                                        \
    do {                                                                                \
        nn_clear_error();                                                               \
        if ((call) == NN_OK) fail_msg("%s succeeded", #call);                           \
        assert_error_contains(needle);                                                  \
    } while (0)

static void test_bad_arguments(void **state)
{
    (void)state;
    nn_dataset d, bad;
    const int shape2[2] = {SIDE, SIDE}, zero_ext[3] = {SIDE, 0, 1};
    memset(&bad, 0, sizeof bad);
    EXPECT_ERR(nn_dataset_init_u8(NULL, train_set.images, 4, 3, in_shape, 1, 0), "d (the data set");
    EXPECT_ERR(nn_dataset_init_u8(&d, NULL, 4, 3, in_shape, 1, 0), "nn_dataset_init_u8: images is NULL");
    EXPECT_ERR(nn_dataset_init_f32(&d, NULL, 4, 3, in_shape), "nn_dataset_init_f32: images is NULL");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 0, 3, in_shape, 1, 0), "n must be >= 1, but got 0");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 0, in_shape, 1, 0), "rank must be in [1, 5]");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 6, in_shape, 1, 0), "but got 6");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 3, NULL, 1, 0), "shape is NULL");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 3, zero_ext, 1, 0), "shape[1] must be >= 1");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 3, in_shape, NAN, 0), "scale must be finite");
    EXPECT_ERR(nn_dataset_init_u8(&d, train_set.images, 4, 3, in_shape, 1, INFINITY), "shift must be finite");
    EXPECT_ERR(nn_dataset_set_labels_u8(&bad, train_set.labels), "d is not initialised");
    EXPECT_ERR(nn_dataset_set_labels_u8(NULL, train_set.labels), "nn_dataset_set_labels_u8: d is NULL");
    dataset_u8(&d, &train_set, 10);
    EXPECT_ERR(nn_dataset_set_labels_u8(&d, NULL), "labels is NULL");
    EXPECT_ERR(nn_dataset_set_labels_int(&d, NULL), "labels is NULL");
    int neg[10] = {0, 1, 2, -3};
    EXPECT_ERR(nn_dataset_set_labels_int(&d, neg), "labels[3] is -3");
    EXPECT_ERR(nn_dataset_set_targets(&d, NULL, 4), "targets is NULL");
    float tg[40] = {0};
    EXPECT_ERR(nn_dataset_set_targets(&d, tg, 0), "target_size must be");
    nn_dataset sub;
    EXPECT_ERR(nn_dataset_subset(&d, 10, 1, &sub), "start must be in [0, 10), but got 10");
    EXPECT_ERR(nn_dataset_subset(&d, 4, 7, &sub), "n must be in [1, 6] from start 4, but got 7");
    EXPECT_ERR(nn_dataset_subset(&d, 0, 1, NULL), "out is NULL");
    assert_ok(nn_dataset_subset(&d, 4, 6, &sub));
    assert_true(sub.n == 6 && sub.images_u8 == train_set.images + 4 * PIX && sub.labels_u8 == train_set.labels + 4);

    nn_model *m = make_model(1), *unbuilt = nn_model_create(1);
    optim *opt = make_adam();
    nn_fit_options o = nn_fit_defaults();
    EXPECT_ERR(nn_model_fit(NULL, opt, &d, &o, NULL), "nn_model_fit: m (the model) is NULL");
    EXPECT_ERR(nn_model_fit(unbuilt, opt, &d, &o, NULL), "nn_model_fit: build the model first");
    EXPECT_ERR(nn_model_fit(m, NULL, &d, &o, NULL), "opt (the optimizer) is NULL");
    EXPECT_ERR(nn_model_fit(m, opt, NULL, &o, NULL), "nn_model_fit: train is NULL");
    EXPECT_ERR(nn_model_fit(m, opt, &bad, &o, NULL), "train is not initialised");
    struct { nn_fit_options o; const char *needle; } cases[10];
    int nc = 0;
    for (int i = 0; i < 10; i++) cases[i].o = nn_fit_defaults();
    cases[nc].o.epochs = 0, cases[nc++].needle = "options.epochs must be >= 1, but got 0";
    cases[nc].o.batch = -2, cases[nc++].needle = "options.batch must be >= 1, but got -2";
    cases[nc].o.shuffle = 2, cases[nc++].needle = "options.shuffle must be 0 or 1, but got 2";
    cases[nc].o.lr = -1.0f, cases[nc++].needle = "options.lr must be";
    cases[nc].o.lr = NAN, cases[nc++].needle = "options.lr must be";
    cases[nc].o.lr_decay = 0.0f, cases[nc++].needle = "options.lr_decay must be a finite number > 0";
    cases[nc].o.lr_step = -1, cases[nc++].needle = "options.lr_step must be >= 0";
    cases[nc].o.loss.kind = (nn_loss_kind)7, cases[nc++].needle = "loss.kind 7";
    cases[nc].o.loss.kind = NN_LOSS_MEAN_SQUARED_ERROR, cases[nc].o.loss.label_smoothing = 0.1f,
    cases[nc++].needle = "label_smoothing applies to sparse_categorical_crossentropy only";
    cases[nc].o.epochs = 200, cases[nc].o.lr_step = 1, cases[nc].o.lr_decay = 0.1f,
    cases[nc++].needle = "falls below FLT_MIN at epoch 37 of 200";
    for (int i = 0; i < nc; i++) EXPECT_ERR(nn_model_fit(m, opt, &d, &cases[i].o, NULL), cases[i].needle);

    nn_dataset flat, unlabelled, big_label;
    assert_ok(nn_dataset_init_u8(&flat, train_set.images, 10, 2, shape2, 1, 0));
    assert_ok(nn_dataset_set_labels_u8(&flat, train_set.labels));
    EXPECT_ERR(nn_model_fit(m, opt, &flat, &o, NULL), "train has samples of shape (6, 6), the model takes (6, 6, 1)");
    o.validation = &flat;
    EXPECT_ERR(nn_model_fit(m, opt, &d, &o, NULL), "options.validation has samples of shape (6, 6)");
    o.validation = NULL;
    assert_ok(nn_dataset_init_u8(&unlabelled, train_set.images, 10, 3, in_shape, 1, 0));
    EXPECT_ERR(nn_model_fit(m, opt, &unlabelled, &o, NULL), "train has no labels");
    uint8_t labels[10] = {0, 1, 2, 3, 0, 1, 9};
    assert_ok(nn_dataset_init_u8(&big_label, train_set.images, 10, 3, in_shape, 1, 0));
    assert_ok(nn_dataset_set_labels_u8(&big_label, labels));
    EXPECT_ERR(nn_model_fit(m, opt, &big_label, &o, NULL), "train label 9 (sample 6) is outside [0, 4)");
    assert_ok(nn_dataset_set_targets(&unlabelled, tg, 3));
    o.loss.kind = NN_LOSS_MEAN_SQUARED_ERROR;
    EXPECT_ERR(nn_model_fit(m, opt, &unlabelled, &o, NULL), "train has 3 targets per sample, the model outputs 4");
    EXPECT_ERR(nn_model_fit(m, opt, &d, &o, NULL), "train has no targets, which loss mean_squared_error needs");
    o.loss.kind = NN_LOSS_SOFTMAX_CROSS_ENTROPY;
    /* A rejected call left the history empty and the model untouched. */
    nn_history h;
    EXPECT_ERR(nn_model_fit(m, opt, &big_label, &o, &h), "outside [0, 4)");
    assert_int_equal(h.epochs, 0);
    assert_null(h.lr);
    assert_int_equal(opt->t, 0);

    double loss;
    EXPECT_ERR(nn_model_evaluate(m, &d, 0, NULL, &loss, NULL), "nn_model_evaluate: batch must be >= 1, but got 0");
    EXPECT_ERR(nn_model_evaluate(m, NULL, 4, NULL, &loss, NULL), "nn_model_evaluate: d is NULL");
    EXPECT_ERR(nn_model_evaluate(unbuilt, &d, 4, NULL, &loss, NULL), "build the model first");
    float out[40];
    EXPECT_ERR(nn_model_predict_dataset(m, &d, 4, (nn_output)5, out, 40), "kind must be NN_OUTPUT_RAW");
    EXPECT_ERR(nn_model_predict_dataset(m, &d, 4, NN_OUTPUT_RAW, NULL, 40), "out is NULL");
    EXPECT_ERR(nn_model_predict_dataset(m, &d, 4, NN_OUTPUT_RAW, out, 39),
               "out_count must be 10 samples x 4 outputs = 40, but got 39");
    EXPECT_ERR(nn_model_predict_dataset(m, &d, -1, NN_OUTPUT_RAW, out, 40), "batch must be >= 1");
    EXPECT_ERR(nn_model_predict_dataset(m, &flat, 4, NN_OUTPUT_RAW, out, 40), "d has samples of shape (6, 6)");
    assert_ok(nn_model_predict_dataset(m, &unlabelled, 4, NN_OUTPUT_RAW, out, 40));
    assert_int_equal(nn_model_output_size(unbuilt), 0);
    int order[4];
    EXPECT_ERR(nn_fit_order(1, 0, 4, NULL), "nn_fit_order: order is NULL");
    EXPECT_ERR(nn_fit_order(1, 0, 0, order), "n must be >= 1, but got 0");
    EXPECT_ERR(nn_fit_order(1, -1, 4, order), "epoch must be >= 0, but got -1");
    optim_free(opt);
    nn_model_free(m);
    nn_model_free(unbuilt);
}

/* ---- the transform, batch callback and initial_epoch options ---- */

typedef struct transform_state {
    int calls[3][N_TRAIN]; /* per epoch, per sample */
    int fail_at;           /* call count at which to fail, or -1 */
    int total;
} transform_state;

/* Inverts the sample (x -> 1 - x) and counts the call. */
static int invert(float *x, const nn_dataset *d, int index, int epoch, void *user)
{
    transform_state *t = user;
    assert_int_equal(d->n, 60);
    if (t->total++ == t->fail_at) {
        nn_error(NN_ERR_ARG, "no such augmentation");
        return 7;
    }
    t->calls[epoch][index]++;
    for (size_t j = 0; j < d->sample_size; j++) x[j] = 1.0f - x[j];
    return 0;
}

/* Training through a transform equals training on the transformed samples
 * stored as floats, bit for bit; the transform sees every training sample
 * once per epoch with its own index, and no validation sample; a failing
 * transform stops the run naming the sample and keeps its message. */
static void test_fit_transform(void **state)
{
    (void)state;
    enum { N = 60 };
    static float inverted[N * PIX];
    for (int i = 0; i < N * PIX; i++) inverted[i] = 1.0f - (float)train_set.images[i] * (1.0f / 255.0f);
    nn_dataset d, df, val;
    dataset_u8(&d, &train_set, N);
    assert_ok(nn_dataset_init_f32(&df, inverted, N, 3, in_shape));
    assert_ok(nn_dataset_set_labels_u8(&df, train_set.labels));
    dataset_u8(&val, &val_set, 20);
    static transform_state t;
    memset(&t, 0, sizeof t);
    t.fail_at = -1;
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 3;
    o.batch = 16;
    o.shuffle_seed = 3;
    o.validation = &val;
    o.transform = invert;
    o.user = &t;
    nn_model *a = make_model(6), *b = make_model(6);
    optim *oa = make_adam(), *ob = make_adam();
    nn_history ha, hb;
    assert_ok(nn_model_fit(a, oa, &d, &o, &ha));
    for (int e = 0; e < 3; e++)
        for (int i = 0; i < N; i++) assert_int_equal(t.calls[e][i], 1);
    assert_int_equal(t.total, 3 * N);
    o.transform = NULL;
    assert_ok(nn_model_fit(b, ob, &df, &o, &hb));
    assert_memory_equal(ha.train_loss, hb.train_loss, 3 * sizeof(double));
    assert_memory_equal(ha.train_accuracy, hb.train_accuracy, 3 * sizeof(double));
    assert_same_weights(a, b);
    /* Validation is of the samples as they are: as evaluating them after. */
    double loss;
    assert_ok(nn_model_evaluate(a, &val, 16, NULL, &loss, NULL));
    assert_true(loss == ha.val_loss[2]);
    nn_history_free(&ha);
    nn_history_free(&hb);

    memset(&t, 0, sizeof t);
    t.fail_at = N + 5; /* in epoch 2 */
    o.transform = invert;
    assert_int_equal(nn_model_fit(a, oa, &d, &o, &ha), NN_ERR_STATE);
    assert_error_contains("the transform returned 7 for sample");
    assert_error_contains("in epoch 2: no such augmentation");
    assert_int_equal(ha.epochs, 1);
    nn_history_free(&ha);
    optim_free(oa);
    optim_free(ob);
    nn_model_free(a);
    nn_model_free(b);
}

typedef struct batch_state {
    int calls, fail_at;
    nn_fit_batch last[4]; /* the last event of each epoch */
    double loss_sum;      /* of this epoch, from the batch losses */
} batch_state;

static int on_batch(const nn_fit_batch *ev, void *user)
{
    batch_state *c = user;
    if (c->calls++ == c->fail_at) {
        nn_error(NN_ERR_IO, "log.jsonl: disk full");
        return -2;
    }
    if (ev->batch == 0) c->loss_sum = 0.0;
    c->loss_sum += (double)ev->loss * ev->size;
    assert_true(ev->loss_mean == c->loss_sum / ev->seen);
    assert_true(ev->correct >= 0 && ev->correct <= ev->size);
    c->last[ev->epoch] = *ev;
    return NN_FIT_CONTINUE;
}

/* The batch callback runs after every batch with running means that end at
 * the history's entry; a failing one stops the run with its message. */
static void test_fit_batch_callback(void **state)
{
    (void)state;
    enum { N = 100, B = 24 }; /* 5 batches, the last of 4 */
    nn_dataset d;
    dataset_u8(&d, &train_set, N);
    batch_state c;
    memset(&c, 0, sizeof c);
    c.fail_at = -1;
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 3;
    o.batch = B;
    o.on_batch = on_batch;
    o.user = &c;
    nn_model *m = make_model(9);
    optim *opt = make_adam();
    nn_history h;
    assert_ok(nn_model_fit(m, opt, &d, &o, &h));
    assert_int_equal(c.calls, 3 * 5);
    for (int e = 0; e < 3; e++) {
        const nn_fit_batch *l = &c.last[e];
        assert_int_equal(l->epoch, e);
        assert_int_equal(l->batch, 4);
        assert_int_equal(l->batches, 5);
        assert_int_equal(l->size, 4);
        assert_int_equal(l->seen, N);
        assert_true(l->loss_mean == h.train_loss[e]);
        assert_true(l->accuracy == h.train_accuracy[e]);
    }
    nn_history_free(&h);
    memset(&c, 0, sizeof c);
    c.fail_at = 7; /* epoch 2, batch 3 */
    EXPECT_ERR(nn_model_fit(m, opt, &d, &o, &h), "batch callback returned -2 after epoch 2, batch 3 of 5");
    assert_error_contains("log.jsonl: disk full");
    assert_int_equal(h.epochs, 1);
    nn_history_free(&h);
    optim_free(opt);
    nn_model_free(m);
}

static int keep_order_state(nn_fit_epoch *ev, void *user)
{
    if (ev->end) *(tensor_rng *)user = ev->order_state;
    return NN_FIT_CONTINUE;
}

/* 2 epochs, then initial_epoch 2 of 4 on the same model and optimizer, is
 * the 4-epoch run bit for bit, with the data order replayed from the seed
 * or passed back from the epoch callback; the history holds epochs 2 and 3;
 * another order state diverges. */
static void test_fit_initial_epoch(void **state)
{
    (void)state;
    nn_dataset d, val;
    dataset_u8(&d, &train_set, 120);
    dataset_u8(&val, &val_set, 40);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = 4;
    o.batch = 32;
    o.shuffle_seed = 17;
    o.validation = &val;
    o.lr = 0.01f; /* a resume must name the base rate: the optimizer holds epoch 1's */
    o.lr_step = 1;
    o.lr_decay = 0.5f;
    nn_model *a = make_model(2);
    optim *oa = make_adam();
    nn_history ha;
    assert_ok(nn_model_fit(a, oa, &d, &o, &ha));
    assert_int_equal(ha.initial_epoch, 0);
    for (int variant = 0; variant < 3; variant++) {
        nn_model *b = make_model(2);
        optim *ob = make_adam();
        tensor_rng saved;
        nn_fit_options first = o;
        first.epochs = 2;
        first.on_epoch = keep_order_state;
        first.user = &saved;
        assert_ok(nn_model_fit(b, ob, &d, &first, NULL));
        nn_fit_options rest = o;
        rest.initial_epoch = 2;
        if (variant == 1) rest.order_state = &saved;
        if (variant == 2) {
            tensor_rng_seed(&saved, 1);
            rest.order_state = &saved;
        }
        nn_history hb;
        assert_ok(nn_model_fit(b, ob, &d, &rest, &hb));
        assert_int_equal(hb.epochs, 2);
        assert_int_equal(hb.initial_epoch, 2);
        assert_true(hb.lr[0] == ha.lr[2] && hb.lr[1] == ha.lr[3]);
        if (variant < 2) {
            assert_memory_equal(hb.train_loss, ha.train_loss + 2, 2 * sizeof(double));
            assert_memory_equal(hb.val_loss, ha.val_loss + 2, 2 * sizeof(double));
            assert_same_weights(a, b);
        } else if (!memcmp(a->params, b->params, a->n_params * sizeof(float))) {
            fail_msg("another data order still gave the same weights");
        }
        nn_history_free(&hb);
        optim_free(ob);
        nn_model_free(b);
    }
    nn_history_free(&ha);
    o.initial_epoch = 4;
    EXPECT_ERR(nn_model_fit(a, oa, &d, &o, NULL), "options.initial_epoch must be in [0, options.epochs = 4), but got 4");
    o.initial_epoch = -1;
    EXPECT_ERR(nn_model_fit(a, oa, &d, &o, NULL), "but got -1");
    /* The rate check names the first epoch that runs (a run from epoch 0
     * is refused at epoch 37, test_bad_arguments)... */
    o.validation = NULL;
    o.epochs = 200;
    o.lr_decay = 0.1f;
    o.initial_epoch = 150;
    EXPECT_ERR(nn_model_fit(a, oa, &d, &o, NULL), "falls below FLT_MIN at epoch 151 of 200");
    /* ... and a huge rate makes the loss non-finite, naming the batch. */
    o.epochs = 2;
    o.initial_epoch = 1;
    o.lr = 1e30f;
    o.lr_step = 0;
    assert_int_equal(nn_model_fit(a, oa, &d, &o, NULL), NN_ERR_NUMERIC);
    assert_error_contains("nn_model_fit: epoch 2, batch ");
    assert_error_contains("the loss is not finite");
    optim_free(oa);
    nn_model_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_learns),
        cmocka_unit_test(test_fit_threads_identical),
        cmocka_unit_test(test_fit_equals_manual_loop),
        cmocka_unit_test(test_fit_order),
        cmocka_unit_test(test_fit_input_types),
        cmocka_unit_test(test_fit_callback),
        cmocka_unit_test(test_predict_dataset),
        cmocka_unit_test(test_fit_targets),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_fit_transform),
        cmocka_unit_test(test_fit_batch_callback),
        cmocka_unit_test(test_fit_initial_epoch),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
