/* The convolution stack: conv2d, maxpool2d, avgpool2d, global_avgpool2d and
 * batchnorm against PyTorch 1.13 references (tests/fixtures/conv, written by
 * tests/gen_conv_fixtures.py), plus format agreement, thread-count
 * invariance, the layer's kernels against the library's direct loops
 * (layers/conv_reference.c) on larger shapes, Winograd and the GEMM tiles
 * forced on the same inputs, batchnorm's one-pass moments far from zero, and
 * config/shape errors.
 *
 * Tolerance of every fixture comparison (forward, dx, parameter gradients,
 * moving statistics) and of the layer against the direct loops, both must
 * hold (the Winograd/GEMM comparison has its own, described there):
 *   elementwise  |got - ref| <= 1e-4 * |ref| + 1e-5 * max|ref|
 *   norm-wise    ||got - ref|| / ||ref|| < 1e-4
 * The small absolute floor (relative to the array's largest value) covers
 * outputs that are sums of terms cancelling to near zero, whose float32
 * error is relative to the terms, not to the result. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "layers/conv_core.h"
#include "layers/conv_reference.h"
#include "layers/conv_winograd.h"
#include "layers/maxpool2d.h"
#include "test_util.h"

#define FX_DIR "tests/fixtures/conv/"
#define FX_MAX_ARRAYS 16

typedef struct {
    char name[48];
    int rank, shape[TENSOR_MAX_RANK];
    size_t size;
    float *data;
    int used;
} fx_array;

typedef struct {
    char file[128];
    char layer[32], config[256];
    int training;
    fx_array arr[FX_MAX_ARRAYS];
    int n;
} fx_case;

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

/* Copies the rest of the line after *p (trimmed) into out. */
static void rest_of_line(char **p, char *out, size_t n)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t') s++;
    char *e = s;
    while (*e && *e != '\n' && *e != '\r') e++;
    char *t = e;
    while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
    snprintf(out, n, "%.*s", (int)(t - s), s);
    *p = e;
}

static void fx_free(fx_case *c)
{
    for (int i = 0; i < c->n; i++) free(c->arr[i].data);
    c->n = 0;
}

static void fx_load(fx_case *c, const char *file)
{
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, "%s", file);
    char path[256];
    snprintf(path, sizeof path, FX_DIR "%s", file);
    char *buf = read_all(path, NULL);
    if (!buf) fail_msg("%s: cannot read fixture (run tests from the repository root)", path);
    char *p = buf;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            continue;
        }
        char word[16];
        int len = 0;
        while (*p && *p != ' ' && *p != '\n' && len < 15) word[len++] = *p++;
        word[len] = '\0';
        if (!strcmp(word, "layer")) {
            rest_of_line(&p, c->layer, sizeof c->layer);
        } else if (!strcmp(word, "config")) {
            rest_of_line(&p, c->config, sizeof c->config);
        } else if (!strcmp(word, "training")) {
            c->training = (int)strtol(p, &p, 10);
        } else if (!strcmp(word, "array")) {
            if (c->n == FX_MAX_ARRAYS) fail_msg("%s: more than %d arrays", path, FX_MAX_ARRAYS);
            fx_array *a = &c->arr[c->n++];
            int consumed = 0;
            if (sscanf(p, " %47s %d%n", a->name, &a->rank, &consumed) != 2 || a->rank < 1 ||
                a->rank > TENSOR_MAX_RANK)
                fail_msg("%s: bad array header at offset %ld", path, (long)(p - buf));
            p += consumed;
            a->size = 1;
            for (int i = 0; i < a->rank; i++) {
                a->shape[i] = (int)strtol(p, &p, 10);
                a->size *= (size_t)a->shape[i];
            }
            a->data = malloc((a->size ? a->size : 1) * sizeof(float));
            for (size_t i = 0; i < a->size; i++) {
                char *end;
                a->data[i] = strtof(p, &end);
                if (end == p)
                    fail_msg("%s: array %s: value %zu missing at offset %ld", path, a->name, i,
                             (long)(p - buf));
                p = end;
            }
        } else {
            fail_msg("%s: unknown keyword '%s' at offset %ld", path, word, (long)(p - buf));
        }
    }
    free(buf);
}

static fx_array *fx_get(fx_case *c, const char *name, int required)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->arr[i].name, name)) {
            c->arr[i].used = 1;
            return &c->arr[i];
        }
    if (required) fail_msg("%s: no array '%s'", c->file, name);
    return NULL;
}

/* The comparison described at the top of the file. */
static void check_close(const char *file, const char *what, const float *got, const float *ref,
                        size_t n)
{
    double maxref = 0.0, dd = 0.0, rr = 0.0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    const double atol = 1e-5 * maxref;
    size_t bad = 0, worst = 0;
    double worst_excess = -1.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - ref[i]);
        const double tol = 1e-4 * fabs(ref[i]) + atol;
        if (!(diff <= tol)) {
            bad++;
            const double excess = isnan(diff) ? INFINITY : diff - tol;
            if (excess > worst_excess) {
                worst_excess = excess;
                worst = i;
            }
        }
        dd += diff * diff;
        rr += (double)ref[i] * ref[i];
    }
    const double rel = rr > 0 ? sqrt(dd) / sqrt(rr) : sqrt(dd);
    if (bad || !(rel < 1e-4))
        fail_msg("%s: %s: %zu of %zu elements out of tolerance (worst [%zu] got %.9g want %.9g), "
                 "norm-wise relative error %.3g",
                 file, what, bad, n, worst, (double)got[worst], (double)ref[worst], rel);
}

static tensor *leaf_from(const fx_array *a, int requires_grad)
{
    tensor *t = tensor_create(a->rank, a->shape);
    assert_non_null(t);
    memcpy(t->data, a->data, a->size * sizeof(float));
    return requires_grad ? test_require_grad(t) : t;
}

static void run_fixture(const char *file)
{
    fx_case c;
    fx_load(&c, file);
    fx_array *xa = fx_get(&c, "x", 1);
    nn_layer *l = nn_layer_create(c.layer, c.config);
    if (!l) fail_msg("%s: create failed: %s", file, nn_last_error());
    assert_ok(nn_layer_build(l, xa->rank - 1, xa->shape + 1));
    assert_ok(nn_layer_alloc_params(l, 1));
    for (int i = 0; i < l->n_params; i++) {
        nn_param *p = &l->params[i];
        char key[64];
        snprintf(key, sizeof key, "param:%s", p->name);
        fx_array *pa = fx_get(&c, key, 1);
        if (pa->size != p->t->size) fail_msg("%s: %s has %zu values, want %zu", file, key, pa->size, p->t->size);
        memcpy(p->t->data, pa->data, pa->size * sizeof(float));
    }
    tensor *x = leaf_from(xa, 1);
    fx_array *dya = fx_get(&c, "dy", 1);
    tensor *dy = leaf_from(dya, 0);
    nn_graph *g = nn_graph_create(0);
    tensor *y, *loss;
    assert_ok(nn_layer_forward(l, g, x, &y, c.training));
    fx_array *ya = fx_get(&c, "y", 1);
    if (y->size != ya->size) fail_msg("%s: y has %zu values, want %zu", file, y->size, ya->size);
    for (int i = 0; i < ya->rank; i++) assert_int_equal(y->shape[i], ya->shape[i]);
    check_close(file, "y", y->data, ya->data, y->size);
    assert_ok(nn_op_weighted_sum(g, y, dy, &loss));
    assert_ok(nn_graph_backward(g, loss));
    check_close(file, "dx", x->grad, fx_get(&c, "dx", 1)->data, x->size);
    for (int i = 0; i < l->n_params; i++) {
        nn_param *p = &l->params[i];
        char key[64];
        snprintf(key, sizeof key, p->trainable ? "grad:%s" : "after:%s", p->name);
        fx_array *ra = fx_get(&c, key, 1);
        check_close(file, key, p->trainable ? p->t->grad : p->t->data, ra->data, ra->size);
    }
    for (int i = 0; i < c.n; i++)
        if (!c.arr[i].used) fail_msg("%s: array %s was not checked", file, c.arr[i].name);
    nn_graph_free(g);
    tensor_free(x);
    tensor_free(dy);
    nn_layer_free(l);
    fx_free(&c);
}

