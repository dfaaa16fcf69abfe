/* SpatialDropout1D/2D/3D: the layers, the raw-buffer API and the
 * self-contained kernels of layers/spatial_dropout_kernels.h.
 *
 * Expected outputs, masks and gradients come from the scalar references
 * of the kernels' pair (nn_sd_forward_reference, nn_sd_backward_reference),
 * never from the fast kernels under test. The references themselves are
 * held to the definition in test_reference_follows_the_definition, which
 * recomputes every mask from tensor_hash_uniform directly
 * (keep(n, c) = u(seed, call, n*C + c) < 1 - rate) and every value from the
 * written-out PyTorch formula s = 1.0f / (float)(1.0 - rate); the pair's
 * copy of the hash is held to tensor_hash_uniform. Values are compared bit
 * for bit.
 * The finite-difference check of every registered layer (these included) is
 * in test_gradcheck.c; the one here also covers channels_last. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

/* ---- helpers ----------------------------------------------------------- */

/* The definition, written out independently of the library: PyTorch's
 * scale and nn's counter-based draw (tensor/random.h). */
static float ref_scale(float rate) { return 1.0f / (float)(1.0 - (double)rate); }

static int definition_keep(uint64_t seed, uint64_t call, size_t i, float rate)
{
    return tensor_hash_uniform(seed, call, i) < 1.0f - rate;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The (n, c) map of element e. */
static size_t map_of(size_t e, int C, size_t spatial, nn_data_format f)
{
    return f == NN_CHANNELS_FIRST ? e / spatial : (e / (spatial * (size_t)C)) * (size_t)C + e % (size_t)C;
}

/* Values with |v| in [0.5, 1.5), random sign: never zero. */
static void fill_nonzero(float *v, size_t n, uint64_t seed)
{
    tensor_rng r;
    tensor_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        float a = 0.5f + tensor_rng_uniform(&r);
        v[i] = tensor_rng_uniform(&r) < 0.5f ? -a : a;
    }
}

static tensor *make_input(int rank, const int *shape, uint64_t seed)
{
    tensor *t = tensor_create(rank, shape);
    assert_non_null(t);
    fill_nonzero(t->data, t->size, seed);
    return t;
}

/* A leaf that requires a gradient, with a zeroed grad buffer. */
static tensor *make_leaf(int rank, const int *shape, uint64_t seed)
{
    return test_require_grad(make_input(rank, shape, seed));
}

static nn_layer *make_layer(const char *type, const char *cfg, int rank, const int *shape)
{
    nn_layer *l = nn_layer_create(type, cfg);
    if (!l) fail_msg("%s %s: %s", type, cfg, nn_last_error());
    assert_ok(nn_layer_build(l, rank, shape));
    return l;
}

static const nn_spatial_dropout_state *state_of(const nn_layer *l) { return l->state; }

/* The reference mask of (seed, call): mask (N, C) out. */
static void ref_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed, uint64_t call)
{
    assert_int_equal(nn_sd_forward_reference(NULL, mask, NULL, N, C, 0, NN_SD_CHANNELS_FIRST, rate,
                                             seed, call), NN_SD_OK);
}

/* mask must be the reference mask of (seed, call). */
static void check_mask(const uint8_t *mask, int N, int C, float rate, uint64_t seed, uint64_t call)
{
    uint8_t *want = malloc((size_t)N * (size_t)C + 1);
    assert_non_null(want);
    ref_mask(want, N, C, rate, seed, call);
    for (size_t m = 0; m < (size_t)N * (size_t)C; m++)
        if (mask[m] != want[m]) fail_msg("mask[%zu] = %d, the reference says %d", m, mask[m], want[m]);
    free(want);
}

/* y must be the reference forward of x for (seed, call), bit for bit: x * s
 * on kept maps and +0.0 on dropped ones. Returns the number of dropped maps. */
static size_t check_output(const float *y, const float *x, int N, int C, size_t spatial,
                           nn_data_format f, float rate, uint64_t seed, uint64_t call)
{
    const size_t total = (size_t)N * (size_t)C * spatial, nc = (size_t)N * (size_t)C;
    float *want = malloc(total * sizeof(float) + 1);
    uint8_t *mask = malloc(nc + 1);
    assert_true(want && mask);
    assert_int_equal(nn_sd_forward_reference(want, mask, x, N, C, (long)spatial, (int)f, rate, seed,
                                             call), NN_SD_OK);
    for (size_t e = 0; e < total; e++)
        if (bits(y[e]) != bits(want[e]))
            fail_msg("element %zu (map %zu, %s): got %a (0x%08x), want 0x%08x", e,
                     map_of(e, C, spatial, f), nn_data_format_name(f), (double)y[e], bits(y[e]),
                     bits(want[e]));
    size_t dropped = 0;
    for (size_t m = 0; m < nc; m++) dropped += !mask[m];
    free(want);
    free(mask);
    return dropped;
}

/* dx must be the reference backward added to dx0, bit for bit:
 * dx0 + dy * s on kept maps, dx0 itself on dropped ones. dx0 NULL: zeros. */
static void check_grad(const float *dx, const float *dx0, const uint8_t *mask, const float *dy, int N,
                       int C, size_t spatial, nn_data_format f, float rate)
{
    const size_t total = (size_t)N * (size_t)C * spatial;
    float *want = calloc(total + 1, sizeof(float));
    assert_non_null(want);
    if (dx0) memcpy(want, dx0, total * sizeof(float));
    assert_int_equal(nn_sd_backward_reference(want, mask, dy, N, C, (long)spatial, (int)f, rate),
                     NN_SD_OK);
    for (size_t e = 0; e < total; e++)
        if (bits(dx[e]) != bits(want[e]))
            fail_msg("dx[%zu] (map %zu, %s): got %a (0x%08x), want 0x%08x", e,
                     map_of(e, C, spatial, f), nn_data_format_name(f), (double)dx[e], bits(dx[e]),
                     bits(want[e]));
    free(want);
}

/* NCHW <-> NHWC for (N, C, S) with S = H*W. */
static void to_last(float *dst, const float *src, int N, int C, size_t S)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < S; p++)
                dst[((size_t)n * S + p) * (size_t)C + (size_t)c] = src[((size_t)n * C + c) * S + p];
}

static void to_first(float *dst, const float *src, int N, int C, size_t S)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < S; p++)
                dst[((size_t)n * C + c) * S + p] = src[((size_t)n * S + p) * (size_t)C + (size_t)c];
}

/* ---- the kernels' pair: hash, reference, errors ------------------------------ */

/* The pair repeats tensor/random.h's hash so that it travels alone; its
 * draws must be tensor_hash_uniform's, bit for bit, or the pair's masks
 * and the rest of nn's (dropout, the model's seeds) would drift apart. */
static void test_pair_uniform_is_tensor_hash_uniform(void **state)
{
    (void)state;
    static const uint64_t keys[] = {0, 1, 2, 7, 42, 1000003, 0x9e3779b97f4a7c15ull,
                                    (uint64_t)1 << 32, (uint64_t)1 << 63, UINT64_MAX - 1, UINT64_MAX};
    enum { K = sizeof keys / sizeof keys[0], RANDOM = 200000 };
    size_t checked = 0;
    for (size_t a = 0; a < K; a++)
        for (size_t b = 0; b < K; b++) {
            for (uint64_t i = 0; i < 64; i++, checked++)
                if (bits(nn_sd_uniform(keys[a], keys[b], i)) != bits(tensor_hash_uniform(keys[a], keys[b], i)))
                    fail_msg("nn_sd_uniform(%llu, %llu, %llu) differs", (unsigned long long)keys[a],
                             (unsigned long long)keys[b], (unsigned long long)i);
            for (size_t c = 0; c < K; c++, checked++)
                if (bits(nn_sd_uniform(keys[a], keys[b], keys[c])) !=
                    bits(tensor_hash_uniform(keys[a], keys[b], keys[c])))
                    fail_msg("nn_sd_uniform(%llu, %llu, %llu) differs", (unsigned long long)keys[a],
                             (unsigned long long)keys[b], (unsigned long long)keys[c]);
        }
    tensor_rng r;
    tensor_rng_seed(&r, 99);
    for (int k = 0; k < RANDOM; k++, checked++) {
        const uint64_t seed = tensor_rng_next(&r), call = tensor_rng_next(&r) >> (k % 64);
        const uint64_t i = tensor_rng_next(&r) >> (k % 61);
        if (bits(nn_sd_uniform(seed, call, i)) != bits(tensor_hash_uniform(seed, call, i)))
            fail_msg("nn_sd_uniform(%llu, %llu, %llu) differs", (unsigned long long)seed,
                     (unsigned long long)call, (unsigned long long)i);
    }
    assert_int_equal(checked, K * K * (64 + K) + RANDOM);
}

/* The references against the definition written out here: every mask
 * entry from tensor_hash_uniform, every kept value x * s with PyTorch's s,
 * every dropped one +0.0 whatever x holds (Inf, NaN, -0.0, negative), and
 * the backward adding dy * s (rounded, then added) on kept maps only,
 * leaving dropped ones untouched even where dy is Inf or NaN and dx -0.0. */
