/* The losses: softmax cross-entropy (with label smoothing), binary
 * cross-entropy on logits, mean squared error, chosen by name through
 * tensor/loss.h and trained through nn_model_train_step_loss.
 *
 *  - values and gradients against PyTorch 1.13 (tests/fixtures/losses,
 *    written by tests/gen_loss_fixtures.py), large logits included;
 *  - finite differences of each loss, through the dispatch, with an upstream
 *    gradient other than 1 and gradient buffers pre-filled, so a backward
 *    that assigns instead of adding fails;
 *  - smoothing 0 gives the bits of the softmax cross-entropy as it was before
 *    smoothing existed (a copy of that loop is kept here as the reference);
 *  - 1 and 2 threads give the same bits, on sizes that split into blocks;
 *  - every error message of the new functions;
 *  - short training runs with each loss, outcomes asserted.
 *
 * Tolerances against the fixtures. A reference r is float64 arithmetic on the
 * float32 inputs; u = 2^-24 is float32's unit roundoff.
 *   loss   |got - r| <= 4u * max(|r|, 1). Binary cross-entropy and mean
 *          squared error sum in double and round once to float (u * |r|).
 *          Softmax cross-entropy takes log of a double sum of float
 *          exponentials (expf is within 1 ulp), so its error is absolute, up
 *          to about u per row with log(sum) >= 0, whence the floor of 1; and
 *          z - max is a float subtraction, exact for the fixtures' values
 *          except near 1e4, where it costs u relative to the loss.
 *   grad   |got - r| <= 4u * |r| + 8u * unit. Softmax: each probability
 *          carries three roundings (expf, the float reciprocal, the product),
 *          then p - target and the product by float(1/N) one each, all
 *          relative to p <= 1, so unit = 1/N, the largest entry's scale.
 *          Binary cross-entropy: computed in double and rounded once, but the
 *          float64 reference subtracts t from a sigmoid rounded near 1 and so
 *          is itself off by up to about 1e-16 / count: unit = 1/count.
 *          Mean squared error: rounded once from double, unit = 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define FX_DIR "tests/fixtures/losses/"
#define U (1.0 / 16777216.0)

/* ---- fixtures ------------------------------------------------------------ */

typedef struct {
    char file[96];
    char loss[128];
    int rank, shape[TENSOR_MAX_RANK];
    size_t size;
    double *pred, *targets, *grad; /* size each; targets may be NULL */
    int *labels, n_labels;
    double loss_value;
    int correct;
} fx_case;

static const char *fx_skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (*p != '#') return p;
        while (*p && *p != '\n') p++;
    }
}

static double fx_number(const char **p, const char *file)
{
    char *end;
    *p = fx_skip_space(*p);
    double v = strtod(*p, &end);
    if (end == *p) fail_msg("%s: a number expected at '%.20s'", file, *p);
    *p = end;
    return v;
}

static double *fx_array(const char **p, fx_case *c, const char *name)
{
    int rank = (int)fx_number(p, c->file);
    int shape[TENSOR_MAX_RANK];
    size_t size = 1;
    assert_in_range(rank, 1, TENSOR_MAX_RANK);
    for (int i = 0; i < rank; i++) size *= (size_t)(shape[i] = (int)fx_number(p, c->file));
    if (!strcmp(name, "pred")) {
        c->rank = rank;
        memcpy(c->shape, shape, sizeof shape);
        c->size = size;
    } else if (rank != c->rank || memcmp(shape, c->shape, (size_t)rank * sizeof *shape)) {
        fail_msg("%s: array %s has another shape than pred", c->file, name);
    }
    double *a = malloc(size * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < size; i++) a[i] = fx_number(p, c->file);
    return a;
}

static void fx_load(fx_case *c, const char *name)
{
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, FX_DIR "%s", name);
    size_t len;
    char *text = (char *)test_read_bytes(c->file, &len);
    const char *p = text;
    int have_loss = 0, have_value = 0;
    for (;;) {
        p = fx_skip_space(p);
        if (!*p) break;
        char word[16];
        int n = 0;
        if (sscanf(p, "%15s%n", word, &n) != 1) fail_msg("%s: unreadable at '%.20s'", c->file, p);
        p += n;
        if (!strcmp(word, "loss")) {
            while (*p == ' ') p++;
            size_t k = strcspn(p, "\n");
            assert_true(k < sizeof c->loss);
            memcpy(c->loss, p, k);
            c->loss[k] = '\0';
            p += k;
            have_loss = 1;
        } else if (!strcmp(word, "array")) {
            char an[16];
            p = fx_skip_space(p);
            if (sscanf(p, "%15s%n", an, &n) != 1) fail_msg("%s: array without a name", c->file);
            p += n;
            double **dst = !strcmp(an, "pred")      ? &c->pred
                           : !strcmp(an, "targets") ? &c->targets
                           : !strcmp(an, "grad")    ? &c->grad
                                                    : NULL;
            if (!dst) fail_msg("%s: unknown array %s", c->file, an);
            *dst = fx_array(&p, c, an);
        } else if (!strcmp(word, "labels")) {
            c->n_labels = (int)fx_number(&p, c->file);
            c->labels = malloc((size_t)c->n_labels * sizeof *c->labels);
            assert_non_null(c->labels);
            for (int i = 0; i < c->n_labels; i++) c->labels[i] = (int)fx_number(&p, c->file);
        } else if (!strcmp(word, "value")) {
            char vn[16];
            p = fx_skip_space(p);
            if (sscanf(p, "%15s%n", vn, &n) != 1) fail_msg("%s: value without a name", c->file);
            p += n;
            double v = fx_number(&p, c->file);
            if (!strcmp(vn, "loss")) c->loss_value = v, have_value |= 1;
            else if (!strcmp(vn, "correct")) c->correct = (int)v, have_value |= 2;
            else fail_msg("%s: unknown value %s", c->file, vn);
        } else {
            fail_msg("%s: unknown record '%s'", c->file, word);
        }
    }
    free(text);
    if (!have_loss || have_value != 3 || !c->pred || !c->grad)
        fail_msg("%s: incomplete fixture", c->file);
}

static void fx_free(fx_case *c)
{
    free(c->pred);
    free(c->targets);
    free(c->grad);
    free(c->labels);
}

