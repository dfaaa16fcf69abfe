/* Finite-difference gradient check of every registered layer and every graph
 * operation. A new layer is covered by its registry entry alone: the harness
 * reads .test_config and .test_shape from the table (a merge layer's
 * .test_inputs and .test_shapes: one leaf per input, each checked).
 *
 * Method: loss L = sum(w * y) with a fixed random w (not sum(y), which makes
 * softmax-like checks degenerate); central differences with h = 1e-2 in
 * double (checked against h/2 to detect kinks); the error of each tensor's gradient is the norm-wise relative error
 * ||analytic - numeric|| / max(||analytic||, ||numeric||), which must be below
 * 1e-3. Gradient buffers are pre-filled with random values so a backward that
 * assigns instead of adding fails. Points where the estimates with h and h/2
 * disagree (a ReLU or max-pool kink inside [x-h, x+h]) are skipped, and at
 * most a tenth of the points may be skipped. Stochastic layers are pinned to
 * the same call counter for every evaluation, so they redraw the same mask. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define MAX_LEAVES 8
#define MAX_POINTS 96
#define H 1e-2

typedef struct gc_case gc_case;
struct gc_case {
    char name[64];
    tensor *leaves[MAX_LEAVES];
    int n_leaves;
    nn_status (*loss)(gc_case *c, nn_graph *g, tensor **loss);
    nn_layer *layer;
    int training;
    tensor *x, *w;
    tensor *xs[NN_LAYER_MAX_INPUTS]; /* a layer's inputs; xs[0] == x */
    int n_in;
    int labels[8];
};

static tensor *leaf(int rank, const int *shape, tensor_rng *rng)
{
    tensor *t = tensor_create(rank, shape);
    tensor_init_normal(t, rng, 0.0f, 1.0f);
    return test_require_grad(t);
}

static nn_status layer_loss(gc_case *c, nn_graph *g, tensor **loss)
{
    tensor *y;
    c->layer->calls = 0; /* pin the mask of stochastic layers */
    NN_TRY(nn_layer_forward_multi(c->layer, g, c->n_in, c->xs, &y, c->training));
    if (!c->w) {
        tensor_rng rng;
        tensor_rng_seed(&rng, 99);
        c->w = tensor_create(y->rank, y->shape);
        tensor_init_normal(c->w, &rng, 0.0f, 1.0f);
    }
    return nn_op_weighted_sum(g, y, c->w, loss);
}

static double eval_loss(gc_case *c, nn_graph *g)
{
    tensor *l;
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    nn_status s = c->loss(c, g, &l);
    nn_graph_set_grad_enabled(g, 1);
    if (s != NN_OK) fail_msg("%s: forward failed: %s", c->name, nn_last_error());
    return l->data[0];
}