static void test_reference_follows_the_definition(void **state)
{
    (void)state;
    static const float rates[] = {0.0f, 0.1f, 0.3f, 0.5f, 0.999f, 1.0f};
    static const int Cs[] = {1, 5, 16};
    static const float special[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f, -1.5f};
    const int N = 4;
    const long S = 7;
    size_t kept = 0, dropped = 0;
    for (size_t ri = 0; ri < sizeof rates / sizeof rates[0]; ri++)
        for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
            for (int f = 0; f < 2; f++) {
                const int C = Cs[ci];
                const float rate = rates[ri], s = ref_scale(rate);
                const uint64_t seed = 9 + ci, call = ri;
                const size_t nc = (size_t)N * (size_t)C, total = nc * (size_t)S;
                float *x = malloc(total * sizeof(float)), *y = malloc(total * sizeof(float));
                float *dy = malloc(total * sizeof(float)), *dx = malloc(total * sizeof(float));
                float *dx0 = malloc(total * sizeof(float));
                uint8_t *mask = malloc(nc), *ones = malloc(nc);
                assert_true(x && y && dy && dx && dx0 && mask && ones);
                fill_nonzero(x, total, 70 + ri);
                fill_nonzero(dy, total, 80 + ci);
                fill_nonzero(dx0, total, 90 + (size_t)f);
                for (size_t e = 0; e < total; e += 5) x[e] = special[(e / 5) % 6];
                for (size_t e = 1; e < total; e += 5) dy[e] = special[(e / 5) % 3];
                for (size_t e = 2; e < total; e += 5) dx0[e] = -0.0f;
                assert_int_equal(nn_sd_forward_reference(y, mask, x, N, C, S, f, rate, seed, call),
                                 NN_SD_OK);
                for (size_t m = 0; m < nc; m++) {
                    assert_int_equal(mask[m], definition_keep(seed, call, m, rate));
                    kept += mask[m];
                    dropped += !mask[m];
                }
                for (size_t e = 0; e < total; e++) {
                    const int keep = definition_keep(seed, call, map_of(e, C, (size_t)S, f), rate);
                    const uint32_t want = keep ? bits(x[e] * s) : 0u;
                    if (bits(y[e]) != want)
                        fail_msg("rate %g C=%d %s: y[%zu] = 0x%08x, want 0x%08x", (double)rate, C,
                                 nn_data_format_name(f), e, bits(y[e]), want);
                }
                /* In place, and without a mask: the same values. */
                memcpy(dx, x, total * sizeof(float));
                assert_int_equal(nn_sd_forward_reference(dx, NULL, dx, N, C, S, f, rate, seed, call),
                                 NN_SD_OK);
                assert_memory_equal(dx, y, total * sizeof(float));
                /* Backward with the forward's mask. */
                memcpy(dx, dx0, total * sizeof(float));
                assert_int_equal(nn_sd_backward_reference(dx, mask, dy, N, C, S, f, rate), NN_SD_OK);
                for (size_t e = 0; e < total; e++) {
                    const int keep = definition_keep(seed, call, map_of(e, C, (size_t)S, f), rate);
                    volatile float scaled = dy[e] * s; /* rounded once, then added */
                    const uint32_t want = keep ? bits(dx0[e] + scaled) : bits(dx0[e]);
                    if (bits(dx[e]) != want)
                        fail_msg("rate %g C=%d %s: dx[%zu] = 0x%08x, want 0x%08x", (double)rate, C,
                                 nn_data_format_name(f), e, bits(dx[e]), want);
                }
                /* At rate 1 every map is dropped, whatever the mask says. */
                if (rate == 1.0f) {
                    memset(ones, 1, nc);
                    memcpy(dx, dx0, total * sizeof(float));
                    assert_int_equal(nn_sd_backward_reference(dx, ones, dy, N, C, S, f, rate), NN_SD_OK);
                    assert_memory_equal(dx, dx0, total * sizeof(float));
                }
                free(x);
                free(y);
                free(dy);
                free(dx);
                free(dx0);
                free(mask);
                free(ones);
            }
    assert_true(kept > 0 && dropped > 0);
}

/* A failed call of the pair: its code, its message, and nn's message
 * untouched (the pair knows nothing of nn's status; nn_clear_error first). */
static void expect_pair_error(int got, int want, const char *msg)
{
    if (got != want) fail_msg("'%s': code %d, want %d", msg, got, want);
    assert_string_equal(nn_sd_last_error(), msg);
    assert_string_equal(nn_last_error(), "");
}

/* The pair reports errors with its own codes and thread-local message,
 * naming its functions and constants, and writes nothing; the library's
 * wrappers give the same message in the library's names. */
static void test_pair_errors(void **state)
{
    (void)state;
    float v[8] = {0};
    uint8_t m[4] = {1, 1, 1, 1};
    nn_clear_error();
    expect_pair_error(nn_sd_forward(v, m, v, 1, 2, 2, NN_SD_CHANNELS_FIRST, 1.5f, 0, 0), NN_SD_ERR_ARG,
                      "nn_sd_forward: rate must be between 0 and 1, but got 1.5");
    expect_pair_error(nn_sd_mask(m, -1, 2, 0.5f, 1, 0), NN_SD_ERR_SHAPE,
                      "nn_sd_mask: N and C must be >= 0, but got N=-1, C=2");
    expect_pair_error(nn_sd_apply(v, m, v, 2, 2, 2, 5, 0.5f), NN_SD_ERR_ARG,
                      "nn_sd_apply: fmt must be NN_SD_CHANNELS_FIRST or NN_SD_CHANNELS_LAST, but got 5");
    expect_pair_error(nn_sd_backward(NULL, m, v, 2, 2, 2, NN_SD_CHANNELS_LAST, 0.5f), NN_SD_ERR_ARG,
                      "nn_sd_backward: dx is NULL for a non-empty shape");
    expect_pair_error(nn_sd_backward(v, m, v, 2, 2, 2, NN_SD_CHANNELS_LAST, NAN), NN_SD_ERR_ARG,
                      "nn_sd_backward: rate must be between 0 and 1, but got nan");
    expect_pair_error(nn_sd_forward_reference(v, m, NULL, 2, 2, 2, NN_SD_CHANNELS_FIRST, 0.5f, 0, 0),
                      NN_SD_ERR_ARG, "nn_sd_forward_reference: x is NULL for a non-empty shape");
    expect_pair_error(nn_sd_forward_reference(v, NULL, v, INT_MAX, INT_MAX, LONG_MAX,
                                              NN_SD_CHANNELS_LAST, 0.5f, 0, 0),
                      NN_SD_ERR_SHAPE, "nn_sd_forward_reference: N*C*spatial = 2147483647*2147483647*"
                                       "9223372036854775807 elements is too large");
    expect_pair_error(nn_sd_backward_reference(v, m, v, 2, 2, -4, NN_SD_CHANNELS_FIRST, 0.5f),
                      NN_SD_ERR_SHAPE, "nn_sd_backward_reference: N, C and spatial must be >= 0, but "
                                       "got N=2, C=2, spatial=-4");
    expect_pair_error(nn_sd_backward_reference(v, m, v, 2, 2, 2, 3, 0.5f), NN_SD_ERR_ARG,
                      "nn_sd_backward_reference: fmt must be NN_SD_CHANNELS_FIRST or "
                      "NN_SD_CHANNELS_LAST, but got 3");
    for (int i = 0; i < 8; i++) assert_int_equal(bits(v[i]), 0u);
    for (int i = 0; i < 4; i++) assert_int_equal(m[i], 1);

    /* The wrappers: nn_status, the library's names, the pair's wording. */
    assert_int_equal(nn_spatial_dropout_apply(v, m, v, 2, 2, 2, (nn_data_format)5, 0.5f), NN_ERR_ARG);
    assert_string_equal(nn_last_error(), "nn_spatial_dropout_apply: fmt must be NN_CHANNELS_FIRST or "
                                         "NN_CHANNELS_LAST, but got 5");
    assert_int_equal(nn_spatial_dropout_forward(v, NULL, v, INT_MAX, INT_MAX, LONG_MAX, NN_CHANNELS_LAST,
                                                0.5f, 0, 0), NN_ERR_SHAPE);
    assert_string_equal(nn_last_error(), "nn_spatial_dropout_forward: N*C*spatial = 2147483647*"
                                         "2147483647*9223372036854775807 elements is too large");
    assert_int_equal(nn_spatial_dropout_mask(NULL, 2, 2, 0.5f, 1, 0), NN_ERR_ARG);
    assert_string_equal(nn_last_error(), "nn_spatial_dropout_mask: mask is NULL for a non-empty shape");
    assert_int_equal(nn_spatial_dropout_backward(v, m, v, 2, -2, 2, NN_CHANNELS_FIRST, 0.5f), NN_ERR_SHAPE);
    assert_string_equal(nn_last_error(), "nn_spatial_dropout_backward: N, C and spatial must be >= 0, "
                                         "but got N=2, C=-2, spatial=2");
    /* The layouts have nn_data_format's values. */
    assert_int_equal(NN_SD_CHANNELS_FIRST, NN_CHANNELS_FIRST);
    assert_int_equal(NN_SD_CHANNELS_LAST, NN_CHANNELS_LAST);
}

/* ---- granularity, scale, zeros ---------------------------------------- */