static tensor *tensor_from(int rank, const int *shape, const double *v)
{
    tensor *t = tensor_create(rank, shape);
    assert_non_null(t);
    for (size_t i = 0; i < t->size; i++) t->data[i] = (float)v[i];
    return t;
}

static void test_against_pytorch(void **state)
{
    (void)state;
    size_t len;
    char *index = (char *)test_read_bytes(FX_DIR "index.txt", &len);
    int n_files = 0, seen[3] = {0};
    nn_graph *g = nn_graph_create(0);
    for (char *line = strtok(index, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || !line[0]) continue;
        fx_case c;
        fx_load(&c, line);
        nn_loss loss;
        assert_ok(nn_loss_parse(c.loss, &loss));
        seen[loss.kind]++;
        tensor *pred = test_require_grad(tensor_from(c.rank, c.shape, c.pred));
        tensor *targets = c.targets ? tensor_from(c.rank, c.shape, c.targets) : NULL;
        nn_graph_reset(g);
        tensor *l;
        int correct = -1;
        assert_ok(nn_op_loss(g, &loss, pred, c.labels, targets, &l, &correct));
        assert_ok(nn_graph_backward(g, l));
        const double got = l->data[0], ref = c.loss_value, ltol = 4 * U * fmax(fabs(ref), 1.0);
        if (fabs(got - ref) > ltol)
            fail_msg("%s: loss %.9g, PyTorch %.17g (error %.3g)", c.file, got, ref, fabs(got - ref));
        if (correct != c.correct) fail_msg("%s: correct %d, expected %d", c.file, correct, c.correct);
        const double unit = loss.kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY  ? 1.0 / c.shape[0]
                            : loss.kind == NN_LOSS_BINARY_CROSS_ENTROPY ? 1.0 / (double)c.size
                                                                        : 0.0;
        double worst = 0;
        for (size_t i = 0; i < c.size; i++) {
            const double d = fabs((double)pred->grad[i] - c.grad[i]);
            const double tol = 4 * U * fabs(c.grad[i]) + 8 * U * unit;
            if (d > tol)
                fail_msg("%s: grad[%zu] = %.9g, PyTorch %.17g (error %.3g, tolerance %.3g)", c.file, i,
                         (double)pred->grad[i], c.grad[i], d, tol);
            if (d / tol > worst) worst = d / tol;
        }
        printf("    %-28s loss %-12.9g error/tolerance: loss %.2f, worst gradient %.2f\n", line, got,
               fabs(got - ref) / ltol, worst);
        tensor_free(pred);
        tensor_free(targets);
        fx_free(&c);
        n_files++;
    }
    nn_graph_free(g);
    free(index);
    assert_true(n_files >= 12);
    for (int k = 0; k < 3; k++) assert_true(seen[k] >= 3);
}

/* ---- finite differences ------------------------------------------------- */

typedef struct {
    const char *loss_text;
    int rank, shape[3];
    const char *targets; /* "labels", "binary" (in [0, 1]), "any" */
} fd_case;

/* The loss's value with gradients off, as a double. */
static double fd_value(nn_graph *g, const nn_loss *loss, tensor *pred, const int *labels,
                       const tensor *targets)
{
    tensor *l;
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    nn_status s = nn_op_loss(g, loss, pred, labels, targets, &l, NULL);
    nn_graph_set_grad_enabled(g, 1);
    if (s != NN_OK) fail_msg("forward failed: %s", nn_last_error());
    return l->data[0];
}

/* Central differences with h = 1e-2 in double on every input element of
 * L = 2.5 * loss: the norm-wise relative error of the analytic gradient
 * must be below 1e-3, as in tests/test_gradcheck.c. The losses are smooth
 * everywhere, so no point is skipped. */
static void fd_check(const fd_case *fc)
{
    tensor_rng rng;
    tensor_rng_seed(&rng, 77);
    nn_loss loss;
    assert_ok(nn_loss_parse(fc->loss_text, &loss));
    tensor *pred = test_require_grad(tensor_create(fc->rank, fc->shape));
    tensor_init_normal(pred, &rng, 0.0f, 2.0f);
    int labels[64];
    tensor *targets = NULL;
    if (!strcmp(fc->targets, "labels")) {
        for (int i = 0; i < fc->shape[0]; i++) labels[i] = (int)tensor_rng_below(&rng, (uint32_t)fc->shape[1]);
    } else {
        targets = tensor_create(fc->rank, fc->shape);
        for (size_t i = 0; i < targets->size; i++) {
            const float u = tensor_rng_uniform(&rng);
            /* Binary targets: a third at 0, a third at 1, a third between. */
            targets->data[i] = !strcmp(fc->targets, "binary") ? (i % 3 == 0 ? 0.0f : i % 3 == 1 ? 1.0f : u)
                                                              : 3.0f * tensor_rng_normal(&rng);
        }
    }
    const int *lab = targets ? NULL : labels;
    nn_graph *g = nn_graph_create(0);
    float *before = malloc(pred->size * sizeof *before);
    for (size_t i = 0; i < pred->size; i++) before[i] = pred->grad[i] = tensor_rng_normal(&rng);
    tensor *w = tensor_create(1, (int[]){1});
    w->data[0] = 2.5f;
    tensor *l, *L;
    assert_ok(nn_op_loss(g, &loss, pred, lab, targets, &l, NULL));
    assert_ok(nn_op_weighted_sum(g, l, w, &L));
    assert_ok(nn_graph_backward(g, L));
    double dd = 0, aa = 0, nn2 = 0;
    for (size_t i = 0; i < pred->size; i++) {
        const float orig = pred->data[i];
        pred->data[i] = (float)(orig + 1e-2);
        const double hp = (double)pred->data[i] - orig, fp = fd_value(g, &loss, pred, lab, targets);
        pred->data[i] = (float)(orig - 1e-2);
        const double hm = (double)pred->data[i] - orig, fm = fd_value(g, &loss, pred, lab, targets);
        pred->data[i] = orig;
        const double num = 2.5 * (fp - fm) / (hp - hm);
        const double ana = (double)pred->grad[i] - before[i];
        dd += (ana - num) * (ana - num);
        aa += ana * ana;
        nn2 += num * num;
    }
    const double rel = sqrt(dd) / fmax(sqrt(fmax(aa, nn2)), 1e-12);
    if (!(rel < 1e-3)) fail_msg("%s: relative error %.3g (limit 1e-3)", fc->loss_text, rel);
    assert_true(aa > 0);
    free(before);
    tensor_free(w);
    tensor_free(pred);
    tensor_free(targets);
    nn_graph_free(g);
}