static void run_check(gc_case *c)
{
    nn_graph *g = nn_graph_create(0);
    tensor_rng rng;
    tensor_rng_seed(&rng, 1234);
    eval_loss(c, g); /* creates c->w for layer cases */
    float *before[MAX_LEAVES];
    for (int k = 0; k < c->n_leaves; k++) {
        tensor *t = c->leaves[k];
        before[k] = malloc(t->size * sizeof(float));
        for (size_t i = 0; i < t->size; i++) before[k][i] = t->grad[i] = tensor_rng_normal(&rng);
    }
    nn_graph_reset(g);
    tensor *l;
    assert_ok(c->loss(c, g, &l));
    assert_ok(nn_graph_backward(g, l));
    for (int k = 0; k < c->n_leaves; k++) {
        tensor *t = c->leaves[k];
        double dd = 0, aa = 0, nn2 = 0;
        int points = 0, skipped = 0;
        size_t stride = t->size > MAX_POINTS ? t->size / MAX_POINTS : 1;
        for (size_t i = 0; i < t->size; i += stride) {
            float orig = t->data[i];
            double f[4], step[4];
            const double hs[4] = {H, -H, H / 2, -H / 2};
            for (int j = 0; j < 4; j++) {
                t->data[i] = (float)(orig + hs[j]);
                step[j] = (double)t->data[i] - orig; /* the step float can represent */
                f[j] = eval_loss(c, g);
            }
            t->data[i] = orig;
            double num = (f[0] - f[1]) / (step[0] - step[1]);
            double half = (f[2] - f[3]) / (step[2] - step[3]);
            points++;
            /* Smooth: the two estimates agree to O(h^2). A kink inside the
             * interval makes them differ by O(1). */
            if (fabs(num - half) > 1e-3 * fmax(1.0, fabs(num))) {
                skipped++;
                continue;
            }
            double ana = (double)t->grad[i] - before[k][i];
            dd += (ana - num) * (ana - num);
            aa += ana * ana;
            nn2 += num * num;
        }
        double denom = fmax(sqrt(fmax(aa, nn2)), 1e-6);
        double rel = sqrt(dd) / denom;
        if (aa == 0 && nn2 == 0) rel = 0;
        if (rel >= 1e-3 || skipped * 10 > points)
            fail_msg("%s: leaf %d: relative error %.3g (limit 1e-3), %d of %d points at kinks",
                     c->name, k, rel, skipped, points);
        free(before[k]);
    }
    nn_graph_free(g);
}

/* type with config (its .test_config when NULL) on .test_shape(s). */
static void check_layer_config(const nn_layer_type *type, const char *config, int training)
{
    gc_case c = {0};
    if (!config) config = type->test_config;
    snprintf(c.name, sizeof c.name, "%s %.30s (%s)", type->name, config,
             training ? "train" : "eval");
    c.layer = nn_layer_create(type->name, config);
    if (!c.layer) fail_msg("%s: create failed: %s", type->name, nn_last_error());
    c.n_in = nn_layer_type_is_merge(type) ? type->test_inputs : 1;
    assert_true(c.n_in >= 1 && c.n_in <= NN_LAYER_MAX_INPUTS);
    int ranks[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < c.n_in; k++) ranks[k] = type->test_rank;
    if (c.n_in > 1)
        assert_ok(nn_layer_build_multi(c.layer, c.n_in, ranks, type->test_shapes));
    else
        assert_ok(nn_layer_build(c.layer, type->test_rank, type->test_shape));
    assert_ok(nn_layer_alloc_params(c.layer, 42));
    tensor_rng rng;
    tensor_rng_seed(&rng, 7);
    /* Trainable parameters get values of the typical magnitude; inputs are
     * standard normal. Batch of 2. */
    for (int k = 0; k < c.n_in; k++) {
        int shape[TENSOR_MAX_RANK] = {2};
        const int *per_sample = c.n_in > 1 ? type->test_shapes[k] : type->test_shape;
        for (int i = 0; i < type->test_rank; i++) shape[i + 1] = per_sample[i];
        c.xs[k] = leaf(type->test_rank + 1, shape, &rng);
        c.leaves[c.n_leaves++] = c.xs[k];
    }
    c.x = c.xs[0];
    for (int i = 0; i < c.layer->n_params; i++)
        if (c.layer->params[i].trainable) c.leaves[c.n_leaves++] = c.layer->params[i].t;
    c.loss = layer_loss;
    c.training = training;
    run_check(&c);
    for (int k = 0; k < c.n_in; k++) tensor_free(c.xs[k]);
    tensor_free(c.w);
    nn_layer_free(c.layer);
}

static void check_layer(const nn_layer_type *type, int training)
{
    check_layer_config(type, NULL, training);
}

