/* The autograd tape and its arena (tensor/graph.h).
 *
 * Gradients here are checked against exact hand-computed values (small
 * integers and halves, which float represents exactly), so equality is
 * exact. The order in which backward functions run is logged by a test op.
 * Intermediate gradients are released after their producer's backward
 * unless retained, and their buffers reused. One test trains a small MLP for
 * 3,000 steps and checks that the arena and the gradient pool do not grow
 * after a warm-up; it prints the resident set size before and after (run it
 * under valgrind or ASan for leaks). The parameter hook reports every
 * parameter once, in reverse order of first use, with its final gradient,
 * before backward reaches the layers before it, and changes no gradient.
 * Not covered here: the numerical gradients of layers (test_gradcheck.c). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

/* --- a logging test op: y = k * x, backward logs its id ------------------ */

static int order_log[16], n_logged;

typedef struct {
    int id;
    float k;
} scale_ctx;

static void scale_backward(nn_node *n)
{
    const scale_ctx *c = n->ctx;
    if (n_logged < 16) order_log[n_logged++] = c->id;
    tensor *x = n->in[0];
    if (!x->grad) return;
    for (size_t i = 0; i < x->size; i++) x->grad[i] += c->k * n->out->grad[i];
}

static tensor *scale_op(nn_graph *g, tensor *x, float k, int id)
{
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    scale_ctx *c = nn_graph_alloc(g, sizeof *c);
    assert_non_null(y);
    assert_non_null(c);
    c->id = id;
    c->k = k;
    for (size_t i = 0; i < x->size; i++) y->data[i] = k * x->data[i];
    nn_graph_record(g, "scale", y, &x, 1, scale_backward, c);
    return y;
}

/* A leaf that requires a gradient, with its own grad buffer. */
static tensor *leaf(int n, const float *values)
{
    tensor *t = tensor_create(1, &n);
    memcpy(t->data, values, (size_t)n * sizeof(float));
    return test_require_grad(t);
}

static tensor *constant(int n, const float *values)
{
    tensor *t = tensor_create(1, &n);
    memcpy(t->data, values, (size_t)n * sizeof(float));
    return t;
}

static void assert_floats(const float *got, const float *want, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s[%d] = %.9g, expected %.9g", what, i, (double)got[i], (double)want[i]);
}

