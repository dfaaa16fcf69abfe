/* End-to-end training on a toy problem, the fused softmax cross-entropy, and
 * thread-count invariance.
 *
 * Data: two interleaved spirals (200 points, 1.75 turns each), which no
 * linear model separates. An MLP 2-32-32-2 trained with Adam on the full
 * batch must reach 100% training accuracy; with element-wise dropout it must
 * still fit the data. Training the same seed with 1 and with 2 threads must
 * give bit-identical weights (memcmp of the parameter block), with sizes
 * large enough that the OpenMP loops of relu, dropout and Adam do split.
 * Not covered here: convolutional models (the MNIST example). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define PER_CLASS 100
#define POINTS (2 * PER_CLASS)
#define PI 3.14159265358979323846

static void make_spirals(tensor **x, int *labels)
{
    int shape[2] = {POINTS, 2};
    *x = tensor_create(2, shape);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < PER_CLASS; i++) {
            const double f = (double)i / PER_CLASS;
            const double r = 0.1 + 0.9 * f, t = 1.75 * 2 * PI * f + c * PI;
            const int k = c * PER_CLASS + i;
            (*x)->data[2 * k] = (float)(r * cos(t));
            (*x)->data[2 * k + 1] = (float)(r * sin(t));
            labels[k] = c;
        }
}

static int eval_correct(nn_model *m, tensor *x, const int *labels, double *loss)
{
    int correct = 0;
    double sum = 0;
    assert_ok(nn_model_predict(m, x, labels, NULL, &sum, &correct));
    if (loss) *loss = sum / x->shape[0];
    return correct;
}

static void test_spirals_to_100_percent(void **state)
{
    (void)state;
    tensor *x;
    int labels[POINTS];
    make_spirals(&x, labels);
    nn_model *m = test_make_model("dense units=32 activation=relu\n"
                                  "dense units=32 activation=relu\n"
                                  "dense units=2\n", 1, (int[]){2}, 2024);
    optim *opt = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    int step, correct = 0;
    float loss = 0;
    for (step = 1; step <= 5000; step++) {
        assert_ok(nn_model_train_step(m, opt, x, labels, &loss, NULL));
        if (step % 50 == 0 && (correct = eval_correct(m, x, labels, NULL)) == POINTS) break;
    }
    double eval_loss;
    correct = eval_correct(m, x, labels, &eval_loss);
    printf("    two spirals: %d/%d correct after %d Adam steps (loss %.4f)\n", correct, POINTS, step,
           eval_loss);
    assert_int_equal(correct, POINTS);
    /* A linear model cannot do this: the task needs the hidden layers. */
    nn_model *lin = test_make_model("dense units=2\n", 1, (int[]){2}, 2024);
    optim *opt2 = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    for (int s = 0; s < 1000; s++) assert_ok(nn_model_train_step(lin, opt2, x, labels, NULL, NULL));
    const int lin_correct = eval_correct(lin, x, labels, NULL);
    printf("    a linear model gets %d/%d\n", lin_correct, POINTS);
    assert_true(lin_correct < 0.8 * POINTS);
    optim_free(opt2);
    nn_model_free(lin);
    optim_free(opt);
    nn_model_free(m);
    tensor_free(x);
}

static void test_spirals_with_dropout(void **state)
{
    (void)state;
    tensor *x;
    int labels[POINTS];
    make_spirals(&x, labels);
    nn_model *m = test_make_model("dense units=64 activation=relu\n"
                                  "dropout rate=0.1\n"
                                  "dense units=64 activation=relu\n"
                                  "dropout rate=0.1\n"
                                  "dense units=2\n", 1, (int[]){2}, 7);
    optim *opt = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    double loss0;
    eval_correct(m, x, labels, &loss0);
    for (int s = 0; s < 3000; s++) assert_ok(nn_model_train_step(m, opt, x, labels, NULL, NULL));
    double loss;
    const int correct = eval_correct(m, x, labels, &loss);
    printf("    with dropout 0.1: %d/%d correct after 3000 steps, loss %.4f -> %.4f\n", correct,
           POINTS, loss0, loss);
    assert_true(correct >= 0.99 * POINTS);
    assert_true(loss < loss0 / 10);
    /* The layers really dropped: a training forward differs from eval. */
    tensor *yt, *ye;
    nn_graph_reset(nn_model_graph(m));
    assert_ok(nn_model_forward(m, x, &yt, NN_MODE_TRAIN));
    assert_ok(nn_model_forward(m, x, &ye, NN_MODE_EVAL));
    assert_true(memcmp(yt->data, ye->data, yt->size * sizeof(float)) != 0);
    optim_free(opt);
    nn_model_free(m);
    tensor_free(x);
}