static void test_finite_differences(void **state)
{
    (void)state;
    const fd_case cases[] = {
        {"sparse_categorical_crossentropy", 2, {5, 4}, "labels"},
        {"categorical_crossentropy label_smoothing=0.1", 2, {5, 4}, "labels"},
        {"categorical_crossentropy label_smoothing=1", 2, {3, 6}, "labels"},
        {"binary_crossentropy", 2, {4, 6}, "binary"},
        {"binary_crossentropy", 1, {9}, "binary"},
        {"mse", 2, {4, 5}, "any"},
        {"mean_squared_error", 3, {2, 3, 4}, "any"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) fd_check(&cases[i]);
}

/* ---- smoothing 0 is the old loss, bit for bit ------------------------------ */

/* The softmax cross-entropy as it was before label smoothing (forward and
 * backward for an upstream gradient dy), kept as the bit-level reference. */
static void old_softmax_cross_entropy(const float *logits, const int *labels, int N, int K, float dy,
                                      float *loss, float *grad, int *correct)
{
    float *prob = malloc((size_t)N * K * sizeof *prob);
    double total = 0.0;
    int right = 0;
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * K;
        float *p = prob + (size_t)i * K;
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg]) arg = k;
        float max = z[arg];
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            p[k] = expf(z[k] - max);
            sum += p[k];
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) p[k] *= inv;
        total += log(sum) - (double)(z[labels[i]] - max);
        right += arg == labels[i];
    }
    *loss = (float)(total / N);
    *correct = right;
    const float scale = dy / (float)N;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            float d = prob[(size_t)i * K + k] - (k == labels[i] ? 1.0f : 0.0f);
            grad[(size_t)i * K + k] += d * scale;
        }
    free(prob);
}

static void test_smoothing_zero_is_the_old_loss(void **state)
{
    (void)state;
    const int sizes[3][2] = {{7, 5}, {128, 10}, {300, 70}}; /* the last one runs in parallel */
    const int threads = nn_get_threads();
    for (int s = 0; s < 3; s++) {
        const int N = sizes[s][0], K = sizes[s][1];
        tensor_rng rng;
        tensor_rng_seed(&rng, 500 + s);
        tensor *x = test_require_grad(tensor_create(2, (int[]){N, K}));
        tensor_init_normal(x, &rng, 0.0f, 3.0f);
        x->data[0] = 1e4f; /* a large logit too */
        int *labels = malloc((size_t)N * sizeof *labels);
        for (int i = 0; i < N; i++) labels[i] = (int)tensor_rng_below(&rng, (uint32_t)K);
        float ref_loss, *ref_grad = calloc(x->size, sizeof *ref_grad);
        int ref_correct;
        old_softmax_cross_entropy(x->data, labels, N, K, 1.0f, &ref_loss, ref_grad, &ref_correct);
        nn_graph *g = nn_graph_create(0);
        nn_loss parsed;
        assert_ok(nn_loss_parse("sparse_categorical_crossentropy", &parsed));
        for (int t = 1; t <= 2; t++) {
            assert_ok(nn_set_threads(t));
            for (int way = 0; way < 3; way++) {
                nn_graph_reset(g);
                memset(x->grad, 0, x->size * sizeof(float));
                tensor *l;
                int correct = -1;
                if (way == 0) assert_ok(nn_op_softmax_cross_entropy(g, x, labels, &l, &correct));
                if (way == 1) assert_ok(nn_op_softmax_cross_entropy_smoothed(g, x, labels, 0.0f, &l, &correct));
                if (way == 2) assert_ok(nn_op_loss(g, &parsed, x, labels, NULL, &l, &correct));
                assert_ok(nn_graph_backward(g, l));
                if (memcmp(&l->data[0], &ref_loss, sizeof ref_loss))
                    fail_msg("(%d, %d), %d threads, way %d: loss %.9g, the old loss %.9g", N, K, t, way,
                             (double)l->data[0], (double)ref_loss);
                assert_int_equal(correct, ref_correct);
                assert_memory_equal(x->grad, ref_grad, x->size * sizeof(float));
            }
        }
        assert_ok(nn_set_threads(threads));
        nn_graph_free(g);
        free(ref_grad);
        free(labels);
        tensor_free(x);
    }
}

/* ---- 1 and 2 threads --------------------------------------------------- */

static void run_loss(const char *text, tensor *pred, const int *labels, const tensor *targets, float *loss,
                     float *grad, int *correct)
{
    nn_loss l;
    assert_ok(nn_loss_parse(text, &l));
    nn_graph *g = nn_graph_create(0);
    memset(pred->grad, 0, pred->size * sizeof(float));
    tensor *out;
    assert_ok(nn_op_loss(g, &l, pred, labels, targets, &out, correct));
    assert_ok(nn_graph_backward(g, out));
    *loss = out->data[0];
    memcpy(grad, pred->grad, pred->size * sizeof(float));
    nn_graph_free(g);
}

