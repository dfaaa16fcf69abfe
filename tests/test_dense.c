/* The dense layer's prediction kernel, layers/dense_gemv.c: nn_dense_gemv
 * against its plain loops (nn_dense_gemv_reference), bit for bit, over row
 * counts 0..9 (groups of 4 and the rest), reduction lengths from 0 to 1029,
 * column counts around every vector width (4, 8, 16 floats: whole vectors,
 * partial last vectors, blocks of 2 and 4 vectors and narrower last
 * blocks), with and without bias and ReLU, inputs with negative values,
 * zeros and a -0; the same results with 1 and 2 threads above the size
 * where the column blocks are shared; and the dense layer taking it for
 * eval-mode forwards of 1..4 rows, with or without a tape (bit for bit the
 * reference), but not for training-mode forwards or 5 rows (OpenBLAS,
 * equal within rounding).
 * This suite runs at the build's vector width; tests/test_dense_gemv_widths.sh
 * runs the kernel against the reference at every width the machine has. */
#include <math.h>

#include "layers/dense_gemv.h"
#include "test_util.h"

static float *dense_rand(size_t n, uint64_t seed)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    assert_non_null(a);
    tensor_rng r;
    tensor_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) a[i] = tensor_rng_normal(&r);
    if (n > 2) {
        a[1] = 0.0f;
        a[2] = -0.0f;
    }
    return a;
}

/* nn_dense_gemv and the reference on one shape; y is pre-filled with NaN
 * around the output to catch writes outside it. */
static void dense_check(int N, int In, int U, int bias, int relu, uint64_t seed)
{
    float *x = dense_rand((size_t)N * In, seed), *W = dense_rand((size_t)In * U, seed + 1);
    float *b = bias ? dense_rand((size_t)U, seed + 2) : NULL;
    const size_t ny = (size_t)N * U, pad = 32;
    float *got = malloc((ny + 2 * pad) * sizeof *got), *want = malloc((ny ? ny : 1) * sizeof *want);
    assert_non_null(got);
    assert_non_null(want);
    for (size_t i = 0; i < ny + 2 * pad; i++) got[i] = NAN;
    nn_dense_gemv(got + pad, x, W, b, N, In, U, relu);
    nn_dense_gemv_reference(want, x, W, b, N, In, U, relu);
    if (ny && memcmp(got + pad, want, ny * sizeof *want)) {
        for (size_t i = 0; i < ny; i++)
            if (memcmp(&got[pad + i], &want[i], sizeof *want))
                fail_msg("N=%d In=%d U=%d bias=%d relu=%d: y[%zu] = %.9g, reference %.9g", N, In, U,
                         bias, relu, i, got[pad + i], want[i]);
    }
    for (size_t i = 0; i < pad; i++)
        if (!isnan(got[i]) || !isnan(got[pad + ny + i]))
            fail_msg("N=%d In=%d U=%d: a write outside y", N, In, U);
    free(x);
    free(W);
    free(b);
    free(got);
    free(want);
}

static void test_gemv_matches_reference(void **state)
{
    (void)state;
    static const int Us[] = {1, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 24, 31, 32, 33,
                             40, 47, 48, 63, 64, 65, 100, 128, 129, 130};
    static const int Ins[] = {0, 1, 2, 7, 64, 129};
    uint64_t seed = 1;
    for (int N = 0; N <= 9; N++)
        for (size_t u = 0; u < sizeof Us / sizeof Us[0]; u++)
            for (size_t i = 0; i < sizeof Ins / sizeof Ins[0]; i++)
                for (int opt = 0; opt < 4; opt++)
                    dense_check(N, Ins[i], Us[u], opt & 1, opt >> 1, seed++);
    dense_check(1, 9216, 128, 1, 1, 7); /* MNIST's first dense layer */
    dense_check(1, 128, 10, 1, 0, 8);   /* and its second */
    dense_check(2, 1029, 77, 1, 1, 9);
}