/* --- the loss --------------------------------------------------------------- */

static void test_cross_entropy_large_logits(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    int shape[2] = {3, 2};
    tensor *z = tensor_create(2, shape);
    const float v[6] = {1e4f, -1e4f, -1e4f, 1e4f, 1e4f, -1e4f};
    memcpy(z->data, v, sizeof v);
    test_require_grad(z);
    const int labels[3] = {0, 0, 1};
    tensor *loss;
    int correct = -1;
    assert_ok(nn_op_softmax_cross_entropy(g, z, labels, &loss, &correct));
    /* Row losses 0, 2e4 and 2e4 exactly (exp(-2e4) underflows to 0). */
    assert_true(isfinite(loss->data[0]));
    assert_true(loss->data[0] == (float)(40000.0 / 3));
    assert_int_equal(correct, 1);
    assert_ok(nn_graph_backward(g, loss));
    const float t = 1.0f / 3.0f;
    const float want[6] = {0, 0, -t, t, t, -t}; /* (softmax - onehot) / N */
    for (int i = 0; i < 6; i++)
        if (z->grad[i] != want[i]) fail_msg("dz[%d] = %.9g, expected %.9g", i, (double)z->grad[i], (double)want[i]);

    /* Moderate logits against the formula in double. */
    nn_graph_reset(g);
    int s13[2] = {2, 3};
    tensor *m = tensor_create(2, s13);
    const float mv[6] = {1, 2, 3, -0.5f, 0.25f, 0.25f};
    memcpy(m->data, mv, sizeof mv);
    const int ml[2] = {0, 2};
    assert_ok(nn_op_softmax_cross_entropy(g, m, ml, &loss, &correct));
    const double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 1.0;
    const double l1 = log(exp(-0.5) + 2 * exp(0.25)) - 0.25;
    assert_float_equal(loss->data[0], (l0 + l1) / 2, 1e-6 * (l0 + l1) / 2);
    assert_int_equal(correct, 0); /* row 2 ties between classes 1 and 2: the first wins */

    /* Ties: the first maximum is the prediction. */
    nn_graph_reset(g);
    int s12[2] = {1, 2};
    tensor *tie = tensor_create(2, s12);
    tie->data[0] = tie->data[1] = 5.0f;
    const int l_first = 0, l_second = 1;
    assert_ok(nn_op_softmax_cross_entropy(g, tie, &l_first, &loss, &correct));
    assert_int_equal(correct, 1);
    assert_float_equal(loss->data[0], log(2.0), 1e-7);
    assert_ok(nn_op_softmax_cross_entropy(g, tie, &l_second, &loss, &correct));
    assert_int_equal(correct, 0);

    /* A loss float cannot hold is an error, not an Inf. */
    nn_graph_reset(g);
    tie->data[0] = 3e38f;
    tie->data[1] = -3e38f;
    assert_int_equal(nn_op_softmax_cross_entropy(g, tie, &l_second, &loss, NULL), NN_ERR_NUMERIC);
    assert_error_contains("softmax_cross_entropy: loss is inf");
    tie->data[0] = NAN;
    assert_int_equal(nn_op_softmax_cross_entropy(g, tie, &l_first, &loss, NULL), NN_ERR_NUMERIC);
    tensor_free(tie);
    tensor_free(m);
    tensor_free(z);
    nn_graph_free(g);
}

/* --- thread-count invariance ------------------------------------------------ */

/* Trains a model wide enough that relu (N*384 > 65536 elements), dropout and
 * Adam run their OpenMP loops split across threads, and OpenBLAS splits its
 * GEMMs. Returns a copy of the parameters; losses[] gets each step's loss. */