static void test_threads_same_bits(void **state)
{
    (void)state;
    /* 250 x 90 = 22500 elements: 6 blocks of the element-wise losses, and
     * above the size where every loss's loops run in parallel. */
    const int N = 250, K = 90;
    const int threads = nn_get_threads();
    tensor_rng rng;
    tensor_rng_seed(&rng, 8);
    tensor *pred = test_require_grad(tensor_create(2, (int[]){N, K}));
    tensor_init_normal(pred, &rng, 0.0f, 4.0f);
    tensor *bin = tensor_create(2, (int[]){N, K}), *any = tensor_create(2, (int[]){N, K});
    for (size_t i = 0; i < pred->size; i++) {
        bin->data[i] = i % 4 == 0 ? 0.0f : i % 4 == 1 ? 1.0f : tensor_rng_uniform(&rng);
        any->data[i] = tensor_rng_normal(&rng);
    }
    int labels[250];
    for (int i = 0; i < N; i++) labels[i] = (int)tensor_rng_below(&rng, (uint32_t)K);
    const char *texts[4] = {"sparse_categorical_crossentropy", "categorical_crossentropy label_smoothing=0.1",
                            "binary_crossentropy", "mse"};
    float *grad[2];
    for (int t = 0; t < 2; t++) grad[t] = malloc(pred->size * sizeof(float));
    for (int k = 0; k < 4; k++) {
        float loss[2];
        int correct[2];
        for (int t = 0; t < 2; t++) {
            assert_ok(nn_set_threads(t + 1));
            run_loss(texts[k], pred, k < 2 ? labels : NULL, k < 2 ? NULL : k == 2 ? bin : any, &loss[t],
                     grad[t], &correct[t]);
        }
        if (memcmp(&loss[0], &loss[1], sizeof(float)))
            fail_msg("%s: loss %.9g with 1 thread, %.9g with 2", texts[k], (double)loss[0], (double)loss[1]);
        assert_int_equal(correct[0], correct[1]);
        assert_memory_equal(grad[0], grad[1], pred->size * sizeof(float));
    }
    assert_ok(nn_set_threads(threads));
    for (int t = 0; t < 2; t++) free(grad[t]);
    tensor_free(pred);
    tensor_free(bin);
    tensor_free(any);
}

/* The block sums are the order of the maths, not an approximation of it:
 * a mean squared error whose elements are all 1 apart is exactly 1, and a
 * binary cross-entropy of logits 0 is exactly log 2 rounded, at sizes of
 * many blocks. */
static void test_block_sums_exact(void **state)
{
    (void)state;
    const int shape[2] = {100, 123};
    tensor *y = test_require_grad(tensor_zeros(2, shape)), *t = tensor_create(2, shape);
    tensor_fill(t, 1.0f);
    nn_graph *g = nn_graph_create(0);
    tensor *l;
    int correct = -1;
    assert_ok(nn_op_mean_squared_error(g, y, t, &l));
    assert_true(l->data[0] == 1.0f);
    nn_graph_reset(g);
    assert_ok(nn_op_binary_cross_entropy(g, y, t, &l, &correct));
    assert_true(l->data[0] == (float)log(2.0));
    assert_int_equal(correct, 0); /* z = 0 is not > 0, t = 1 is >= 0.5 */
    nn_graph_free(g);
    tensor_free(y);
    tensor_free(t);
}

/* ---- names ---------------------------------------------------------------- */

