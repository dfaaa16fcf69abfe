/* The activation layers (sigmoid, tanh, leaky_relu, elu, gelu, softmax) and
 * the activation= key of dense, conv2d, batchnorm and add:
 *   1. forward and backward against PyTorch 1.13 references
 *      (tests/fixtures/activations, written by tests/gen_activation_fixtures.py);
 *   2. dense, conv2d, batchnorm and add with activation=X equal the same layer
 *      with activation=linear followed by the X layer, bit for bit (forward,
 *      every input's gradient and parameter gradients; batchnorm in training
 *      and eval mode, both data formats);
 *   3. stability at extreme inputs (+-1e4, +-88, +-89, 0, -0);
 *   4. bad configs, config round trips, and the in-place spatial dropout
 *      check that reads saves_output;
 *   5. bit-identical results with 1 and 2 threads.
 *
 * Tolerance of the fixture comparison, per element:
 *   |got - ref| <= 4 eps (|ref| cond + extra) + 4 FLT_TRUE_MIN (1 + |x|) (1 + |dy|)
 * with eps = FLT_EPSILON. Each float32 rounding costs at most eps/2
 * relative, the C library's expf, expm1f, tanhf and erfcf are within 1-2
 * ulp, and each kernel chains only a few of them, so 4 eps covers the
 * arithmetic; cond and extra are the amplification that float32 inputs
 * cannot avoid, derived per activation (the same in PyTorch's float32):
 *   - gelu: the argument -x/sqrt2 is rounded (eps/2 relative), which
 *     erfc(t) turns into a relative error of about t^2 eps = x^2/2 eps for
 *     x < 0; exp(-x^2/2) in the derivative likewise.
 *   - softmax: x - max is rounded (eps/2 |x - max| absolute), which exp turns
 *     into a relative error of |x - max| eps/2 in that term and, through the
 *     row sum, at most about (cols) eps in every output.
 *   - the backward of sigmoid and tanh reads the saved y, whose rounding
 *     (eps/2 |y|) makes 1 - y or 1 - y^2 wrong by about eps |y| absolute when
 *     y -> +-1: extra = |dy| |y|.
 * The last term is for results below FLT_MIN (sigmoid(-88), gelu(-13.5)),
 * where a rounding costs an absolute FLT_TRUE_MIN/2 rather than a relative
 * eps/2, times the factors |x| and |dy| they are multiplied by. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define FX_DIR "tests/fixtures/activations/"
#define TOL_K 4.0

/* ---- fixtures ---- */

typedef struct {
    int rank, shape[TENSOR_MAX_RANK];
    size_t size;
    float *data;
} fx_array;

typedef struct {
    char layer[32], config[128];
    fx_array x, y, dy, dx;
} fx_case;

static void fx_load(fx_case *c, const char *file)
{
    char path[256];
    snprintf(path, sizeof path, FX_DIR "%s", file);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: cannot read fixture (run tests from the repository root)", path);
    memset(c, 0, sizeof *c);
    char line[256];
    while (fscanf(f, " %255s", line) == 1) {
        if (line[0] == '#') {
            if (!fgets(line, sizeof line, f)) break;
        } else if (!strcmp(line, "layer")) {
            if (fscanf(f, " %31s", c->layer) != 1) fail_msg("%s: bad layer line", path);
        } else if (!strcmp(line, "config")) {
            if (!fgets(c->config, sizeof c->config, f)) fail_msg("%s: bad config line", path);
            c->config[strcspn(c->config, "\r\n")] = '\0';
        } else if (!strcmp(line, "training")) {
            int t;
            if (fscanf(f, "%d", &t) != 1) fail_msg("%s: bad training line", path);
        } else if (!strcmp(line, "array")) {
            char name[16];
            fx_array a = {0};
            if (fscanf(f, " %15s %d", name, &a.rank) != 2 || a.rank < 1 || a.rank > TENSOR_MAX_RANK)
                fail_msg("%s: bad array header", path);
            a.size = 1;
            for (int i = 0; i < a.rank; i++) {
                if (fscanf(f, "%d", &a.shape[i]) != 1) fail_msg("%s: bad array shape", path);
                a.size *= (size_t)a.shape[i];
            }
            a.data = malloc(a.size * sizeof(float));
            for (size_t i = 0; i < a.size; i++)
                if (fscanf(f, "%f", &a.data[i]) != 1) fail_msg("%s: %s: value %zu missing", path, name, i);
            fx_array *dst = !strcmp(name, "x") ? &c->x : !strcmp(name, "y") ? &c->y
                            : !strcmp(name, "dy") ? &c->dy : !strcmp(name, "dx") ? &c->dx : NULL;
            if (!dst) fail_msg("%s: unknown array '%s'", path, name);
            *dst = a;
        } else {
            fail_msg("%s: unknown keyword '%s'", path, line);
        }
    }
    fclose(f);
    if (!c->x.data || !c->y.data || !c->dy.data || !c->dx.data || c->x.size != c->y.size ||
        c->x.size != c->dy.size || c->x.size != c->dx.size)
        fail_msg("%s: needs arrays x, y, dy, dx of one size", path);
}

