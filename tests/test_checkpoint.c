/* Checkpoints: a round trip gives bit-identical predictions and training
 * continues identically; a mismatching network is refused with a message
 * naming the difference; truncated, corrupted (a flipped byte: CRC), wrong
 * magic or version files are refused with the model, the optimizer and the
 * blob untouched (compared with memcmp against snapshots); the write leaves
 * no temporary file behind. Files written by nn 0.1.0 (a checkpoint and a
 * .safetensors file, tests/fixtures/v0.1.0/) still load, to the same bits:
 * parameters, optimizer state, seeds, and the logits 0.1.0 computed from
 * them, before and after one more training step. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "test_util.h"

#include "layers/simd.h"

#define SPEC "flatten\ndense units=8 activation=relu\ndropout rate=0.25\ndense units=3\n"
#define BATCH 6

static nn_model *make_model(const char *spec, uint64_t seed)
{
    return test_make_model(spec, 2, (const int[]){4, 3}, seed);
}

static tensor *make_batch(int *labels)
{
    const int shape[3] = {BATCH, 4, 3};
    tensor *x = tensor_create(3, shape);
    tensor_rng rng;
    tensor_rng_seed(&rng, 5);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    for (int i = 0; i < BATCH; i++) labels[i] = i % 3;
    return x;
}

static void train(nn_model *m, optim *o, tensor *x, const int *labels, int steps)
{
    for (int i = 0; i < steps; i++) assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
}

/* Everything a failed load must not change. */
typedef struct {
    float *params, *state;
    size_t n_params, n_state;
    uint64_t calls[NN_MODEL_MAX_LAYERS], seeds[NN_MODEL_MAX_LAYERS], model_seed;
    optim opt;
} snapshot;

static void snap(snapshot *s, const nn_model *m, const optim *o)
{
    s->n_params = m->n_params;
    s->params = malloc(m->n_params * sizeof(float));
    memcpy(s->params, m->params, m->n_params * sizeof(float));
    s->n_state = optim_state_count(o, o->n);
    s->state = malloc((s->n_state ? s->n_state : 1) * sizeof(float));
    if (s->n_state) memcpy(s->state, o->state, s->n_state * sizeof(float));
    for (int i = 0; i < m->n_layers; i++) {
        s->calls[i] = m->layers[i]->calls;
        s->seeds[i] = m->layers[i]->seed;
    }
    s->model_seed = m->seed;
    s->opt = *o;
}

static void assert_unchanged(const snapshot *s, const nn_model *m, const optim *o)
{
    assert_int_equal(m->n_params, s->n_params);
    assert_memory_equal(m->params, s->params, s->n_params * sizeof(float));
    assert_ptr_equal(o->state, s->opt.state);
    if (s->n_state) assert_memory_equal(o->state, s->state, s->n_state * sizeof(float));
    assert_true(o->lr == s->opt.lr && o->beta1 == s->opt.beta1 && o->beta2 == s->opt.beta2 &&
                o->eps == s->opt.eps && o->momentum == s->opt.momentum &&
                o->weight_decay == s->opt.weight_decay);
    assert_int_equal(o->t, s->opt.t);
    assert_int_equal(o->n, s->opt.n);
    for (int i = 0; i < m->n_layers; i++) {
        assert_int_equal(m->layers[i]->calls, s->calls[i]);
        assert_int_equal(m->layers[i]->seed, s->seeds[i]);
    }
    assert_int_equal(m->seed, s->model_seed);
}

static void snap_free(snapshot *s)
{
    free(s->params);
    free(s->state);
}