static void test_parse_and_string(void **state)
{
    (void)state;
    const struct {
        const char *text;
        nn_loss_kind kind;
        float smoothing;
        const char *written;
    } ok[] = {
        {"sparse_categorical_crossentropy", NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f, "sparse_categorical_crossentropy"},
        {"categorical_crossentropy", NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f, "sparse_categorical_crossentropy"},
        {"  categorical_crossentropy\tlabel_smoothing=0.1 ", NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.1f,
         "sparse_categorical_crossentropy label_smoothing=0.100000001"},
        {"sparse_categorical_crossentropy label_smoothing=0", NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f,
         "sparse_categorical_crossentropy"},
        {"sparse_categorical_crossentropy label_smoothing=1", NN_LOSS_SOFTMAX_CROSS_ENTROPY, 1.0f,
         "sparse_categorical_crossentropy label_smoothing=1"},
        {"binary_crossentropy", NN_LOSS_BINARY_CROSS_ENTROPY, 0.0f, "binary_crossentropy"},
        {"mse", NN_LOSS_MEAN_SQUARED_ERROR, 0.0f, "mean_squared_error"},
        {"mean_squared_error", NN_LOSS_MEAN_SQUARED_ERROR, 0.0f, "mean_squared_error"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        nn_loss l = {NN_LOSS_MEAN_SQUARED_ERROR, 0.5f}, back;
        assert_ok(nn_loss_parse(ok[i].text, &l));
        assert_int_equal(l.kind, ok[i].kind);
        assert_true(l.label_smoothing == ok[i].smoothing);
        char buf[96];
        assert_ok(nn_loss_string(&l, buf, sizeof buf));
        assert_string_equal(buf, ok[i].written);
        assert_ok(nn_loss_parse(buf, &back));
        assert_memory_equal(&back, &l, sizeof l);
    }
    assert_string_equal(nn_loss_name(NN_LOSS_SOFTMAX_CROSS_ENTROPY), "sparse_categorical_crossentropy");
    assert_string_equal(nn_loss_name(NN_LOSS_BINARY_CROSS_ENTROPY), "binary_crossentropy");
    assert_string_equal(nn_loss_name(NN_LOSS_MEAN_SQUARED_ERROR), "mean_squared_error");
    assert_null(nn_loss_name((nn_loss_kind)3));
    /* A zeroed descriptor is the plain softmax cross-entropy. */
    nn_loss zero = {0};
    char buf[64];
    assert_ok(nn_loss_string(&zero, buf, sizeof buf));
    assert_string_equal(buf, "sparse_categorical_crossentropy");
}

/* ---- errors --------------------------------------------------------------- */

#define BAD(call, status, needle)                                                                      \
    do {                                                                                               \
        nn_clear_error();                                                                              \
        nn_status s_ = (call);                                                                         \
        if (s_ != (status))                                                                            \
            fail_msg("%s returned %s, expected %s (%s)", #call, nn_status_str(s_), nn_status_str(status), \
                     nn_last_error());                                                                 \
        assert_error_contains(needle);                                                                 \
    } while (0)

#define VALID_NAMES                                                                        \
    "valid names: sparse_categorical_crossentropy, categorical_crossentropy, binary_crossentropy, " \
    "mean_squared_error, mse"

static void test_parse_errors(void **state)
{
    (void)state;
    nn_loss l = {NN_LOSS_BINARY_CROSS_ENTROPY, 0.0f};
    const nn_loss keep = l;
    BAD(nn_loss_parse(NULL, &l), NN_ERR_ARG, "nn_loss_parse: text is NULL");
    BAD(nn_loss_parse("mse", NULL), NN_ERR_ARG, "nn_loss_parse: loss is NULL");
    BAD(nn_loss_parse("  ", &l), NN_ERR_CONFIG, "nn_loss_parse: no loss name in '  '; " VALID_NAMES);
    BAD(nn_loss_parse("hinge", &l), NN_ERR_CONFIG, "nn_loss_parse: unknown loss 'hinge'; " VALID_NAMES);
    BAD(nn_loss_parse("MSE", &l), NN_ERR_CONFIG, "unknown loss 'MSE'");
    BAD(nn_loss_parse("mse_x", &l), NN_ERR_CONFIG, "unknown loss 'mse_x'");
    BAD(nn_loss_parse("categorical_crossentropy from_logits=true", &l), NN_ERR_CONFIG,
        "nn_loss_parse: unknown option 'from_logits' for categorical_crossentropy; valid options: label_smoothing");
    BAD(nn_loss_parse("binary_crossentropy label_smoothing=0.1", &l), NN_ERR_CONFIG,
        "nn_loss_parse: unknown option 'label_smoothing' for binary_crossentropy; it takes no options");
    BAD(nn_loss_parse("mse label_smoothing=0", &l), NN_ERR_CONFIG,
        "unknown option 'label_smoothing' for mse; it takes no options");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing", &l), NN_ERR_CONFIG,
        "nn_loss_parse: option 'label_smoothing' of categorical_crossentropy is not key=value");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=", &l), NN_ERR_CONFIG,
        "option 'label_smoothing=' of categorical_crossentropy is not key=value");
    BAD(nn_loss_parse("categorical_crossentropy =0.1", &l), NN_ERR_CONFIG,
        "option '=0.1' of categorical_crossentropy is not key=value");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=0.1 label_smoothing=0.2", &l), NN_ERR_CONFIG,
        "nn_loss_parse: option 'label_smoothing' is given twice");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=abc", &l), NN_ERR_CONFIG,
        "nn_loss_parse: label_smoothing must be a number, but got 'abc'");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=0.1x", &l), NN_ERR_CONFIG,
        "label_smoothing must be a number, but got '0.1x'");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=1.5", &l), NN_ERR_CONFIG,
        "nn_loss_parse: label_smoothing must be between 0 and 1, but got 1.5");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=-0.1", &l), NN_ERR_CONFIG,
        "label_smoothing must be between 0 and 1, but got -0.1");
    BAD(nn_loss_parse("categorical_crossentropy label_smoothing=nan", &l), NN_ERR_CONFIG,
        "label_smoothing must be between 0 and 1, but got nan");
    char longv[200] = "categorical_crossentropy label_smoothing=0.";
    memset(longv + strlen(longv), '1', 100);
    BAD(nn_loss_parse(longv, &l), NN_ERR_CONFIG, "nn_loss_parse: value of label_smoothing is too long");
    assert_memory_equal(&l, &keep, sizeof l); /* untouched on error */

    char buf[64];
    nn_loss bad_kind = {(nn_loss_kind)7, 0.0f}, bad_e = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 2.0f};
    nn_loss bce_e = {NN_LOSS_BINARY_CROSS_ENTROPY, 0.1f};
    BAD(nn_loss_string(NULL, buf, sizeof buf), NN_ERR_ARG, "nn_loss_string: loss is NULL");
    BAD(nn_loss_string(&l, NULL, 8), NN_ERR_ARG, "nn_loss_string: buf is NULL");
    BAD(nn_loss_string(&bad_kind, buf, sizeof buf), NN_ERR_ARG, "nn_loss_string: unknown loss kind 7");
    BAD(nn_loss_string(&bad_e, buf, sizeof buf), NN_ERR_ARG,
        "nn_loss_string: label_smoothing of sparse_categorical_crossentropy must be in [0, 1], got 2");
    BAD(nn_loss_string(&bce_e, buf, sizeof buf), NN_ERR_ARG,
        "nn_loss_string: label_smoothing applies to sparse_categorical_crossentropy only, got 0.1 for "
        "binary_crossentropy");
    BAD(nn_loss_string(&l, buf, 8), NN_ERR_ARG, "nn_loss_string: needs 20 bytes, buffer has 8");
}

