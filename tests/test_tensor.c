/* Tensors (tensor/tensor.h) and the random generators (tensor/random.h).
 *
 * Statistical checks use 200,000 draws and bounds of 5 standard errors of
 * the statistic, so a correct generator fails one of them with probability
 * well under 1e-5 (and the seeds are fixed, so a pass is reproducible).
 * Not covered here: tensors made by the graph's arena (test_graph.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"
#include "tensor/random.h"

#define DRAWS 200000

static void test_create_zeros_free(void **state)
{
    (void)state;
    int shape[3] = {2, 3, 4};
    tensor *t = tensor_create(3, shape);
    assert_non_null(t);
    assert_int_equal(t->rank, 3);
    assert_int_equal(t->size, 24);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[2], 4);
    assert_int_equal(t->shape[3], 0); /* unused extents are zero */
    assert_true(t->flags & TENSOR_OWNS_DATA);
    assert_null(t->grad);
    assert_null(t->node);
    tensor_free(t);

    tensor *z = tensor_zeros(3, shape);
    assert_non_null(z);
    for (size_t i = 0; i < z->size; i++) assert_true(z->data[i] == 0.0f);
    tensor_free(z);

    tensor_free(NULL); /* a no-op */

    /* Zero extents make an empty tensor, not an error. */
    int empty[2] = {0, 5};
    tensor *e = tensor_zeros(2, empty);
    assert_non_null(e);
    assert_int_equal(e->size, 0);
    tensor_free(e);
}

static void test_ranks(void **state)
{
    (void)state;
    int shape[7] = {2, 1, 3, 1, 2, 2, 2};
    size_t size = 1;
    for (int rank = 1; rank <= TENSOR_MAX_RANK; rank++) {
        size *= (size_t)shape[rank - 1];
        tensor *t = tensor_zeros(rank, shape);
        if (!t) fail_msg("rank %d: %s", rank, nn_last_error());
        assert_int_equal(t->rank, rank);
        assert_int_equal(t->size, size);
        tensor_free(t);
    }
    nn_clear_error();
    assert_null(tensor_create(0, shape));
    assert_error_contains("tensor_create: rank 0 is outside 1..6");
    assert_null(tensor_create(7, shape));
    assert_error_contains("rank 7 is outside 1..6");
    assert_null(tensor_zeros(-1, shape));
    assert_error_contains("rank -1");
    assert_null(tensor_create(2, NULL));
    assert_error_contains("shape is NULL");
}

static void test_bad_extents(void **state)
{
    (void)state;
    int neg[3] = {2, -1, 4};
    assert_null(tensor_create(3, neg));
    assert_error_contains("tensor_create: negative extent in shape (2, -1, 4)");
    assert_null(tensor_zeros(3, neg));
    assert_error_contains("negative extent");
    float buf[8];
    assert_null(tensor_wrap(buf, 3, neg));
    assert_error_contains("tensor_wrap: negative extent");
    /* Element counts whose byte size overflows size_t are refused, not
     * wrapped around to a small allocation. */
    int huge[3] = {1 << 30, 1 << 30, 1 << 30};
    assert_null(tensor_create(3, huge));
    assert_error_contains("too large");
}

static void test_alignment(void **state)
{
    (void)state;
    const int sizes[] = {1, 3, 16, 17, 63, 64, 65, 1000, 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        tensor *t = tensor_create(1, &sizes[k]);
        assert_non_null(t);
        if ((uintptr_t)t->data % TENSOR_ALIGN)
            fail_msg("tensor of %d floats at %p is not %d-byte aligned", sizes[k], (void *)t->data,
                     TENSOR_ALIGN);
        /* The whole extent is writable (ASan reports an overflow otherwise). */
        tensor_fill(t, 1.0f);
        tensor_free(t);
    }
    void *p = tensor_aligned_alloc(5);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % TENSOR_ALIGN, 0);
    tensor_aligned_free(p);
    tensor_aligned_free(NULL);
    assert_null(tensor_aligned_alloc(SIZE_MAX - 8));
    assert_error_contains("out of memory");
}