/* dx and dkernel of a Winograd conv2d, forward run with `fwd` threads and
 * backward with `bwd`; a canary allocated in the arena right after the
 * forward's buffers must come through the backward untouched. */
static void winograd_grads(int fwd, int bwd, float *dx, float *dk)
{
    enum { N = 8, H = 20, C = 16, CANARY = 1 << 20 };
    nn_layer *l = nn_layer_create("conv2d", "filters=32 kernel_size=3 data_format=channels_last");
    assert_non_null(l);
    int in[3] = {H, H, C}, xs[4] = {N, H, H, C};
    assert_ok(nn_layer_build(l, 3, in));
    assert_ok(nn_layer_alloc_params(l, 3));
    tensor *x = tensor_create(4, xs);
    tensor_rng rng;
    tensor_rng_seed(&rng, 8);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    test_require_grad(x);
    memset(l->params[0].t->grad, 0, l->params[0].t->size * sizeof(float));
    nn_graph *g = nn_graph_create(0);
    tensor *y, *loss;
    assert_ok(nn_set_threads(fwd));
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    unsigned char *canary = nn_graph_alloc(g, CANARY);
    assert_non_null(canary);
    memset(canary, 0xA5, CANARY);
    tensor *w = tensor_create(y->rank, y->shape);
    tensor_init_normal(w, &rng, 0.0f, 1.0f);
    assert_ok(nn_set_threads(bwd));
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    for (size_t i = 0; i < CANARY; i++)
        if (canary[i] != 0xA5) fail_msg("backward wrote into the arena past its buffers (byte %zu)", i);
    memcpy(dx, x->grad, x->size * sizeof(float));
    memcpy(dk, l->params[0].t->grad, l->params[0].t->size * sizeof(float));
    nn_graph_free(g);
    tensor_free(w);
    tensor_free(x);
    nn_layer_free(l);
}

/* The forward sizes the Winograd scratch for the thread limit of its time.
 * A limit raised before the backward must not make the backward use more
 * threads than that scratch holds: the gradients are those of a 1-thread
 * run, bit for bit, and nothing past the buffers is written. */
static void test_threads_raised_before_backward(void **state)
{
    (void)state;
    const int saved = nn_get_threads();
    static float dx1[8 * 20 * 20 * 16], dk1[3 * 3 * 16 * 32], dx2[8 * 20 * 20 * 16], dk2[3 * 3 * 16 * 32];
    winograd_grads(1, 1, dx1, dk1);
    winograd_grads(1, 2, dx2, dk2);
    assert_ok(nn_set_threads(saved));
    assert_memory_equal(dx1, dx2, sizeof dx1);
    assert_memory_equal(dk1, dk2, sizeof dk1);
}

static void test_pytorch_fixtures(void **state)
{
    (void)state;
    char *index = read_all(FX_DIR "index.txt", NULL);
    if (!index) fail_msg(FX_DIR "index.txt: cannot read (run tests from the repository root)");
    int n = 0, layers_seen[5] = {0};
    static const char *const kinds[5] = {"conv", "maxpool", "avgpool", "global_avgpool", "batchnorm"};
    char *save = NULL;
    for (char *line = strtok_r(index, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0]) continue;
        run_fixture(line);
        for (int k = 0; k < 5; k++)
            if (!strncmp(line, kinds[k], strlen(kinds[k])) && line[strlen(kinds[k])] == '_')
                layers_seen[k]++;
        n++;
    }
    free(index);
    /* The index must not silently shrink. */
    assert_true(n >= 40);
    for (int k = 0; k < 5; k++)
        if (layers_seen[k] < 2) fail_msg("only %d fixtures for %s", layers_seen[k], kinds[k]);
}

/* ---- shared helpers for the generated-input tests ---- */

static void fill_normal(float *a, size_t n, uint64_t seed)
{
    tensor_rng r;
    tensor_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) a[i] = tensor_rng_normal(&r);
}

static tensor *input(int rank, const int *shape, uint64_t seed)
{
    tensor *t = tensor_create(rank, shape);
    fill_normal(t->data, t->size, seed);
    return test_require_grad(t);
}

/* A layer built for per-sample shape `in`, parameters from rng seed 5 with
 * gamma/beta/moving stats perturbed so they are not trivial. */
static nn_layer *make_layer(const char *type, const char *config, int rank, const int *in)
{
    nn_layer *l = nn_layer_create(type, config);
    if (!l) fail_msg("%s %s: %s", type, config, nn_last_error());
    assert_ok(nn_layer_build(l, rank, in));
    assert_ok(nn_layer_alloc_params(l, 5));
    for (int i = 0; i < l->n_params; i++) {
        nn_param *p = &l->params[i];
        if (strcmp(p->name, "kernel")) {
            fill_normal(p->t->data, p->t->size, 11 + (uint64_t)i);
            if (!strcmp(p->name, "gamma") || !strcmp(p->name, "moving_variance"))
                for (size_t k = 0; k < p->t->size; k++) p->t->data[k] = 1.0f + 0.3f * fabsf(p->t->data[k]);
        }
    }
    return l;
}

/* Forward on x, backward with a fixed upstream gradient; returns y (in g). */
static tensor *fwd_bwd(nn_layer *l, nn_graph *g, tensor *x, int training, uint64_t dy_seed)
{
    tensor *y, *loss;
    assert_ok(nn_layer_forward(l, g, x, &y, training));
    tensor *w = tensor_create(y->rank, y->shape);
    fill_normal(w->data, w->size, dy_seed);
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    tensor_free(w);
    return y;
}

/* ---- channels_first and channels_last agree ---- */

static void check_formats(const char *type, const char *config, int exact)
{
    const int N = 3, H = 9, W = 8, C = 4;
    int last[4] = {N, H, W, C}, first[4] = {N, C, H, W};
    char cl[256], cfs[256];
    snprintf(cl, sizeof cl, "%s data_format=channels_last", config);
    snprintf(cfs, sizeof cfs, "%s data_format=channels_first", config);
    nn_layer *a = make_layer(type, cl, 3, last + 1), *b = make_layer(type, cfs, 3, first + 1);
    tensor *xa = input(4, last, 21), *xb = input(4, first, 0);
    nn_conv_to_nchw(xb->data, xa->data, N, C, H * W, 0);
    nn_graph *ga = nn_graph_create(0), *gb = nn_graph_create(0);
    tensor *ya, *yb, *loss;
    assert_ok(nn_layer_forward(a, ga, xa, &ya, 1));
    assert_ok(nn_layer_forward(b, gb, xb, &yb, 1));
    assert_int_equal(ya->size, yb->size);
    /* Output per sample (OH, OW, F) vs (F, OH, OW), or (C) for global. */
    const int F = ya->rank == 4 ? ya->shape[3] : ya->shape[1];
    const int P = (int)(ya->size / (size_t)N / (size_t)F);
    float *t = malloc(ya->size * sizeof(float));
    nn_conv_to_nhwc(t, yb->data, N, F, P, 0);
    char what[300];
    snprintf(what, sizeof what, "%s %s", type, config);
    if (exact) {
        if (memcmp(t, ya->data, ya->size * sizeof(float)))
            fail_msg("%s: channels_first output differs from channels_last", what);
    } else {
        check_close(what, "y (formats)", t, ya->data, ya->size);
    }
    /* Same upstream gradient in each layout. */
    tensor *wa = tensor_create(ya->rank, ya->shape), *wb = tensor_create(yb->rank, yb->shape);
    fill_normal(wa->data, wa->size, 77);
    nn_conv_to_nchw(wb->data, wa->data, N, F, P, 0);
    assert_ok(nn_op_weighted_sum(ga, ya, wa, &loss));
    assert_ok(nn_graph_backward(ga, loss));
    assert_ok(nn_op_weighted_sum(gb, yb, wb, &loss));
    assert_ok(nn_graph_backward(gb, loss));
    float *dx = malloc(xa->size * sizeof(float));
    nn_conv_to_nhwc(dx, xb->grad, N, C, H * W, 0);
    if (exact) {
        if (memcmp(dx, xa->grad, xa->size * sizeof(float)))
            fail_msg("%s: channels_first dx differs from channels_last", what);
    } else {
        check_close(what, "dx (formats)", dx, xa->grad, xa->size);
    }
    for (int i = 0; i < a->n_params; i++) {
        const tensor *pa = a->params[i].t, *pb = b->params[i].t;
        const float *va = pa->grad ? pa->grad : pa->data, *vb = pb->grad ? pb->grad : pb->data;
        if (exact) {
            if (memcmp(va, vb, pa->size * sizeof(float)))
                fail_msg("%s: %s differs between formats", what, a->params[i].name);
        } else {
            check_close(what, a->params[i].name, vb, va, pa->size);
        }
    }
    free(t);
    free(dx);
    tensor_free(wa);
    tensor_free(wb);
    tensor_free(xa);
    tensor_free(xb);
    nn_graph_free(ga);
    nn_graph_free(gb);
    nn_layer_free(a);
    nn_layer_free(b);
}