static void fx_free(fx_case *c)
{
    free(c->x.data);
    free(c->y.data);
    free(c->dy.data);
    free(c->dx.data);
}

/* Runs a layer (created from type and config) on a copy of x in training
 * mode with loss sum(w * y). Copies y and dx into the caller's buffers. */
static void run_layer(const char *type, const char *config, int rank, const int *shape,
                      const float *x, const float *w, float *y_out, float *dx_out)
{
    nn_layer *l = nn_layer_create(type, config);
    if (!l) fail_msg("%s %s: %s", type, config, nn_last_error());
    assert_ok(nn_layer_build(l, rank - 1, shape + 1));
    assert_ok(nn_layer_alloc_params(l, 1));
    tensor *xt = test_require_grad(tensor_create(rank, shape));
    memcpy(xt->data, x, xt->size * sizeof(float));
    tensor *wt = tensor_create(rank, shape);
    memcpy(wt->data, w, wt->size * sizeof(float));
    nn_graph *g = nn_graph_create(0);
    tensor *y, *loss;
    assert_ok(nn_layer_forward(l, g, xt, &y, 1));
    assert_ok(nn_op_weighted_sum(g, y, wt, &loss));
    assert_ok(nn_graph_backward(g, loss));
    memcpy(y_out, y->data, y->size * sizeof(float));
    memcpy(dx_out, xt->grad, xt->size * sizeof(float));
    nn_graph_free(g);
    tensor_free(wt);
    tensor_free(xt);
    nn_layer_free(l);
}

/* Condition terms of the tolerance (see the top of the file). */
typedef struct {
    double fwd_cond, bwd_cond, bwd_extra;
} fx_cond;

static fx_cond fx_condition(const fx_case *c, size_t i)
{
    const double x = c->x.data[i], y = c->y.data[i], dy = c->dy.data[i];
    fx_cond k = {1.0, 1.0, 0.0};
    if (!strcmp(c->layer, "sigmoid") || !strcmp(c->layer, "tanh")) {
        k.bwd_extra = fabs(dy) * fabs(y);
    } else if (!strcmp(c->layer, "gelu")) {
        const double arg = x < 0 ? 1.0 + x * x / 2 : 1.0;
        const double cdf = 0.5 * erfc(-x / sqrt(2.0));
        const double xpdf = x * exp(-x * x / 2) / sqrt(2 * 3.14159265358979324);
        k.fwd_cond = arg;
        /* relative to |dx|, the terms Phi and x phi can cancel: bound each */
        k.bwd_cond = 0.0;
        k.bwd_extra = fabs(dy) * (fabs(cdf) * arg + fabs(xpdf) * (1.0 + x * x / 2));
    } else if (!strcmp(c->layer, "softmax")) {
        const int cols = c->x.shape[c->x.rank - 1];
        const size_t r0 = i - i % (size_t)cols;
        double m = c->x.data[r0];
        for (int j = 1; j < cols; j++) m = fmax(m, c->x.data[r0 + j]);
        k.fwd_cond = 1.0 + fabs(x - m) + cols;
        double sum = 0.0;
        for (int j = 0; j < cols; j++)
            sum += fabs(c->dy.data[r0 + j]) * c->y.data[r0 + j] *
                   (1.0 + fabs(c->x.data[r0 + j] - m) + cols);
        k.bwd_cond = k.fwd_cond;
        k.bwd_extra = y * (fabs(dy) + sum);
    }
    return k;
}

