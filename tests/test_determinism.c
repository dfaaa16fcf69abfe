/* Thread-count invariance: the same seed gives bit-identical results with 1
 * and 2 threads (nn_set_threads, which sets OpenMP and OpenBLAS together).
 * Covered, each compared with memcmp:
 *  - the spatial dropout kernels, both data formats: output, mask, backward;
 *  - spatial_dropout2d, dropout, conv2d and batchnorm as layers: output,
 *    the input's gradient, every parameter's gradient, and (batchnorm) the
 *    moving statistics, after a training forward and backward;
 *  - a few training steps of the default MNIST network
 *    (examples/mnist_cnn.txt), of a residual network (a skip connection
 *    joined by add, a side branch joined by concatenate) and of the
 *    Fashion-MNIST residual network (examples/fashion_resnet.txt) on
 *    synthetic 28x28 images: the whole parameter block and the Adam moments.
 * Sizes are above the thresholds where the loops go parallel, so the two
 * runs really split the work differently. (tests/test_mnist_train.c runs a
 * small copy of the network over whole epochs with 1 and 2 threads too.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

static int threads_at_start;

static void set_threads(int n)
{
    assert_ok(nn_set_threads(n));
    assert_int_equal(nn_get_threads(), n);
}

static float *random_floats(size_t n, uint64_t seed)
{
    float *p = malloc(n * sizeof(float));
    tensor_rng r;
    tensor_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * tensor_rng_uniform(&r) - 1.0f;
    return p;
}

/* ---- the raw kernels ------------------------------------------------------- */

static void test_spatial_dropout_kernels(void **state)
{
    (void)state;
    enum { N = 16, C = 32 };
    const long HW = 24 * 24; /* N*C*HW = 294912 elements, far above the parallel threshold */
    const size_t total = (size_t)N * C * (size_t)HW;
    float *x = random_floats(total, 1), *dy = random_floats(total, 2);
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = f ? NN_CHANNELS_FIRST : NN_CHANNELS_LAST;
        float *y[2], *dx[2];
        uint8_t *mask[2];
        for (int k = 0; k < 2; k++) {
            set_threads(k + 1);
            y[k] = malloc(total * sizeof(float));
            dx[k] = calloc(total, sizeof(float));
            mask[k] = malloc((size_t)N * C);
            assert_ok(nn_spatial_dropout_forward(y[k], mask[k], x, N, C, HW, fmt, 0.3f, 42, 7));
            assert_ok(nn_spatial_dropout_backward(dx[k], mask[k], dy, N, C, HW, fmt, 0.3f));
        }
        int dropped = 0;
        for (int i = 0; i < N * C; i++) dropped += !mask[0][i];
        assert_true(dropped > 0 && dropped < N * C);
        assert_memory_equal(mask[0], mask[1], (size_t)N * C);
        assert_memory_equal(y[0], y[1], total * sizeof(float));
        assert_memory_equal(dx[0], dx[1], total * sizeof(float));
        /* The mask alone, drawn by its own kernel, is the same too. */
        uint8_t *m2 = malloc((size_t)N * C);
        set_threads(2);
        assert_ok(nn_spatial_dropout_mask(m2, N, C, 0.3f, 42, 7));
        assert_memory_equal(m2, mask[0], (size_t)N * C);
        free(m2);
        for (int k = 0; k < 2; k++) {
            free(y[k]);
            free(dx[k]);
            free(mask[k]);
        }
    }
    free(x);
    free(dy);
}

/* ---- layers: forward + backward through the graph -------------------------- */

typedef struct {
    float *y, *dx, *params; /* params: every parameter's grad, then every buffer's value */
    size_t ny, nx, np;
} run;

static void run_free(run *r)
{
    free(r->y);
    free(r->dx);
    free(r->params);
}

static void run_layer(const char *type, const char *cfg, int rank, const int *shape, int N,
                      int threads, run *r)
{
    set_threads(threads);
    nn_layer *l = nn_layer_create(type, cfg);
    assert_non_null(l);
    assert_ok(nn_layer_build(l, rank, shape));
    assert_ok(nn_layer_alloc_params(l, 5));
    int xs[TENSOR_MAX_RANK];
    xs[0] = N;
    for (int i = 0; i < rank; i++) xs[i + 1] = shape[i];
    tensor *x = tensor_create(rank + 1, xs);
    float *src = random_floats(x->size, 3);
    memcpy(x->data, src, x->size * sizeof(float));
    free(src);
    test_require_grad(x);
    nn_graph *g = nn_graph_create(0);
    tensor *y = NULL, *loss = NULL;
    l->calls = 3; /* any step; the same in both runs */
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    float *wdata = random_floats(y->size, 4);
    tensor *w = tensor_wrap(wdata, y->rank, y->shape);
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    r->ny = y->size;
    r->y = malloc(r->ny * sizeof(float));
    memcpy(r->y, y->data, r->ny * sizeof(float));
    r->nx = x->size;
    r->dx = malloc(r->nx * sizeof(float));
    memcpy(r->dx, x->grad, r->nx * sizeof(float));
    r->np = 0;
    for (int i = 0; i < l->n_params; i++) r->np += l->params[i].t->size;
    r->params = malloc(r->np * sizeof(float) + 1);
    size_t at = 0;
    for (int i = 0; i < l->n_params; i++) {
        const tensor *p = l->params[i].t;
        memcpy(r->params + at, l->params[i].trainable ? p->grad : p->data, p->size * sizeof(float));
        at += p->size;
    }
    tensor_free(w);
    free(wdata);
    tensor_free(x);
    nn_graph_free(g);
    nn_layer_free(l);
}