static void test_gemv_thread_count_invariant(void **state)
{
    (void)state;
    /* 4 x 1100 x 1000 multiply-adds: above the size where threads share the
     * column blocks. */
    const int N = 4, In = 1100, U = 1000;
    float *x = dense_rand((size_t)N * In, 21), *W = dense_rand((size_t)In * U, 22);
    float *b = dense_rand((size_t)U, 23);
    float *y1 = malloc((size_t)N * U * sizeof *y1), *y2 = malloc((size_t)N * U * sizeof *y2);
    float *ref = malloc((size_t)N * U * sizeof *ref);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_non_null(ref);
    assert_ok(nn_set_threads(1));
    nn_dense_gemv(y1, x, W, b, N, In, U, 1);
    assert_ok(nn_set_threads(2));
    nn_dense_gemv(y2, x, W, b, N, In, U, 1);
    nn_dense_gemv_reference(ref, x, W, b, N, In, U, 1);
    assert_memory_equal(y1, y2, (size_t)N * U * sizeof *y1);
    assert_memory_equal(y1, ref, (size_t)N * U * sizeof *y1);
    free(x);
    free(W);
    free(b);
    free(y1);
    free(y2);
    free(ref);
}

/* The layer: N rows through "dense units=37 activation=relu" over 300
 * features: a prediction (no tape) and an eval-mode forward with a tape
 * against the reference (exact for N <= 4), a training-mode forward (the
 * GEMM) within rounding. */
static void test_layer_predictions_take_gemv(void **state)
{
    (void)state;
    const int In = 300, U = 37;
    nn_layer *l = nn_layer_create("dense", "units=37 activation=relu");
    assert_non_null(l);
    assert_ok(nn_layer_build(l, 1, &In));
    assert_ok(nn_layer_alloc_params(l, 5));
    tensor *W = l->params[0].t, *b = l->params[1].t;
    for (int u = 0; u < U; u++) b->data[u] = 0.05f * (float)(u % 7) - 0.15f;
    for (int N = 1; N <= 5; N++) {
        const int xs[2] = {N, In};
        tensor *x = tensor_create(2, xs);
        assert_non_null(x);
        float *xd = dense_rand(x->size, 40 + (uint64_t)N);
        memcpy(x->data, xd, x->size * sizeof *xd);
        free(xd);
        float *want = malloc((size_t)N * U * sizeof *want), *eval = malloc((size_t)N * U * sizeof *eval);
        assert_non_null(want);
        assert_non_null(eval);
        nn_dense_gemv_reference(want, x->data, W->data, b->data, N, In, U, 1);
        nn_graph *g = nn_graph_create(0);
        tensor *y;
        nn_graph_set_grad_enabled(g, 0);
        assert_ok(nn_layer_forward(l, g, x, &y, 0));
        memcpy(eval, y->data, (size_t)N * U * sizeof *eval);
        if (N <= NN_DENSE_GEMV_MAX_N) assert_memory_equal(eval, want, (size_t)N * U * sizeof *want);
        nn_graph_reset(g);
        nn_graph_set_grad_enabled(g, 1);
        assert_ok(nn_layer_forward(l, g, x, &y, 0));
        assert_true(nn_graph_node_count(g) > 0);
        assert_memory_equal(y->data, eval, (size_t)N * U * sizeof *eval);
        /* Training mode runs the GEMM. */
        nn_graph_reset(g);
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        assert_true(nn_graph_node_count(g) > 0);
        for (size_t i = 0; i < (size_t)N * U; i++)
            if (fabsf(y->data[i] - want[i]) > 1e-5f * (1.0f + fabsf(want[i])) ||
                fabsf(eval[i] - want[i]) > 1e-5f * (1.0f + fabsf(want[i])))
                fail_msg("N=%d: y[%zu] = %.9g (recorded), %.9g (prediction), reference %.9g", N, i,
                         y->data[i], eval[i], want[i]);
        nn_graph_free(g);
        free(want);
        free(eval);
        tensor_free(x);
    }
    nn_layer_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemv_matches_reference),
        cmocka_unit_test(test_gemv_thread_count_invariant),
        cmocka_unit_test(test_layer_predictions_take_gemv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