static double fx_ratio(double got, double ref, double cond, double extra, double x, double dy)
{
    const double eps = FLT_EPSILON;
    const double tol = TOL_K * eps * (fabs(ref) * cond + extra) +
                       TOL_K * FLT_TRUE_MIN * (1.0 + fabs(x)) * (1.0 + fabs(dy));
    if (isnan(got) || isnan(ref)) return INFINITY;
    return fabs(got - ref) / tol;
}

static void check_fixture(const char *file)
{
    fx_case c;
    fx_load(&c, file);
    float *y = malloc(c.x.size * sizeof(float)), *dx = malloc(c.x.size * sizeof(float));
    run_layer(c.layer, c.config, c.x.rank, c.x.shape, c.x.data, c.dy.data, y, dx);
    double worst_y = 0, worst_dx = 0;
    for (size_t i = 0; i < c.x.size; i++) {
        const fx_cond k = fx_condition(&c, i);
        const double ry = fx_ratio(y[i], c.y.data[i], k.fwd_cond, 0.0, c.x.data[i], 0.0);
        const double rdx = fx_ratio(dx[i], c.dx.data[i], k.bwd_cond, k.bwd_extra, c.x.data[i],
                                    c.dy.data[i]);
        if (ry > 1.0)
            fail_msg("%s: y[%zu] = %.9g, PyTorch %.9g (x = %.9g): %.3g times the tolerance", file, i,
                     y[i], c.y.data[i], c.x.data[i], ry);
        if (rdx > 1.0)
            fail_msg("%s: dx[%zu] = %.9g, PyTorch %.9g (x = %.9g): %.3g times the tolerance", file,
                     i, dx[i], c.dx.data[i], c.x.data[i], rdx);
        worst_y = fmax(worst_y, ry);
        worst_dx = fmax(worst_dx, rdx);
    }
    print_message("%-22s worst error / tolerance: y %.3f, dx %.3f\n", file, worst_y, worst_dx);
    free(y);
    free(dx);
    fx_free(&c);
}