static void test_op_errors(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    const int s23[2] = {2, 3}, s32[2] = {3, 2}, s0[2] = {0, 3};
    tensor *z = test_require_grad(tensor_zeros(2, s23));
    tensor *t = tensor_zeros(2, s23), *t32 = tensor_zeros(2, s32);
    tensor *e = tensor_zeros(2, s0), *r3 = tensor_zeros(3, (int[]){2, 3, 1});
    const int labels[2] = {0, 2}, labels_bad[2] = {1, 3}, labels_neg[2] = {-1, 0};
    tensor *out = NULL;
    int correct;

    /* The dispatch. */
    const nn_loss sce = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.1f}, bce = {NN_LOSS_BINARY_CROSS_ENTROPY, 0.0f};
    const nn_loss mse = {NN_LOSS_MEAN_SQUARED_ERROR, 0.0f};
    const nn_loss bad_kind = {(nn_loss_kind)-1, 0.0f}, sce_nan = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, NAN};
    const nn_loss sce_big = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 1.5f}, mse_e = {NN_LOSS_MEAN_SQUARED_ERROR, 0.2f};
    BAD(nn_op_loss(g, NULL, z, labels, NULL, &out, NULL), NN_ERR_ARG, "nn_op_loss: loss is NULL");
    BAD(nn_op_loss(g, &bad_kind, z, labels, NULL, &out, NULL), NN_ERR_ARG, "nn_op_loss: unknown loss kind -1");
    BAD(nn_op_loss(g, &sce_nan, z, labels, NULL, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: label_smoothing of sparse_categorical_crossentropy must be in [0, 1], got nan");
    BAD(nn_op_loss(g, &sce_big, z, labels, NULL, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: label_smoothing of sparse_categorical_crossentropy must be in [0, 1], got 1.5");
    BAD(nn_op_loss(g, &mse_e, z, NULL, t, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: label_smoothing applies to sparse_categorical_crossentropy only, got 0.2 for "
        "mean_squared_error");
    BAD(nn_op_loss(g, &sce, z, labels, t, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: sparse_categorical_crossentropy takes integer labels, not float targets (targets must be NULL)");
    BAD(nn_op_loss(g, &sce, z, NULL, NULL, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: sparse_categorical_crossentropy needs labels, but labels is NULL");
    BAD(nn_op_loss(g, &bce, z, labels, t, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: binary_crossentropy takes float targets, not integer labels (labels must be NULL)");
    BAD(nn_op_loss(g, &bce, z, NULL, NULL, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: binary_crossentropy needs targets, but targets is NULL");
    BAD(nn_op_loss(g, &mse, z, labels, t, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: mean_squared_error takes float targets, not integer labels");
    BAD(nn_op_loss(g, &mse, z, NULL, NULL, &out, NULL), NN_ERR_ARG,
        "nn_op_loss: mean_squared_error needs targets, but targets is NULL");
    /* The ops' own errors come through the dispatch unchanged. */
    BAD(nn_op_loss(g, &sce, z, labels_bad, NULL, &out, NULL), NN_ERR_ARG,
        "softmax_cross_entropy: label 3 of row 1 is outside [0, 3)");
    BAD(nn_op_loss(g, &bce, z, NULL, t32, &out, NULL), NN_ERR_SHAPE,
        "binary_cross_entropy: logits (2, 3) and targets (3, 2) differ in shape");

    /* Softmax cross-entropy with smoothing. */
    BAD(nn_op_softmax_cross_entropy_smoothed(NULL, z, labels, 0.1f, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: graph is NULL");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, NULL, labels, 0.1f, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: logits is NULL");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, NULL, 0.1f, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: labels is NULL");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, labels, 0.1f, NULL, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: loss is NULL");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, labels, -0.5f, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: label_smoothing must be in [0, 1], got -0.5");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, labels, NAN, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: label_smoothing must be in [0, 1], got nan");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, r3, labels, 0.1f, &out, &correct), NN_ERR_SHAPE,
        "softmax_cross_entropy: logits must be (batch, classes), got (2, 3, 1)");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, e, labels, 0.1f, &out, &correct), NN_ERR_SHAPE,
        "softmax_cross_entropy: empty logits (0, 3)");
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, labels_neg, 0.1f, &out, &correct), NN_ERR_ARG,
        "softmax_cross_entropy: label -1 of row 0 is outside [0, 3)");
    BAD(nn_op_softmax_cross_entropy(g, z, NULL, &out, &correct), NN_ERR_ARG, "softmax_cross_entropy: labels is NULL");
    z->data[1] = INFINITY; /* inf - inf: a NaN, printed "nan" or "-nan" */
    BAD(nn_op_softmax_cross_entropy_smoothed(g, z, labels, 0.1f, &out, &correct), NN_ERR_NUMERIC,
        "nan (non-finite logits?)");
    assert_error_contains("softmax_cross_entropy: loss is ");
    z->data[1] = 0.0f;

    /* Binary cross-entropy. */
    BAD(nn_op_binary_cross_entropy(NULL, z, t, &out, NULL), NN_ERR_ARG, "binary_cross_entropy: graph is NULL");
    BAD(nn_op_binary_cross_entropy(g, NULL, t, &out, NULL), NN_ERR_ARG, "binary_cross_entropy: logits is NULL");
    BAD(nn_op_binary_cross_entropy(g, z, NULL, &out, NULL), NN_ERR_ARG, "binary_cross_entropy: targets is NULL");
    BAD(nn_op_binary_cross_entropy(g, z, t, NULL, NULL), NN_ERR_ARG, "binary_cross_entropy: loss is NULL");
    BAD(nn_op_binary_cross_entropy(g, z, r3, &out, NULL), NN_ERR_SHAPE,
        "binary_cross_entropy: logits (2, 3) and targets (2, 3, 1) differ in shape");
    BAD(nn_op_binary_cross_entropy(g, e, e, &out, NULL), NN_ERR_SHAPE, "binary_cross_entropy: empty logits (0, 3)");
    t->data[4] = 1.5f;
    BAD(nn_op_binary_cross_entropy(g, z, t, &out, NULL), NN_ERR_ARG,
        "binary_cross_entropy: targets[4] is 1.5, outside [0, 1]");
    t->data[4] = -0.25f;
    BAD(nn_op_binary_cross_entropy(g, z, t, &out, NULL), NN_ERR_ARG,
        "binary_cross_entropy: targets[4] is -0.25, outside [0, 1]");
    t->data[4] = NAN;
    BAD(nn_op_binary_cross_entropy(g, z, t, &out, NULL), NN_ERR_ARG,
        "binary_cross_entropy: targets[4] is nan, outside [0, 1]");
    t->data[4] = 1.0f;
    z->data[2] = NAN;
    BAD(nn_op_binary_cross_entropy(g, z, t, &out, NULL), NN_ERR_NUMERIC,
        "nan (non-finite logits?)");
    assert_error_contains("binary_cross_entropy: loss is ");
    z->data[2] = INFINITY; /* inf - inf * 0: a NaN, printed "nan" or "-nan" */
    BAD(nn_op_binary_cross_entropy(g, z, t, &out, NULL), NN_ERR_NUMERIC, "nan (non-finite logits?)");
    assert_error_contains("binary_cross_entropy: loss is ");
    z->data[2] = 0.0f;

    /* Mean squared error. */
    BAD(nn_op_mean_squared_error(NULL, z, t, &out), NN_ERR_ARG, "mean_squared_error: graph is NULL");
    BAD(nn_op_mean_squared_error(g, NULL, t, &out), NN_ERR_ARG, "mean_squared_error: predictions is NULL");
    BAD(nn_op_mean_squared_error(g, z, NULL, &out), NN_ERR_ARG, "mean_squared_error: targets is NULL");
    BAD(nn_op_mean_squared_error(g, z, t, NULL), NN_ERR_ARG, "mean_squared_error: loss is NULL");
    BAD(nn_op_mean_squared_error(g, z, t32, &out), NN_ERR_SHAPE,
        "mean_squared_error: predictions (2, 3) and targets (3, 2) differ in shape");
    BAD(nn_op_mean_squared_error(g, e, e, &out), NN_ERR_SHAPE, "mean_squared_error: empty predictions (0, 3)");
    t->data[5] = INFINITY;
    BAD(nn_op_mean_squared_error(g, z, t, &out), NN_ERR_ARG, "mean_squared_error: targets[5] is inf, not finite");
    t->data[5] = NAN;
    BAD(nn_op_mean_squared_error(g, z, t, &out), NN_ERR_ARG, "mean_squared_error: targets[5] is nan, not finite");
    t->data[5] = 0.0f;
    z->data[0] = 1e30f; /* (1e30)^2 / 6 overflows float */
    BAD(nn_op_mean_squared_error(g, z, t, &out), NN_ERR_NUMERIC,
        "mean_squared_error: loss is inf (non-finite or too large predictions?)");
    z->data[0] = NAN;
    BAD(nn_op_mean_squared_error(g, z, t, &out), NN_ERR_NUMERIC, "nan (non-finite or too large predictions?)");
    assert_error_contains("mean_squared_error: loss is ");
    z->data[0] = 0.0f;

    /* After all that, the graph still works. */
    t->data[4] = 0.0f;
    nn_graph_reset(g);
    assert_ok(nn_op_loss(g, &mse, z, NULL, t, &out, &correct));
    assert_true(out->data[0] == 0.0f);
    assert_int_equal(correct, 0);
    nn_graph_free(g);
    tensor_free(z);
    tensor_free(t);
    tensor_free(t32);
    tensor_free(e);
    tensor_free(r3);
}

static void test_model_call_errors(void **state)
{
    (void)state;
    nn_model *m = test_make_model("dense units=2\n", 1, (int[]){3}, 1);
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    tensor *x = tensor_zeros(2, (int[]){4, 3}), *t = tensor_zeros(2, (int[]){4, 2});
    tensor *t1 = tensor_zeros(2, (int[]){4, 1});
    const int labels[4] = {0, 1, 1, 0};
    const nn_loss bce = {NN_LOSS_BINARY_CROSS_ENTROPY, 0.0f}, sce = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    BAD(nn_model_train_step_loss(NULL, o, x, &bce, NULL, t, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step_loss: NULL argument (m, opt, x and loss are required)");
    BAD(nn_model_train_step_loss(m, NULL, x, &bce, NULL, t, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step_loss: NULL argument");
    BAD(nn_model_train_step_loss(m, o, NULL, &bce, NULL, t, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step_loss: NULL argument");
    BAD(nn_model_train_step_loss(m, o, x, NULL, NULL, t, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step_loss: NULL argument");
    BAD(nn_model_train_step_loss(m, o, x, &bce, NULL, t1, NULL, NULL), NN_ERR_SHAPE,
        "binary_cross_entropy: logits (4, 2) and targets (4, 1) differ in shape");
    BAD(nn_model_train_step_loss(m, o, x, &sce, NULL, t, NULL, NULL), NN_ERR_ARG,
        "takes integer labels, not float targets");
    BAD(nn_model_evaluate_loss(NULL, x, &bce, NULL, t, NULL, NULL, NULL), NN_ERR_ARG,
        "nn_model_evaluate_loss: NULL argument (m and x are required)");
    BAD(nn_model_evaluate_loss(m, NULL, &bce, NULL, t, NULL, NULL, NULL), NN_ERR_ARG,
        "nn_model_evaluate_loss: NULL argument");
    BAD(nn_model_evaluate_loss(m, x, &bce, labels, NULL, NULL, NULL, NULL), NN_ERR_ARG,
        "binary_crossentropy takes float targets, not integer labels");
    /* A failed evaluation leaves gradients on for the next training step. */
    assert_true(nn_graph_grad_enabled(nn_model_graph(m)));
    /* No loss: the forward alone. */
    tensor *pred = NULL;
    assert_ok(nn_model_evaluate_loss(m, x, NULL, NULL, NULL, &pred, NULL, NULL));
    assert_int_equal(pred->shape[1], 2);
    optim_free(o);
    tensor_free(x);
    tensor_free(t);
    tensor_free(t1);
    nn_model_free(m);
}

/* ---- training through the model ----------------------------------------- */

/* nn_model_train_step and nn_model_predict are the softmax cross-entropy
 * case of the new calls: same weights after every step, same loss, logits
 * and counts, bit for bit. */
static void test_model_calls_match_the_old_ones(void **state)
{
    (void)state;
    const char *spec = "dense units=16 activation=relu\ndropout rate=0.2\ndense units=3\n";
    nn_model *a = test_make_model(spec, 1, (int[]){4}, 31), *b = test_make_model(spec, 1, (int[]){4}, 31);
    nn_model_set_training(a, 1);
    nn_model_set_training(b, 1);
    optim *oa = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    optim *ob = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    tensor_rng rng;
    tensor_rng_seed(&rng, 4);
    tensor *x = tensor_create(2, (int[]){40, 4});
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    int labels[40];
    for (int i = 0; i < 40; i++) labels[i] = (int)tensor_rng_below(&rng, 3);
    nn_loss sce;
    assert_ok(nn_loss_parse("sparse_categorical_crossentropy", &sce));
    for (int step = 0; step < 25; step++) {
        float la, lb;
        int ca, cb;
        assert_ok(nn_model_train_step(a, oa, x, labels, &la, &ca));
        assert_ok(nn_model_train_step_loss(b, ob, x, &sce, labels, NULL, &lb, &cb));
        assert_memory_equal(&la, &lb, sizeof la);
        assert_int_equal(ca, cb);
        assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    }
    tensor *ya, *yb;
    double sa, sb;
    int ca, cb;
    assert_ok(nn_model_predict(a, x, labels, &ya, &sa, &ca));
    float *copy = malloc(ya->size * sizeof *copy);
    memcpy(copy, ya->data, ya->size * sizeof *copy);
    assert_ok(nn_model_evaluate_loss(b, x, &sce, labels, NULL, &yb, &sb, &cb));
    assert_memory_equal(&sa, &sb, sizeof sa);
    assert_int_equal(ca, cb);
    assert_memory_equal(copy, yb->data, yb->size * sizeof *copy);
    free(copy);
    tensor_free(x);
    optim_free(oa);
    optim_free(ob);
    nn_model_free(a);
    nn_model_free(b);
}

/* A two-layer linear net learns a fixed linear map y = xW + c with mean
 * squared error: the targets are exactly reachable, so the loss must fall
 * by orders of magnitude. */
static void test_train_mse_regression(void **state)
{
    (void)state;
    enum { N = 64, IN = 4, OUT = 3 };
    const float W[IN][OUT] = {{1.0f, -2.0f, 0.5f}, {0.0f, 1.5f, -1.0f}, {2.0f, 0.25f, 0.0f}, {-0.5f, 0.0f, 1.0f}};
    const float c[OUT] = {0.3f, -0.7f, 1.1f};
    tensor_rng rng;
    tensor_rng_seed(&rng, 12);
    tensor *x = tensor_create(2, (int[]){N, IN}), *t = tensor_create(2, (int[]){N, OUT});
    tensor_init_uniform(x, &rng, -1.0f, 1.0f);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OUT; j++) {
            float s = c[j];
            for (int i = 0; i < IN; i++) s += x->data[n * IN + i] * W[i][j];
            t->data[n * OUT + j] = s;
        }
    nn_model *m = test_make_model("dense units=8\ndense units=3\n", 1, (int[]){IN}, 5);
    optim *o = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    nn_loss mse;
    assert_ok(nn_loss_parse("mse", &mse));
    double first, last;
    int correct = -1;
    assert_ok(nn_model_evaluate_loss(m, x, &mse, NULL, t, NULL, &first, &correct));
    assert_int_equal(correct, 0);
    float loss = 0;
    for (int step = 0; step < 1500; step++) assert_ok(nn_model_train_step_loss(m, o, x, &mse, NULL, t, &loss, NULL));
    assert_ok(nn_model_evaluate_loss(m, x, &mse, NULL, t, NULL, &last, NULL));
    first /= N;
    last /= N;
    printf("    mse regression: loss %.3g -> %.3g after 1500 Adam steps\n", first, last);
    assert_true(first > 0.5);
    assert_true(last < 1e-4);
    optim_free(o);
    nn_model_free(m);
    tensor_free(x);
    tensor_free(t);
}

/* Points inside a circle or outside it, a boundary no linear model draws:
 * a small MLP trained with binary cross-entropy must classify nearly all. */
static void test_train_bce_classification(void **state)
{
    (void)state;
    enum { N = 256 };
    tensor_rng rng;
    tensor_rng_seed(&rng, 21);
    tensor *x = tensor_create(2, (int[]){N, 2}), *t = tensor_create(2, (int[]){N, 1});
    tensor_init_uniform(x, &rng, -1.0f, 1.0f);
    int inside = 0;
    for (int n = 0; n < N; n++) {
        const float a = x->data[2 * n], b = x->data[2 * n + 1];
        t->data[n] = a * a + b * b < 0.5f ? 1.0f : 0.0f;
        inside += t->data[n] == 1.0f;
    }
    assert_true(inside > N / 4 && inside < 3 * N / 4);
    nn_model *m = test_make_model("dense units=16 activation=relu\ndense units=16 activation=relu\ndense units=1\n", 1,
                                  (int[]){2}, 9);
    optim *o = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    nn_loss bce;
    assert_ok(nn_loss_parse("binary_crossentropy", &bce));
    int correct = 0;
    for (int step = 0; step < 1500; step++) assert_ok(nn_model_train_step_loss(m, o, x, &bce, NULL, t, NULL, NULL));
    double sum;
    assert_ok(nn_model_evaluate_loss(m, x, &bce, NULL, t, NULL, &sum, &correct));
    printf("    bce circle: %d/%d correct, loss %.4f\n", correct, N, sum / N);
    assert_true(correct >= N * 97 / 100);
    assert_true(sum / N < 0.1);
    optim_free(o);
    nn_model_free(m);
    tensor_free(x);
    tensor_free(t);
}

/* Three separable blobs with label smoothing 0.1: every point is classified
 * right, and the loss approaches, but cannot pass, the entropy of the
 * smoothed target, -(1-e+e/K) log(1-e+e/K) - (K-1)(e/K) log(e/K), which is
 * the least any prediction can score. */
static void test_train_smoothed_classification(void **state)
{
    (void)state;
    enum { N = 90, K = 3 };
    const float centre[K][2] = {{0.0f, 1.0f}, {-1.0f, -0.6f}, {1.0f, -0.6f}};
    tensor_rng rng;
    tensor_rng_seed(&rng, 3);
    tensor *x = tensor_create(2, (int[]){N, 2});
    int labels[N];
    for (int n = 0; n < N; n++) {
        labels[n] = n % K;
        x->data[2 * n] = centre[n % K][0] + 0.2f * tensor_rng_normal(&rng);
        x->data[2 * n + 1] = centre[n % K][1] + 0.2f * tensor_rng_normal(&rng);
    }
    nn_model *m = test_make_model("dense units=16 activation=relu\ndense units=3\n", 1, (int[]){2}, 13);
    optim *o = optim_adam_create(0.02f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    nn_loss ls;
    assert_ok(nn_loss_parse("categorical_crossentropy label_smoothing=0.1", &ls));
    for (int step = 0; step < 800; step++) assert_ok(nn_model_train_step_loss(m, o, x, &ls, labels, NULL, NULL, NULL));
    double sum;
    int correct;
    assert_ok(nn_model_evaluate_loss(m, x, &ls, labels, NULL, NULL, &sum, &correct));
    const double e = 0.1, on = 1 - e + e / K, off = e / K;
    const double floor = -on * log(on) - (K - 1) * off * log(off);
    printf("    smoothed 3 blobs: %d/%d correct, loss %.4f (least possible %.4f)\n", correct, N, sum / N, floor);
    assert_int_equal(correct, N);
    assert_true(sum / N >= floor - 1e-6);
    assert_true(sum / N < floor + 0.05);
    optim_free(o);
    nn_model_free(m);
    tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_pytorch),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_smoothing_zero_is_the_old_loss),
        cmocka_unit_test(test_threads_same_bits),
        cmocka_unit_test(test_block_sums_exact),
        cmocka_unit_test(test_parse_and_string),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_op_errors),
        cmocka_unit_test(test_model_call_errors),
        cmocka_unit_test(test_model_calls_match_the_old_ones),
        cmocka_unit_test(test_train_mse_regression),
        cmocka_unit_test(test_train_bce_classification),
        cmocka_unit_test(test_train_smoothed_classification),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