static void test_mask_constant_over_each_map(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = f ? NN_CHANNELS_FIRST : NN_CHANNELS_LAST;
        const int N = 4, C = 16, H = 5, W = 7;
        int shape[4] = {N, C, H, W}, cl[4] = {N, H, W, C};
        const int *xs = fmt == NN_CHANNELS_FIRST ? shape : cl;
        char cfg[96];
        snprintf(cfg, sizeof cfg, "rate=0.5 seed=21 data_format=%s", nn_data_format_name(fmt));
        nn_layer *l = make_layer("spatial_dropout2d", cfg, 3, xs + 1);
        tensor *x = make_input(4, xs, 1);
        nn_graph *g = nn_graph_create(0);
        tensor *y;
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        /* Each map all zero or all non-zero, found without the reference mask. */
        int zero_maps = 0, kept_maps = 0;
        for (size_t m = 0; m < (size_t)N * C; m++) {
            int zeros = 0;
            for (size_t e = 0; e < y->size; e++)
                if (map_of(e, C, (size_t)H * W, fmt) == m) zeros += y->data[e] == 0.0f;
            if (zeros != 0 && zeros != H * W)
                fail_msg("%s: map %zu has %d zeros of %d", cfg, m, zeros, H * W);
            zero_maps += zeros == H * W;
            kept_maps += zeros == 0;
        }
        assert_true(zero_maps > 0 && kept_maps > 0);
        size_t dropped = check_output(y->data, x->data, N, C, (size_t)H * W, fmt, 0.5f, 21, 0);
        assert_int_equal(dropped, (size_t)zero_maps);
        nn_graph_free(g);
        tensor_free(x);
        nn_layer_free(l);
    }
}

static void test_exact_scaling(void **state)
{
    (void)state;
    static const float rates[] = {0.04f, 0.054f, 0.1f, 0.25f, 0.3f, 0.5f, 0.7f, 0.9f, 0.999f};
    const int N = 3, C = 8;
    const long S = 20;
    const size_t total = (size_t)N * C * (size_t)S;
    float x[3 * 8 * 20], y[3 * 8 * 20];
    uint8_t mask[3 * 8];
    fill_nonzero(x, total, 2);
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        /* The scale is PyTorch's rounding; at 0.04 and 0.054, TF's
         * (float)(1.0 / (1.0 - rate)) is 1 ulp away from it. */
        assert_true(bits(nn_spatial_dropout_scale(rates[r])) == bits(ref_scale(rates[r])));
        assert_true(bits(nn_sd_scale(rates[r])) == bits(ref_scale(rates[r])));
        if (r < 2) assert_true(bits(ref_scale(rates[r])) != bits((float)(1.0 / (1.0 - (double)rates[r]))));
        for (int f = 0; f < 2; f++) {
            const nn_data_format fmt = (nn_data_format)f;
            assert_ok(nn_spatial_dropout_forward(y, mask, x, N, C, S, fmt, rates[r], 77, r));
            check_output(y, x, N, C, (size_t)S, fmt, rates[r], 77, r);
            check_mask(mask, N, C, rates[r], 77, r);
        }
    }
    assert_int_equal(bits(nn_spatial_dropout_scale(0.0f)), bits(1.0f));
    assert_int_equal(bits(nn_spatial_dropout_scale(1.0f)), 0u);
}

/* Dropped maps are +0.0 even for Inf, NaN and negative inputs (PyTorch's
 * x * 0 would give NaN and -0.0 there). */
static void test_exact_zeros_for_nonfinite_input(void **state)
{
    (void)state;
    const int N = 4, C = 32;
    const long S = 9;
    const size_t total = (size_t)N * C * (size_t)S;
    float *x = malloc(total * sizeof(float)), *y = malloc(total * sizeof(float));
    for (size_t e = 0; e < total; e++) {
        switch (e % 4) {
        case 0: x[e] = INFINITY; break;
        case 1: x[e] = -INFINITY; break;
        case 2: x[e] = NAN; break;
        default: x[e] = -1.0f; break;
        }
    }
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = (nn_data_format)f;
        uint8_t keep[4 * 32];
        ref_mask(keep, N, C, 0.5f, 5, 3);
        for (int with_mask = 0; with_mask < 2; with_mask++) {
            uint8_t mask[4 * 32];
            memset(y, 0xff, total * sizeof(float));
            assert_ok(nn_spatial_dropout_forward(y, with_mask ? mask : NULL, x, N, C, S, fmt, 0.5f, 5, 3));
            check_output(y, x, N, C, (size_t)S, fmt, 0.5f, 5, 3);
            size_t zeros = 0;
            for (size_t e = 0; e < total; e++) {
                if (keep[map_of(e, C, (size_t)S, fmt)]) continue;
                if (bits(y[e]) != 0u) fail_msg("%s: dropped element %zu is 0x%08x, not +0.0",
                                               nn_data_format_name(fmt), e, bits(y[e]));
                zeros++;
            }
            assert_true(zeros > 0);
        }
        /* rate 1: everything dropped, still no NaN. */
        assert_ok(nn_spatial_dropout_forward(y, NULL, x, N, C, S, fmt, 1.0f, 5, 3));
        for (size_t e = 0; e < total; e++) assert_int_equal(bits(y[e]), 0u);
    }
    free(x);
    free(y);
}

/* ---- modes, rate 0 and 1 ----------------------------------------------- */

static void test_inference_is_identity_without_copy(void **state)
{
    (void)state;
    int shape[4] = {2, 3, 4, 5};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 data_format=channels_first", 3, shape + 1);
    tensor *x = make_leaf(4, shape, 3);
    float *before = malloc(x->size * sizeof(float));
    memcpy(before, x->data, x->size * sizeof(float));
    nn_graph *g = nn_graph_create(0);
    tensor *y = NULL;
    assert_ok(nn_layer_forward(l, g, x, &y, 0));
    assert_ptr_equal(y, x);
    assert_memory_equal(x->data, before, x->size * sizeof(float));
    assert_int_equal(l->calls, 0);             /* no draw */
    assert_int_equal(nn_graph_node_count(g), 0);
    nn_graph_free(g);
    free(before);
    tensor_free(x);
    nn_layer_free(l);
}

static void test_rate_zero_is_identity_and_advances_calls(void **state)
{
    (void)state;
    int shape[4] = {2, 3, 4, 5};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0 data_format=channels_last", 3, shape + 1);
    tensor *x = make_leaf(4, shape, 4);
    nn_graph *g = nn_graph_create(0);
    tensor *y = NULL;
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    assert_ptr_equal(y, x);
    assert_int_equal(l->calls, 1);
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    assert_int_equal(l->calls, 2);
    assert_int_equal(nn_graph_node_count(g), 0);
    /* The raw kernel at rate 0 copies and keeps every map. */
    float out[2 * 3 * 4 * 5];
    uint8_t mask[6];
    assert_ok(nn_spatial_dropout_forward(out, mask, x->data, 2, 3, 20, NN_CHANNELS_LAST, 0.0f, 1, 1));
    assert_memory_equal(out, x->data, sizeof out);
    for (int i = 0; i < 6; i++) assert_int_equal(mask[i], 1);
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(l);
}

static void test_rate_one_gives_zeros_and_zero_grad(void **state)
{
    (void)state;
    int shape[4] = {2, 3, 4, 5};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=1 seed=3 data_format=channels_first", 3, shape + 1);
    tensor *x = make_leaf(4, shape, 5);
    x->data[0] = INFINITY;
    x->data[7] = NAN;
    nn_graph *g = nn_graph_create(0);
    tensor *y, *loss;
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    assert_ptr_not_equal(y, x);
    for (size_t e = 0; e < y->size; e++) assert_int_equal(bits(y->data[e]), 0u);
    tensor *w = make_input(4, shape, 6);
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    for (size_t e = 0; e < x->size; e++) assert_int_equal(bits(x->grad[e]), 0u);
    nn_graph_free(g);
    tensor_free(w);
    tensor_free(x);
    nn_layer_free(l);
}

/* ---- errors --------------------------------------------------------------- */