static void test_pytorch_fixtures(void **state)
{
    (void)state;
    static const char *const files[] = {"sigmoid.txt", "tanh.txt",     "leaky_relu.txt",
                                        "leaky_relu_a0.01.txt", "elu.txt", "elu_a0.5.txt",
                                        "gelu.txt",    "softmax.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) check_fixture(files[i]);
}

/* ---- 2. activation= of dense and conv2d against linear + the layer ---- */

typedef struct {
    float *y, *dx, *p[NN_LAYER_MAX_PARAMS];
    size_t ny, nx, np[NN_LAYER_MAX_PARAMS];
    int n_params;
} result;

static void result_free(result *r)
{
    free(r->y);
    free(r->dx);
    for (int i = 0; i < r->n_params; i++) free(r->p[i]);
}

static float *copy_floats(const float *src, size_t n)
{
    float *d = malloc((n ? n : 1) * sizeof(float));
    if (n) memcpy(d, src, n * sizeof(float));
    return d;
}

static tensor *random_tensor(int rank, const int *shape, uint64_t seed, float scale)
{
    tensor *t = tensor_create(rank, shape);
    tensor_rng rng;
    tensor_rng_seed(&rng, seed);
    tensor_init_normal(t, &rng, 0.0f, scale);
    return t;
}

/* Runs `first` on n_in inputs of one shape (seeds 3, 4, ...; built on the
 * per-sample shape, params from seed 5) in training or eval mode and, if
 * `second` is given, that layer on first's output; loss = sum(w * y) with
 * w from seed 9. grad: 1 records and runs backward, 0 runs without a graph.
 * dx holds every input's gradient, one after the other. */
static result run_chain_n(const char *type, const char *config, const char *second,
                          const char *second_config, int n_in, int training, int rank,
                          const int *shape, int grad)
{
    nn_layer *a = nn_layer_create(type, config);
    if (!a) fail_msg("%s %s: %s", type, config, nn_last_error());
    if (n_in == 1) {
        assert_ok(nn_layer_build(a, rank - 1, shape + 1));
    } else {
        int ranks[NN_LAYER_MAX_INPUTS], shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
        for (int k = 0; k < n_in; k++) {
            ranks[k] = rank - 1;
            memcpy(shapes[k], shape + 1, (size_t)(rank - 1) * sizeof *shape);
        }
        assert_ok(nn_layer_build_multi(a, n_in, ranks, shapes));
    }
    assert_ok(nn_layer_alloc_params(a, 5));
    nn_layer *b = NULL;
    if (second) {
        b = nn_layer_create(second, second_config);
        if (!b) fail_msg("%s %s: %s", second, second_config, nn_last_error());
        assert_ok(nn_layer_build(b, a->out_rank, a->out_shape));
    }
    tensor *xs[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n_in; k++) {
        xs[k] = random_tensor(rank, shape, 3 + (uint64_t)k, 2.0f);
        if (grad) test_require_grad(xs[k]);
    }
    nn_graph *g = nn_graph_create(0);
    nn_graph_set_grad_enabled(g, grad);
    tensor *z, *y;
    assert_ok(nn_layer_forward_multi(a, g, n_in, xs, &z, training));
    if (b) assert_ok(nn_layer_forward(b, g, z, &y, training));
    else y = z;
    result r = {0};
    r.ny = y->size;
    r.y = copy_floats(y->data, y->size);
    if (grad) {
        tensor *w = random_tensor(y->rank, y->shape, 9, 1.0f), *loss;
        assert_ok(nn_op_weighted_sum(g, y, w, &loss));
        assert_ok(nn_graph_backward(g, loss));
        tensor_free(w);
        const size_t nx = xs[0]->size;
        r.nx = nx * (size_t)n_in;
        r.dx = malloc((r.nx ? r.nx : 1) * sizeof(float));
        for (int k = 0; k < n_in; k++) memcpy(r.dx + k * nx, xs[k]->grad, nx * sizeof(float));
        r.n_params = a->n_params;
        for (int i = 0; i < a->n_params; i++) { /* none for batchnorm's moving statistics */
            const tensor *t = a->params[i].t;
            r.np[i] = t->grad ? t->size : 0;
            r.p[i] = copy_floats(t->grad, r.np[i]);
        }
    }
    nn_graph_free(g);
    for (int k = 0; k < n_in; k++) tensor_free(xs[k]);
    nn_layer_free(b);
    nn_layer_free(a);
    return r;
}

static void assert_same(const char *what, const char *label, const float *a, const float *b, size_t n)
{
    if (memcmp(a, b, n * sizeof(float))) {
        size_t i = 0;
        while (i < n && !memcmp(a + i, b + i, sizeof(float))) i++;
        fail_msg("%s: %s differs at %zu: %.9g vs %.9g", label, what, i, a[i], b[i]);
    }
}

static void check_fused_n(const char *type, const char *base_config, const char *act,
                          const char *alpha, int n_in, int training, int rank, const int *shape)
{
    char fused[192], linear[192], label[256];
    snprintf(fused, sizeof fused, "%s activation=%s %s", base_config, act, alpha);
    snprintf(linear, sizeof linear, "%s activation=linear", base_config);
    snprintf(label, sizeof label, "%s %s (%d inputs, %s)", type, fused, n_in,
             training ? "train" : "eval");
    for (int grad = 1; grad >= 0; grad--) {
        result f = run_chain_n(type, fused, NULL, NULL, n_in, training, rank, shape, grad);
        result s = run_chain_n(type, linear, act, alpha, n_in, training, rank, shape, grad);
        assert_int_equal(f.ny, s.ny);
        assert_same("y", label, f.y, s.y, f.ny);
        if (grad) {
            assert_same("dx", label, f.dx, s.dx, f.nx);
            assert_int_equal(f.n_params, s.n_params);
            for (int i = 0; i < f.n_params; i++)
                assert_same("a parameter gradient", label, f.p[i], s.p[i], f.np[i]);
        }
        result_free(&f);
        result_free(&s);
    }
}

static void check_fused(const char *type, const char *base_config, const char *act,
                        const char *alpha, int rank, const int *shape)
{
    check_fused_n(type, base_config, act, alpha, 1, 1, rank, shape);
}

static const char *const acts[][2] = {
    {"sigmoid", ""}, {"tanh", ""}, {"leaky_relu", "alpha=0.2"}, {"leaky_relu", ""},
    {"elu", "alpha=0.7"}, {"gelu", ""}, {"softmax", ""},
    /* the fused path, whose backward masks dz in place instead of adding */
    {"relu", ""},
};
#define N_ACTS (sizeof acts / sizeof acts[0])

static void test_dense_activation_equals_layer(void **state)
{
    (void)state;
    const int shape[2] = {5, 7};
    for (size_t i = 0; i < N_ACTS; i++) {
        check_fused("dense", "units=6", acts[i][0], acts[i][1], 2, shape);
        check_fused("dense", "units=6 use_bias=false", acts[i][0], acts[i][1], 2, shape);
    }
}

static void test_conv2d_activation_equals_layer(void **state)
{
    (void)state;
    const int nhwc[4] = {2, 6, 5, 3}, nchw[4] = {2, 3, 6, 5};
    for (size_t i = 0; i < N_ACTS; i++) {
        check_fused("conv2d", "filters=4 kernel_size=3 padding=same data_format=channels_last",
                    acts[i][0], acts[i][1], 4, nhwc);
        check_fused("conv2d", "filters=4 kernel_size=2,3 strides=2 data_format=channels_first",
                    acts[i][0], acts[i][1], 4, nchw);
    }
}

/* 19 channels and 20 positions: one whole vector of every width the
 * kernels use (4, 8, 16 floats) and a remainder, along the channels
 * (channels-last) and along the positions (channels-first). */
static void test_batchnorm_activation_equals_layer(void **state)
{
    (void)state;
    const int nhwc[4] = {3, 5, 4, 19}, nchw[4] = {3, 19, 5, 4};
    for (size_t i = 0; i < N_ACTS; i++)
        for (int training = 1; training >= 0; training--) {
            check_fused_n("batchnorm", "momentum=0.9 data_format=channels_last", acts[i][0],
                          acts[i][1], 1, training, 4, nhwc);
            check_fused_n("batchnorm", "center=false data_format=channels_first", acts[i][0],
                          acts[i][1], 1, training, 4, nchw);
        }
}

static void test_add_activation_equals_layer(void **state)
{
    (void)state;
    const int shape[4] = {2, 5, 7, 3}; /* 210 elements: vectors and a remainder */
    for (size_t i = 0; i < N_ACTS; i++)
        for (int n_in = 2; n_in <= 3; n_in++)
            check_fused_n("add", "", acts[i][0], acts[i][1], n_in, 1, 4, shape);
}

/* ---- 3. extreme inputs ---- */

static const float extreme[] = {1e4f, -1e4f, 88.0f, -88.0f, 89.0f, -89.0f, 0.0f, -0.0f,
                                1e-30f, -1e-30f, -10.0f, 20.0f};
#define N_EXTREME (sizeof extreme / sizeof extreme[0])

/* y and dy/dx (dy = 1) of a layer at the extreme inputs; all finite. */
static void run_extreme(const char *type, const char *config, float *y, float *d)
{
    const int shape[2] = {1, (int)N_EXTREME};
    float ones[N_EXTREME];
    for (size_t i = 0; i < N_EXTREME; i++) ones[i] = 1.0f;
    run_layer(type, config, 2, shape, extreme, ones, y, d);
    for (size_t i = 0; i < N_EXTREME; i++)
        if (!isfinite(y[i]) || !isfinite(d[i]))
            fail_msg("%s %s at x = %g: y = %g, dy/dx = %g", type, config, extreme[i], y[i], d[i]);
}

/* index of v in extreme[] (distinguishing -0 from 0) */
static size_t ex(float v)
{
    for (size_t i = 0; i < N_EXTREME; i++)
        if (extreme[i] == v && signbit(extreme[i]) == signbit(v)) return i;
    fail_msg("no extreme input %g", v);
    return 0;
}

static void test_extreme_inputs(void **state)
{
    (void)state;
    float y[N_EXTREME], d[N_EXTREME];

    run_extreme("sigmoid", "", y, d);
    assert_true(y[ex(1e4f)] == 1.0f && y[ex(-1e4f)] == 0.0f);
    assert_true(y[ex(0.0f)] == 0.5f && y[ex(-0.0f)] == 0.5f && d[ex(0.0f)] == 0.25f);
    /* exp(-89) is subnormal but not 0: the exp(-|x|) form keeps it */
    assert_true(y[ex(-89.0f)] > 0.0f && y[ex(-89.0f)] < y[ex(-88.0f)]);
    assert_true(fabsf(y[ex(-88.0f)] - 6.0546e-39f) < 1e-42f);
    assert_true(d[ex(1e4f)] == 0.0f && d[ex(-1e4f)] == 0.0f);

    run_extreme("tanh", "", y, d);
    assert_true(y[ex(1e4f)] == 1.0f && y[ex(-1e4f)] == -1.0f && y[ex(-89.0f)] == -1.0f);
    assert_true(y[ex(-0.0f)] == 0.0f && signbit(y[ex(-0.0f)]) && d[ex(0.0f)] == 1.0f);
    assert_true(y[ex(1e-30f)] == 1e-30f);
    assert_true(d[ex(1e4f)] == 0.0f && d[ex(-1e4f)] == 0.0f);

    run_extreme("leaky_relu", "", y, d);
    assert_true(y[ex(-1e4f)] == -3000.0f && d[ex(-1e4f)] == 0.3f && d[ex(1e4f)] == 1.0f);
    /* derivative at 0 is alpha, as in PyTorch; -0 stays -0 */
    assert_true(d[ex(0.0f)] == 0.3f && d[ex(-0.0f)] == 0.3f);
    assert_true(y[ex(-0.0f)] == 0.0f && signbit(y[ex(-0.0f)]));

    run_extreme("elu", "alpha=1", y, d);
    assert_true(y[ex(-1e4f)] == -1.0f && y[ex(-89.0f)] == -1.0f && y[ex(1e4f)] == 1e4f);
    assert_true(d[ex(-1e4f)] == 0.0f && d[ex(0.0f)] == 1.0f);
    /* expm1: exp(x) - 1 would round -1e-30 to 0 */
    assert_true(y[ex(-1e-30f)] == -1e-30f);
    assert_true(y[ex(-0.0f)] == 0.0f && signbit(y[ex(-0.0f)]));

    run_extreme("gelu", "", y, d);
    assert_true(y[ex(1e4f)] == 1e4f && y[ex(89.0f)] == 89.0f && y[ex(-1e4f)] == 0.0f);
    assert_true(d[ex(1e4f)] == 1.0f && d[ex(-1e4f)] == 0.0f && d[ex(0.0f)] == 0.5f);
    /* erfc: 0.5 x (1 + erf(x / sqrt 2)) gives 0 at -10 in float32 */
    assert_true(y[ex(-10.0f)] < -7.6e-23f && y[ex(-10.0f)] > -7.7e-23f);
    assert_true(y[ex(-0.0f)] == 0.0f && signbit(y[ex(-0.0f)]));

    /* softmax rows: mixed extremes; all -1e4; all 1e4 */
    const int shape[2] = {3, 8};
    const float x[24] = {1e4f,  -1e4f, 88.0f, 89.0f, 0.0f,  -0.0f, -88.0f, -89.0f,
                         -1e4f, -1e4f, -1e4f, -1e4f, -1e4f, -1e4f, -1e4f,  -1e4f,
                         1e4f,  1e4f,  1e4f,  1e4f,  1e4f,  1e4f,  1e4f,   1e4f};
    float w[24], ys[24], ds[24];
    for (int i = 0; i < 24; i++) w[i] = (float)(i % 5) - 2.0f;
    run_layer("softmax", "", 2, shape, x, w, ys, ds);
    for (int i = 0; i < 24; i++) assert_true(isfinite(ys[i]) && isfinite(ds[i]));
    assert_true(ys[0] == 1.0f);
    for (int i = 1; i < 8; i++) assert_true(ys[i] == 0.0f && ds[i] == 0.0f);
    for (int i = 8; i < 24; i++) assert_true(ys[i] == 0.125f);
}

/* ---- 4. configs ---- */

static void expect_config_error(const char *type, const char *config, const char *needle)
{
    nn_clear_error();
    nn_layer *l = nn_layer_create(type, config);
    if (l) fail_msg("%s '%s' was accepted", type, config);
    assert_error_contains(needle);
}

static void test_bad_configs(void **state)
{
    (void)state;
    expect_config_error("leaky_relu", "alpha=nan", "alpha must be between 0");
    expect_config_error("leaky_relu", "alpha=-0.1", "alpha must be between 0");
    expect_config_error("leaky_relu", "alpha=inf", "alpha must be between 0");
    expect_config_error("leaky_relu", "alpha=x", "alpha must be a number");
    expect_config_error("elu", "alpha=-1", "alpha must be between 0");
    expect_config_error("elu", "alpha=nan", "alpha must be between 0");
    expect_config_error("dense", "units=3 activation=leaky_relu alpha=-1", "alpha must be between 0");
    expect_config_error("conv2d", "filters=2 kernel_size=3 activation=elu alpha=nan",
                        "alpha must be between 0");
    expect_config_error("sigmoid", "alpha=1", "unknown config key 'alpha'");
    expect_config_error("softmax", "axis=1", "unknown config key 'axis'");
    expect_config_error("dense", "units=3 activation=sigmoid alpha=0.2",
                        "alpha applies only with activation=leaky_relu or activation=elu");
    expect_config_error("conv2d", "filters=2 kernel_size=3 alpha=0.2", "alpha applies only");
    static const char *const names[] = {"linear", "relu", "sigmoid", "tanh", "leaky_relu",
                                        "elu", "gelu", "softmax"};
    expect_config_error("batchnorm", "activation=tanh alpha=0.2", "alpha applies only");
    expect_config_error("add", "activation=leaky_relu alpha=-2", "alpha must be between 0");
    const char *const types[4][2] = {{"dense", "units=3 activation=swish"},
                                     {"conv2d", "filters=2 kernel_size=3 activation=swish"},
                                     {"batchnorm", "activation=swish"},
                                     {"add", "activation=swish"}};
    for (int t = 0; t < 4; t++) {
        expect_config_error(types[t][0], types[t][1], "activation must be one of {");
        assert_error_contains("'swish'");
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) assert_error_contains(names[i]);
    }
}