static void test_formats_agree(void **state)
{
    (void)state;
    /* The channels_first paths run the same arithmetic in the same order, so
     * these agree bit for bit. */
    check_formats("conv2d", "filters=5 kernel_size=3 strides=2 padding=same activation=relu", 1);
    check_formats("conv2d", "filters=3 kernel_size=2,3 dilation_rate=2 use_bias=false", 1);
    check_formats("conv2d", "filters=6 kernel_size=1", 1);
    check_formats("maxpool2d", "pool_size=3 strides=2 padding=same", 1);
    check_formats("avgpool2d", "pool_size=2,3 strides=1 padding=same", 1);
    check_formats("global_avgpool2d", "", 1);
    /* batchnorm's channel sums block the data differently per layout. */
    check_formats("batchnorm", "momentum=0.9", 0);
}

/* ---- thread-count invariance ---- */

typedef struct {
    float *y, *dx, *p[NN_LAYER_MAX_PARAMS];
} snapshot;

static snapshot run_threads(const char *type, const char *config, int rank, const int *shape,
                            int threads)
{
    assert_ok(nn_set_threads(threads));
    nn_layer *l = make_layer(type, config, rank - 1, shape + 1);
    tensor *x = input(rank, shape, 31);
    nn_graph *g = nn_graph_create(0);
    tensor *y = fwd_bwd(l, g, x, 1, 32);
    snapshot s = {0};
    s.y = malloc(y->size * sizeof(float));
    memcpy(s.y, y->data, y->size * sizeof(float));
    s.dx = malloc(x->size * sizeof(float));
    memcpy(s.dx, x->grad, x->size * sizeof(float));
    for (int i = 0; i < l->n_params; i++) {
        const tensor *p = l->params[i].t;
        s.p[i] = malloc(p->size * sizeof(float));
        memcpy(s.p[i], p->grad ? p->grad : p->data, p->size * sizeof(float));
    }
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(l);
    return s;
}

static void check_threads(const char *type, const char *config, int rank, const int *shape)
{
    nn_layer *l = make_layer(type, config, rank - 1, shape + 1);
    size_t ysz = 1, xsz = 1, psz[NN_LAYER_MAX_PARAMS];
    for (int i = 0; i < l->out_rank; i++) ysz *= (size_t)l->out_shape[i];
    ysz *= (size_t)shape[0];
    for (int i = 0; i < rank; i++) xsz *= (size_t)shape[i];
    const int np = l->n_params;
    for (int i = 0; i < np; i++) psz[i] = l->params[i].t->size;
    nn_layer_free(l);
    const int before = nn_get_threads();
    snapshot a = run_threads(type, config, rank, shape, 1);
    snapshot b = run_threads(type, config, rank, shape, 2);
    assert_ok(nn_set_threads(before));
    if (memcmp(a.y, b.y, ysz * sizeof(float))) fail_msg("%s %s: y differs with 1 and 2 threads", type, config);
    if (memcmp(a.dx, b.dx, xsz * sizeof(float))) fail_msg("%s %s: dx differs with 1 and 2 threads", type, config);
    for (int i = 0; i < np; i++)
        if (memcmp(a.p[i], b.p[i], psz[i] * sizeof(float)))
            fail_msg("%s %s: parameter %d differs with 1 and 2 threads", type, config, i);
    free(a.y);
    free(b.y);
    free(a.dx);
    free(b.dx);
    for (int i = 0; i < np; i++) {
        free(a.p[i]);
        free(b.p[i]);
    }
}

static void test_thread_count_invariance(void **state)
{
    (void)state;
    /* dkernel's sum over 12*26 output rows runs in 16 groups; the strided
     * case's dx columns take two 8 MB chunks. */
    int big[4] = {12, 28, 28, 32}, wide[4] = {4, 64, 64, 64};
    check_threads("conv2d", "filters=16 kernel_size=3 activation=relu data_format=channels_last", 4, big);
    check_threads("conv2d", "filters=20 kernel_size=3 strides=2 padding=same data_format=channels_last", 4,
                  wide);
    int img[4] = {8, 16, 20, 12};
    check_threads("conv2d", "filters=8 kernel_size=3 strides=2 padding=same data_format=channels_first", 4, img);
    /* channels_first in chunks of samples: Winograd in chunks of 7 and 5
     * (dkernel and dbias add per-chunk sums), strided in chunks of 1. */
    int big_cf[4] = {12, 32, 28, 28}, wide_cf[4] = {4, 64, 64, 64};
    check_threads("conv2d", "filters=16 kernel_size=3 activation=relu data_format=channels_first", 4, big_cf);
    check_threads("conv2d", "filters=20 kernel_size=3 strides=2 padding=same data_format=channels_first", 4,
                  wide_cf);
    check_threads("maxpool2d", "pool_size=3 strides=2 padding=same data_format=channels_last", 4, img);
    check_threads("avgpool2d", "pool_size=3 strides=1 padding=same data_format=channels_first", 4, img);
    check_threads("global_avgpool2d", "data_format=channels_last", 4, img);
    check_threads("batchnorm", "data_format=channels_last", 4, img);
    check_threads("batchnorm", "data_format=channels_first", 4, img);
}

/* ---- the tiled kernels against the library's direct loops ---- */

/* Larger shapes than the fixtures: several row groups in dkernel, remainder
 * tiles, filter and channel counts that are not multiples of the vector
 * width, the strided dx path over more than one 8 MB chunk, dilation; each
 * in both formats (channels_first in chunks of samples where a sample's
 * NHWC input and output pass a few hundred KB). */