static void test_bad_rate_is_rejected_with_the_value(void **state)
{
    (void)state;
    static const struct {
        const char *cfg, *msg;
    } cases[] = {
        {"rate=1.5", "spatial_dropout2d: rate must be between 0 and 1, but got 1.5"},
        {"rate=-0.1", "spatial_dropout2d: rate must be between 0 and 1, but got -0.1"},
        {"rate=nan", "spatial_dropout2d: rate must be between 0 and 1, but got nan"},
        {"rate=inf", "spatial_dropout2d: rate must be between 0 and 1, but got inf"},
        {"rate=abc", "spatial_dropout2d: rate must be a number, but got 'abc'"},
        {"data_format=channels_first", "spatial_dropout2d: config key 'rate' is required"},
        {"rate=0.5 data_format=NCHW", "data_format must be one of {channels_last, channels_first}, but got 'NCHW'"},
        {"rate=0.5 inplace=maybe", "inplace must be true or false, but got 'maybe'"},
        {"rate=0.5 sed=3", "unknown config key 'sed'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nn_clear_error();
        nn_layer *l = nn_layer_create("spatial_dropout2d", cases[i].cfg);
        if (l) fail_msg("'%s' was accepted", cases[i].cfg);
        assert_error_contains(cases[i].msg);
    }
    for (int t = 1; t <= 3; t++) {
        char type[32];
        snprintf(type, sizeof type, "spatial_dropout%dd", t);
        assert_null(nn_layer_create(type, "rate=2"));
        assert_error_contains("rate must be between 0 and 1, but got 2");
    }
    /* The raw kernels check the rate too. */
    float v[4] = {1, 2, 3, 4};
    uint8_t m[2];
    assert_int_equal(nn_spatial_dropout_forward(v, m, v, 1, 2, 2, NN_CHANNELS_FIRST, 1.5f, 0, 0), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_forward: rate must be between 0 and 1, but got 1.5");
    assert_int_equal(nn_spatial_dropout_forward(v, m, v, 1, 2, 2, NN_CHANNELS_FIRST, NAN, 0, 0), NN_ERR_ARG);
    assert_error_contains("but got nan");
    assert_int_equal(nn_spatial_dropout_backward(v, m, v, 1, 2, 2, NN_CHANNELS_LAST, -0.5f), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_backward: rate must be between 0 and 1, but got -0.5");
    assert_int_equal(nn_spatial_dropout_mask(m, 1, 2, 1.0001f, 0, 0), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_mask: rate must be");
}

static void test_bad_rank_is_rejected_with_shapes(void **state)
{
    (void)state;
    /* At build time: the per-sample rank must be 3. */
    nn_layer *l = nn_layer_create("spatial_dropout2d", "rate=0.5 data_format=channels_first");
    assert_non_null(l);
    int s2[2] = {5, 6};
    assert_int_equal(nn_layer_build(l, 2, s2), NN_ERR_SHAPE);
    assert_error_contains("spatial_dropout2d: expected a per-sample input of rank 3 (C, H, W) for "
                          "channels_first, got rank 2 with shape (5, 6)");
    nn_layer_free(l);
    l = nn_layer_create("spatial_dropout2d", "rate=0.5 data_format=channels_last");
    int s4[4] = {2, 3, 4, 5};
    assert_int_equal(nn_layer_build(l, 4, s4), NN_ERR_SHAPE);
    assert_error_contains("rank 3 (H, W, C) for channels_last, got rank 4 with shape (2, 3, 4, 5)");
    nn_layer_free(l);

    /* At forward time, straight through the hook (nn_layer_forward's own
     * shape check would answer first): rank 3 and rank 5 batches. */
    int s3[3] = {3, 4, 5};
    l = make_layer("spatial_dropout2d", "rate=0.5 data_format=channels_first", 3, s3);
    nn_graph *g = nn_graph_create(0);
    int b3[3] = {3, 4, 5}, b5[5] = {2, 3, 4, 5, 1};
    tensor *x3 = make_input(3, b3, 1), *x5 = make_input(5, b5, 1), *y;
    assert_int_equal(l->type->forward(l, g, x3, &y, 1), NN_ERR_SHAPE);
    assert_error_contains("spatial_dropout2d: expected input of rank 4 (N, C, H, W), got rank 3 with "
                          "shape (3, 4, 5)");
    assert_int_equal(l->type->forward(l, g, x5, &y, 0), NN_ERR_SHAPE);
    assert_error_contains("expected input of rank 4 (N, C, H, W), got rank 5 with shape (2, 3, 4, 5, 1)");
    assert_int_equal(nn_layer_forward(l, g, x3, &y, 1), NN_ERR_SHAPE);
    assert_int_equal(l->calls, 0);
    tensor_free(x3);
    tensor_free(x5);
    nn_graph_free(g);
    nn_layer_free(l);
}

static void test_raw_api_argument_errors(void **state)
{
    (void)state;
    float v[8] = {0};
    uint8_t m[4] = {1, 1, 1, 1};
    assert_int_equal(nn_spatial_dropout_forward(v, m, v, -1, 2, 2, NN_CHANNELS_FIRST, 0.5f, 0, 0), NN_ERR_SHAPE);
    assert_error_contains("N, C and spatial must be >= 0, but got N=-1, C=2, spatial=2");
    assert_int_equal(nn_spatial_dropout_apply(v, m, v, 2, 2, -3, NN_CHANNELS_FIRST, 0.5f), NN_ERR_SHAPE);
    assert_error_contains("nn_spatial_dropout_apply: N, C and spatial must be >= 0");
    assert_int_equal(nn_spatial_dropout_forward(v, m, v, 2, 2, 2, (nn_data_format)7, 0.5f, 0, 0), NN_ERR_ARG);
    assert_error_contains("fmt must be NN_CHANNELS_FIRST or NN_CHANNELS_LAST, but got 7");
    assert_int_equal(nn_spatial_dropout_forward(NULL, m, v, 2, 2, 2, NN_CHANNELS_FIRST, 0.5f, 0, 0), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_forward: y is NULL");
    assert_int_equal(nn_spatial_dropout_forward(v, m, NULL, 2, 2, 2, NN_CHANNELS_LAST, 0.5f, 0, 0), NN_ERR_ARG);
    assert_error_contains("x is NULL");
    assert_int_equal(nn_spatial_dropout_apply(v, NULL, v, 2, 2, 2, NN_CHANNELS_LAST, 0.5f), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_apply: mask is NULL");
    assert_int_equal(nn_spatial_dropout_backward(v, NULL, v, 2, 2, 2, NN_CHANNELS_FIRST, 0.5f), NN_ERR_ARG);
    assert_error_contains("nn_spatial_dropout_backward: mask is NULL");
    assert_int_equal(nn_spatial_dropout_backward(NULL, m, v, 2, 2, 2, NN_CHANNELS_FIRST, 0.5f), NN_ERR_ARG);
    assert_error_contains("dx is NULL");
    assert_int_equal(nn_spatial_dropout_forward(v, NULL, v, INT_MAX, INT_MAX, LONG_MAX, NN_CHANNELS_FIRST, 0.5f, 0, 0),
                     NN_ERR_SHAPE);
    assert_error_contains("is too large");
    assert_int_equal(nn_spatial_dropout_mask(m, 2, -2, 0.5f, 0, 0), NN_ERR_SHAPE);
    assert_error_contains("N and C must be >= 0, but got N=2, C=-2");
    /* Nothing was written by the failing calls. */
    for (int i = 0; i < 8; i++) assert_int_equal(bits(v[i]), 0u);
    for (int i = 0; i < 4; i++) assert_int_equal(m[i], 1);
}

/* ---- backward ------------------------------------------------------------- */

/* dx = dy * mask * s with the forward's mask, through the graph; dropped
 * maps get exactly 0 even where dy is Inf or NaN. */
static void test_backward_uses_the_forward_mask(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = (nn_data_format)f;
        const int N = 3, C = 10, H = 3, W = 4;
        const size_t S = (size_t)H * W;
        int cf[4] = {N, C, H, W}, cl[4] = {N, H, W, C};
        const int *xs = fmt == NN_CHANNELS_FIRST ? cf : cl;
        char cfg[96];
        snprintf(cfg, sizeof cfg, "rate=0.4 seed=8 data_format=%s", nn_data_format_name(fmt));
        nn_layer *l = make_layer("spatial_dropout2d", cfg, 3, xs + 1);
        l->calls = 5; /* the forward draws with call 5 */
        tensor *x = make_leaf(4, xs, 9), *w = make_input(4, xs, 10), *y, *loss;
        uint8_t keep[3 * 10];
        ref_mask(keep, N, C, 0.4f, 8, 5);
        for (size_t e = 0; e < w->size; e++) /* non-finite dy on dropped maps */
            if (!keep[map_of(e, C, S, fmt)]) w->data[e] = e % 2 ? NAN : INFINITY;
        nn_graph *g = nn_graph_create(0);
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        assert_int_equal(l->calls, 6);
        assert_int_equal(nn_graph_node_count(g), 1);
        check_output(y->data, x->data, N, C, S, fmt, 0.4f, 8, 5);
        assert_ok(nn_op_weighted_sum(g, y, w, &loss));
        assert_ok(nn_graph_backward(g, loss));
        check_grad(x->grad, NULL, keep, w->data, N, C, S, fmt, 0.4f); /* dropped: exactly +0.0 */
        assert_int_equal(l->calls, 6); /* backward draws nothing */
        nn_graph_free(g);
        tensor_free(x);
        tensor_free(w);
        nn_layer_free(l);
    }
}

/* The raw backward ADDS into dx and leaves dropped maps' dx untouched. */
static void test_raw_backward_adds(void **state)
{
    (void)state;
    const int N = 5, C = 7;
    const long S = 11;
    const size_t total = (size_t)N * C * (size_t)S;
    float *dx = malloc(total * sizeof(float)), *dx0 = malloc(total * sizeof(float));
    float *dy = malloc(total * sizeof(float));
    uint8_t mask[35];
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = (nn_data_format)f;
        assert_ok(nn_spatial_dropout_mask(mask, N, C, 0.35f, 12, 2));
        fill_nonzero(dx0, total, 13);
        fill_nonzero(dy, total, 14);
        dy[3] = NAN;
        dy[40] = -INFINITY;
        memcpy(dx, dx0, total * sizeof(float));
        assert_ok(nn_spatial_dropout_backward(dx, mask, dy, N, C, S, fmt, 0.35f));
        check_mask(mask, N, C, 0.35f, 12, 2);
        check_grad(dx, dx0, mask, dy, N, C, (size_t)S, fmt, 0.35f);
    }
    free(dx);
    free(dx0);
    free(dy);
}

/* Central differences with the mask pinned (calls reset before each
 * forward): the layer is linear with Jacobian diag(mask * s). */
static double weighted(const tensor *y, const tensor *w)
{
    double acc = 0;
    for (size_t i = 0; i < y->size; i++) acc += (double)y->data[i] * w->data[i];
    return acc;
}

static void test_finite_differences_with_fixed_mask(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = (nn_data_format)f;
        int cf[4] = {2, 4, 2, 3}, cl[4] = {2, 2, 3, 4};
        const int *xs = fmt == NN_CHANNELS_FIRST ? cf : cl;
        char cfg[96];
        snprintf(cfg, sizeof cfg, "rate=0.5 seed=2 data_format=%s", nn_data_format_name(fmt));
        nn_layer *l = make_layer("spatial_dropout2d", cfg, 3, xs + 1);
        tensor *x = make_leaf(4, xs, 15), *w = make_input(4, xs, 16), *y, *loss;
        nn_graph *g = nn_graph_create(0);
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        assert_ok(nn_op_weighted_sum(g, y, w, &loss));
        assert_ok(nn_graph_backward(g, loss));
        nn_graph_set_grad_enabled(g, 0);
        double dd = 0, aa = 0;
        int kept = 0, dropped = 0;
        for (size_t i = 0; i < x->size; i++) {
            const float orig = x->data[i], h = 1e-2f;
            double fp, fm;
            x->data[i] = orig + h;
            l->calls = 0;
            nn_graph_reset(g);
            assert_ok(nn_layer_forward(l, g, x, &y, 1));
            fp = weighted(y, w);
            x->data[i] = orig - h;
            l->calls = 0;
            nn_graph_reset(g);
            assert_ok(nn_layer_forward(l, g, x, &y, 1));
            fm = weighted(y, w);
            x->data[i] = orig;
            const double num = (fp - fm) / ((double)(orig + h) - (double)(orig - h));
            dd += (num - x->grad[i]) * (num - x->grad[i]);
            aa += num * num;
            if (num == 0.0) dropped++;
            else kept++;
        }
        assert_true(kept > 0 && dropped > 0);
        if (sqrt(dd) > 1e-3 * sqrt(aa)) fail_msg("%s: relative error %g", cfg, sqrt(dd / aa));
        nn_graph_free(g);
        tensor_free(x);
        tensor_free(w);
        nn_layer_free(l);
    }
}

/* ---- statistics ------------------------------------------------------------- */

static void test_drop_fraction_within_binomial_bound(void **state)
{
    (void)state;
    static const float rates[] = {0.1f, 0.25f, 0.5f, 0.8f};
    const int N = 40, C = 50, calls = 100;
    uint8_t mask[40 * 50];
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        const double M = (double)N * C * calls, p = rates[r];
        double dropped = 0;
        for (int k = 0; k < calls; k++) {
            assert_ok(nn_spatial_dropout_mask(mask, N, C, rates[r], 31, (uint64_t)k));
            for (int i = 0; i < N * C; i++) dropped += !mask[i];
        }
        const double frac = dropped / M, bound = 4.5 * sqrt(p * (1 - p) / M);
        if (fabs(frac - p) > bound)
            fail_msg("rate %g: dropped fraction %g, bound +-%g", p, frac, bound);
    }
}

/* Ones at rate 0.5 through the layer: every value is 0 or 2, and the mean
 * over draws is 1 within the binomial bound. */
static void test_unbiased_mean(void **state)
{
    (void)state;
    int shape[4] = {16, 32, 3, 3};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 seed=4 data_format=channels_first", 3, shape + 1);
    tensor *x = tensor_create(4, shape);
    tensor_fill(x, 1.0f);
    nn_graph *g = nn_graph_create(0);
    nn_graph_set_grad_enabled(g, 0);
    double sum = 0;
    float vmax = 0;
    const int calls = 50;
    for (int k = 0; k < calls; k++) {
        tensor *y;
        nn_graph_reset(g);
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        for (size_t i = 0; i < y->size; i++) {
            assert_true(y->data[i] == 0.0f || y->data[i] == 2.0f);
            sum += y->data[i];
            vmax = y->data[i] > vmax ? y->data[i] : vmax;
        }
    }
    /* One draw per map: M maps of variance 1 each. */
    const double maps = 16.0 * 32 * calls, mean = sum / (maps * 9);
    assert_true(fabs(mean - 1.0) <= 4.5 / sqrt(maps));
    assert_true(vmax == 2.0f);
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(l);
}

static double agreement(const uint8_t *a, const uint8_t *b, int n)
{
    int same = 0;
    for (int i = 0; i < n; i++) same += a[i] == b[i];
    return (double)same / n;
}

/* Samples, calls and seeds get independent masks: two masks agree on a
 * fraction 1 - 2r(1-r) of their entries. */
static void test_independent_masks(void **state)
{
    (void)state;
    enum { N = 2, C = 4096 };
    static uint8_t m0[N * C], m1[N * C], m2[N * C], again[N * C];
    const double r = 0.3, want = 1 - 2 * r * (1 - r), bound = 4.5 * sqrt(want * (1 - want) / C);
    assert_ok(nn_spatial_dropout_mask(m0, N, C, 0.3f, 100, 0));
    assert_ok(nn_spatial_dropout_mask(m1, N, C, 0.3f, 100, 1));
    assert_ok(nn_spatial_dropout_mask(m2, N, C, 0.3f, 101, 0));
    assert_ok(nn_spatial_dropout_mask(again, N, C, 0.3f, 100, 0));
    assert_memory_equal(m0, again, sizeof m0); /* same seed and call: same mask */
    double a = agreement(m0, m0 + C, C);       /* sample 0 vs sample 1 */
    if (fabs(a - want) > bound) fail_msg("samples agree on %g, want %g +- %g", a, want, bound);
    a = agreement(m0, m1, C);                  /* successive calls */
    if (fabs(a - want) > bound) fail_msg("calls agree on %g, want %g +- %g", a, want, bound);
    a = agreement(m0, m2, C);                  /* different seeds */
    if (fabs(a - want) > bound) fail_msg("seeds agree on %g, want %g +- %g", a, want, bound);

    /* Through the layer: successive training calls draw new masks. */
    int shape[4] = {4, 64, 2, 2};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 seed=6 data_format=channels_first", 3, shape + 1);
    tensor *x = make_input(4, shape, 17);
    nn_graph *g = nn_graph_create(0);
    tensor *y1, *y2;
    assert_ok(nn_layer_forward(l, g, x, &y1, 1));
    assert_ok(nn_layer_forward(l, g, x, &y2, 1));
    assert_true(memcmp(y1->data, y2->data, x->size * sizeof(float)) != 0);
    check_output(y1->data, x->data, 4, 64, 4, NN_CHANNELS_FIRST, 0.5f, 6, 0);
    check_output(y2->data, x->data, 4, 64, 4, NN_CHANNELS_FIRST, 0.5f, 6, 1);
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(l);
}

/* The vector kernels against the scalar references, over channel counts
 * and map sizes around every vector width (4, 8, 16 floats) and past the
 * 2048-channel chunk, buffers 0-2 floats off alignment, in place, 1 and 2
 * threads, with Inf, NaN and -0.0 in the input and -0.0 in the gradient
 * being added to: forward (and its mask) and the adding backward against
 * the references, apply (a given mask, which the reference forward does not
 * take) against its formula, bit for bit. */
static void test_kernels_match_reference(void **state)
{
    (void)state;
    static const int Cs[] = {1, 3, 4, 5, 8, 15, 16, 17, 24, 31, 32, 33, 48, 64, 100, 2049};
    static const long Ss[] = {1, 3, 16, 17, 49, 196};
    const int threads_before = nn_get_threads(), N = 3;
    const float rate = 0.3f, s = ref_scale(rate);
    size_t cases = 0;
    for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
        for (size_t si = 0; si < sizeof Ss / sizeof Ss[0]; si++) {
            const int C = Cs[ci];
            const long S = Ss[si];
            if (C > 100 && S > 17) continue;
            const size_t total = (size_t)N * (size_t)C * (size_t)S, off = (ci + si) % 3;
            float *x = malloc((total + 3) * sizeof(float)), *y = malloc((total + 3) * sizeof(float));
            float *dx = malloc(total * sizeof(float)), *dx0 = malloc(total * sizeof(float));
            uint8_t *mask = malloc((size_t)N * (size_t)C), *given = malloc((size_t)N * (size_t)C);
            assert_true(x && y && dx && dx0 && mask && given);
            fill_nonzero(x, total + 3, 60 + ci);
            fill_nonzero(dx0, total, 90 + si);
            static const float special[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f};
            for (size_t i = 0; i < total; i += 7) x[off + i] = special[(i / 7) % 5];
            for (size_t i = 3; i < total; i += 5) dx0[i] = -0.0f; /* kept as -0.0 where dropped */
            for (size_t m = 0; m < (size_t)N * (size_t)C; m++) given[m] = (m * 7 + ci) % 3 != 0;
            for (int f = 0; f < 2; f++)
                for (int t = 1; t <= 2; t++) {
                    const nn_data_format fmt = (nn_data_format)f;
                    const float *xs = x + off;
                    assert_ok(nn_set_threads(t));
                    /* forward: y at an offset of its own, then in place */
                    assert_ok(nn_spatial_dropout_forward(y + (off + 1) % 3, mask, xs, N, C, S, fmt,
                                                         rate, 5, cases));
                    check_output(y + (off + 1) % 3, xs, N, C, (size_t)S, fmt, rate, 5, cases);
                    check_mask(mask, N, C, rate, 5, cases);
                    memcpy(y, xs, total * sizeof(float));
                    assert_ok(nn_spatial_dropout_forward(y, NULL, y, N, C, S, fmt, rate, 5, cases));
                    check_output(y, xs, N, C, (size_t)S, fmt, rate, 5, cases);
                    /* apply and the adding backward with a given mask */
                    memcpy(y, xs, total * sizeof(float));
                    assert_ok(nn_spatial_dropout_apply(y, given, y, N, C, S, fmt, rate));
                    memcpy(dx, dx0, total * sizeof(float));
                    assert_ok(nn_spatial_dropout_backward(dx, given, xs, N, C, S, fmt, rate));
                    check_grad(dx, dx0, given, xs, N, C, (size_t)S, fmt, rate);
                    for (size_t e = 0; e < total; e++) {
                        const int keep = given[map_of(e, C, (size_t)S, fmt)];
                        volatile float scaled = xs[e] * s; /* rounded, never fused into an FMA */
                        const uint32_t want = keep ? bits(scaled) : 0u;
                        if (bits(y[e]) != want)
                            fail_msg("C=%d S=%ld %s, %d thread(s), element %zu: apply 0x%08x "
                                     "(want 0x%08x)", C, S, nn_data_format_name(fmt), t, e,
                                     bits(y[e]), want);
                    }
                    cases++;
                }
            free(x);
            free(y);
            free(dx);
            free(dx0);
            free(mask);
            free(given);
        }
    assert_ok(nn_set_threads(threads_before));
    assert_int_equal(cases, 4 * (15 * 6 + 4));
}

/* ---- determinism and formats ------------------------------------------------ */

/* 1 and 2 threads give the same bytes; the shape is big enough for the
 * parallel path and splits samples between threads. */
static void test_same_result_with_1_and_2_threads(void **state)
{
    (void)state;
    const int N = 5, C = 37;
    const long S = 29 * 31;
    const size_t total = (size_t)N * C * (size_t)S;
    float *x = malloc(total * sizeof(float)), *dy = malloc(total * sizeof(float));
    float *y[2], *dx[2];
    uint8_t *mask[2];
    fill_nonzero(x, total, 18);
    fill_nonzero(dy, total, 19);
    const int threads_before = nn_get_threads();
    /* Many small maps too: the mask itself is then drawn in parallel. */
    enum { MN = 64, MC = 200, MS = 3 };
    static float mx[MN * MC * MS], my[2][MN * MC * MS];
    static uint8_t mm[2][MN * MC];
    fill_nonzero(mx, sizeof mx / sizeof mx[0], 45);
    for (int f = 0; f < 2; f++) {
        for (int t = 0; t < 2; t++) {
            assert_ok(nn_set_threads(t + 1));
            assert_ok(nn_spatial_dropout_forward(my[t], mm[t], mx, MN, MC, MS, (nn_data_format)f, 0.25f, 46, 2));
        }
        assert_memory_equal(mm[0], mm[1], sizeof mm[0]);
        assert_memory_equal(my[0], my[1], sizeof my[0]);
        check_output(my[1], mx, MN, MC, MS, (nn_data_format)f, 0.25f, 46, 2);
        check_mask(mm[1], MN, MC, 0.25f, 46, 2);
    }
    for (int f = 0; f < 2; f++) {
        const nn_data_format fmt = (nn_data_format)f;
        for (int t = 0; t < 2; t++) {
            assert_ok(nn_set_threads(t + 1));
            y[t] = malloc(total * sizeof(float));
            dx[t] = calloc(total, sizeof(float));
            mask[t] = malloc((size_t)N * C);
            assert_ok(nn_spatial_dropout_forward(y[t], mask[t], x, N, C, S, fmt, 0.25f, 44, 9));
            assert_ok(nn_spatial_dropout_backward(dx[t], mask[t], dy, N, C, S, fmt, 0.25f));
        }
        assert_memory_equal(mask[0], mask[1], (size_t)N * C);
        assert_memory_equal(y[0], y[1], total * sizeof(float));
        assert_memory_equal(dx[0], dx[1], total * sizeof(float));
        check_output(y[1], x, N, C, (size_t)S, fmt, 0.25f, 44, 9);
        /* Without a mask buffer the draws are the same too. */
        float *y3 = malloc(total * sizeof(float));
        assert_ok(nn_spatial_dropout_forward(y3, NULL, x, N, C, S, fmt, 0.25f, 44, 9));
        assert_memory_equal(y3, y[0], total * sizeof(float));
        free(y3);
        for (int t = 0; t < 2; t++) {
            free(y[t]);
            free(dx[t]);
            free(mask[t]);
        }
    }
    assert_ok(nn_set_threads(threads_before));
    free(x);
    free(dy);
}

/* Same seed and call: the channels_last output is the transpose of the
 * channels_first one, and so is the gradient. */
static void test_formats_agree_after_transpose(void **state)
{
    (void)state;
    const int N = 3, C = 6, H = 4, W = 5;
    const size_t S = (size_t)H * W;
    int cf[4] = {N, C, H, W}, cl[4] = {N, H, W, C};
    nn_layer *lf = make_layer("spatial_dropout2d", "rate=0.5 seed=23 data_format=channels_first", 3, cf + 1);
    nn_layer *ll = make_layer("spatial_dropout2d", "rate=0.5 seed=23 data_format=channels_last", 3, cl + 1);
    tensor *xf = make_leaf(4, cf, 20), *xl = make_leaf(4, cl, 0);
    to_last(xl->data, xf->data, N, C, S);
    tensor *wf = make_input(4, cf, 21), *wl = make_input(4, cl, 0);
    to_last(wl->data, wf->data, N, C, S);
    /* One graph each: a second backward on a shared tape would rerun the
     * first loss's nodes. */
    nn_graph *gf = nn_graph_create(0), *gl = nn_graph_create(0);
    tensor *yf, *yl, *lossf, *lossl;
    assert_ok(nn_layer_forward(lf, gf, xf, &yf, 1));
    assert_ok(nn_layer_forward(ll, gl, xl, &yl, 1));
    float *back = malloc(xf->size * sizeof(float));
    to_first(back, yl->data, N, C, S);
    assert_memory_equal(back, yf->data, xf->size * sizeof(float));
    int dropped = 0;
    for (size_t i = 0; i < xf->size; i++) dropped += yf->data[i] == 0.0f;
    assert_true(dropped > 0 && dropped < (int)xf->size);
    assert_ok(nn_op_weighted_sum(gf, yf, wf, &lossf));
    assert_ok(nn_op_weighted_sum(gl, yl, wl, &lossl));
    assert_ok(nn_graph_backward(gf, lossf));
    assert_ok(nn_graph_backward(gl, lossl));
    to_first(back, xl->grad, N, C, S);
    assert_memory_equal(back, xf->grad, xf->size * sizeof(float));
    free(back);
    nn_graph_free(gf);
    nn_graph_free(gl);
    tensor_free(xf);
    tensor_free(xl);
    tensor_free(wf);
    tensor_free(wl);
    nn_layer_free(lf);
    nn_layer_free(ll);
}

/* ---- config ------------------------------------------------------------------ */

static nn_layer *reload(const nn_layer *l)
{
    char cfg[256];
    assert_ok(nn_layer_config_string(l, cfg, sizeof cfg));
    nn_layer *r = nn_layer_create(l->type->name, cfg);
    if (!r) fail_msg("reloading '%s': %s", cfg, nn_last_error());
    char again[256];
    assert_ok(nn_layer_config_string(r, again, sizeof again));
    assert_string_equal(cfg, again);
    return r;
}

static void assert_same_layer(const nn_layer *a, const nn_layer *b)
{
    const nn_spatial_dropout_state *sa = state_of(a), *sb = state_of(b);
    assert_int_equal(bits(sa->rate), bits(sb->rate));
    assert_int_equal(sa->format, sb->format);
    assert_int_equal(sa->inplace, sb->inplace);
    assert_int_equal(sa->dims, sb->dims);
    assert_int_equal(a->seed_fixed, b->seed_fixed);
    if (a->seed_fixed) assert_true(a->seed == b->seed);
}

/* Built under a channels_first default and reloaded under channels_last, the
 * layer keeps channels_first: the resolved format is always written. */
static void test_config_round_trip_keeps_format(void **state)
{
    (void)state;
    assert_ok(nn_set_image_data_format(NN_CHANNELS_FIRST));
    nn_layer *a = nn_layer_create("spatial_dropout2d", "rate=0.3");
    nn_layer *b = nn_layer_create("spatial_dropout2d", "rate=0.1 seed=18446744073709551615 inplace=true");
    nn_layer *c = nn_layer_create("spatial_dropout3d", "rate=0.7");
    nn_layer *d = nn_layer_create("spatial_dropout1d", "rate=0.2"); /* ignores the image default */
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    assert_int_equal(state_of(a)->format, NN_CHANNELS_FIRST);
    assert_int_equal(state_of(c)->format, NN_CHANNELS_FIRST);
    assert_int_equal(state_of(d)->format, NN_CHANNELS_LAST);
    char cfg[256];
    assert_ok(nn_layer_config_string(a, cfg, sizeof cfg));
    assert_string_equal(cfg, "rate=0.300000012 data_format=channels_first inplace=false");
    assert_ok(nn_layer_config_string(b, cfg, sizeof cfg));
    assert_string_equal(cfg, "rate=0.100000001 data_format=channels_first inplace=true "
                             "seed=18446744073709551615");
    assert_ok(nn_set_image_data_format(NN_CHANNELS_LAST));
    nn_layer *layers[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++) {
        nn_layer *r = reload(layers[i]);
        assert_same_layer(layers[i], r);
        nn_layer_free(r);
    }
    /* A fresh layer under the new default does take it. */
    nn_layer *e = nn_layer_create("spatial_dropout2d", "rate=0.3");
    assert_int_equal(state_of(e)->format, NN_CHANNELS_LAST);
    nn_reset_image_data_format();

    /* The same through a model spec. */
    nn_model *m = nn_model_create(1);
    assert_ok(nn_set_image_data_format(NN_CHANNELS_FIRST));
    assert_ok(nn_model_add_spec(m, "spatial_dropout2d rate=0.25 seed=4\n"));
    nn_reset_image_data_format();
    char spec[512];
    assert_ok(nn_model_spec_string(m, spec, sizeof spec));
    assert_ok(nn_set_image_data_format(NN_CHANNELS_LAST));
    nn_model *m2 = nn_model_create(1);
    assert_ok(nn_model_add_spec(m2, spec));
    nn_reset_image_data_format();
    assert_same_layer(m->layers[0], m2->layers[0]);
    assert_int_equal(state_of(m2->layers[0])->format, NN_CHANNELS_FIRST);
    nn_model_free(m);
    nn_model_free(m2);
    for (int i = 0; i < 4; i++) nn_layer_free(layers[i]);
    nn_layer_free(e);
}

/* ---- in place ---------------------------------------------------------------- */

static void test_inplace_writes_into_x(void **state)
{
    (void)state;
    int shape[4] = {3, 8, 4, 4};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 seed=24 inplace=true data_format=channels_first",
                             3, shape + 1);
    /* A leaf that needs no gradient (input data). */
    tensor *x = make_input(4, shape, 25);
    float *orig = malloc(x->size * sizeof(float));
    memcpy(orig, x->data, x->size * sizeof(float));
    nn_graph *g = nn_graph_create(0);
    tensor *y;
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    assert_ptr_equal(y->data, x->data);
    check_output(y->data, orig, 3, 8, 16, NN_CHANNELS_FIRST, 0.5f, 24, 0);

    /* Inside a graph: leaf a -> add -> x -> dropout in place -> loss. The
     * add's backward does not read its output, so this is allowed, and the
     * gradient reaching a is w * mask * s. */
    nn_graph_reset(g);
    l->calls = 0;
    tensor *a = make_leaf(4, shape, 26), *zero = tensor_zeros(4, shape), *w = make_input(4, shape, 27);
    tensor *sum, *loss;
    assert_ok(nn_op_add(g, a, zero, &sum));
    assert_ok(nn_layer_forward(l, g, sum, &y, 1));
    assert_ptr_equal(y->data, sum->data);
    assert_ptr_not_equal(y, sum);
    check_output(y->data, a->data, 3, 8, 16, NN_CHANNELS_FIRST, 0.5f, 24, 0);
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    uint8_t keep[3 * 8];
    ref_mask(keep, 3, 8, 0.5f, 24, 0);
    check_grad(a->grad, NULL, keep, w->data, 3, 8, 16, NN_CHANNELS_FIRST, 0.5f);
    free(orig);
    tensor_free(a);
    tensor_free(zero);
    tensor_free(w);
    tensor_free(x);
    nn_graph_free(g);
    nn_layer_free(l);
}

static void test_inplace_refuses_unsafe_inputs(void **state)
{
    (void)state;
    int shape[4] = {2, 3, 4, 4};
    nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 seed=1 inplace=true data_format=channels_first",
                             3, shape + 1);
    nn_graph *g = nn_graph_create(0);
    tensor *y = NULL;

    /* 1. A leaf that requires a gradient. */
    tensor *leaf = make_leaf(4, shape, 28);
    float *orig = malloc(leaf->size * sizeof(float));
    memcpy(orig, leaf->data, leaf->size * sizeof(float));
    assert_int_equal(nn_layer_forward(l, g, leaf, &y, 1), NN_ERR_STATE);
    assert_error_contains("spatial_dropout2d: inplace=true cannot overwrite a leaf tensor that requires "
                          "a gradient; use inplace=false");
    assert_memory_equal(leaf->data, orig, leaf->size * sizeof(float));
    assert_int_equal(l->calls, 0);

    /* 2. A parameter. */
    tensor *param = make_input(4, shape, 29);
    param->flags |= TENSOR_PARAM;
    memcpy(orig, param->data, param->size * sizeof(float));
    assert_int_equal(nn_layer_forward(l, g, param, &y, 1), NN_ERR_STATE);
    assert_error_contains("cannot overwrite a model parameter");
    assert_memory_equal(param->data, orig, param->size * sizeof(float));

    /* 3. The output of an op whose backward reads its output (relu). */
    nn_layer *relu = make_layer("relu", "", 3, shape + 1);
    tensor *r;
    assert_ok(nn_layer_forward(relu, g, leaf, &r, 1));
    memcpy(orig, r->data, r->size * sizeof(float));
    assert_int_equal(nn_layer_forward(l, g, r, &y, 1), NN_ERR_STATE);
    assert_error_contains("cannot overwrite the output of 'relu', whose backward reads it");
    assert_memory_equal(r->data, orig, r->size * sizeof(float));

    /* In eval mode nothing is written, so nothing is refused. */
    assert_ok(nn_layer_forward(l, g, leaf, &y, 0));
    assert_ptr_equal(y, leaf);

    /* The same layer without inplace accepts all three. */
    nn_layer *copy = make_layer("spatial_dropout2d", "rate=0.5 seed=1 data_format=channels_first", 3, shape + 1);
    assert_ok(nn_layer_forward(copy, g, leaf, &y, 1));
    assert_ok(nn_layer_forward(copy, g, param, &y, 1));
    assert_ok(nn_layer_forward(copy, g, r, &y, 1));
    free(orig);
    tensor_free(leaf);
    tensor_free(param);
    nn_graph_free(g);
    nn_layer_free(relu);
    nn_layer_free(copy);
    nn_layer_free(l);
}