static void expect_written(const char *type, const char *config, const char *written)
{
    nn_layer *l = nn_layer_create(type, config);
    if (!l) fail_msg("%s %s: %s", type, config, nn_last_error());
    char buf[512];
    assert_ok(nn_layer_config_string(l, buf, sizeof buf));
    if (!strstr(buf, written)) fail_msg("%s '%s' wrote '%s', without '%s'", type, config, buf, written);
    nn_layer *l2 = nn_layer_create(type, buf);
    if (!l2) fail_msg("%s: '%s' does not read back: %s", type, buf, nn_last_error());
    char buf2[512];
    assert_ok(nn_layer_config_string(l2, buf2, sizeof buf2));
    assert_string_equal(buf, buf2);
    nn_layer_free(l2);
    nn_layer_free(l);
}

static void test_config_round_trip(void **state)
{
    (void)state;
    expect_written("leaky_relu", "", "alpha=0.3");
    expect_written("leaky_relu", "alpha=0.25", "alpha=0.25");
    expect_written("elu", "", "alpha=1");
    expect_written("dense", "units=3 activation=leaky_relu", "activation=leaky_relu alpha=0.3");
    expect_written("dense", "units=3 activation=elu alpha=0.5", "activation=elu alpha=0.5");
    expect_written("conv2d", "filters=2 kernel_size=3 activation=gelu", "activation=gelu data_format");
    expect_written("batchnorm", "activation=elu alpha=0.5", "activation=elu alpha=0.5");
    expect_written("add", "activation=relu", "activation=relu");
    /* the default is written too: linear, the layer alone */
    expect_written("batchnorm", "", "data_format=channels_last activation=linear");
    expect_written("add", "", "activation=linear");
    /* configs without the new keys are written as before */
    expect_written("dense", "units=3 activation=relu", "units=3 use_bias=true activation=relu");
    nn_layer *l = nn_layer_create("dense", "units=3 activation=softmax");
    char buf[256];
    assert_ok(nn_layer_config_string(l, buf, sizeof buf));
    assert_null(strstr(buf, "alpha"));
    nn_layer_free(l);
}