static void test_round_trip(void **state)
{
    (void)state;
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = make_model(SPEC, 1);
    optim *oa = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    train(a, oa, x, labels, 5);
    const char blob[] = "epoch=3 rng=12345";
    assert_ok(nn_checkpoint_save(test_path("a.ckpt"), a, oa, blob, sizeof blob));

    /* A fresh model with other initial weights, a fresh optimizer. */
    nn_model *b = make_model(SPEC, 99);
    optim *ob = optim_adam_create(5e-1f, 0.5f, 0.9f, 1e-3f, 0.0f, 0);
    assert_memory_not_equal(a->params, b->params, a->n_params * sizeof(float));
    char got[64] = "";
    size_t got_len = 0;
    assert_ok(nn_checkpoint_load(test_path("a.ckpt"), b, ob, got, sizeof got, &got_len));
    assert_int_equal(got_len, sizeof blob);
    assert_string_equal(got, blob);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_int_equal(ob->t, 5);
    assert_true(ob->lr == oa->lr && ob->beta1 == oa->beta1 && ob->beta2 == oa->beta2 &&
                ob->eps == oa->eps);
    assert_int_equal(ob->n, oa->n);
    assert_memory_equal(ob->state, oa->state, 2 * oa->n * sizeof(float));
    for (int i = 0; i < a->n_layers; i++) {
        assert_int_equal(b->layers[i]->calls, a->layers[i]->calls);
        assert_int_equal(b->layers[i]->seed, a->layers[i]->seed);
    }
    assert_int_equal(a->layers[2]->calls, 5); /* the dropout counted its forwards */

    /* Identical predictions, bit for bit. */
    tensor *ya, *yb;
    assert_ok(nn_model_predict(a, x, NULL, &ya, NULL, NULL));
    const size_t ny = ya->size; /* ya lives in a's arena until its next step */
    float *pa = malloc(ny * sizeof(float));
    memcpy(pa, ya->data, ny * sizeof(float));
    assert_ok(nn_model_predict(b, x, NULL, &yb, NULL, NULL));
    assert_int_equal(yb->size, ny);
    assert_memory_equal(pa, yb->data, ny * sizeof(float));
    /* And training continues identically (optimizer moments, dropout masks). */
    train(a, oa, x, labels, 3);
    train(b, ob, x, labels, 3);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_memory_equal(ob->state, oa->state, 2 * oa->n * sizeof(float));

    /* Weights only: no optimizer, no blob. */
    nn_model *c = make_model(SPEC, 7);
    assert_ok(nn_checkpoint_load(test_path("a.ckpt"), c, NULL, NULL, 0, NULL));
    assert_ok(nn_model_predict(c, x, NULL, &yb, NULL, NULL));
    assert_memory_equal(pa, yb->data, ny * sizeof(float));

    free(pa);
    nn_model_free(a);
    nn_model_free(b);
    nn_model_free(c);
    optim_free(oa);
    optim_free(ob);
    tensor_free(x);
}

static void test_sgd_and_no_optimizer(void **state)
{
    (void)state;
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = make_model(SPEC, 1);
    optim *oa = optim_sgd_create(0.1f, 0.9f, 1, 0.0f);
    train(a, oa, x, labels, 2);
    assert_ok(nn_checkpoint_save(test_path("sgd.ckpt"), a, oa, NULL, 0));
    nn_model *b = make_model(SPEC, 2);
    optim *ob = optim_sgd_create(0.5f, 0.5f, 0, 0.0f);
    assert_ok(nn_checkpoint_load(test_path("sgd.ckpt"), b, ob, NULL, 0, NULL));
    assert_true(ob->momentum == 0.9f && ob->nesterov == 1 && ob->lr == 0.1f);
    assert_memory_equal(ob->state, oa->state, oa->n * sizeof(float));
    /* An Adam run cannot resume from an SGD checkpoint. */
    optim *adam = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    snapshot s;
    snap(&s, b, adam);
    assert_int_equal(nn_checkpoint_load(test_path("sgd.ckpt"), b, adam, NULL, 0, NULL), NN_ERR_STATE);
    assert_error_contains("checkpoint has optimizer sgd, the run uses adam");
    assert_unchanged(&s, b, adam);
    snap_free(&s);
    /* Saved without an optimizer: loads for weights only, refused for a resume. */
    assert_ok(nn_checkpoint_save(test_path("noopt.ckpt"), a, NULL, NULL, 0));
    snap(&s, b, ob);
    assert_int_equal(nn_checkpoint_load(test_path("noopt.ckpt"), b, ob, NULL, 0, NULL), NN_ERR_STATE);
    assert_error_contains("no optimizer state");
    assert_unchanged(&s, b, ob);
    snap_free(&s);
    assert_ok(nn_checkpoint_load(test_path("noopt.ckpt"), b, NULL, NULL, 0, NULL));
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    /* An optimizer that has not stepped yet round-trips as "no state". */
    optim *fresh = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_ok(nn_checkpoint_save(test_path("fresh.ckpt"), a, fresh, NULL, 0));
    assert_ok(nn_checkpoint_load(test_path("fresh.ckpt"), b, adam, NULL, 0, NULL));
    assert_int_equal(adam->n, 0);
    assert_null(adam->state);
    assert_int_equal(adam->t, 0);
    optim_free(fresh);
    optim_free(adam);
    nn_model_free(a);
    nn_model_free(b);
    optim_free(oa);
    optim_free(ob);
    tensor_free(x);
}