/* ---- siblings, empty tensors, model modes ---------------------------------- */

static void run_sibling(const char *type, const char *fmt, int rank, const int *shape, int C, size_t S,
                        nn_data_format f)
{
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rate=0.5 seed=30 data_format=%s", fmt);
    nn_layer *l = make_layer(type, cfg, rank - 1, shape + 1);
    tensor *x = make_leaf(rank, shape, 31), *w = make_input(rank, shape, 32), *y, *loss;
    nn_graph *g = nn_graph_create(0);
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    assert_int_equal(y->rank, rank);
    size_t dropped = check_output(y->data, x->data, shape[0], C, S, f, 0.5f, 30, 0);
    assert_true(dropped > 0 && dropped < (size_t)shape[0] * C);
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    uint8_t *keep = malloc((size_t)shape[0] * (size_t)C);
    ref_mask(keep, shape[0], C, 0.5f, 30, 0);
    check_grad(x->grad, NULL, keep, w->data, shape[0], C, S, f, 0.5f);
    free(keep);
    nn_graph_free(g);
    tensor_free(x);
    tensor_free(w);
    nn_layer_free(l);
}

static void test_spatial_dropout1d_and_3d(void **state)
{
    (void)state;
    int nlc[3] = {4, 9, 6}, ncl[3] = {4, 6, 9};
    run_sibling("spatial_dropout1d", "channels_last", 3, nlc, 6, 9, NN_CHANNELS_LAST);
    run_sibling("spatial_dropout1d", "channels_first", 3, ncl, 6, 9, NN_CHANNELS_FIRST);
    int cf5[5] = {3, 5, 2, 3, 4}, cl5[5] = {3, 2, 3, 4, 5};
    run_sibling("spatial_dropout3d", "channels_first", 5, cf5, 5, 24, NN_CHANNELS_FIRST);
    run_sibling("spatial_dropout3d", "channels_last", 5, cl5, 5, 24, NN_CHANNELS_LAST);

    /* Keras's layout is the 1d default. */
    nn_layer *l = nn_layer_create("spatial_dropout1d", "rate=0.5");
    assert_int_equal(state_of(l)->format, NN_CHANNELS_LAST);
    int s3[3] = {2, 3, 4};
    assert_int_equal(nn_layer_build(l, 3, s3), NN_ERR_SHAPE);
    assert_error_contains("spatial_dropout1d: expected a per-sample input of rank 2 (L, C) for channels_last, "
                          "got rank 3 with shape (2, 3, 4)");
    nn_layer_free(l);
    l = nn_layer_create("spatial_dropout3d", "rate=0.5 data_format=channels_first");
    assert_int_equal(nn_layer_build(l, 3, s3), NN_ERR_SHAPE);
    assert_error_contains("spatial_dropout3d: expected a per-sample input of rank 4 (C, D, H, W) for "
                          "channels_first, got rank 3 with shape (2, 3, 4)");
    nn_layer_free(l);
}