static void check_direct_format(int N, int H, int W, int C, int F, int K, int S, int D, int same, int cf)
{
    char config[160];
    snprintf(config, sizeof config,
             "filters=%d kernel_size=%d strides=%d dilation_rate=%d padding=%s data_format=%s", F, K,
             S, D, same ? "same" : "valid", cf ? "channels_first" : "channels_last");
    int shape[4] = {N, H, W, C};
    if (cf) {
        shape[1] = C;
        shape[2] = H;
        shape[3] = W;
    }
    nn_layer *l = make_layer("conv2d", config, 3, shape + 1);
    nn_conv_geom g = {.H = H, .W = W, .C = C, .KH = K, .KW = K, .SH = S, .SW = S, .DH = D, .DW = D};
    assert_ok(nn_conv_geom_init(&g, same, "test"));
    const int OH = g.OH, OW = g.OW, P = OH * OW;
    tensor *x = input(4, shape, 41);
    nn_graph *gr = nn_graph_create(0);
    tensor *y = fwd_bwd(l, gr, x, 1, 42);
    assert_int_equal(y->shape[cf ? 2 : 1], OH);
    assert_int_equal(y->shape[cf ? 3 : 2], OW);
    const float *k = l->params[0].t->data, *b = l->params[1].t->data;
    /* The loss is sum(w * y), so dL/dy = w. The reference runs on NHWC
     * copies and channels_first results are compared in NHWC. */
    tensor *w = tensor_create(y->rank, y->shape);
    fill_normal(w->data, w->size, 42);
    float *xn = malloc(x->size * sizeof(float)), *wn = malloc(w->size * sizeof(float));
    float *yn = malloc(y->size * sizeof(float)), *dxn = malloc(x->size * sizeof(float));
    nn_conv_to_nhwc(xn, x->data, N, cf ? C : 1, cf ? H * W : H * W * C, 0);
    nn_conv_to_nhwc(wn, w->data, N, cf ? F : 1, cf ? P : P * F, 0);
    nn_conv_to_nhwc(yn, y->data, N, cf ? F : 1, cf ? P : P * F, 0);
    nn_conv_to_nhwc(dxn, x->grad, N, cf ? C : 1, cf ? H * W : H * W * C, 0);
    const size_t T = (size_t)K * K * C;
    float *ry = malloc(y->size * sizeof(float)), *rdx = calloc(x->size, sizeof(float));
    float *rdk = calloc(T * F, sizeof(float)), *rdb = calloc((size_t)F, sizeof(float));
    nn_conv_forward_reference(ry, xn, k, b, &g, N, F);
    nn_conv_backward_reference(rdx, rdk, rdb, wn, xn, k, &g, N, F);
    check_close(config, "y", yn, ry, y->size);
    check_close(config, "dx", dxn, rdx, x->size);
    check_close(config, "dkernel", l->params[0].t->grad, rdk, T * F);
    check_close(config, "dbias", l->params[1].t->grad, rdb, (size_t)F);
    free(xn);
    free(wn);
    free(yn);
    free(dxn);
    free(ry);
    free(rdx);
    free(rdk);
    free(rdb);
    tensor_free(w);
    tensor_free(x);
    nn_graph_free(gr);
    nn_layer_free(l);
}

static void check_direct(int N, int H, int W, int C, int F, int K, int S, int D, int same)
{
    check_direct_format(N, H, W, C, F, K, S, D, same, 0);
    check_direct_format(N, H, W, C, F, K, S, D, same, 1);
}

static void test_tiled_conv_matches_direct_loop(void **state)
{
    (void)state;
    check_direct(5, 28, 28, 32, 64, 3, 1, 1, 0); /* MNIST's second convolution */
    check_direct(3, 17, 19, 20, 20, 3, 1, 1, 1); /* widths not multiples of 16 */
    check_direct(4, 64, 64, 64, 16, 3, 2, 1, 1); /* strided dx in two chunks */
    check_direct(2, 20, 18, 8, 40, 3, 1, 2, 1);  /* dilation: one segment per tap */
    check_direct(3, 9, 30, 3, 100, 5, 1, 1, 0);  /* F = 64 + 36: two column groups */
    check_direct(13, 30, 30, 1, 32, 3, 1, 1, 0); /* MNIST's first: channels_first in 2 chunks */
    check_direct(24, 40, 40, 3, 16, 7, 2, 1, 1); /* an RGB stem: channels_first in chunks of 21
                                                 * and 3, its NHWC input kept for dkernel */
}

/* ---- Winograd and the GEMM tiles on the same input ----
 *
 * Both paths are forced (nn_conv_geom.path) on 3x3 stride-1 convolutions,
 * Winograd also below the 8 channels where the dispatch would pick it, and
 * each is compared with the reference and with the other.
 *
 * Tolerance, per element: |got - want| <= 16 eps S, eps = FLT_EPSILON and
 * S the sum of the absolute values of the terms the element adds up (|b| +
 * sum |x| |k| for y; for a gradient, the |value| it is added to plus the
 * sum of |dz| |k| or |x| |dz|). Every rounding in either path is at most eps
 * times a partial sum, and their errors add like a random walk, so each
 * path lands within a few eps S of the exact sum. The GEMM tiles round once
 * per product in a chain of FMAs; Winograd rounds differently -- in the
 * transforms, whose coefficients are 0, +-1/2 and +-1 (adding up to 4
 * neighbours and 9 products), and in 16 shorter sums -- but by the same
 * order: measured on these shapes (AVX-512), at most 2.6 eps S for either path
 * against the reference (whose double sums add about 1e-16 S) and 2.8 eps S
 * between the two. 16 leaves a factor of 5 for other vector widths and
 * summation orders, while a wrong or missing term (about S / K for K terms,
 * K >= 27 here) would exceed it by far.
 *
 * F(4x4, 3x3) scales its intermediate values further: per dimension, an
 * output is A^T row r times (G row) times (B^T row) summed over the 6
 * transformed positions, and the sum of the absolute coefficients of those
 * products, per term of the direct sum, is at most 16 for F(4x4) against
 * 8/3 for F(2x2) (row r = 3: 1/2*10 + 1/2*10 + 8*7/24*6 + 8*7/24*6 +
 * 1*1*10 over 3 terms). Rounding errors grow with the values they round, so
 * in two dimensions the bound grows by (16 / (8/3))^2 = 36, to 576 eps S;
 * measured: at most 136 eps S (dx of the MNIST shape, AVX-512). A wrong
 * term (S / K, K <= 576 here) still exceeds it 25-fold or more. */

#define WINOGRAD_F4_BOUND (16.0 * 36.0)

/* A convolution's forward output and its three gradients. */
typedef struct {
    float *y, *dx, *dk, *db;
} conv_result;

static conv_result conv_result_alloc(size_t ny, size_t nx, size_t nk, int F)
{
    conv_result r = {malloc(ny * sizeof(float)), malloc(nx * sizeof(float)),
                     malloc(nk * sizeof(float)), malloc((size_t)F * sizeof(float))};
    return r;
}

static void conv_result_free(conv_result *r)
{
    free(r->y);
    free(r->dx);
    free(r->dk);
    free(r->db);
}

static float *conv_scratch(size_t n) { return n ? malloc(n * sizeof(float)) : NULL; }

/* Forward (no ReLU) and backward of the raw-buffer convolution on the
 * forced path, NHWC or (nchw) NCHW, with dz = dy; the gradients start from
 * `pre`, since backward adds into them. Inputs and results are NHWC; the
 * NCHW run transposes them in and out (exact copies). */
static conv_result run_path(int path, int nchw, nn_conv_geom g, int N, int F, const float *x,
                            const float *k, const float *b, const float *dy, const conv_result *pre)
{
    g.path = path;
    const int HW = g.H * g.W, P = g.OH * g.OW;
    const size_t ny = (size_t)N * P * F, nx = (size_t)N * HW * g.C;
    const size_t nk = (size_t)g.KH * g.KW * g.C * F;
    nn_conv_sizes z;
    if (nchw)
        nn_conv_work_sizes_nchw(&z, &g, N, F, 1, 1, 1);
    else
        nn_conv_work_sizes(&z, &g, N, F, 1, 1, 1);
    /* The path asked for is the one sized and run: only Winograd transforms
     * the kernel. */
    assert_int_equal(z.wk != 0, path != NN_CONV_PATH_GEMM);
    nn_conv_work w = {
        .xp = conv_scratch(z.xp), .kp = conv_scratch(z.kp), .bp = conv_scratch(z.bp),
        .dzp = conv_scratch(z.dzp), .part = conv_scratch(z.part), .dzs = conv_scratch(z.dzs),
        .kt = conv_scratch(z.kt), .dcol = conv_scratch(z.dcol), .db = conv_scratch(z.db),
        .wk = conv_scratch(z.wk), .wkt = conv_scratch(z.wkt), .ws = conv_scratch(z.ws),
        .yn = conv_scratch(z.yn), .dxn = conv_scratch(z.dxn), .ws_slots = z.ws_slots,
        .xp_whole = z.xp_whole,
    };
    conv_result r = conv_result_alloc(ny, nx, nk, F);
    memcpy(r.dx, pre->dx, nx * sizeof(float));
    memcpy(r.dk, pre->dk, nk * sizeof(float));
    memcpy(r.db, pre->db, (size_t)F * sizeof(float));
    float *dz = malloc(ny * sizeof(float));
    if (nchw) {
        float *xc = malloc(nx * sizeof(float)), *yc = malloc(ny * sizeof(float));
        float *dxc = malloc(nx * sizeof(float));
        nn_conv_to_nchw(xc, x, N, g.C, HW, 0);
        nn_conv_to_nchw(dxc, pre->dx, N, g.C, HW, 0);
        nn_conv_to_nchw(dz, dy, N, F, P, 0);
        nn_conv_forward_nchw(yc, xc, k, b, 0, &g, N, F, &w);
        nn_conv_backward_nchw(dxc, r.dk, r.db, dz, NULL, xc, k, &g, N, F, &w);
        nn_conv_to_nhwc(r.y, yc, N, F, P, 0);
        nn_conv_to_nhwc(r.dx, dxc, N, g.C, HW, 0);
        free(xc);
        free(yc);
        free(dxc);
    } else {
        memcpy(dz, dy, ny * sizeof(float));
        nn_conv_forward(r.y, x, k, b, 0, &g, N, F, &w);
        nn_conv_backward(r.dx, r.dk, r.db, dz, NULL, k, &g, N, F, &w);
    }
    free(dz);
    float *bufs[] = {w.xp, w.kp, w.bp, w.dzp, w.part, w.dzs, w.kt, w.dcol, w.db, w.wk, w.wkt, w.ws,
                     w.yn, w.dxn};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    return r;
}