/* The activation= key of layers whose test_config leaves it out. */
static void test_layer_activations(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"batchnorm", "momentum=0.9 data_format=channels_first activation=relu"},
        {"batchnorm", "data_format=channels_last activation=relu"},
        {"batchnorm", "data_format=channels_last activation=tanh"},
        {"add", "activation=relu"},
        {"add", "activation=elu alpha=0.5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const nn_layer_type *t = NULL;
        for (int k = 0; k < nn_registry_count(); k++)
            if (!strcmp(nn_registry_get(k)->name, cases[i][0])) t = nn_registry_get(k);
        assert_non_null(t);
        check_layer_config(t, cases[i][1], 1);
        check_layer_config(t, cases[i][1], 0);
    }
}

static void test_every_registered_layer(void **state)
{
    (void)state;
    assert_true(nn_registry_count() > 0);
    for (int i = 0; i < nn_registry_count(); i++) {
        const nn_layer_type *t = nn_registry_get(i);
        assert_non_null(t->test_config);
        assert_true(t->test_rank >= 1);
        check_layer(t, 1);
        check_layer(t, 0);
    }
}

/* loss = sum(w * (a*a + a)): a is used three times, so its gradient must be
 * the sum over the uses. */
static nn_status used_twice_loss(gc_case *c, nn_graph *g, tensor **loss)
{
    tensor *sq, *s;
    NN_TRY(nn_op_mul(g, c->x, c->x, &sq));
    NN_TRY(nn_op_add(g, sq, c->x, &s));
    return nn_op_weighted_sum(g, s, c->w, loss);
}

static void test_tensor_used_twice(void **state)
{
    (void)state;
    tensor_rng rng;
    tensor_rng_seed(&rng, 3);
    int shape[2] = {3, 4};
    gc_case c = {0};
    snprintf(c.name, sizeof c.name, "mul/add reuse");
    c.x = leaf(2, shape, &rng);
    c.w = tensor_create(2, shape);
    tensor_init_normal(c.w, &rng, 0, 1);
    c.leaves[c.n_leaves++] = c.x;
    c.loss = used_twice_loss;
    run_check(&c);
    tensor_free(c.x);
    tensor_free(c.w);
}

static nn_status mul_loss(gc_case *c, nn_graph *g, tensor **loss)
{
    tensor *p;
    NN_TRY(nn_op_mul(g, c->leaves[0], c->leaves[1], &p));
    return nn_op_weighted_sum(g, p, c->w, loss);
}

static void test_mul_two_inputs(void **state)
{
    (void)state;
    tensor_rng rng;
    tensor_rng_seed(&rng, 4);
    int shape[1] = {6};
    gc_case c = {0};
    snprintf(c.name, sizeof c.name, "mul");
    c.leaves[c.n_leaves++] = leaf(1, shape, &rng);
    c.leaves[c.n_leaves++] = leaf(1, shape, &rng);
    c.w = tensor_create(1, shape);
    tensor_init_normal(c.w, &rng, 0, 1);
    c.loss = mul_loss;
    run_check(&c);
    tensor_free(c.leaves[0]);
    tensor_free(c.leaves[1]);
    tensor_free(c.w);
}

static nn_status xent_loss(gc_case *c, nn_graph *g, tensor **loss)
{
    return nn_op_softmax_cross_entropy(g, c->x, c->labels, loss, NULL);
}

static void test_softmax_cross_entropy(void **state)
{
    (void)state;
    tensor_rng rng;
    tensor_rng_seed(&rng, 5);
    int shape[2] = {4, 5};
    gc_case c = {0};
    snprintf(c.name, sizeof c.name, "softmax_cross_entropy");
    c.x = leaf(2, shape, &rng);
    for (size_t i = 0; i < c.x->size; i++) c.x->data[i] *= 3.0f;
    int labels[4] = {0, 3, 4, 1};
    memcpy(c.labels, labels, sizeof labels);
    c.leaves[c.n_leaves++] = c.x;
    c.loss = xent_loss;
    run_check(&c);
    tensor_free(c.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_registered_layer),
        cmocka_unit_test(test_layer_activations),
        cmocka_unit_test(test_tensor_used_twice),
        cmocka_unit_test(test_mul_two_inputs),
        cmocka_unit_test(test_softmax_cross_entropy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