static void test_empty_tensors_pass_through(void **state)
{
    (void)state;
    static const int shapes[3][4] = {{0, 3, 4, 4}, {2, 0, 4, 4}, {2, 3, 0, 4}};
    for (int i = 0; i < 3; i++) {
        nn_layer *l = make_layer("spatial_dropout2d", "rate=0.5 data_format=channels_first", 3, shapes[i] + 1);
        tensor *x = tensor_create(4, shapes[i]);
        assert_non_null(x);
        nn_graph *g = nn_graph_create(0);
        tensor *y = NULL;
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        assert_ptr_equal(y, x);
        assert_ok(nn_layer_forward(l, g, x, &y, 0));
        assert_ptr_equal(y, x);
        nn_graph_free(g);
        tensor_free(x);
        nn_layer_free(l);
    }
    /* The raw kernels accept empty shapes with NULL buffers. */
    assert_ok(nn_spatial_dropout_forward(NULL, NULL, NULL, 0, 5, 7, NN_CHANNELS_FIRST, 0.5f, 1, 1));
    assert_ok(nn_spatial_dropout_backward(NULL, NULL, NULL, 3, 0, 7, NN_CHANNELS_LAST, 0.5f));
    assert_ok(nn_spatial_dropout_apply(NULL, NULL, NULL, 3, 4, 0, NN_CHANNELS_LAST, 0.5f));
    uint8_t mask[12];
    assert_ok(nn_spatial_dropout_forward(NULL, mask, NULL, 3, 4, 0, NN_CHANNELS_LAST, 0.5f, 1, 1));
    check_mask(mask, 3, 4, 0.5f, 1, 1);
}