/* The tolerance described above, c eps S; returns the worst |diff| / (eps S). */
static double check_rounding(const char *shape, const char *what, const float *got, const float *want,
                             const float *S, size_t n, double c)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - want[i]), tol = c * FLT_EPSILON * S[i];
        if (S[i] > 0 && diff / (FLT_EPSILON * S[i]) > worst) worst = diff / (FLT_EPSILON * S[i]);
        if (!(diff <= tol))
            fail_msg("%s: %s: [%zu] got %.9g want %.9g: |diff| %.3g > %g eps S = %.3g", shape, what,
                     i, (double)got[i], (double)want[i], diff, c, tol);
    }
    return worst;
}

static float *abs_copy(const float *a, size_t n)
{
    float *r = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) r[i] = fabsf(a[i]);
    return r;
}

static void check_paths(int N, int H, int W, int C, int F, int same)
{
    nn_conv_geom g = {.H = H, .W = W, .C = C, .KH = 3, .KW = 3, .SH = 1, .SW = 1, .DH = 1, .DW = 1};
    assert_ok(nn_conv_geom_init(&g, same, "test"));
    const size_t ny = (size_t)N * g.OH * g.OW * F, nx = (size_t)N * H * W * C, nk = (size_t)9 * C * F;
    float *x = malloc(nx * sizeof(float)), *k = malloc(nk * sizeof(float));
    float *b = malloc((size_t)F * sizeof(float)), *dy = malloc(ny * sizeof(float));
    fill_normal(x, nx, 61);
    fill_normal(k, nk, 62);
    fill_normal(b, (size_t)F, 63);
    fill_normal(dy, ny, 64);
    conv_result pre = conv_result_alloc(0, nx, nk, F);
    fill_normal(pre.dx, nx, 65);
    fill_normal(pre.dk, nk, 66);
    fill_normal(pre.db, (size_t)F, 67);

    /* The reference, and S from the same loops on absolute values. */
    conv_result ref = conv_result_alloc(ny, nx, nk, F);
    memcpy(ref.dx, pre.dx, nx * sizeof(float));
    memcpy(ref.dk, pre.dk, nk * sizeof(float));
    memcpy(ref.db, pre.db, (size_t)F * sizeof(float));
    nn_conv_forward_reference(ref.y, x, k, b, &g, N, F);
    nn_conv_backward_reference(ref.dx, ref.dk, ref.db, dy, x, k, &g, N, F);
    float *ax = abs_copy(x, nx), *ak = abs_copy(k, nk), *ab = abs_copy(b, (size_t)F);
    float *ady = abs_copy(dy, ny);
    conv_result S = {malloc(ny * sizeof(float)), abs_copy(pre.dx, nx), abs_copy(pre.dk, nk),
                     abs_copy(pre.db, (size_t)F)};
    nn_conv_forward_reference(S.y, ax, ak, ab, &g, N, F);
    nn_conv_backward_reference(S.dx, S.dk, S.db, ady, ax, ak, &g, N, F);

    char shape[96];
    snprintf(shape, sizeof shape, "3x3 %s, x (%d, %d, %d, %d), F = %d", same ? "same" : "valid", N,
             H, W, C, F);
    /* GEMM, F(2x2) and F(4x4), each against the reference with its bound
     * (WINOGRAD_F4_BOUND above), and the Winograd paths against GEMM. */
    static const int path_ids[3] = {NN_CONV_PATH_GEMM, NN_CONV_PATH_WINOGRAD_F2,
                                    NN_CONV_PATH_WINOGRAD_F4};
    static const char *const names[3] = {"gemm", "winograd F(2x2)", "winograd F(4x4)"};
    const double bound[3] = {16.0, 16.0, WINOGRAD_F4_BOUND};
    conv_result r[3], last[3];
    for (int run = 0; run < 6; run++) {
        /* Each path NHWC, then NCHW (in chunks of samples). */
        const int p = run % 3, nchw = run >= 3;
        if (nchw) last[p] = r[p];
        r[p] = run_path(path_ids[p], nchw, g, N, F, x, k, b, dy, &pre);
        if (nchw) {
            /* NCHW runs the NHWC kernels on the same sums: y and dx per
             * element; Winograd's dk over the whole batch in its transformed
             * domain; the GEMM tiles' backward on the whole batch, so their
             * dk and db too, unless the padded input is no larger than the
             * output (conv_core.c): then, like Winograd's db, they add
             * per-chunk sums. */
            const int whole = (size_t)g.Hp * g.Wp * g.C > (size_t)g.OH * g.OW * F;
            if (memcmp(r[p].y, last[p].y, ny * sizeof(float)))
                fail_msg("%s: y (%s): NCHW differs from NHWC", shape, names[p]);
            if (memcmp(r[p].dx, last[p].dx, nx * sizeof(float)))
                fail_msg("%s: dx (%s): NCHW differs from NHWC", shape, names[p]);
            if ((p > 0 || whole) && memcmp(r[p].dk, last[p].dk, nk * sizeof(float)))
                fail_msg("%s: dkernel (%s): NCHW differs from NHWC", shape, names[p]);
            if (p == 0 && whole && memcmp(r[p].db, last[p].db, (size_t)F * sizeof(float)))
                fail_msg("%s: dbias (%s): NCHW differs from NHWC", shape, names[p]);
            conv_result_free(&last[p]);
        }
        const float *got[3] = {r[p].y, r[p].dx, r[p].dk}, *want[3] = {ref.y, ref.dx, ref.dk};
        const float *Sv[3] = {S.y, S.dx, S.dk};
        const size_t n[3] = {ny, nx, nk};
        static const char *const what[3] = {"y", "dx", "dkernel"};
        for (int q = 0; q < 3; q++) {
            char label[96];
            snprintf(label, sizeof label, "%s (%s%s)", what[q], names[p], nchw ? ", nchw" : "");
            const double w = check_rounding(shape, label, got[q], want[q], Sv[q], n[q], bound[p]);
            if (getenv("NN_TEST_PRINT_ROUNDING"))
                print_message("%s: %s: worst %.2f eps S\n", shape, label, w);
            if (p > 0) {
                snprintf(label, sizeof label, "%s (%s vs gemm%s)", what[q], names[p], nchw ? ", nchw" : "");
                const float *gq[3] = {r[0].y, r[0].dx, r[0].dk};
                check_rounding(shape, label, got[q], gq[q], Sv[q], n[q], p == 1 ? 16.0 : bound[p] + bound[0]);
            }
        }
        /* dbias comes from the one pass over dz that every path shares
         * (NCHW Winograd's per chunk, the same chunks for F2 and F4). */
        check_rounding(shape, "dbias", r[p].db, ref.db, S.db, (size_t)F, 16.0);
        if (!nchw || p == 2) assert_memory_equal(r[p].db, r[nchw ? 1 : 0].db, (size_t)F * sizeof(float));
    }

    for (int p = 0; p < 3; p++) conv_result_free(&r[p]);
    conv_result_free(&S);
    conv_result_free(&ref);
    conv_result_free(&pre);
    free(x);
    free(k);
    free(b);
    free(dy);
    free(ax);
    free(ak);
    free(ab);
    free(ady);
}