/* Loads path into a model of `spec` and expects refusal with `msg`, with
 * the model and optimizer untouched. */
static void expect_refused(const char *path, const char *spec, nn_status want, const char *msg,
                           const char *msg2)
{
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *m = nn_model_create(3);
    assert_ok(nn_model_add_spec(m, spec));
    const int shape[2] = {4, 3};
    assert_ok(nn_model_build(m, 2, shape));
    optim *o = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    if (m->n_params) train(m, o, x, labels, 2); /* give the optimizer state to protect */
    snapshot s;
    snap(&s, m, o);
    char blob[64];
    memset(blob, 0x5a, sizeof blob);
    nn_status st = nn_checkpoint_load(path, m, o, blob, sizeof blob, NULL);
    if (st != want)
        fail_msg("status %s, expected %s (%s)", nn_status_str(st), nn_status_str(want), nn_last_error());
    assert_error_contains(msg);
    if (msg2) assert_error_contains(msg2);
    assert_unchanged(&s, m, o);
    for (size_t i = 0; i < sizeof blob; i++) assert_int_equal((uint8_t)blob[i], 0x5a);
    snap_free(&s);
    nn_model_free(m);
    optim_free(o);
    tensor_free(x);
}

static void save_reference(const char *name)
{
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = make_model(SPEC, 1);
    optim *oa = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    train(a, oa, x, labels, 3);
    assert_ok(nn_checkpoint_save(test_path(name), a, oa, "blob", 4));
    nn_model_free(a);
    optim_free(oa);
    tensor_free(x);
}