static void test_model_mode_and_per_call_override(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(7);
    assert_ok(nn_model_add(m, "spatial_dropout2d", "rate=0.5 data_format=channels_first"));
    int shape[3] = {16, 3, 3}, batch[4] = {4, 16, 3, 3};
    assert_ok(nn_model_build(m, 3, shape));
    tensor *x = make_input(4, batch, 33), *y;
    nn_layer *l = m->layers[0];
    assert_false(nn_model_is_training(m)); /* a new model is in eval mode */
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_DEFAULT));
    assert_ptr_equal(y, x);
    assert_int_equal(l->calls, 0);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN)); /* override: train */
    assert_ptr_not_equal(y, x);
    check_output(y->data, x->data, 4, 16, 9, NN_CHANNELS_FIRST, 0.5f, l->seed, 0);
    nn_model_set_training(m, 1);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_DEFAULT));
    assert_ptr_not_equal(y, x);
    check_output(y->data, x->data, 4, 16, 9, NN_CHANNELS_FIRST, 0.5f, l->seed, 1);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL)); /* override: eval */
    assert_ptr_equal(y, x);
    assert_int_equal(l->calls, 2);
    tensor_free(x);
    nn_model_free(m);
}

/* ---- PyTorch 1.13 ------------------------------------------------------------ */