static void test_views(void **state)
{
    (void)state;
    int shape[2] = {2, 3}, flat[1] = {6}, other[2] = {3, 2}, wrong[2] = {4, 2};
    tensor *t = tensor_create(2, shape);
    for (size_t i = 0; i < t->size; i++) t->data[i] = (float)i;
    tensor *v = tensor_view(t, 1, flat);
    assert_non_null(v);
    assert_ptr_equal(v->data, t->data);
    assert_false(v->flags & TENSOR_OWNS_DATA);
    v->data[4] = 40.0f;
    assert_true(t->data[4] == 40.0f);
    tensor *vv = tensor_view(v, 2, other); /* a view of a view */
    assert_non_null(vv);
    assert_true(vv->data[1 * 2 + 0] == 2.0f);
    assert_null(tensor_view(t, 2, wrong));
    assert_error_contains("tensor_view: cannot view (2, 3) (6 elements) as (4, 2) (8 elements)");
    assert_null(tensor_view(NULL, 1, flat));
    assert_error_contains("src is NULL");
    /* Freeing views never frees the storage: the source stays usable (ASan
     * and valgrind report a double free or use-after-free otherwise). */
    tensor_free(vv);
    tensor_free(v);
    assert_true(t->data[4] == 40.0f);
    tensor_free(t);
}

static void test_wrap_borrows(void **state)
{
    (void)state;
    float buf[6] = {1, 2, 3, 4, 5, 6};
    int shape[2] = {3, 2};
    tensor *t = tensor_wrap(buf, 2, shape);
    assert_non_null(t);
    assert_ptr_equal(t->data, buf);
    assert_false(t->flags & TENSOR_OWNS_DATA);
    t->data[5] = 60.0f;
    /* buf is on the stack: freeing it would be caught by ASan or crash. */
    tensor_free(t);
    assert_true(buf[5] == 60.0f);
    assert_null(tensor_wrap(NULL, 2, shape));
    assert_error_contains("tensor_wrap: data is NULL");
    int empty[1] = {0};
    tensor *e = tensor_wrap(NULL, 1, empty); /* nothing to point at */
    assert_non_null(e);
    tensor_free(e);
}

static void test_copy_fill(void **state)
{
    (void)state;
    int a_shape[2] = {2, 3}, b_shape[1] = {6}, c_shape[1] = {5};
    tensor *a = tensor_create(2, a_shape), *b = tensor_zeros(1, b_shape), *c = tensor_zeros(1, c_shape);
    tensor_fill(a, 2.5f);
    for (size_t i = 0; i < a->size; i++) assert_true(a->data[i] == 2.5f);
    a->data[3] = -1.0f;
    assert_ok(tensor_copy(b, a)); /* same count, other shape: allowed */
    assert_memory_equal(b->data, a->data, 6 * sizeof(float));
    assert_ok(tensor_copy(a, a)); /* self copy is a no-op */
    assert_int_equal(tensor_copy(c, a), NN_ERR_SHAPE);
    assert_error_contains("tensor_copy: destination (5,) and source (2, 3) differ in size");
    for (size_t i = 0; i < c->size; i++) assert_true(c->data[i] == 0.0f);
    assert_int_equal(tensor_copy(NULL, a), NN_ERR_ARG);
    assert_error_contains("NULL tensor");
    assert_true(tensor_same_shape(a, a));
    assert_false(tensor_same_shape(a, b));
    tensor_free(a);
    tensor_free(b);
    tensor_free(c);
}

static void test_shape_string(void **state)
{
    (void)state;
    char buf[64];
    int s3[3] = {2, 3, 4}, s1[1] = {7};
    assert_string_equal(tensor_shape_str(3, s3, buf, sizeof buf), "(2, 3, 4)");
    assert_string_equal(tensor_shape_str(1, s1, buf, sizeof buf), "(7,)");
    assert_string_equal(tensor_shape_str(0, s1, buf, sizeof buf), "()");
    /* A short buffer is truncated and terminated, never overrun. */
    char small[6];
    memset(small, 'x', sizeof small);
    tensor_shape_str(3, s3, small, 5);
    assert_string_equal(small, "(2, ");
    assert_true(small[5] == 'x');
    assert_ptr_equal(tensor_shape_str(3, s3, small, 0), small);
}

/* --- random numbers ------------------------------------------------------ */