static void test_reverse_order(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float av[3] = {1, 2, 3}, wv[3] = {1, -1, 2};
    tensor *a = leaf(3, av), *w = constant(3, wv);
    n_logged = 0;
    tensor *b = scale_op(g, a, 2.0f, 1);
    tensor *c = scale_op(g, b, 3.0f, 2);
    tensor *d = scale_op(g, c, 0.5f, 3);
    tensor *loss;
    assert_ok(nn_op_weighted_sum(g, d, w, &loss));
    assert_int_equal(nn_graph_node_count(g), 4);
    assert_true(loss->data[0] == 3.0f * (1 - 2 + 6)); /* 2*3*0.5 = 3 */
    assert_ok(nn_graph_retain_grad(g, c));
    assert_ok(nn_graph_backward(g, loss));
    assert_int_equal(n_logged, 3);
    assert_int_equal(order_log[0], 3);
    assert_int_equal(order_log[1], 2);
    assert_int_equal(order_log[2], 1);
    const float want[3] = {3, -3, 6}; /* dL/da = 3 w */
    assert_floats(a->grad, want, 3, "a.grad");
    /* A retained intermediate gradient is there too: dL/dc = 0.5 w. The
     * others were released once their producer's backward had run; the
     * loss keeps its seed. */
    const float want_c[3] = {0.5f, -0.5f, 1};
    assert_floats(c->grad, want_c, 3, "c.grad");
    assert_null(b->grad);
    assert_null(d->grad);
    assert_non_null(loss->grad);
    assert_true(loss->grad[0] == 1.0f);
    assert_int_equal(nn_graph_retain_grad(g, b), NN_ERR_STATE);
    assert_error_contains("nn_graph_retain_grad: backward already ran on this graph");
    assert_int_equal(nn_graph_retain_grad(g, NULL), NN_ERR_ARG);
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

/* L = sum(w * (a*a + a)): a is used three times; dL/da = w (2a + 1). The
 * leaf's grad starts non-zero, so this also checks that backward adds. */
static void test_accumulates(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float av[3] = {1, 2, 3}, wv[3] = {1, 2, 0.5f};
    tensor *a = leaf(3, av), *w = constant(3, wv);
    const float start[3] = {100, 200, 300};
    memcpy(a->grad, start, sizeof start);
    tensor *sq, *s, *loss;
    assert_ok(nn_op_mul(g, a, a, &sq));
    assert_ok(nn_op_add(g, sq, a, &s));
    assert_ok(nn_op_weighted_sum(g, s, w, &loss));
    assert_true(loss->data[0] == 2 + 2 * 6 + 0.5f * 12);
    assert_ok(nn_graph_backward(g, loss));
    const float want[3] = {100 + 3, 200 + 10, 300 + 3.5f};
    assert_floats(a->grad, want, 3, "a.grad");

    /* A diamond: b = 2a and c = 3a meet again in d = b + c: dL/da = 5 w. */
    nn_graph_reset(g);
    memset(a->grad, 0, 3 * sizeof(float));
    n_logged = 0;
    tensor *b = scale_op(g, a, 2.0f, 1), *c = scale_op(g, a, 3.0f, 2), *d;
    assert_ok(nn_op_add(g, b, c, &d));
    assert_ok(nn_op_weighted_sum(g, d, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    const float want5[3] = {5, 10, 2.5f};
    assert_floats(a->grad, want5, 3, "a.grad (diamond)");
    assert_int_equal(n_logged, 2);
    assert_int_equal(order_log[0], 2); /* recorded last, runs first */

    /* Two steps without zeroing add up (the model zeroes between steps). */
    nn_graph_reset(g);
    b = scale_op(g, a, 2.0f, 1);
    c = scale_op(g, a, 3.0f, 2);
    assert_ok(nn_op_add(g, b, c, &d));
    assert_ok(nn_op_weighted_sum(g, d, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    const float want10[3] = {10, 20, 5};
    assert_floats(a->grad, want10, 3, "a.grad (two steps)");

    /* mul's second input: L = sum(w * a * x) with x constant. */
    nn_graph_reset(g);
    memset(a->grad, 0, 3 * sizeof(float));
    const float xv[3] = {4, -1, 0.25f};
    tensor *x = constant(3, xv), *p;
    assert_ok(nn_op_mul(g, x, a, &p));
    assert_ok(nn_op_weighted_sum(g, p, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    const float want_x[3] = {4, -2, 0.125f};
    assert_floats(a->grad, want_x, 3, "a.grad (mul)");
    assert_null(x->grad); /* a constant gets no gradient */
    tensor_free(x);
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

static void test_off_path_node_skipped(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float av[3] = {1, 2, 3}, wv[3] = {2, 4, 8};
    tensor *a = leaf(3, av), *w = constant(3, wv);
    n_logged = 0;
    tensor *unused = scale_op(g, a, 10.0f, 7);   /* not on the path to the loss */
    tensor *unused2 = scale_op(g, unused, 1.0f, 8);
    tensor *loss;
    assert_ok(nn_op_weighted_sum(g, a, w, &loss));
    assert_int_equal(nn_graph_node_count(g), 3);
    assert_ok(nn_graph_backward(g, loss));
    assert_int_equal(n_logged, 0);
    assert_null(unused->grad);
    assert_null(unused2->grad);
    assert_floats(a->grad, wv, 3, "a.grad");
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

/* Shared gradient storage: flatten's gradient is its input's
 * (grad_is_input), and spatial dropout writes dx over dy when its input has
 * no gradient yet (grad_in_place). With x = 2a (rank 4), y = dropout(x),
 * L = sum(w * flatten(y)): dL/da = 2 * w * keep * 2 at rate 0.5. With a
 * second consumer of x, v = 3x recorded after the dropout (so its backward
 * runs first and x already has a gradient), nothing may be shared:
 * dL/da = 2 * (3 w + w * keep * 2). */
static void test_shared_gradients(void **state)
{
    (void)state;
    int shape4[4] = {2, 1, 2, 3}, one[3] = {1, 2, 3};
    float av[12], wv[12];
    for (int i = 0; i < 12; i++) {
        av[i] = (float)(i + 1);
        wv[i] = (float)(i % 5) - 1.5f;
    }
    nn_graph *g = nn_graph_create(0);
    for (int second = 0; second <= 1; second++)
        for (int inplace = 0; inplace <= 1; inplace++) {
            nn_graph_reset(g);
            tensor *a = leaf(12, av), *w = constant(12, wv);
            tensor_set_shape(a, 4, shape4);
            nn_layer *sd = nn_layer_create("spatial_dropout2d",
                                           inplace ? "rate=0.5 seed=4 data_format=channels_last inplace=true"
                                                   : "rate=0.5 seed=4 data_format=channels_last");
            nn_layer *fl = nn_layer_create("flatten", "");
            assert_non_null(sd);
            assert_non_null(fl);
            assert_ok(nn_layer_build(sd, 3, one));
            assert_ok(nn_layer_build(fl, 3, one));
            tensor *x = scale_op(g, a, 2.0f, 1), *y, *f, *v = NULL, *s, *loss;
            assert_ok(nn_layer_forward(sd, g, x, &y, 1));
            /* The kept maps, read off the output (x is never 0). */
            int keep[12], kept = 0;
            for (int i = 0; i < 12; i++) kept += keep[i] = y->data[i] != 0.0f;
            assert_true(kept > 0 && kept < 12); /* seed 4 keeps some maps, drops others */
            if (second) {
                v = scale_op(g, x, 3.0f, 2);
                assert_ok(nn_op_add(g, y, v, &s));
                assert_ok(nn_layer_forward(fl, g, s, &f, 1));
            } else {
                assert_ok(nn_layer_forward(fl, g, y, &f, 1));
            }
            tensor_set_shape(w, 2, f->shape);
            assert_ok(nn_op_weighted_sum(g, f, w, &loss));
            assert_ok(nn_graph_retain_grad(g, x));
            assert_ok(nn_graph_retain_grad(g, y));
            assert_ok(nn_graph_retain_grad(g, f));
            assert_ok(nn_graph_backward(g, loss));
            assert_non_null(x->grad);
            assert_non_null(y->grad);
            float want[12];
            for (int i = 0; i < 12; i++)
                want[i] = 2.0f * ((second ? 3.0f * wv[i] : 0.0f) + (keep[i] ? 2.0f * wv[i] : 0.0f));
            assert_floats(a->grad, want, 12, second ? "a.grad (two consumers)" : "a.grad");
            if (!second) {
                assert_ptr_equal(f->grad, y->grad);  /* flatten shares its input's gradient */
                assert_ptr_equal(x->grad, y->grad);  /* dropout wrote dx over dy */
            } else {
                assert_ptr_not_equal(x->grad, y->grad);
            }
            nn_layer_free(sd);
            nn_layer_free(fl);
            tensor_free(a);
            tensor_free(w);
        }
    nn_graph_free(g);
}

/* batchnorm writes dx over dy (grad_in_place with its parameters as the
 * other inputs) when x has no gradient yet: x = 2a, y = batchnorm(x),
 * L = sum(w * y). With a second consumer of x, v = 0x recorded after the
 * batchnorm (so x already has a zero gradient when batchnorm's backward
 * runs), it adds into x's own buffer instead. Both must give the same
 * gradients bit for bit -- a's, gamma's and beta's -- for the fused relu
 * and without, in both data formats; and only the first shares storage. */
static void test_batchnorm_grad_in_place(void **state)
{
    (void)state;
    enum { LEN = 4 * 3 * 3 * 8 };
    int shape4[4] = {4, 3, 3, 8}, per[3] = {3, 3, 8};
    float av[LEN], wv[LEN];
    for (int i = 0; i < LEN; i++) {
        av[i] = (float)((i * 37) % 23) * 0.25f - 2.5f;
        wv[i] = (float)((i * 11) % 7) - 3.0f;
    }
    static const char *const cfg[4] = {
        "momentum=0.9 data_format=channels_last", "momentum=0.9 data_format=channels_last activation=relu",
        "momentum=0.9 data_format=channels_first", "center=false data_format=channels_first activation=relu"};
    nn_graph *g = nn_graph_create(0);
    for (int c = 0; c < 4; c++) {
        float grads[2][LEN + 32];
        int count[2];
        for (int second = 0; second <= 1; second++) {
            nn_graph_reset(g);
            tensor *a = leaf(LEN, av), *w = constant(LEN, wv);
            tensor_set_shape(a, 4, shape4);
            tensor_set_shape(w, 4, shape4);
            nn_layer *bn = nn_layer_create("batchnorm", cfg[c]);
            assert_non_null(bn);
            assert_ok(nn_layer_build(bn, 3, per));
            assert_ok(nn_layer_alloc_params(bn, 3));
            /* gamma away from one, so dx depends on it */
            for (size_t i = 0; i < bn->params[0].t->size; i++) bn->params[0].t->data[i] = 0.5f + (float)i;
            assert_string_equal(bn->params[0].name, "gamma");
            tensor *x = scale_op(g, a, 2.0f, 1), *y, *s, *loss;
            assert_ok(nn_layer_forward(bn, g, x, &y, 1));
            if (second) {
                tensor *v = scale_op(g, x, 0.0f, 2);
                assert_ok(nn_op_add(g, y, v, &s));
            } else {
                s = y;
            }
            assert_ok(nn_op_weighted_sum(g, s, w, &loss));
            assert_ok(nn_graph_retain_grad(g, x));
            assert_ok(nn_graph_retain_grad(g, y));
            assert_ok(nn_graph_backward(g, loss));
            if (second) assert_ptr_not_equal(x->grad, y->grad);
            else assert_ptr_equal(x->grad, y->grad); /* dx written over dy */
            memcpy(grads[second], a->grad, sizeof av);
            int k = LEN;
            for (int p = 0; p < bn->n_params; p++)
                if (bn->params[p].trainable)
                    for (size_t i = 0; i < bn->params[p].t->size; i++) grads[second][k++] = bn->params[p].t->grad[i];
            count[second] = k;
            nn_layer_free(bn);
            tensor_free(a);
            tensor_free(w);
        }
        /* gamma and beta of 8 channels, or of 3 (channels_first), gamma only without center */
        assert_int_equal(count[0], LEN + (c < 2 ? 16 : c == 2 ? 6 : 3));
        assert_int_equal(count[1], count[0]);
        int nonzero = 0;
        for (int i = 0; i < count[0]; i++) {
            nonzero += grads[0][i] != 0.0f;
            if (memcmp(&grads[0][i], &grads[1][i], sizeof(float)))
                fail_msg("%s: gradient %d: %a in place, %a added", cfg[c], i, (double)grads[0][i],
                         (double)grads[1][i]);
        }
        assert_true(nonzero > LEN / 4);
    }
    nn_graph_free(g);
}

/* The shared scratch holds the largest request, 64-byte aligned, kept
 * across resets: a smaller request gets the same buffer, a larger one a
 * buffer of its size. */
static void test_scratch(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    assert_null(nn_graph_scratch(g));
    assert_int_equal(nn_graph_scratch_bytes(g), 0);
    unsigned char *a = nn_graph_scratch_reserve(g, 1000);
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % TENSOR_ALIGN, 0);
    memset(a, 1, 1000);
    assert_ptr_equal(nn_graph_scratch_reserve(g, 10), a);
    nn_graph_reset(g);
    assert_ptr_equal(nn_graph_scratch(g), a);
    unsigned char *b = nn_graph_scratch_reserve(g, 5000);
    assert_non_null(b);
    assert_int_equal((uintptr_t)b % TENSOR_ALIGN, 0);
    memset(b, 2, 5000);
    assert_ptr_equal(nn_graph_scratch(g), b);
    assert_int_equal(nn_graph_scratch_bytes(g), 5000);
    nn_graph_free(g);
}

/* Intermediate gradient buffers go back to the pool once their producer's
 * backward has run, and the next ones reuse them: along a chain of five
 * scalings of 1,000 floats, at most two such gradients are in flight at a
 * time (the one being read and the one being written), so the pool holds
 * far less than the five; later steps reuse it without growing it. */
static void test_grad_pool_reuse(void **state)
{
    (void)state;
    enum { LEN = 1000, CHAIN = 5 };
    float av[LEN], wv[LEN];
    for (int i = 0; i < LEN; i++) {
        av[i] = (float)(i % 7);
        wv[i] = (float)(i % 3) - 1.0f;
    }
    nn_graph *g = nn_graph_create(0);
    tensor *a = leaf(LEN, av), *w = constant(LEN, wv);
    size_t pool = 0;
    for (int step = 0; step < 4; step++) {
        nn_graph_reset(g);
        memset(a->grad, 0, sizeof av);
        tensor *t[CHAIN], *loss;
        t[0] = scale_op(g, a, 2.0f, 1);
        for (int k = 1; k < CHAIN; k++) t[k] = scale_op(g, t[k - 1], k % 2 ? 0.5f : 2.0f, k + 1);
        assert_ok(nn_op_weighted_sum(g, t[CHAIN - 1], w, &loss));
        assert_ok(nn_graph_backward(g, loss));
        for (int k = 0; k < CHAIN; k++) assert_null(t[k]->grad);
        for (int i = 0; i < LEN; i++) /* 2 * 0.5 * 2 * 0.5 * 2 = 2 */
            if (a->grad[i] != 2.0f * wv[i]) fail_msg("a.grad[%d] = %g", i, (double)a->grad[i]);
        if (step == 0) pool = nn_graph_grad_pool_bytes(g);
        else assert_int_equal(nn_graph_grad_pool_bytes(g), pool);
    }
    assert_true(pool >= 2 * LEN * sizeof(float));
    assert_true(pool < 3 * LEN * sizeof(float));
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

static void test_no_grad_mode(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float av[3] = {1, 2, 3}, wv[3] = {1, 1, 1};
    tensor *a = leaf(3, av), *w = constant(3, wv);
    nn_graph_set_grad_enabled(g, 0);
    assert_false(nn_graph_grad_enabled(g));
    assert_false(nn_graph_needs_grad(g, &a, 1));
    tensor *sq, *loss;
    assert_ok(nn_op_mul(g, a, a, &sq));
    assert_ok(nn_op_weighted_sum(g, sq, w, &loss));
    assert_true(loss->data[0] == 14.0f); /* the forward still computes */
    assert_int_equal(nn_graph_node_count(g), 0);
    assert_null(sq->node);
    assert_int_equal(nn_graph_backward(g, loss), NN_ERR_STATE);
    assert_error_contains("nn_graph_backward: loss does not depend on anything that requires a gradient");
    const float zero[3] = {0, 0, 0};
    assert_floats(a->grad, zero, 3, "a.grad");

    /* Back on: the same ops record; inputs that need no gradient do not. */
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    tensor *c = constant(3, av), *cc;
    assert_ok(nn_op_mul(g, c, c, &cc));
    assert_int_equal(nn_graph_node_count(g), 0);
    assert_ok(nn_op_mul(g, a, c, &cc));
    assert_int_equal(nn_graph_node_count(g), 1);
    tensor_free(c);
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

static void test_backward_errors(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float av[3] = {1, 2, 3}, wv[3] = {1, 1, 1};
    tensor *a = leaf(3, av), *w = constant(3, wv);
    tensor *sq, *loss;
    assert_ok(nn_op_mul(g, a, a, &sq));
    assert_int_equal(nn_graph_backward(g, sq), NN_ERR_SHAPE);
    assert_error_contains("nn_graph_backward: loss must hold one element, got shape (3,)");
    assert_int_equal(nn_graph_backward(g, NULL), NN_ERR_ARG);
    assert_int_equal(nn_graph_backward(NULL, sq), NN_ERR_ARG);
    assert_ok(nn_op_weighted_sum(g, sq, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    const float once[3] = {2, 4, 6};
    assert_floats(a->grad, once, 3, "a.grad");
    /* A second backward on the same tape would add the stale intermediate
     * gradients again; it is refused and changes nothing. */
    assert_int_equal(nn_graph_backward(g, loss), NN_ERR_STATE);
    assert_error_contains("backward already ran on this graph; reset it first");
    assert_floats(a->grad, once, 3, "a.grad after a refused backward");
    nn_graph_reset(g);
    assert_ok(nn_op_mul(g, a, a, &sq));
    assert_ok(nn_op_weighted_sum(g, sq, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    const float twice[3] = {4, 8, 12};
    assert_floats(a->grad, twice, 3, "a.grad after reset");
    tensor_free(a);
    tensor_free(w);
    nn_graph_free(g);
}

static void test_arena_tensors(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(4096);
    assert_non_null(g);
    assert_int_equal(nn_graph_arena_bytes(g), 4096);
    int shape[2] = {10, 100};
    size_t after_second = 0;
    for (int step = 0; step < 50; step++) {
        nn_graph_reset(g);
        /* 12 tensors of 4000 bytes: more than the first block. */
        for (int k = 0; k < 12; k++) {
            tensor *t = nn_graph_tensor(g, 2, shape);
            assert_non_null(t);
            assert_int_equal((uintptr_t)t->data % TENSOR_ALIGN, 0);
            assert_null(t->grad);
            tensor_fill(t, (float)k); /* the whole extent is ours */
        }
        void *p = nn_graph_alloc(g, 1);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % TENSOR_ALIGN, 0);
        if (step == 1) after_second = nn_graph_arena_bytes(g);
        if (step > 1) assert_int_equal(nn_graph_arena_bytes(g), after_second);
    }
    assert_true(after_second >= 12 * 4000);
    /* Views share storage and have no grad of their own. */
    nn_graph_reset(g);
    tensor *t = nn_graph_tensor(g, 2, shape);
    int flat[1] = {1000}, wrong[1] = {999};
    tensor *v = nn_graph_view(g, t, 1, flat);
    assert_ptr_equal(v->data, t->data);
    assert_null(nn_graph_view(g, t, 1, wrong));
    assert_error_contains("cannot view (10, 100) as (999,)");
    assert_null(nn_graph_tensor(g, 0, shape));
    assert_error_contains("nn_graph_tensor: rank 0");
    nn_graph_free(g);
    nn_graph_free(NULL);
}

static void test_arena_reused_over_training(void **state)
{
    (void)state;
    enum { BATCH = 64, FEATURES = 16, CLASSES = 4, STEPS = 3000, WARMUP = 5 };
    nn_model *m = nn_model_create(11);
    assert_ok(nn_model_add_spec(m, "dense units=32 activation=relu\n"
                                   "dense units=32\nrelu\ndropout rate=0.1\n"
                                   "dense units=4\n"));
    int in_shape[1] = {FEATURES};
    assert_ok(nn_model_build(m, 1, in_shape));
    optim *opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    int xs[2] = {BATCH, FEATURES};
    tensor *x = tensor_create(2, xs);
    tensor_rng rng;
    tensor_rng_seed(&rng, 5);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    int labels[BATCH];
    for (int i = 0; i < BATCH; i++) labels[i] = (x->data[i * FEATURES] > 0) + 2 * (x->data[i * FEATURES + 1] > 0);
    float loss = 0, first_loss = 0;
    size_t arena = 0, pool = 0;
    int nodes = 0;
    long rss_start = 0;
    for (int step = 0; step < STEPS; step++) {
        assert_ok(nn_model_train_step(m, opt, x, labels, &loss, NULL));
        if (step == 0) first_loss = loss;
        if (step == WARMUP) {
            arena = nn_graph_arena_bytes(nn_model_graph(m));
            pool = nn_graph_grad_pool_bytes(nn_model_graph(m));
            nodes = nn_graph_node_count(nn_model_graph(m));
            rss_start = test_rss_kib();
        } else if (step > WARMUP) {
            size_t now = nn_graph_arena_bytes(nn_model_graph(m));
            if (now != arena) fail_msg("step %d: arena grew from %zu to %zu bytes", step, arena, now);
            now = nn_graph_grad_pool_bytes(nn_model_graph(m));
            if (now != pool) fail_msg("step %d: gradient pool grew from %zu to %zu bytes", step, pool, now);
            assert_int_equal(nn_graph_node_count(nn_model_graph(m)), nodes);
        }
    }
    long rss_end = test_rss_kib();
    printf("    arena %zu bytes, gradient pool %zu bytes, %d nodes per step; RSS %ld KiB after %d steps, %ld KiB after %d "
           "(%+ld KiB); loss %.3f -> %.3f\n",
           arena, pool, nodes, rss_start, WARMUP + 1, rss_end, STEPS, rss_end - rss_start,
           (double)first_loss, (double)loss);
    assert_true(nodes >= 6);
    assert_true(loss < first_loss); /* and it did train */
    /* The resident-memory bound only means something with the plain
     * allocator (see test_rss_unreliable). */
    if (test_rss_unreliable()) printf("    (resident-memory bound not checked under ASan or valgrind)\n");
    else if (rss_end - rss_start > 2048)
        fail_msg("resident memory grew by %ld KiB over %d steps", rss_end - rss_start, STEPS);
    tensor_free(x);
    optim_free(opt);
    nn_model_free(m);
}

/* --- the parameter hook (nn_graph_set_param_hook) ------------------------ */

/* What the hook saw: each call's parameter, a copy of its gradient then,
 * and what the caller asked to check at that moment. */
#define HOOK_MAX 32
typedef struct {
    tensor *seen[HOOK_MAX];
    float *grad_then[HOOK_MAX];
    int n;
    int fail_at; /* return an error at this call (-1: never) */
    const nn_model *m; /* when set: the layers before the reported one are untouched */
} hook_log;

/* The index of the model layer that owns trainable parameter p, or -1. */
static int hook_layer_of(const nn_model *m, const tensor *p)
{
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++)
            if (m->layers[i]->params[k].t == p) return i;
    return -1;
}

static nn_status hook_record(void *ctx, tensor *p)
{
    hook_log *h = ctx;
    if (h->n == h->fail_at) return nn_error(NN_ERR_IO, "hook_record: refused call %d", h->n);
    assert_true(h->n < HOOK_MAX);
    h->seen[h->n] = p;
    h->grad_then[h->n] = malloc(p->size * sizeof(float));
    assert_non_null(h->grad_then[h->n]);
    memcpy(h->grad_then[h->n], p->grad, p->size * sizeof(float));
    if (h->m) {
        /* Reported as soon as final: backward has not reached the layers
         * before this one, whose gradients are still the zeros of
         * nn_model_zero_grad. */
        const int layer = hook_layer_of(h->m, p);
        assert_true(layer >= 0);
        for (int i = 0; i < layer; i++)
            for (int k = 0; k < h->m->layers[i]->n_params; k++) {
                const tensor *q = h->m->layers[i]->params[k].t;
                if (!h->m->layers[i]->params[k].trainable) continue;
                for (size_t j = 0; j < q->size; j++)
                    if (q->grad[j] != 0.0f)
                        fail_msg("layer %d's gradient changed before layer %d's was reported", i, layer);
            }
    }
    h->n++;
    return NN_OK;
}

static void hook_log_free(hook_log *h)
{
    for (int i = 0; i < h->n; i++) free(h->grad_then[i]);
    memset(h, 0, sizeof *h);
}

/* Each call's copy against the gradient backward left: nothing was added
 * after the report. */
static void hook_assert_final(const hook_log *h)
{
    for (int i = 0; i < h->n; i++)
        if (memcmp(h->grad_then[i], h->seen[i]->grad, h->seen[i]->size * sizeof(float)))
            fail_msg("report %d: the gradient changed after the hook was told it was final", i);
}

/* A tape by hand: p is read by two nodes (first and third), q once, r twice
 * by one node, o only off the path to the loss, z by none:
 *     u = p q, v = 2u, s = v p, t = r r, o2 = o, y = s + t, L = sum(w y).
 * Reports: o (off the path, where its node would have run), r once, then p
 * and q after their first reader's backward (input order); z never. The
 * gradients at report time are the final ones, and the exact values
 * dL/dp = 4 w p q, dL/dq = 2 w p^2, dL/dr = 2 w r, dL/do = 0. */
static void test_param_hook_order(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const float pv[3] = {1, 2, -1}, qv[3] = {3, 0.5f, 2}, rv[3] = {-2, 1, 4}, wv[3] = {1, 2, 0.5f};
    tensor *p = leaf(3, pv), *q = leaf(3, qv), *r = leaf(3, rv), *o = leaf(3, rv), *z = leaf(3, rv);
    tensor *w = constant(3, wv);
    tensor *all[5] = {p, q, r, o, z};
    for (int i = 0; i < 5; i++) all[i]->flags |= TENSOR_PARAM;
    hook_log h = {.fail_at = -1};
    nn_graph_set_param_hook(g, hook_record, &h);
    for (int round = 0; round < 2; round++) { /* the hook stays across resets */
        nn_graph_reset(g);
        for (int i = 0; i < 5; i++) memset(all[i]->grad, 0, 3 * sizeof(float));
        tensor *u, *s, *t, *y, *loss;
        assert_ok(nn_op_mul(g, p, q, &u));
        tensor *v = scale_op(g, u, 2.0f, 1);
        assert_ok(nn_op_mul(g, v, p, &s));
        assert_ok(nn_op_mul(g, r, r, &t));
        (void)scale_op(g, o, 1.0f, 2);
        assert_ok(nn_op_add(g, s, t, &y));
        assert_ok(nn_op_weighted_sum(g, y, w, &loss));
        assert_ok(nn_graph_backward(g, loss));
        assert_int_equal(h.n, 4);
        assert_ptr_equal(h.seen[0], o);
        assert_ptr_equal(h.seen[1], r);
        assert_ptr_equal(h.seen[2], p);
        assert_ptr_equal(h.seen[3], q);
        hook_assert_final(&h);
        float want_p[3], want_q[3], want_r[3];
        const float zero[3] = {0, 0, 0};
        for (int i = 0; i < 3; i++) {
            want_p[i] = 4 * wv[i] * pv[i] * qv[i];
            want_q[i] = 2 * wv[i] * pv[i] * pv[i];
            want_r[i] = 2 * wv[i] * rv[i];
        }
        assert_floats(p->grad, want_p, 3, "p.grad");
        assert_floats(q->grad, want_q, 3, "q.grad");
        assert_floats(r->grad, want_r, 3, "r.grad");
        assert_floats(o->grad, zero, 3, "o.grad");
        for (int i = 0; i < 5; i++) assert_false(all[i]->flags & TENSOR_GRAPH_MARK);
        hook_log_free(&h);
        h.fail_at = -1;
    }

    /* A hook's error stops backward and comes back from it. */
    nn_graph_reset(g);
    h.fail_at = 1;
    tensor *u, *t, *loss;
    assert_ok(nn_op_mul(g, p, q, &u));
    assert_ok(nn_op_mul(g, r, u, &t));
    assert_ok(nn_op_weighted_sum(g, t, w, &loss));
    assert_int_equal(nn_graph_backward(g, loss), NN_ERR_IO);
    assert_error_contains("hook_record: refused call 1");
    assert_int_equal(h.n, 1);
    hook_log_free(&h);

    /* Removed: not called. */
    nn_graph_set_param_hook(g, NULL, NULL);
    nn_graph_reset(g);
    assert_ok(nn_op_mul(g, p, q, &u));
    assert_ok(nn_op_weighted_sum(g, u, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    assert_int_equal(h.n, 0);
    for (int i = 0; i < 5; i++) tensor_free(all[i]);
    tensor_free(w);
    nn_graph_free(g);
}

/* A model with convolutions, batchnorm, a residual add (one layer's output
 * read twice) and dense layers: every trainable parameter is reported
 * exactly once, layer by layer from the last, before backward touches an
 * earlier layer's gradients, with its final gradient; and the gradients are
 * those of the same step without a hook, bit for bit. */
static void test_param_hook_model(void **state)
{
    (void)state;
    static const char spec[] = "conv2d filters=4 kernel_size=3 padding=same\n"
                               "batchnorm activation=relu\n"
                               "conv2d filters=4 kernel_size=3 padding=same name=c2\n"
                               "add inputs=batchnorm_1,c2\n"
                               "conv2d filters=3 kernel_size=3 activation=relu use_bias=false\n"
                               "flatten\n"
                               "dense units=8 activation=relu\n"
                               "dense units=3\n";
    const int shape[3] = {6, 6, 2};
    nn_model *a = test_make_model(spec, 3, shape, 7), *b = test_make_model(spec, 3, shape, 7);
    int xs[4] = {5, 6, 6, 2};
    tensor *x = tensor_create(4, xs);
    tensor_rng rng;
    tensor_rng_seed(&rng, 9);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    const int labels[5] = {0, 2, 1, 1, 0};
    hook_log h = {.fail_at = -1, .m = a};
    nn_model *ms[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        nn_model *m = ms[k];
        nn_graph *g = nn_model_graph(m);
        if (m == a) nn_graph_set_param_hook(g, hook_record, &h);
        nn_graph_reset(g);
        nn_model_zero_grad(m);
        tensor *y, *loss;
        assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
        assert_ok(nn_op_softmax_cross_entropy(g, y, labels, &loss, NULL));
        assert_ok(nn_graph_backward(g, loss));
    }
    int trainable = 0, last_layer = a->n_layers;
    for (int i = 0; i < a->n_layers; i++)
        for (int k = 0; k < a->layers[i]->n_params; k++) trainable += a->layers[i]->params[k].trainable;
    assert_int_equal(h.n, trainable);
    for (int i = 0; i < h.n; i++) {
        const int layer = hook_layer_of(a, h.seen[i]);
        assert_true(layer >= 0 && layer <= last_layer);
        last_layer = layer;
        for (int j = 0; j < i; j++) assert_ptr_not_equal(h.seen[i], h.seen[j]);
    }
    hook_assert_final(&h);
    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->grads, b->grads, a->n_params * sizeof(float));
    hook_log_free(&h);
    tensor_free(x);
    nn_model_free(a);
    nn_model_free(b);
}

/* A step bigger than the first arena block (1 MiB) chains blocks; the reset
 * after it merges them, and from then on the arena stays the same size. */
static void test_arena_grows_once(void **state)
{
    (void)state;
    enum { BATCH = 256, FEATURES = 8, WIDTH = 256, STEPS = 8 };
    nn_model *m = nn_model_create(12);
    assert_ok(nn_model_add_spec(m, "dense units=256 activation=relu\ndropout rate=0.2\n"
                                   "dense units=256\nrelu\ndense units=3\n"));
    int in_shape[1] = {FEATURES};
    assert_ok(nn_model_build(m, 1, in_shape));
    optim *opt = optim_sgd_create(0.01f, 0.9f, 0, 0.0f);
    int xs[2] = {BATCH, FEATURES};
    tensor *x = tensor_create(2, xs);
    tensor_rng rng;
    tensor_rng_seed(&rng, 6);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    int labels[BATCH];
    for (int i = 0; i < BATCH; i++) labels[i] = i % 3;
    const size_t first = nn_graph_arena_bytes(nn_model_graph(m));
    size_t after_reset = 0;
    for (int step = 0; step < STEPS; step++) {
        assert_ok(nn_model_train_step(m, opt, x, labels, NULL, NULL));
        size_t now = nn_graph_arena_bytes(nn_model_graph(m));
        if (step == 0) assert_true(now > first); /* the activations did not fit */
        if (step == 1) after_reset = now;
        if (step > 1 && now != after_reset)
            fail_msg("step %d: arena %zu bytes, %zu after the first reset", step, now, after_reset);
    }
    assert_true(after_reset >= (size_t)4 * BATCH * WIDTH * sizeof(float));
    printf("    arena: %zu bytes at creation, %zu from step 2 on\n", first, after_reset);
    tensor_free(x);
    optim_free(opt);
    nn_model_free(m);
}

/* A recycling backward (nn_graph_backward_recycle) puts intermediate
 * gradients in arena memory nothing reads any more. With p = x*x, q = x*x,
 * s = p + q, t = s*s, L = sum(w * t) (n values each): add reads neither
 * input, so p's and q's storage is dead from the start; t's is dead once
 * t's node's backward has run. Plain backward holds dL/dt, dL/ds and then
 * dL/ds, dL/dp, dL/dq at once: a pool of 3n floats, plus 1 for dL/dL.
 * Recycling: dL/dL (kept until the reset) is the pool's only buffer; dL/dt
 * goes to p's storage, dL/ds to q's, dL/dp to p's again once dL/dt is
 * released, dL/dq where t was. x's gradient is the same to the bit. With a
 * first arena block too small for one tensor (the first step of a graph,
 * whose arena is a chain of blocks) the gradient is the same too. */
static void test_backward_recycle(void **state)
{
    (void)state;
    enum { N = 1024 };
    float xv[N], wv[N], grad[2][N];
    for (int i = 0; i < N; i++) {
        xv[i] = 0.5f + (float)(i % 13) / 16.0f;
        wv[i] = (float)(i % 7) - 2.75f;
    }
    for (int first_block = 0; first_block <= 1; first_block++) {
        size_t pool[2], arena[2];
        for (int recycle = 0; recycle <= 1; recycle++) {
            nn_graph *g = nn_graph_create(first_block ? 2048 : (size_t)1 << 20);
            tensor *x = leaf(N, xv), *w = constant(N, wv), *p, *q, *s, *t, *loss;
            for (int step = 0; step < 2; step++) { /* the second step reuses the first's memory */
                nn_graph_reset(g);
                memset(x->grad, 0, sizeof xv);
                assert_ok(nn_op_mul(g, x, x, &p));
                assert_ok(nn_op_mul(g, x, x, &q));
                assert_ok(nn_op_add(g, p, q, &s));
                assert_ok(nn_op_mul(g, s, s, &t));
                assert_ok(nn_op_weighted_sum(g, t, w, &loss));
                if (recycle)
                    assert_ok(nn_graph_backward_recycle(g, loss, 1.0f));
                else
                    assert_ok(nn_graph_backward(g, loss));
                memcpy(grad[recycle], x->grad, sizeof grad[recycle]);
            }
            pool[recycle] = nn_graph_grad_pool_bytes(g);
            arena[recycle] = nn_graph_arena_bytes(g);
            tensor_free(x);
            tensor_free(w);
            nn_graph_free(g);
        }
        assert_memory_equal(grad[0], grad[1], sizeof grad[0]);
        assert_int_equal(arena[1], arena[0]);
        if (!first_block) {
            assert_int_equal(pool[0], (3 * N + 1) * sizeof(float));
            assert_int_equal(pool[1], sizeof(float));
        } else {
            assert_true(pool[1] <= pool[0]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reverse_order),
        cmocka_unit_test(test_accumulates),
        cmocka_unit_test(test_off_path_node_skipped),
        cmocka_unit_test(test_shared_gradients),
        cmocka_unit_test(test_batchnorm_grad_in_place),
        cmocka_unit_test(test_scratch),
        cmocka_unit_test(test_grad_pool_reuse),
        cmocka_unit_test(test_no_grad_mode),
        cmocka_unit_test(test_backward_errors),
        cmocka_unit_test(test_arena_tensors),
        cmocka_unit_test(test_arena_reused_over_training),
        cmocka_unit_test(test_arena_grows_once),
        cmocka_unit_test(test_backward_recycle),
        cmocka_unit_test(test_param_hook_order),
        cmocka_unit_test(test_param_hook_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