#define FIXTURE "tests/fixtures/spatial_dropout/torch.txt"

/* Reads "name v v v ..." into out (n values); floats in C99 hex. */
static void read_line(FILE *f, const char *name, float *out, size_t n)
{
    char word[32];
    if (fscanf(f, "%31s", word) != 1 || strcmp(word, name))
        fail_msg(FIXTURE ": expected '%s', got '%s'", name, word);
    for (size_t i = 0; i < n; i++) {
        char tok[64];
        if (fscanf(f, "%63s", tok) != 1) fail_msg(FIXTURE ": '%s' ends after %zu values", name, i);
        char *end;
        out[i] = strtof(tok, &end);
        if (*end) fail_msg(FIXTURE ": bad number '%s' in '%s'", tok, name);
    }
}

/* Given torch's mask, nn's output and gradient equal F.dropout2d's: kept
 * maps bit for bit, dropped maps by value (torch writes x*0, which can be
 * -0.0; nn writes +0.0). In both formats. */
static void test_matches_pytorch_dropout2d(void **state)
{
    (void)state;
    FILE *f = fopen(FIXTURE, "r");
    if (!f) fail_msg("cannot open " FIXTURE " (run the suite from the repository root)");
    char line[256];
    int cases = 0;
    if (!fgets(line, sizeof line, f) || fscanf(f, " cases %d", &cases) != 1 || cases < 1)
        fail_msg(FIXTURE ": bad header");
    for (int k = 0; k < cases; k++) {
        int N, C, H, W;
        float rate;
        if (fscanf(f, " shape %d %d %d %d", &N, &C, &H, &W) != 4) fail_msg(FIXTURE ": bad shape line");
        read_line(f, "rate", &rate, 1);
        const size_t S = (size_t)H * W, total = (size_t)N * C * S;
        float *mf = malloc((size_t)N * C * sizeof(float)), *x = malloc(total * sizeof(float));
        float *y = malloc(total * sizeof(float)), *dy = malloc(total * sizeof(float));
        float *dx = malloc(total * sizeof(float)), *out = malloc(total * sizeof(float));
        float *xl = malloc(total * sizeof(float)), *tmp = malloc(total * sizeof(float));
        uint8_t *mask = malloc((size_t)N * C);
        read_line(f, "mask", mf, (size_t)N * C);
        read_line(f, "x", x, total);
        read_line(f, "y", y, total);
        read_line(f, "dy", dy, total);
        read_line(f, "dx", dx, total);
        int kept = 0;
        for (int i = 0; i < N * C; i++) kept += mask[i] = mf[i] != 0.0f;
        assert_true(kept > 0 && kept < N * C);
        for (int fmt = 0; fmt < 2; fmt++) {
            /* forward */
            if (fmt == NN_CHANNELS_FIRST) {
                assert_ok(nn_spatial_dropout_apply(out, mask, x, N, C, (long)S, NN_CHANNELS_FIRST, rate));
            } else {
                to_last(xl, x, N, C, S);
                assert_ok(nn_spatial_dropout_apply(tmp, mask, xl, N, C, (long)S, NN_CHANNELS_LAST, rate));
                to_first(out, tmp, N, C, S);
            }
            for (size_t e = 0; e < total; e++) {
                if (mask[e / S] ? bits(out[e]) != bits(y[e]) : (bits(out[e]) != 0u || y[e] != 0.0f))
                    fail_msg("case %d (%s): y[%zu] = %a, torch %a", k, fmt ? "channels_first" : "channels_last",
                             e, (double)out[e], (double)y[e]);
            }
            /* backward into zeros */
            memset(tmp, 0, total * sizeof(float));
            if (fmt == NN_CHANNELS_FIRST) {
                assert_ok(nn_spatial_dropout_backward(tmp, mask, dy, N, C, (long)S, NN_CHANNELS_FIRST, rate));
                memcpy(out, tmp, total * sizeof(float));
            } else {
                to_last(xl, dy, N, C, S);
                assert_ok(nn_spatial_dropout_backward(tmp, mask, xl, N, C, (long)S, NN_CHANNELS_LAST, rate));
                to_first(out, tmp, N, C, S);
            }
            for (size_t e = 0; e < total; e++) {
                if (mask[e / S] ? bits(out[e]) != bits(dx[e]) : (bits(out[e]) != 0u || dx[e] != 0.0f))
                    fail_msg("case %d: dx[%zu] = %a, torch %a", k, e, (double)out[e], (double)dx[e]);
            }
        }
        free(mf);
        free(x);
        free(y);
        free(dy);
        free(dx);
        free(out);
        free(xl);
        free(tmp);
        free(mask);
    }
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair_uniform_is_tensor_hash_uniform),
        cmocka_unit_test(test_reference_follows_the_definition),
        cmocka_unit_test(test_pair_errors),
        cmocka_unit_test(test_mask_constant_over_each_map),
        cmocka_unit_test(test_exact_scaling),
        cmocka_unit_test(test_exact_zeros_for_nonfinite_input),
        cmocka_unit_test(test_inference_is_identity_without_copy),
        cmocka_unit_test(test_rate_zero_is_identity_and_advances_calls),
        cmocka_unit_test(test_rate_one_gives_zeros_and_zero_grad),
        cmocka_unit_test(test_bad_rate_is_rejected_with_the_value),
        cmocka_unit_test(test_bad_rank_is_rejected_with_shapes),
        cmocka_unit_test(test_raw_api_argument_errors),
        cmocka_unit_test(test_backward_uses_the_forward_mask),
        cmocka_unit_test(test_raw_backward_adds),
        cmocka_unit_test(test_finite_differences_with_fixed_mask),
        cmocka_unit_test(test_drop_fraction_within_binomial_bound),
        cmocka_unit_test(test_unbiased_mean),
        cmocka_unit_test(test_independent_masks),
        cmocka_unit_test(test_kernels_match_reference),
        cmocka_unit_test(test_same_result_with_1_and_2_threads),
        cmocka_unit_test(test_formats_agree_after_transpose),
        cmocka_unit_test(test_config_round_trip_keeps_format),
        cmocka_unit_test(test_inplace_writes_into_x),
        cmocka_unit_test(test_inplace_refuses_unsafe_inputs),
        cmocka_unit_test(test_spatial_dropout1d_and_3d),
        cmocka_unit_test(test_empty_tensors_pass_through),
        cmocka_unit_test(test_model_mode_and_per_call_override),
        cmocka_unit_test(test_matches_pytorch_dropout2d),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