static void test_rng_streams(void **state)
{
    (void)state;
    tensor_rng a, b, c;
    tensor_rng_seed(&a, 42);
    tensor_rng_seed(&b, 42);
    tensor_rng_seed(&c, 43);
    int same_ab = 1, diff_ac = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = tensor_rng_next(&a), y = tensor_rng_next(&b), z = tensor_rng_next(&c);
        same_ab &= x == y;
        diff_ac += x != z;
    }
    assert_true(same_ab);
    assert_int_equal(diff_ac, 1000); /* 64-bit collisions have probability ~1e-16 */
    /* Seed 0 is a valid seed (the state is not all zero). */
    tensor_rng_seed(&a, 0);
    uint64_t x0 = tensor_rng_next(&a), x1 = tensor_rng_next(&a);
    assert_true(x0 != 0 || x1 != 0);
    assert_true(x0 != x1);
    /* Bits are balanced: each of the 64 bit positions is set in about half of
     * the draws (binomial sd sqrt(n)/2). */
    tensor_rng_seed(&a, 7);
    int count[64] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        uint64_t x = tensor_rng_next(&a);
        for (int k = 0; k < 64; k++) count[k] += (int)((x >> k) & 1);
    }
    for (int k = 0; k < 64; k++)
        if (fabs(count[k] - n / 2.0) > 5 * sqrt(n) / 2)
            fail_msg("bit %d set in %d of %d draws", k, count[k], n);
}

typedef struct {
    double mean, var, min, max;
} moments;

static moments moments_of(const tensor *t)
{
    moments m = {0, 0, INFINITY, -INFINITY};
    for (size_t i = 0; i < t->size; i++) {
        m.mean += t->data[i];
        m.min = fmin(m.min, t->data[i]);
        m.max = fmax(m.max, t->data[i]);
    }
    m.mean /= (double)t->size;
    for (size_t i = 0; i < t->size; i++) m.var += (t->data[i] - m.mean) * (t->data[i] - m.mean);
    m.var /= (double)(t->size - 1);
    return m;
}

static void check_close(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) fail_msg("%s: %.6g, expected %.6g +- %.3g", what, got, want, tol);
}

static void test_uniform(void **state)
{
    (void)state;
    int n = DRAWS;
    tensor *t = tensor_create(1, &n);
    tensor_rng r;
    tensor_rng_seed(&r, 1);
    const float lo = -3.0f, hi = 5.0f;
    tensor_init_uniform(t, &r, lo, hi);
    moments m = moments_of(t);
    const double w = hi - lo;
    assert_true(m.min >= lo && m.max < hi);
    assert_true(m.min < lo + 0.001 * w && m.max > hi - 0.001 * w); /* fills the range */
    check_close("uniform mean", m.mean, (lo + hi) / 2.0, 5 * w / sqrt(12.0 * n));
    /* Var of the sample variance for U: (mu4 - sigma^4)/n, mu4 = w^4/80. */
    check_close("uniform variance", m.var, w * w / 12, 5 * w * w * sqrt((1 / 80.0 - 1 / 144.0) / n));
    /* tensor_rng_uniform itself: in [0, 1), 24-bit granularity. */
    for (int i = 0; i < 1000; i++) {
        float u = tensor_rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        assert_true(u * 16777216.0f == floorf(u * 16777216.0f));
    }
    tensor_free(t);
}

static void test_normal(void **state)
{
    (void)state;
    int n = DRAWS;
    tensor *t = tensor_create(1, &n);
    tensor_rng r;
    tensor_rng_seed(&r, 2);
    tensor_init_normal(t, &r, 1.5f, 2.0f);
    moments m = moments_of(t);
    check_close("normal mean", m.mean, 1.5, 5 * 2.0 / sqrt(n));
    check_close("normal variance", m.var, 4.0, 5 * 4.0 * sqrt(2.0 / n));
    /* Tails: P(|z| > 2) = 0.0455 (binomial bound). */
    int tail = 0;
    for (size_t i = 0; i < t->size; i++) tail += fabs((t->data[i] - 1.5) / 2.0) > 2.0;
    check_close("normal P(|z|>2)", (double)tail / n, 0.0455003, 5 * sqrt(0.0455 * 0.9545 / n));
    tensor_free(t);
}