static void test_winograd_and_gemm_agree(void **state)
{
    (void)state;
    check_paths(2, 10, 12, 16, 16, 0); /* whole vectors (AVX-512), even output */
    check_paths(3, 17, 19, 20, 20, 1); /* partial vectors, odd output: half 2x2 tiles */
    check_paths(2, 9, 11, 3, 5, 1);    /* below the dispatch's 8 channels, less than a vector */
    check_paths(2, 5, 4, 8, 24, 1);    /* an image smaller than a block of tiles */
    check_paths(1, 30, 30, 64, 40, 0); /* F = 32 + 8: two column groups in the tiles */
    check_paths(4, 28, 28, 32, 64, 0); /* MNIST's second convolution: several dkernel groups;
                                        * NCHW in chunks of 3 and 1 samples */
    check_paths(5, 20, 20, 64, 64, 1); /* NCHW: chunks of 4 and 1 */
    check_paths(3, 30, 30, 40, 72, 1); /* NCHW: chunks of 2 and 1 */
    check_paths(40, 32, 32, 3, 16, 1); /* NCHW: chunks of 13 and 1, the NHWC input kept; Winograd's
                                        * dkernel blocks cut by the chunks */
}

/* ---- maxpool2d: channels_first's lanes against one window at a time ---- */

/* NP planes (H, W) pooled by the plane kernels and by the window kernel
 * with one channel: y and dx must be equal bit for bit. Inputs rounded to
 * quarters, so windows have ties (the first winner must get dy), plus a
 * few NaNs (which win). dx starts from random values: backward adds. */
static void check_maxpool_planes(int NP, int H, int W, int KH, int KW, int SH, int SW, int same)
{
    nn_conv_geom g = {.H = H, .W = W, .C = 1, .KH = KH, .KW = KW, .SH = SH, .SW = SW, .DH = 1, .DW = 1};
    assert_ok(nn_conv_geom_init(&g, same, "test"));
    const size_t nx = (size_t)NP * H * W, ny = (size_t)NP * g.OH * g.OW;
    float *x = malloc(nx * sizeof(float)), *dy = malloc(ny * sizeof(float));
    float *y0 = malloc(ny * sizeof(float)), *y1 = malloc(ny * sizeof(float));
    float *dx0 = malloc(nx * sizeof(float)), *dx1 = malloc(nx * sizeof(float));
    fill_normal(x, nx, 81);
    for (size_t i = 0; i < nx; i++) x[i] = roundf(x[i] * 4.0f) / 4.0f;
    for (size_t i = 5; i < nx; i += 97) x[i] = NAN;
    fill_normal(dy, ny, 82);
    fill_normal(dx0, nx, 83);
    memcpy(dx1, dx0, nx * sizeof(float));
    nn_maxpool2d_forward_nhwc(y0, x, &g, NP);
    nn_maxpool2d_forward_planes(y1, x, &g, NP);
    nn_maxpool2d_backward_nhwc(dx0, dy, x, &g, NP);
    nn_maxpool2d_backward_planes(dx1, dy, x, &g, NP);
    if (memcmp(y0, y1, ny * sizeof(float)))
        fail_msg("maxpool planes %dx%d, window %dx%d, strides %dx%d, %s: y differs", H, W, KH, KW,
                 SH, SW, same ? "same" : "valid");
    if (memcmp(dx0, dx1, nx * sizeof(float)))
        fail_msg("maxpool planes %dx%d, window %dx%d, strides %dx%d, %s: dx differs", H, W, KH, KW,
                 SH, SW, same ? "same" : "valid");
    free(x);
    free(dy);
    free(y0);
    free(y1);
    free(dx0);
    free(dx1);
}

static void test_maxpool_planes(void **state)
{
    (void)state;
    check_maxpool_planes(6, 24, 24, 2, 2, 2, 2, 0); /* MNIST's pool: a block of 8, an overlapping one */
    check_maxpool_planes(5, 25, 25, 2, 2, 2, 2, 0); /* odd width: the last column unread */
    check_maxpool_planes(5, 25, 27, 2, 2, 2, 2, 1); /* same: an edge window of one column */
    check_maxpool_planes(3, 17, 37, 3, 3, 2, 2, 1); /* overlapping windows, padding both sides */
    check_maxpool_planes(3, 13, 41, 3, 3, 1, 1, 1); /* stride 1: contiguous lanes */
    check_maxpool_planes(4, 11, 50, 2, 3, 3, 3, 0); /* stride 3: gaps between windows */
    check_maxpool_planes(2, 9, 70, 1, 4, 1, 5, 1);  /* 1x4 windows, stride 5 */
    check_maxpool_planes(7, 5, 3, 3, 3, 1, 1, 1);   /* narrower than one block: windows one at a time */
    check_maxpool_planes(3, 6, 16, 2, 2, 2, 2, 0);  /* exactly one block: lanes end at the plane's end */
}

/* ---- errors ---- */

static void expect_create_error(const char *type, const char *config, const char *needle)
{
    nn_clear_error();
    nn_layer *l = nn_layer_create(type, config);
    if (l) {
        nn_layer_free(l);
        fail_msg("%s '%s' was accepted", type, config);
    }
    assert_error_contains(needle);
}

static void expect_build_error(const char *type, const char *config, int rank, const int *shape,
                               const char *needle)
{
    nn_clear_error();
    nn_layer *l = nn_layer_create(type, config);
    if (!l) fail_msg("%s '%s': %s", type, config, nn_last_error());
    nn_status s = nn_layer_build(l, rank, shape);
    nn_layer_free(l);
    if (s == NN_OK) fail_msg("%s '%s': build accepted a bad input shape", type, config);
    assert_int_equal(s, NN_ERR_SHAPE);
    assert_error_contains(needle);
}