static void check_layer(const char *type, const char *cfg, int rank, const int *shape, int N)
{
    run a, b;
    run_layer(type, cfg, rank, shape, N, 1, &a);
    run_layer(type, cfg, rank, shape, N, 2, &b);
    assert_int_equal(a.ny, b.ny);
    assert_int_equal(a.np, b.np);
    if (memcmp(a.y, b.y, a.ny * sizeof(float))) fail_msg("%s %s: outputs differ", type, cfg);
    if (memcmp(a.dx, b.dx, a.nx * sizeof(float))) fail_msg("%s %s: input gradients differ", type, cfg);
    if (a.np && memcmp(a.params, b.params, a.np * sizeof(float)))
        fail_msg("%s %s: parameter gradients or buffers differ", type, cfg);
    /* Not a vacuous comparison: the gradient reached the input. */
    int nonzero = 0;
    for (size_t i = 0; i < a.nx; i++) nonzero += a.dx[i] != 0.0f;
    if (!nonzero) fail_msg("%s %s: no gradient reached the input", type, cfg);
    printf("    %-18s %-52s 1 vs 2 threads: identical (%zu outputs, %zu parameter values)\n", type,
           cfg, a.ny, a.np);
    run_free(&a);
    run_free(&b);
}

static void test_layers(void **state)
{
    (void)state;
    const int nhwc[3] = {20, 20, 24}, nchw[3] = {24, 20, 20}, flat[1] = {4096};
    check_layer("spatial_dropout2d", "rate=0.3 seed=9 data_format=channels_last", 3, nhwc, 16);
    check_layer("spatial_dropout2d", "rate=0.3 seed=9 data_format=channels_first", 3, nchw, 16);
    check_layer("dropout", "rate=0.4 seed=9", 1, flat, 32);
    check_layer("conv2d", "filters=16 kernel_size=3 activation=relu data_format=channels_last", 3,
                nhwc, 8);
    check_layer("conv2d", "filters=16 kernel_size=3 strides=2 padding=same data_format=channels_first",
                3, nchw, 8);
    check_layer("batchnorm", "data_format=channels_last", 3, nhwc, 16);
    check_layer("batchnorm", "data_format=channels_first", 3, nchw, 16);
}

/* ---- training the default MNIST network ------------------------------------ */

/* A residual block (add) and a side branch from the input (concatenate),
 * each large enough for the merge layers' loops to run in parallel. */
static const char residual_spec[] =
    "conv2d filters=16 kernel_size=3 padding=same activation=relu\n"
    "conv2d filters=16 kernel_size=3 padding=same activation=relu\n"
    "conv2d filters=16 kernel_size=3 padding=same\n"
    "add inputs=conv2d_1,conv2d_3\n"
    "relu\n"
    "maxpool2d pool_size=2\n"
    "spatial_dropout2d rate=0.25\n"
    "conv2d name=side inputs=input filters=8 kernel_size=2 strides=2\n"
    "concatenate inputs=spatial_dropout2d_1,side\n"
    "global_avgpool2d\n"
    "dense units=10\n";

/* The network of spec, or else of the spec file path; plain: each step as
 * nn_model_train_step takes it, but with nn_graph_backward instead of its
 * recycling backward. *pool (may be NULL) gets the pool's bytes after. */