static void test_glorot_he(void **state)
{
    (void)state;
    int shape[2] = {400, 500}; /* 200,000 weights */
    tensor *t = tensor_create(2, shape);
    tensor_rng r;
    tensor_rng_seed(&r, 3);
    const int fan_in = 300, fan_out = 100;
    const double limit = sqrt(6.0 / (fan_in + fan_out));
    tensor_init_glorot_uniform(t, &r, fan_in, fan_out);
    moments m = moments_of(t);
    const double n = (double)t->size;
    assert_true(m.min >= -limit && m.max <= limit);
    assert_true(m.max > 0.999 * limit && m.min < -0.999 * limit);
    check_close("glorot mean", m.mean, 0.0, 5 * limit / sqrt(3.0 * n));
    check_close("glorot variance", m.var, limit * limit / 3,
                5 * 4 * limit * limit * sqrt((1 / 80.0 - 1 / 144.0) / n));

    tensor_init_he_normal(t, &r, fan_in);
    m = moments_of(t);
    const double sd = sqrt(2.0 / fan_in);
    check_close("he normal mean", m.mean, 0.0, 5 * sd / sqrt(n));
    check_close("he normal std", sqrt(m.var), sd, 5 * sd / sqrt(2.0 * n));

    tensor_init_he_uniform(t, &r, fan_in);
    m = moments_of(t);
    const double hl = sqrt(6.0 / fan_in);
    assert_true(m.min >= -hl && m.max <= hl);
    check_close("he uniform variance", m.var, 2.0 / fan_in,
                5 * 4 * hl * hl * sqrt((1 / 80.0 - 1 / 144.0) / n));
    tensor_free(t);
}

static void test_rng_below(void **state)
{
    (void)state;
    tensor_rng r;
    tensor_rng_seed(&r, 4);
    for (int i = 0; i < 100; i++) assert_int_equal(tensor_rng_below(&r, 1), 0);
    /* n = 10: every value in range, chi-square with 9 degrees of freedom
     * below 33.7 (p = 1e-4). */
    int count[10] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint32_t k = tensor_rng_below(&r, 10);
        assert_true(k < 10);
        count[k]++;
    }
    double chi2 = 0, e = DRAWS / 10.0;
    for (int k = 0; k < 10; k++) chi2 += (count[k] - e) * (count[k] - e) / e;
    if (chi2 > 33.7) fail_msg("tensor_rng_below(10): chi-square %.1f > 33.7", chi2);
    /* n = 3 * 2^30: x % n on 32 random bits would put values below 2^30
     * there with probability 1/2; unbiased, it is 1/3. */
    const uint32_t big = 3u << 30;
    int low = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint32_t k = tensor_rng_below(&r, big);
        assert_true(k < big);
        low += k < (1u << 30);
    }
    check_close("P(below(3*2^30) < 2^30)", (double)low / DRAWS, 1.0 / 3,
                5 * sqrt(2.0 / 9 / DRAWS));
}

static void test_hash_uniform(void **state)
{
    (void)state;
    double sum = 0;
    int repeat_same = 1, counter_differs = 0, seed_differs = 0;
    for (uint64_t i = 0; i < DRAWS; i++) {
        float u = tensor_hash_uniform(11, 3, i);
        if (!(u >= 0.0f && u < 1.0f)) fail_msg("tensor_hash_uniform(11, 3, %llu) = %g", (unsigned long long)i, (double)u);
        sum += u;
        repeat_same &= u == tensor_hash_uniform(11, 3, i);
        counter_differs += u != tensor_hash_uniform(11, 4, i);
        seed_differs += u != tensor_hash_uniform(12, 3, i);
    }
    assert_true(repeat_same);
    /* 24-bit values collide with probability 2^-24 per pair. */
    assert_true(counter_differs > DRAWS - 10);
    assert_true(seed_differs > DRAWS - 10);
    check_close("hash uniform mean", sum / DRAWS, 0.5, 5 / sqrt(12.0 * DRAWS));
    /* Neighbouring keys are not correlated: lag-1 correlation ~ 0. */
    double c = 0;
    for (uint64_t i = 0; i + 1 < DRAWS; i++)
        c += (tensor_hash_uniform(5, 0, i) - 0.5) * (tensor_hash_uniform(5, 0, i + 1) - 0.5);
    check_close("hash lag-1 covariance", c / (DRAWS - 1), 0.0, 5 / 12.0 / sqrt(DRAWS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_zeros_free),
        cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_bad_extents),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_wrap_borrows),
        cmocka_unit_test(test_copy_fill),
        cmocka_unit_test(test_shape_string),
        cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_normal),
        cmocka_unit_test(test_glorot_he),
        cmocka_unit_test(test_rng_below),
        cmocka_unit_test(test_hash_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