static void test_bad_configs(void **state)
{
    (void)state;
    expect_create_error("conv2d", "filters=0 kernel_size=3", "filters");
    expect_create_error("conv2d", "filters=0 kernel_size=3", "0");
    expect_create_error("conv2d", "filters=4 kernel_size=0", "kernel_size");
    expect_create_error("conv2d", "filters=4", "kernel_size");
    expect_create_error("conv2d", "kernel_size=3", "filters");
    expect_create_error("conv2d", "filters=4 kernel_size=3,3,3", "kernel_size");
    expect_create_error("conv2d", "filters=4 kernel_size=3 padding=foo", "foo");
    expect_create_error("conv2d", "filters=4 kernel_size=3 padding=foo", "padding");
    expect_create_error("conv2d", "filters=4 kernel_size=3 strides=0", "strides");
    expect_create_error("conv2d", "filters=4 kernel_size=3 dilation_rate=0", "dilation_rate");
    expect_create_error("conv2d", "filters=4 kernel_size=3 activation=swish", "swish");
    expect_create_error("conv2d", "filters=4 kernel_size=3 data_format=NCHW", "NCHW");
    expect_create_error("conv2d", "filters=4 kernel_size=3 groups=2", "groups");
    expect_create_error("maxpool2d", "pool_size=0", "pool_size");
    expect_create_error("maxpool2d", "padding=full", "full");
    expect_create_error("avgpool2d", "strides=0", "strides");
    expect_create_error("batchnorm", "epsilon=0", "epsilon");
    expect_create_error("batchnorm", "momentum=1.5", "momentum");
    expect_create_error("batchnorm", "momentum=nan", "momentum");
    expect_create_error("global_avgpool2d", "data_format=channels_middle", "channels_middle");

    int rank2[2] = {28, 28}, small[3] = {2, 2, 1}, dil[3] = {4, 4, 1}, img[3] = {8, 8, 3};
    int rank4[4] = {1, 8, 8, 3};
    expect_build_error("conv2d", "filters=4 kernel_size=3 data_format=channels_last", 2, rank2, "rank 3");
    expect_build_error("conv2d", "filters=4 kernel_size=3 data_format=channels_last", 2, rank2, "(28, 28)");
    expect_build_error("conv2d", "filters=4 kernel_size=3 data_format=channels_last", 3, small, "smaller");
    expect_build_error("conv2d", "filters=4 kernel_size=3 data_format=channels_last", 3, small, "2x2");
    expect_build_error("conv2d", "filters=4 kernel_size=3 dilation_rate=2 data_format=channels_last", 3,
                       dil, "5x5");
    expect_build_error("maxpool2d", "pool_size=3 data_format=channels_last", 3, small, "smaller");
    expect_build_error("avgpool2d", "data_format=channels_first", 2, rank2, "rank 3");
    expect_build_error("global_avgpool2d", "data_format=channels_last", 2, rank2, "rank 3");
    expect_build_error("batchnorm", "", 4, rank4, "rank");

    /* Same padding accepts an input smaller than the kernel. */
    nn_layer *l = nn_layer_create("conv2d", "filters=2 kernel_size=3 padding=same data_format=channels_last");
    assert_non_null(l);
    assert_ok(nn_layer_build(l, 3, small));
    assert_int_equal(l->out_shape[0], 2);
    assert_int_equal(l->out_shape[1], 2);
    nn_layer_free(l);

    /* A batch of the wrong per-sample shape or rank at forward time. */
    l = nn_layer_create("conv2d", "filters=2 kernel_size=3 data_format=channels_last");
    assert_ok(nn_layer_build(l, 3, img));
    assert_ok(nn_layer_alloc_params(l, 1));
    nn_graph *g = nn_graph_create(0);
    int wrong[3] = {2, 8, 8};
    tensor *x = tensor_zeros(3, wrong), *y = NULL;
    nn_clear_error();
    assert_int_equal(nn_layer_forward(l, g, x, &y, 1), NN_ERR_SHAPE);
    assert_error_contains("(2, 8, 8)");
    tensor_free(x);
    nn_graph_free(g);
    nn_layer_free(l);
}

/* Configs written back parse to the same layer, with the resolved defaults
 * spelled out (data_format in particular). */
static void test_config_round_trip(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"conv2d", "filters=8 kernel_size=3,5 strides=2 padding=same data_format=channels_first"},
        {"maxpool2d", "pool_size=3 data_format=channels_last"},
        {"avgpool2d", "pool_size=2,3 strides=1,2 padding=same data_format=channels_first"},
        {"global_avgpool2d", "data_format=channels_first"},
        {"batchnorm", "momentum=0.9 epsilon=0.001 center=false data_format=channels_first"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nn_layer *a = nn_layer_create(cases[i][0], cases[i][1]);
        assert_non_null(a);
        char sa[256], sb[256];
        assert_ok(nn_layer_config_string(a, sa, sizeof sa));
        nn_layer *b = nn_layer_create(cases[i][0], sa);
        assert_non_null(b);
        assert_ok(nn_layer_config_string(b, sb, sizeof sb));
        assert_string_equal(sa, sb);
        nn_layer_free(a);
        nn_layer_free(b);
    }
    nn_layer *l = nn_layer_create("maxpool2d", "pool_size=3");
    char s[256];
    assert_ok(nn_layer_config_string(l, s, sizeof s));
    if (!strstr(s, "strides=3,3")) fail_msg("strides default to pool_size: '%s'", s);
    nn_layer_free(l);
}

/* batchnorm: eval mode leaves the moving statistics alone; training moves
 * them toward the batch statistics with Keras's momentum. */
static void test_batchnorm_moving_statistics(void **state)
{
    (void)state;
    int shape[2] = {64, 3};
    nn_layer *l = nn_layer_create("batchnorm", "momentum=0.5");
    assert_ok(nn_layer_build(l, 1, shape + 1));
    assert_ok(nn_layer_alloc_params(l, 1));
    tensor *x = tensor_create(2, shape);
    for (int n = 0; n < 64; n++)
        for (int c = 0; c < 3; c++) x->data[n * 3 + c] = (float)(c + 1) * (n % 2 ? 1.0f : -1.0f) + 2.0f * c;
    nn_graph *g = nn_graph_create(0);
    tensor *y;
    const float *mm = l->params[2].t->data, *mv = l->params[3].t->data;
    assert_string_equal(l->params[2].name, "moving_mean");
    assert_ok(nn_layer_forward(l, g, x, &y, 0));
    for (int c = 0; c < 3; c++) {
        assert_true(mm[c] == 0.0f && mv[c] == 1.0f);
        assert_float_equal(y->data[c], x->data[c] / sqrtf(1.0f + 1e-3f), 1e-6);
    }
    assert_ok(nn_layer_forward(l, g, x, &y, 1));
    for (int c = 0; c < 3; c++) {
        /* batch mean 2c, biased var (c+1)^2, unbiased * 64/63 */
        const double var_u = (double)(c + 1) * (c + 1) * 64.0 / 63.0;
        assert_float_equal(mm[c], 0.5 * 2.0 * c, 1e-5);
        assert_float_equal(mv[c], 0.5 * 1.0 + 0.5 * var_u, 1e-5);
        /* Normalised by the batch statistics: +-1 / sqrt(1 + eps/(c+1)^2). */
        assert_float_equal(y->data[c], -(c + 1) / sqrt((double)(c + 1) * (c + 1) + 1e-3), 1e-5);
    }
    nn_graph_free(g);
    tensor_free(x);
    nn_layer_free(l);
}

/* batchnorm's one-pass moments: values 1e5 from zero with a spread of a
 * few hundredths (mean^2 / var about 1e13, where E[x^2] - E[x]^2 about zero
 * would lose everything) still give the mean and variance of a two-pass
 * computation, in both data formats. */
static void test_batchnorm_large_offset(void **state)
{
    (void)state;
    const int nhwc[4] = {16, 3, 5, 2}, nchw[4] = {16, 2, 3, 5};
    for (int f = 0; f < 2; f++) {
        const int *shape = f ? nchw : nhwc;
        nn_layer *l = make_layer("batchnorm", f ? "momentum=0 data_format=channels_first"
                                                : "momentum=0 data_format=channels_last",
                                 3, shape + 1);
        tensor *x = tensor_create(4, shape);
        const size_t per = x->size / 2; /* values per channel */
        for (size_t i = 0; i < x->size; i++) {
            const int c = f ? (int)(i / 15 % 2) : (int)(i % 2);
            x->data[i] = 1e5f * (float)(c + 1) + 0.01f * (float)((i * 7) % 11) - 0.05f;
        }
        for (int c = 0; c < 2; c++) {
            double sum = 0.0, ssd = 0.0;
            for (size_t i = 0; i < x->size; i++)
                if ((f ? (int)(i / 15 % 2) : (int)(i % 2)) == c) sum += x->data[i];
            const double mean = sum / (double)per;
            for (size_t i = 0; i < x->size; i++)
                if ((f ? (int)(i / 15 % 2) : (int)(i % 2)) == c)
                    ssd += (x->data[i] - mean) * (x->data[i] - mean);
            nn_graph *g = nn_graph_create(0);
            tensor *y;
            assert_ok(nn_layer_forward(l, g, x, &y, 1));
            const float *mm = l->params[2].t->data, *mv = l->params[3].t->data;
            assert_float_equal(mm[c], mean, 1e-7 * fabs(mean));
            const double var_u = ssd / (double)(per - 1);
            assert_true(var_u > 1e-4);
            assert_float_equal(mv[c], var_u, 1e-5 * var_u);
            nn_graph_free(g);
        }
        tensor_free(x);
        nn_layer_free(l);
    }
}