/* In-place spatial dropout must refuse the output of a node whose backward
 * reads it (sigmoid, tanh, softmax) and accept the others'. */
static nn_status dropout_after(const char *type, const char *config)
{
    const int shape[4] = {2, 4, 4, 3};
    nn_layer *a = nn_layer_create(type, config);
    assert_non_null(a);
    assert_ok(nn_layer_build(a, 3, shape + 1));
    assert_ok(nn_layer_alloc_params(a, 1));
    nn_layer *sd = nn_layer_create("spatial_dropout2d", "rate=0.5 inplace=true seed=1");
    assert_non_null(sd);
    assert_ok(nn_layer_build(sd, a->out_rank, a->out_shape));
    tensor *x = test_require_grad(random_tensor(4, shape, 1, 1.0f));
    nn_graph *g = nn_graph_create(0);
    tensor *h, *y;
    assert_ok(nn_layer_forward(a, g, x, &h, 1));
    nn_clear_error();
    nn_status s = nn_layer_forward(sd, g, h, &y, 1);
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(sd);
    nn_layer_free(a);
    return s;
}

static void test_inplace_dropout_check(void **state)
{
    (void)state;
    const char *const saving[][2] = {{"sigmoid", ""}, {"tanh", ""}, {"softmax", ""},
                                     {"conv2d", "filters=3 kernel_size=1 activation=sigmoid"},
                                     {"conv2d", "filters=3 kernel_size=1 activation=tanh"},
                                     {"conv2d", "filters=3 kernel_size=1 activation=softmax"}};
    for (size_t i = 0; i < sizeof saving / sizeof saving[0]; i++) {
        assert_int_equal(dropout_after(saving[i][0], saving[i][1]), NN_ERR_STATE);
        assert_error_contains("whose backward reads it");
    }
    const char *const free_out[][2] = {{"leaky_relu", ""}, {"elu", ""}, {"gelu", ""},
                                       {"conv2d", "filters=3 kernel_size=1 activation=gelu"},
                                       {"conv2d", "filters=3 kernel_size=1 activation=leaky_relu"},
                                       {"batchnorm", ""}, {"batchnorm", "activation=elu"},
                                       /* reads its output only as relu's mask (output_is_mask) */
                                       {"batchnorm", "activation=relu"}};
    for (size_t i = 0; i < sizeof free_out / sizeof free_out[0]; i++)
        assert_ok(dropout_after(free_out[i][0], free_out[i][1]));
}