static void train_mnist_net(const char *spec, const char *path, int threads, int plain,
                            float **params, size_t *n, float **moments, size_t *pool)
{
    enum { BATCH = 32, STEPS = 3 };
    set_threads(threads);
    nn_model *m = nn_model_create(2024);
    if (spec)
        assert_ok(nn_model_add_spec(m, spec));
    else
        assert_ok(nn_model_load_spec(m, path));
    const int shape[3] = {28, 28, 1};
    assert_ok(nn_model_build(m, 3, shape));
    optim *o = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    const int xs[4] = {BATCH, 28, 28, 1};
    tensor *x = tensor_create(4, xs);
    int labels[BATCH];
    tensor_rng rng;
    tensor_rng_seed(&rng, 77);
    for (int step = 0; step < STEPS; step++) {
        for (size_t i = 0; i < x->size; i++) x->data[i] = tensor_rng_uniform(&rng);
        for (int i = 0; i < BATCH; i++) labels[i] = (int)tensor_rng_below(&rng, 10);
        float loss;
        if (plain) {
            nn_graph *g = nn_model_graph(m);
            tensor *logits, *l;
            nn_graph_reset(g);
            nn_model_zero_grad(m);
            assert_ok(nn_model_forward(m, x, &logits, NN_MODE_TRAIN));
            assert_ok(nn_op_softmax_cross_entropy(g, logits, labels, &l, NULL));
            assert_ok(nn_graph_backward(g, l));
            assert_ok(optim_step(o, m->params, m->grads, m->n_params));
            loss = l->data[0];
        } else {
            assert_ok(nn_model_train_step(m, o, x, labels, &loss, NULL));
        }
        assert_true(isfinite(loss));
    }
    if (pool) *pool = nn_graph_grad_pool_bytes(nn_model_graph(m));
    *n = m->n_params;
    *params = malloc(m->n_params * sizeof(float));
    memcpy(*params, m->params, m->n_params * sizeof(float));
    *moments = malloc(2 * m->n_params * sizeof(float));
    memcpy(*moments, o->state, 2 * m->n_params * sizeof(float));
    tensor_free(x);
    optim_free(o);
    nn_model_free(m);
}

/* Trains the network (spec text, or else the spec file path) with 1 and with
 * 2 threads and compares the parameters and Adam moments bit for bit. */
static void check_training_thread_invariant(const char *spec, const char *path, const char *what)
{
    float *p1, *p2, *m1, *m2;
    size_t n1, n2;
    train_mnist_net(spec, path, 1, 0, &p1, &n1, &m1, NULL);
    train_mnist_net(spec, path, 2, 0, &p2, &n2, &m2, NULL);
    assert_int_equal(n1, n2);
    assert_memory_equal(p1, p2, n1 * sizeof(float));
    assert_memory_equal(m1, m2, 2 * n1 * sizeof(float));
    printf("    %s, 3 Adam steps of 32 images: %zu parameters and their moments identical with 1 "
           "and 2 threads\n", what, n1);
    free(p1);
    free(p2);
    free(m1);
    free(m2);
}

static void test_mnist_network_training(void **state)
{
    (void)state;
    check_training_thread_invariant(NULL, "examples/mnist_cnn.txt", "examples/mnist_cnn.txt");
}

static void test_residual_network_training(void **state)
{
    (void)state;
    check_training_thread_invariant(residual_spec, NULL, "residual network");
}

/* The residual network of `make fashion` (batchnorm fused with relu, add
 * fused with relu, 1x1 projections, global average pooling). */
static void test_fashion_resnet_training(void **state)
{
    (void)state;
    check_training_thread_invariant(NULL, "examples/fashion_resnet.txt", "examples/fashion_resnet.txt");
}

/* nn_model_train_step's recycling backward (gradients in dead activation
 * memory) against the plain one: the same parameters and moments after 3
 * steps of the residual network, bit for bit, with 1 and with 2 threads,
 * and a smaller pool of gradient buffers. */
static void test_recycling_backward(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 2; threads++) {
        float *p[2], *m[2];
        size_t n[2], pool[2];
        for (int plain = 0; plain <= 1; plain++)
            train_mnist_net(NULL, "examples/fashion_resnet.txt", threads, plain, &p[plain], &n[plain],
                            &m[plain], &pool[plain]);
        assert_int_equal(n[0], n[1]);
        assert_memory_equal(p[0], p[1], n[0] * sizeof(float));
        assert_memory_equal(m[0], m[1], 2 * n[0] * sizeof(float));
        assert_true(pool[0] < pool[1]);
        printf("    examples/fashion_resnet.txt, %d thread%s: the same parameters and moments; "
               "gradient pool %.2f MB recycling, %.2f MB plain\n", threads, threads > 1 ? "s" : "",
               pool[0] / 1e6, pool[1] / 1e6);
        for (int k = 0; k < 2; k++) {
            free(p[k]);
            free(m[k]);
        }
    }
}

static int setup(void **state)
{
    (void)state;
    threads_at_start = nn_get_threads();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nn_set_threads(threads_at_start);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spatial_dropout_kernels),
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_mnist_network_training),
        cmocka_unit_test(test_residual_network_training),
        cmocka_unit_test(test_recycling_backward),
        cmocka_unit_test(test_fashion_resnet_training),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