static float *train_wide(int threads, float *losses, int steps, size_t *n)
{
    assert_ok(nn_set_threads(threads));
    assert_int_equal(nn_get_threads(), threads);
    tensor *x;
    int labels[POINTS];
    make_spirals(&x, labels);
    nn_model *m = test_make_model("dense units=384\nrelu\ndropout rate=0.2\n"
                                  "dense units=384 activation=relu\ndropout rate=0.3\n"
                                  "dense units=2\n", 1, (int[]){2}, 99);
    optim *opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    for (int s = 0; s < steps; s++) assert_ok(nn_model_train_step(m, opt, x, labels, &losses[s], NULL));
    *n = m->n_params;
    float *copy = malloc(m->n_params * sizeof(float));
    memcpy(copy, m->params, m->n_params * sizeof(float));
    optim_free(opt);
    nn_model_free(m);
    tensor_free(x);
    return copy;
}

/* Trains with 1 and then 2 threads and checks that parameters and losses
 * are identical bit for bit; loss1 receives the 1-thread losses. */
typedef float *(*train_fn)(int threads, float *losses, int steps, size_t *n);
static void check_threads(train_fn train, int steps, float *loss1, const char *what)
{
    const int saved = nn_get_threads();
    float loss2[16];
    assert_true(steps <= 16);
    size_t n1, n2;
    float *w1 = train(1, loss1, steps, &n1);
    float *w2 = train(2, loss2, steps, &n2);
    assert_int_equal(n1, n2);
    size_t differ = 0;
    for (size_t i = 0; i < n1; i++) differ += memcmp(&w1[i], &w2[i], sizeof(float)) != 0;
    printf("    %zu parameters (%s) after %d steps: %zu differ between 1 and 2 threads; "
           "loss %.6f -> %.6f\n",
           n1, what, steps, differ, (double)loss1[0], (double)loss1[steps - 1]);
    free(w1);
    free(w2);
    assert_ok(nn_set_threads(saved));
    assert_int_equal(differ, 0);
    assert_memory_equal(loss1, loss2, (size_t)steps * sizeof *loss1);
}

static void test_threads_bit_identical(void **state)
{
    (void)state;
    enum { STEPS = 12 };
    float loss1[STEPS];
    check_threads(train_wide, STEPS, loss1, "wide MLP");
    assert_true(loss1[STEPS - 1] < loss1[0]);
}

/* GEMMs with a reduction longer than OpenBLAS's K block (1500 inputs): the
 * threaded and serial paths of OpenBLAS split K differently, which the dense
 * layer must not let through. The shapes are ones where a single GEMM call
 * does give different results with 1 and 2 threads. */
static float *train_long_k(int threads, float *losses, int steps, size_t *n)
{
    enum { BATCH = 333, IN = 1500 };
    assert_ok(nn_set_threads(threads));
    int xs[2] = {BATCH, IN};
    tensor *x = tensor_create(2, xs);
    tensor_rng rng;
    tensor_rng_seed(&rng, 31);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    int labels[BATCH];
    for (int i = 0; i < BATCH; i++) labels[i] = (int)tensor_rng_below(&rng, 5);
    nn_model *m = nn_model_create(5);
    assert_ok(nn_model_add_spec(m, "dense units=77 activation=relu\ndense units=5\n"));
    int in[1] = {IN};
    assert_ok(nn_model_build(m, 1, in));
    optim *opt = optim_sgd_create(0.01f, 0.9f, 0, 0.0f);
    for (int s = 0; s < steps; s++) assert_ok(nn_model_train_step(m, opt, x, labels, &losses[s], NULL));
    *n = m->n_params;
    float *copy = malloc(m->n_params * sizeof(float));
    memcpy(copy, m->params, m->n_params * sizeof(float));
    optim_free(opt);
    nn_model_free(m);
    tensor_free(x);
    return copy;
}

static void test_threads_long_reduction(void **state)
{
    (void)state;
    enum { STEPS = 4 };
    float loss1[STEPS];
    check_threads(train_long_k, STEPS, loss1, "1500 inputs");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spirals_to_100_percent),
        cmocka_unit_test(test_spirals_with_dropout),
        cmocka_unit_test(test_cross_entropy_large_logits),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_threads_long_reduction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