/* ---- 5. thread count ---- */

static void check_threads_n(const char *type, const char *config, int n_in, int rank,
                            const int *shape)
{
    const int before = nn_get_threads();
    assert_ok(nn_set_threads(1));
    result a = run_chain_n(type, config, NULL, NULL, n_in, 1, rank, shape, 1);
    assert_ok(nn_set_threads(2));
    result b = run_chain_n(type, config, NULL, NULL, n_in, 1, rank, shape, 1);
    assert_ok(nn_set_threads(before));
    char label[192];
    snprintf(label, sizeof label, "%s %s, 1 vs 2 threads", type, config);
    assert_same("y", label, a.y, b.y, a.ny);
    assert_same("dx", label, a.dx, b.dx, a.nx);
    for (int i = 0; i < a.n_params; i++)
        assert_same("a parameter gradient", label, a.p[i], b.p[i], a.np[i]);
    result_free(&a);
    result_free(&b);
}

static void check_threads(const char *type, const char *config, int rank, const int *shape)
{
    check_threads_n(type, config, 1, rank, shape);
}

static void test_thread_count_invariance(void **state)
{
    (void)state;
    /* Above the kernels' parallel threshold (16384 elements). */
    const int big[3] = {48, 40, 30}, rows[2] = {96, 700};
    for (size_t i = 0; i + 1 < N_ACTS; i++) check_threads(acts[i][0], acts[i][1], 3, big);
    check_threads("softmax", "", 2, rows);
    const int dense_in[2] = {128, 40}, conv_in[4] = {4, 20, 20, 3};
    for (size_t i = 0; i + 1 < N_ACTS; i++) {
        char cfg[96];
        snprintf(cfg, sizeof cfg, "units=200 activation=%s %s", acts[i][0], acts[i][1]);
        check_threads("dense", cfg, 2, dense_in);
        snprintf(cfg, sizeof cfg, "filters=64 kernel_size=3 padding=same activation=%s %s",
                 acts[i][0], acts[i][1]);
        check_threads("conv2d", cfg, 4, conv_in);
    }
    /* batchnorm's and add's fused relu: above their thresholds (32768, 65536) */
    const int bn_in[4] = {32, 12, 12, 20};
    check_threads("batchnorm", "activation=relu data_format=channels_last", 4, bn_in);
    check_threads("batchnorm", "activation=relu data_format=channels_first", 4, bn_in);
    check_threads_n("add", "activation=relu", 2, 4, bn_in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pytorch_fixtures),
        cmocka_unit_test(test_dense_activation_equals_layer),
        cmocka_unit_test(test_conv2d_activation_equals_layer),
        cmocka_unit_test(test_batchnorm_activation_equals_layer),
        cmocka_unit_test(test_add_activation_equals_layer),
        cmocka_unit_test(test_extreme_inputs),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_config_round_trip),
        cmocka_unit_test(test_inplace_dropout_check),
        cmocka_unit_test(test_thread_count_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