static void test_mismatching_network(void **state)
{
    (void)state;
    save_reference("ref.ckpt");
    const char *p = test_path("ref.ckpt");
    expect_refused(p, "flatten\ndense units=16 activation=relu\ndropout rate=0.25\ndense units=3\n",
                   NN_ERR_SHAPE, "layer 1 (dense_1): checkpoint has dense units=8, model has dense units=16",
                   NULL);
    /* Settings that hold no parameter may differ: the weights load, the
     * model keeps its own settings. */
    static const char *const same_params[] = {
        "flatten\ndense units=8\ndropout rate=0.25\ndense units=3\n",
        "flatten\ndense units=8 activation=relu\ndropout rate=0.5\ndense units=3\n",
    };
    for (int k = 0; k < 2; k++) {
        nn_model *ref = make_model(SPEC, 9), *other = make_model(same_params[k], 9);
        assert_ok(nn_checkpoint_load(p, ref, NULL, NULL, 0, NULL));
        assert_ok(nn_checkpoint_load(p, other, NULL, NULL, 0, NULL));
        assert_memory_equal(ref->params, other->params, ref->n_params * sizeof(float));
        char spec[256];
        assert_ok(nn_model_spec_string(other, spec, sizeof spec));
        assert_non_null(strstr(spec, k ? "rate=0.5" : "activation=linear"));
        nn_model_free(ref);
        nn_model_free(other);
    }
    expect_refused(p, "flatten\ndense units=8 activation=relu\nrelu\ndense units=3\n", NN_ERR_SHAPE,
                   "layer 2: checkpoint has dropout rate=0.25, model has relu", NULL);
    expect_refused(p, "flatten\ndense units=8 activation=relu\ndense units=3\n", NN_ERR_SHAPE,
                   "checkpoint has 4 layers, the model has 3", NULL);
    /* Same layers, other input shape: the kernel's shape differs. */
    int labels[BATCH];
    (void)labels;
    nn_model *m = nn_model_create(3);
    assert_ok(nn_model_add_spec(m, SPEC));
    const int shape[2] = {3, 4};
    assert_ok(nn_model_build(m, 2, shape));
    float *before = malloc(m->n_params * sizeof(float));
    memcpy(before, m->params, m->n_params * sizeof(float));
    assert_int_equal(nn_checkpoint_load(p, m, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("checkpoint was made for input shape (4, 3), the model is built for (3, 4)");
    assert_memory_equal(before, m->params, m->n_params * sizeof(float));
    free(before);
    nn_model_free(m);
}

static void test_corrupted_files(void **state)
{
    (void)state;
    save_reference("ref.ckpt");
    size_t len;
    uint8_t *good = test_read_bytes(test_path("ref.ckpt"), &len);
    uint8_t *b = malloc(len + 8);
    const char *bad = test_path("bad.ckpt");

    /* Truncated at every kind of place: inside the prefix, the header, the
     * payload, and one byte short. */
    const size_t cuts[] = {0, 5, 20, 40, 100, len / 2, len - 5, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        test_write_bytes(bad, good, cuts[k]);
        expect_refused(bad, SPEC, NN_ERR_FORMAT, "bad.ckpt", cuts[k] < 8 ? "bad magic" : "truncated");
    }
    /* Trailing bytes. */
    memcpy(b, good, len);
    memcpy(b + len, "garbage!", 8);
    test_write_bytes(bad, b, len + 8);
    expect_refused(bad, SPEC, NN_ERR_FORMAT, "trailing data", NULL);
    /* One flipped bit anywhere after the size fields is caught by the CRC:
     * in the header (a layer config), in the parameters, in the optimizer
     * state, in the blob, in the CRC itself. */
    const size_t flips[] = {40, 90, len / 3, len / 2, len - 6, len - 2};
    for (size_t k = 0; k < sizeof flips / sizeof flips[0]; k++) {
        memcpy(b, good, len);
        b[flips[k]] ^= 0x10;
        test_write_bytes(bad, b, len);
        expect_refused(bad, SPEC, NN_ERR_FORMAT, "CRC-32 mismatch", "corrupted");
    }
    /* Wrong magic, wrong version. */
    memcpy(b, good, len);
    b[0] = 'X';
    test_write_bytes(bad, b, len);
    expect_refused(bad, SPEC, NN_ERR_FORMAT, "not an nn checkpoint (bad magic at offset 0)", NULL);
    memcpy(b, good, len);
    b[8] = 9;
    test_write_bytes(bad, b, len);
    expect_refused(bad, SPEC, NN_ERR_FORMAT, "checkpoint format version 9 at offset 8",
                   "this build reads versions 1 and 2");
    /* Missing file. */
    expect_refused(test_path("absent.ckpt"), SPEC, NN_ERR_IO, "cannot open checkpoint", NULL);
    /* A blob larger than the caller's buffer. */
    nn_model *m = make_model(SPEC, 3);
    float *before = malloc(m->n_params * sizeof(float));
    memcpy(before, m->params, m->n_params * sizeof(float));
    char small[2] = {1, 2};
    assert_int_equal(nn_checkpoint_load(test_path("ref.ckpt"), m, NULL, small, sizeof small, NULL),
                     NN_ERR_ARG);
    assert_error_contains("blob has 4 bytes, the buffer 2");
    assert_memory_equal(before, m->params, m->n_params * sizeof(float));
    assert_int_equal(small[0], 1);
    free(before);
    nn_model_free(m);
    free(good);
    free(b);
}

static void test_atomic_write(void **state)
{
    (void)state;
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = make_model(SPEC, 1);
    optim *oa = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_ok(nn_checkpoint_save(test_path("x.ckpt"), a, oa, NULL, 0));
    assert_int_equal(test_dir_entries(), 1); /* no x.ckpt.tmp.<pid> left */
    size_t len1, len2;
    uint8_t *first = test_read_bytes(test_path("x.ckpt"), &len1);
    /* Saving over an existing file replaces it whole. */
    train(a, oa, x, labels, 2);
    assert_ok(nn_checkpoint_save(test_path("x.ckpt"), a, oa, NULL, 0));
    assert_int_equal(test_dir_entries(), 1);
    uint8_t *second = test_read_bytes(test_path("x.ckpt"), &len2);
    assert_true(len2 > len1); /* now with Adam's moments */
    /* Saving is deterministic: the same state gives the same bytes. */
    assert_ok(nn_checkpoint_save(test_path("y.ckpt"), a, oa, NULL, 0));
    size_t len3;
    uint8_t *third = test_read_bytes(test_path("y.ckpt"), &len3);
    assert_int_equal(len2, len3);
    assert_memory_equal(second, third, len2);
    /* A failing save (no such directory) leaves nothing behind and says why. */
    char p[300];
    snprintf(p, sizeof p, "%s/no/such/dir/z.ckpt", test_dir());
    assert_int_equal(nn_checkpoint_save(p, a, oa, NULL, 0), NN_ERR_IO);
    assert_error_contains("cannot create");
    assert_int_equal(test_dir_entries(), 2);
    /* A directory where the file should go: the rename fails, the
     * temporary file is removed. */
    assert_int_equal(mkdir(test_path("d.ckpt"), 0700), 0);
    char inner[300];
    snprintf(inner, sizeof inner, "%s/d.ckpt/keep", test_dir());
    test_write_bytes(inner, (const uint8_t *)"k", 1);
    assert_int_equal(nn_checkpoint_save(test_path("d.ckpt"), a, oa, NULL, 0), NN_ERR_IO);
    assert_error_contains("cannot rename");
    assert_int_equal(test_dir_entries(), 3);
    unlink(inner);
    rmdir(test_path("d.ckpt"));
    /* Unbuilt model and NULL arguments are errors, not crashes. */
    nn_model *u = nn_model_create(1);
    assert_int_equal(nn_checkpoint_save(test_path("u.ckpt"), u, NULL, NULL, 0), NN_ERR_STATE);
    assert_int_equal(nn_checkpoint_load(test_path("x.ckpt"), u, NULL, NULL, 0, NULL), NN_ERR_STATE);
    assert_int_equal(nn_checkpoint_save(NULL, a, NULL, NULL, 0), NN_ERR_ARG);
    assert_int_equal(nn_checkpoint_save(test_path("v.ckpt"), a, NULL, NULL, 3), NN_ERR_ARG);
    nn_model_free(u);
    free(first);
    free(second);
    free(third);
    nn_model_free(a);
    optim_free(oa);
    tensor_free(x);
}

/* ---- files written by nn 0.1.0 (tests/fixtures/v0.1.0/README) ------------ */

#define V010 "tests/fixtures/v0.1.0/"
#define V010_SPEC                                                                                  \
    "conv2d filters=4 kernel_size=3 activation=relu data_format=channels_last\n"                   \
    "spatial_dropout2d rate=0.25 data_format=channels_last\n"                                      \
    "flatten\n"                                                                                    \
    "dense units=3\n"

/* The values after the line "KEY COUNT [TAG...]" of V010 "expected.txt"
 * whose tags include tag (the first KEY line when tag is NULL), malloc'ed,
 * their count in *n; NULL when no line matches. */
static uint64_t *v010_expected(const char *key, const char *tag, size_t *n)
{
    size_t len;
    char *text = (char *)test_read_bytes(V010 "expected.txt", &len);
    uint64_t *v = NULL;
    for (char *line = text; *line && !v;) {
        char *end = line + strcspn(line, "\n");
        char *next = *end ? end + 1 : end;
        *end = '\0';
        char *save, *word = strtok_r(line, " ", &save);
        if (word && !strcmp(word, key)) {
            const char *count = strtok_r(NULL, " ", &save);
            assert_non_null(count);
            int tagged = tag == NULL;
            for (const char *t; !tagged && (t = strtok_r(NULL, " ", &save));) tagged = !strcmp(t, tag);
            if (tagged) {
                *n = strtoul(count, NULL, 10);
                v = malloc((*n ? *n : 1) * sizeof *v);
                char *p = next, *q;
                for (size_t i = 0; i < *n; i++, p = q) {
                    v[i] = strtoull(p, &q, 16);
                    if (q == p) fail_msg("expected.txt: %s has fewer than %zu values", key, *n);
                }
            }
        }
        line = next;
    }
    free(text);
    return v;
}

/* The index of the first float of got whose bits are not want's (a uint32
 * each), n if there is none. */
static size_t v010_first_difference(const float *got, const uint64_t *want, size_t n)
{
    size_t i = 0;
    for (uint32_t u; i < n; i++) {
        memcpy(&u, &got[i], sizeof u);
        if (u != want[i]) break;
    }
    return i;
}

static void v010_assert_bits(const char *what, const float *got, const uint64_t *want, size_t n)
{
    const size_t i = v010_first_difference(got, want, n);
    if (i < n)
        fail_msg("%s[%zu] is %a, 0.1.0 gave 0x%08x", what, i, got[i], (unsigned)want[i]);
}

/* The input of the README: shape (6, 8, 8, 1), x[i] = ((i * 37) % 17 - 8) / 8. */
static tensor *v010_input(void)
{
    tensor *x = tensor_create(4, (const int[]){6, 8, 8, 1});
    assert_non_null(x);
    for (int i = 0; i < (int)x->size; i++) x->data[i] = (float)(i * 37 % 17 - 8) / 8.0f;
    return x;
}

/* m's eval-mode logits on x against the record `key` that 0.1.0 made with
 * this build's vector width and OpenBLAS kernel family. Their last bits
 * depend on both, and only x86 families were recorded: without a record,
 * says so and checks nothing (the parameters were checked bit for bit). */
static void v010_check_logits(nn_model *m, tensor *x, const char *key)
{
    char tag[64];
    snprintf(tag, sizeof tag, "%d:%s", VL, openblas_get_corename());
    size_t n;
    uint64_t *want = v010_expected(key, tag, &n);
    if (!want) {
        printf("    skipped: no 0.1.0 \"%s\" logits recorded for %s (vector width:OpenBLAS core)\n", key, tag);
        return;
    }
    tensor *y;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    assert_int_equal(y->size, n);
    v010_assert_bits(key, y->data, want, n);
    free(want);
}

static void test_v0_1_0_checkpoint(void **state)
{
    (void)state;
    /* Another model and an optimizer with other settings: the load must
     * replace all of it. */
    nn_model *m = test_make_model(V010_SPEC, 3, (const int[]){8, 8, 1}, 2);
    optim *o = optim_adam_create(1e-3f, 0.5f, 0.6f, 1e-4f, 0.0f, 0);
    tensor *x = v010_input();
    const int labels[6] = {0, 1, 2, 0, 1, 2};
    size_t n_params, n_state, n_t, n_seed, n_layers;
    uint64_t *params = v010_expected("params", NULL, &n_params);
    uint64_t *st = v010_expected("state", NULL, &n_state);
    uint64_t *t = v010_expected("adam_t", NULL, &n_t);
    uint64_t *seed = v010_expected("model_seed", NULL, &n_seed);
    uint64_t *layers = v010_expected("layer_seed_calls", NULL, &n_layers);
    assert_true(params && st && t && seed && layers);
    assert_int_equal(n_params, m->n_params);
    assert_true(n_t == 1 && n_seed == 1 && n_layers == 2 * (size_t)m->n_layers);
    assert_int_equal(v010_first_difference(m->params, params, m->n_params), 0);

    char blob[16];
    size_t blob_len = 0;
    assert_ok(nn_checkpoint_load(V010 "model.ckpt", m, o, blob, sizeof blob, &blob_len));
    v010_assert_bits("params", m->params, params, n_params);
    assert_int_equal(optim_state_count(o, o->n), n_state);
    v010_assert_bits("state", o->state, st, n_state);
    assert_int_equal(o->t, t[0]);
    assert_true(o->lr == 1e-2f && o->beta1 == 0.9f && o->beta2 == 0.999f && o->eps == 1e-7f &&
                o->weight_decay == 0.0f);
    assert_int_equal(m->seed, seed[0]);
    for (int i = 0; i < m->n_layers; i++) {
        assert_int_equal(m->layers[i]->seed, layers[2 * i]);
        assert_int_equal(m->layers[i]->calls, layers[2 * i + 1]);
    }
    assert_int_equal(blob_len, sizeof blob);
    assert_memory_equal(blob, "nn 0.1.0 state\0", sizeof blob);
    v010_check_logits(m, x, "loaded");

    /* Training resumes from the loaded state. */
    assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
    assert_int_equal(o->t, t[0] + 1);
    v010_check_logits(m, x, "resumed");

    free(params);
    free(st);
    free(t);
    free(seed);
    free(layers);
    tensor_free(x);
    optim_free(o);
    nn_model_free(m);
}

static void test_v0_1_0_safetensors(void **state)
{
    (void)state;
    nn_model *m = test_make_model(V010_SPEC, 3, (const int[]){8, 8, 1}, 2);
    tensor *x = v010_input();
    size_t n;
    uint64_t *params = v010_expected("params", NULL, &n);
    assert_non_null(params);
    assert_int_equal(n, m->n_params);
    assert_int_equal(v010_first_difference(m->params, params, m->n_params), 0);
    assert_ok(nn_safetensors_load(m, V010 "model.safetensors"));
    v010_assert_bits("params", m->params, params, n);
    v010_check_logits(m, x, "loaded");
    free(params);
    tensor_free(x);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sgd_and_no_optimizer, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_mismatching_network, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_files, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write, test_dir_setup, test_dir_teardown),
        cmocka_unit_test(test_v0_1_0_checkpoint),
        cmocka_unit_test(test_v0_1_0_safetensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