static void test_empty_batch(void **state)
{
    (void)state;
    static const char *const types[][2] = {
        {"conv2d", "filters=3 kernel_size=3 padding=same activation=relu data_format=channels_last"},
        {"maxpool2d", "data_format=channels_last"},
        {"avgpool2d", "data_format=channels_first"},
        {"global_avgpool2d", "data_format=channels_last"},
        {"batchnorm", "data_format=channels_last"},
    };
    int shape[4] = {0, 6, 6, 2};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        nn_layer *l = make_layer(types[i][0], types[i][1], 3, shape + 1);
        tensor *x = input(4, shape, 1);
        nn_graph *g = nn_graph_create(0);
        tensor *y;
        assert_ok(nn_layer_forward(l, g, x, &y, 1));
        assert_int_equal(y->shape[0], 0);
        assert_int_equal(y->size, 0);
        nn_graph_free(g);
        tensor_free(x);
        nn_layer_free(l);
    }
}

/* ---- the eval forward's cached Winograd kernel transform ---- */

/* A batch of 2 (8x8x16) through two 3x3 convolutions (Winograd F(4x4) for
 * both), pooled to 8 logits: nothing but the convolutions in between. */
static const char cache_spec[] = "conv2d filters=16 kernel_size=3 padding=same\n"
                                 "conv2d filters=8 kernel_size=3 padding=same activation=relu\n"
                                 "global_avgpool2d\n";

/* The prediction (cached transform) into out; asserts that it equals, bit for
 * bit, an eval forward that records the kernel gradient's tape (which
 * transforms the kernel afresh). */
static void cache_check(nn_model *m, tensor *x, float *out)
{
    tensor *y = NULL;
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
    float ref[16];
    assert_int_equal(y->size, 16);
    memcpy(ref, y->data, sizeof ref);
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    assert_int_equal(y->size, 16);
    assert_memory_equal(y->data, ref, sizeof ref);
    memcpy(out, y->data, sizeof ref);
}

static nn_model *cache_model(uint64_t seed)
{
    nn_model *m = nn_model_create(seed);
    assert_non_null(m);
    const int in[3] = {8, 8, 16};
    assert_ok(nn_model_add_spec(m, cache_spec));
    assert_ok(nn_model_build(m, 3, in));
    const nn_conv_geom g = {.H = 8, .W = 8, .C = 16, .KH = 3, .KW = 3, .SH = 1, .SW = 1,
                            .DH = 1, .DW = 1, .PT = 1, .PL = 1, .OH = 8, .OW = 8};
    assert_int_equal(nn_conv_winograd_m(&g, 16), 4); /* the cache is in use */
    return m;
}

static void test_winograd_cache_never_stale(void **state)
{
    (void)state;
    nn_model *m = cache_model(1), *other = cache_model(2);
    const int xs[4] = {2, 8, 8, 16};
    tensor *x = tensor_create(4, xs);
    fill_normal(x->data, x->size, 3);
    float first[16], again[16], stepped[16], written[16], loaded[16], want[16];
    cache_check(m, x, first);
    cache_check(m, x, again); /* a cache hit */
    assert_memory_equal(first, again, sizeof first);
    /* an optimizer step changes the kernels */
    optim *o = optim_sgd_create(0.5f, 0.0f, 0, 0.0f);
    const int labels[2] = {1, 5};
    assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
    optim_free(o);
    cache_check(m, x, stepped);
    assert_memory_not_equal(stepped, first, sizeof first);
    /* a program writes one weight of the first kernel */
    m->layers[0]->params[0].t->data[37] += 0.25f;
    cache_check(m, x, written);
    assert_memory_not_equal(written, stepped, sizeof first);
    /* a load replaces all of them: the prediction is the other model's */
    cache_check(other, x, want);
    assert_ok(nn_safetensors_save(other, test_path("other.safetensors")));
    assert_ok(nn_safetensors_load(m, test_path("other.safetensors")));
    cache_check(m, x, loaded);
    assert_memory_equal(loaded, want, sizeof want);
    assert_memory_not_equal(loaded, written, sizeof want);
    tensor_free(x);
    nn_model_free(m);
    nn_model_free(other);
}

/* Winograd reads a padded input implicitly (nn_conv_winograd_same, and
 * nn_conv_winograd_dk on the unpadded input): the same bits as on the
 * padded copy (nn_conv_winograd, nn_conv_winograd_dk_add), F(4x4) and
 * F(2x2), channel counts in whole vectors and not, odd and even maps. */
static void test_winograd_implicit_padding(void **state)
{
    (void)state;
    static const int cases[][5] = {{14, 14, 32, 64, 4}, {7, 7, 64, 16, 4}, {7, 5, 3, 5, 2},
                                   {9, 12, 12, 9, 4}, {2, 2, 8, 8, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int H = cases[i][0], W = cases[i][1], C = cases[i][2], F = cases[i][3], m = cases[i][4], N = 3;
        nn_conv_geom g = {.H = H, .W = W, .C = C, .KH = 3, .KW = 3, .SH = 1, .SW = 1, .DH = 1, .DW = 1};
        assert_ok(nn_conv_geom_init(&g, NN_PAD_SAME, "test"));
        const size_t xs = (size_t)N * H * W * C, ps = (size_t)N * g.Hp * g.Wp * C;
        const size_t ys = (size_t)N * g.OH * g.OW * F, ks = (size_t)9 * C * F;
        const int slots = nn_conv_winograd_slots();
        float *x = malloc(xs * sizeof *x), *xp = malloc(ps * sizeof *xp), *k = malloc(ks * sizeof *k);
        float *dz = malloc(ys * sizeof *dz), *y1 = malloc(ys * sizeof *y1), *y2 = malloc(ys * sizeof *y2);
        float *U = malloc(nn_conv_winograd_kernel_size(m, C, F) * sizeof *U);
        float *ws = malloc(nn_conv_winograd_scratch_size(m, slots, C, F) * sizeof *ws);
        float *part = malloc(nn_conv_winograd_dk_size(m, &g, F) * sizeof *part);
        float *dk1 = calloc(ks, sizeof *dk1), *dk2 = calloc(ks, sizeof *dk2);
        assert_true(x && xp && k && dz && y1 && y2 && U && ws && part && dk1 && dk2);
        tensor_rng rng;
        tensor_rng_seed(&rng, 40 + i);
        for (size_t j = 0; j < xs; j++) x[j] = tensor_rng_uniform(&rng) * 2.0f - 1.0f;
        for (size_t j = 0; j < ys; j++) dz[j] = tensor_rng_uniform(&rng) * 2.0f - 1.0f;
        for (size_t j = 0; j < ks; j++) k[j] = tensor_rng_uniform(&rng) * 0.2f - 0.1f;
        nn_conv_pad(xp, g.Hp, g.Wp, x, H, W, N, C, g.PT, g.PL);
        nn_conv_winograd_kernel(m, U, k, C, F, 0);
        nn_conv_winograd(m, y1, g.OH, g.OW, F, xp, g.Hp, g.Wp, C, 0, 0, N, U, NULL, 1, 0, ws, slots);
        nn_conv_winograd_same(m, y2, x, &g, N, F, U, NULL, 1, ws, slots);
        assert_memory_equal(y1, y2, ys * sizeof *y1);
        nn_conv_winograd_dk_begin(m, part, &g, F);
        nn_conv_winograd_dk_add(m, part, xp, dz, &g, N, 0, N, F, ws, slots);
        nn_conv_winograd_dk_end(m, dk1, part, &g, F);
        nn_conv_winograd_dk(m, dk2, x, dz, &g, N, F, part, ws, slots);
        assert_memory_equal(dk1, dk2, ks * sizeof *dk1);
        free(x), free(xp), free(k), free(dz), free(y1), free(y2), free(U), free(ws), free(part);
        free(dk1), free(dk2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pytorch_fixtures),
        cmocka_unit_test(test_formats_agree),
        cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test(test_threads_raised_before_backward),
        cmocka_unit_test(test_tiled_conv_matches_direct_loop),
        cmocka_unit_test(test_winograd_and_gemm_agree),
        cmocka_unit_test(test_winograd_implicit_padding),
        cmocka_unit_test(test_maxpool_planes),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_config_round_trip),
        cmocka_unit_test(test_batchnorm_moving_statistics),
        cmocka_unit_test(test_batchnorm_large_offset),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test_setup_teardown(test_winograd_cache_never_stale, test_dir_setup,
                                        test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
