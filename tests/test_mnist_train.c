/* The MNIST training loop (examples/mnist_train.h) on a tiny synthetic set,
 * so the suite needs no download: the loss falls; "train 2 epochs, save,
 * resume in a fresh process state, train 2 more" gives the same checkpoint
 * bytes, weights and log as 4 epochs straight; 1 and 2 threads give the
 * same run; a non-finite loss stops the run naming epoch and batch and keeps
 * the last good checkpoint. The network is a small copy of the default one
 * (conv2d, maxpool2d, spatial_dropout2d, dense, dropout), so the dropout
 * counters and the optimizer state both take part in the resume.
 * The random shifts: the shifted image is the original moved by (dy, dx)
 * with zeros filled in, the offsets stay in [-N, N] and change with the
 * image, the epoch and the seed, the batch holds each image with its own
 * offsets, and the resume and thread tests run with shifts on. (The
 * synthetic classes are rows and columns, which a shift would confuse, so
 * the learning test trains without.)
 * The random flips: a flipped image is the mirror of the original, shifted
 * or not; about half the images flip, as a function of (seed, epoch, index)
 * alone; version-3 state blobs carry the flip, version-2 ones load without;
 * a resume with flips is bit for bit the straight run, and one that loses
 * the flip is not. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

#include "examples/mnist_train.h"

#define SPEC                                                                                       \
    "conv2d filters=8 kernel_size=3 activation=relu\n"                                             \
    "maxpool2d pool_size=2\n"                                                                      \
    "spatial_dropout2d rate=0.25\n"                                                                \
    "flatten\n"                                                                                    \
    "dense units=32 activation=relu\n"                                                             \
    "dropout rate=0.25\n"                                                                          \
    "dense units=10\n"

static nn_mnist data;
static int threads_at_start;

/* 8x8 images: class k < 8 lights row k, 8 and 9 light columns 2 and 5; a
 * lit pixel is on with probability 3/4; noise elsewhere. Learnable, but not
 * in one step. */
static void make_split(uint8_t **images, uint8_t **labels, int n, tensor_rng *rng)
{
    *images = malloc((size_t)n * 64);
    *labels = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        const int k = (int)tensor_rng_below(rng, 10);
        (*labels)[i] = (uint8_t)k;
        uint8_t *img = *images + (size_t)i * 64;
        for (int p = 0; p < 64; p++) {
            const int r = p / 8, c = p % 8;
            const int lit = k < 8 ? r == k : c == (k == 8 ? 2 : 5);
            img[p] = lit && tensor_rng_below(rng, 4) ? (uint8_t)(160 + tensor_rng_below(rng, 96))
                                                     : (uint8_t)tensor_rng_below(rng, 110);
        }
    }
}

static int setup_group(void **state)
{
    (void)state;
    threads_at_start = nn_get_threads();
    tensor_rng rng;
    tensor_rng_seed(&rng, 2024);
    data.rows = data.cols = 8;
    data.n_train = 960;
    data.n_test = 300;
    make_split(&data.train_images, &data.train_labels, data.n_train, &rng);
    make_split(&data.test_images, &data.test_labels, data.n_test, &rng);
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    nn_mnist_free(&data);
    return 0;
}

static int teardown(void **state)
{
    test_dir_teardown(state);
    nn_set_threads(threads_at_start);
    return 0;
}

static nn_model *make_model(uint64_t seed)
{
    return test_make_model(SPEC, 3, (const int[]){8, 8, 1}, seed);
}

static optim *make_adam(float lr)
{
    optim *o = optim_adam_create(lr, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_non_null(o);
    return o;
}

static mnist_config make_config(int epochs, FILE *log, const char *save)
{
    mnist_config c = {.epochs = epochs, .batch = 32, .lr = 1e-2f, .lr_decay = 0.7f, .lr_step = 1, .seed = 11,
                      .progress = 0, .verbose = 0, .out = stdout, .log = log, .save_path = save};
    return c;
}

/* The log without the "final" records and without the timing keys (which
 * come last on each line): what must be identical between runs. */
static char *log_without_timings(const char *path)
{
    size_t len;
    char *text = (char *)test_read_bytes(path, &len);
    char *out = calloc(len + 1, 1);
    size_t used = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "\"final\"")) continue;
        char *t = strstr(line, ", \"seconds\"");
        assert_non_null(t);
        used += (size_t)sprintf(out + used, "%.*s\n", (int)(t - line), line);
    }
    free(text);
    return out;
}

/* train_loss of each epoch record (not the final one), in order. */
static int train_losses(const char *path, double *loss, int max)
{
    size_t len;
    char *text = (char *)test_read_bytes(path, &len);
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        const char *p = strstr(line, "\"train_loss\": ");
        assert_non_null(p);
        if (!strstr(line, "\"final\"")) loss[n++] = strtod(p + 14, NULL);
    }
    free(text);
    return n;
}

static void test_loss_falls(void **state)
{
    (void)state;
    nn_model *m = make_model(11);
    optim *o = make_adam(3e-3f);
    FILE *log = fopen(test_path("log.jsonl"), "w");
    mnist_config cfg = make_config(4, log, NULL);
    mnist_state st;
    mnist_state_init(&st, &cfg, data.n_train);
    mnist_metrics before;
    assert_ok(mnist_evaluate(m, data.test_images, data.test_labels, data.n_test, 64, &before));
    mnist_result res;
    assert_ok(mnist_train(m, o, &data, &cfg, &st, &res));
    fclose(log);
    double loss[8];
    assert_int_equal(train_losses(test_path("log.jsonl"), loss, 8), 4);
    for (int e = 1; e < 4; e++)
        if (!(loss[e] < loss[e - 1])) fail_msg("train loss rose: epoch %d %g -> %g", e, loss[e - 1], loss[e]);
    if (!(loss[3] < 0.5 * loss[0])) fail_msg("train loss %g -> %g: not halved", loss[0], loss[3]);
    /* Chance is 10%; an untrained network scores about that. */
    assert_true(before.acc < 0.3);
    if (!(res.test.acc > 0.9)) fail_msg("test accuracy %g after 4 epochs", res.test.acc);
    assert_true(res.test.loss < before.loss);
    assert_int_equal(res.epoch, 4);
    assert_int_equal(st.epoch, 4);
    assert_true(res.lr == (float)((double)1e-2f * pow((double)0.7f, 3.0))); /* StepLR, epoch 3 */
    assert_int_equal(res.train_images, 4 * data.n_train);
    nn_model_free(m);
    optim_free(o);
}

static void resume_bit_exact(int flip)
{
    /* Straight: 4 epochs, checkpoint after each. */
    nn_model *a = make_model(11);
    optim *oa = make_adam(3e-3f);
    FILE *la = fopen(test_path("a.jsonl"), "w");
    mnist_config ca = make_config(4, la, test_path("a.ckpt"));
    ca.shift = 2;
    ca.flip = flip;
    mnist_state sa;
    mnist_state_init(&sa, &ca, data.n_train);
    mnist_result ra;
    assert_ok(mnist_train(a, oa, &data, &ca, &sa, &ra));
    fclose(la);

    /* Split: 2 epochs, stop, drop everything. */
    nn_model *b = make_model(11);
    optim *ob = make_adam(3e-3f);
    FILE *lb = fopen(test_path("b.jsonl"), "w");
    mnist_config cb = make_config(2, lb, test_path("b.ckpt"));
    cb.shift = 2;
    cb.flip = flip;
    mnist_state sb;
    mnist_state_init(&sb, &cb, data.n_train);
    mnist_result rb;
    assert_ok(mnist_train(b, ob, &data, &cb, &sb, &rb));
    fclose(lb);
    nn_model_free(b);
    optim_free(ob);

    /* Resume into objects built differently (other init seed, other lr, a
     * state that says nothing, a config without shifts or flips): the
     * checkpoint must supply all of it. */
    b = make_model(12345);
    ob = make_adam(0.5f);
    memset(&sb, 0, sizeof sb);
    uint8_t blob[MNIST_STATE_BYTES];
    size_t blob_len = 0;
    assert_ok(nn_checkpoint_load(test_path("b.ckpt"), b, ob, blob, sizeof blob, &blob_len));
    assert_ok(mnist_state_unpack(&sb, blob, blob_len, "b.ckpt"));
    assert_int_equal(sb.epoch, 2);
    assert_int_equal(sb.shift, 2);
    assert_int_equal(sb.flip, flip);
    lb = fopen(test_path("b.jsonl"), "a");
    cb = make_config(4, lb, test_path("b.ckpt"));
    assert_ok(mnist_train(b, ob, &data, &cb, &sb, &rb));
    fclose(lb);

    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_int_equal(oa->t, ob->t);
    assert_memory_equal(oa->state, ob->state, 2 * oa->n * sizeof(float));
    for (int i = 0; i < a->n_layers; i++) assert_int_equal(a->layers[i]->calls, b->layers[i]->calls);
    /* Dropout layers counted every training batch of all 4 epochs. */
    assert_int_equal(a->layers[2]->calls, 4 * (data.n_train / 32));
    size_t na, nb;
    uint8_t *fa = test_read_bytes(test_path("a.ckpt"), &na), *fb = test_read_bytes(test_path("b.ckpt"), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    char *ta = log_without_timings(test_path("a.jsonl")), *tb = log_without_timings(test_path("b.jsonl"));
    assert_string_equal(ta, tb);
    assert_non_null(strstr(ta, "\"epoch\": 4,"));
    /* Every epoch record of a run with flips says so; without, none does. */
    int lines = 0, flip_lines = 0;
    for (const char *line = ta; *line; line = strchr(line, '\n') + 1) {
        const char *key = strstr(line, "\"flip\": true");
        lines++;
        flip_lines += key && key < strchr(line, '\n');
    }
    assert_int_equal(lines, 4);
    assert_int_equal(flip_lines, flip ? 4 : 0);
    assert_true(ra.test.acc == rb.test.acc && ra.test.loss == rb.test.loss);
    /* The test metrics the loop reports are of the images as they are. */
    mnist_metrics plain;
    assert_ok(mnist_evaluate(a, data.test_images, data.test_labels, data.n_test, 32, &plain));
    assert_true(plain.loss == ra.test.loss && plain.correct == ra.test.correct);

    free(ta);
    free(tb);
    free(fa);
    free(fb);
    nn_model_free(a);
    nn_model_free(b);
    optim_free(oa);
    optim_free(ob);
}

static void test_resume_bit_exact(void **state)
{
    (void)state;
    resume_bit_exact(0);
}

static void test_resume_bit_exact_flips(void **state)
{
    (void)state;
    resume_bit_exact(1);
}

/* A resume that forgets one piece of state diverges from the straight run:
 * shows that each piece the checkpoint carries is needed. */
static void test_resume_needs_all_state(void **state)
{
    (void)state;
    nn_model *a = make_model(11);
    optim *oa = make_adam(3e-3f);
    mnist_config ca = make_config(3, NULL, NULL);
    ca.shift = 1;
    ca.flip = 1;
    mnist_state sa;
    mnist_state_init(&sa, &ca, data.n_train);
    mnist_result r;
    assert_ok(mnist_train(a, oa, &data, &ca, &sa, &r));

    for (int variant = 0; variant < 5; variant++) {
        nn_model *b = make_model(11);
        optim *ob = make_adam(3e-3f);
        mnist_config cb = make_config(2, NULL, test_path("v.ckpt"));
        cb.shift = 1;
        cb.flip = 1;
        mnist_state sb;
        mnist_state_init(&sb, &cb, data.n_train);
        assert_ok(mnist_train(b, ob, &data, &cb, &sb, &r));
        uint8_t blob[MNIST_STATE_BYTES];
        size_t blob_len;
        nn_model_free(b);
        optim_free(ob);
        b = make_model(11);
        ob = make_adam(3e-3f);
        assert_ok(nn_checkpoint_load(test_path("v.ckpt"), b, ob, blob, sizeof blob, &blob_len));
        assert_ok(mnist_state_unpack(&sb, blob, blob_len, "v.ckpt"));
        if (variant == 0) tensor_rng_seed(&sb.order, 1);      /* data order lost */
        if (variant == 1) b->layers[2]->calls = 0;            /* dropout counter lost */
        if (variant == 2) memset(ob->state, 0, 2 * ob->n * sizeof(float)); /* Adam moments lost */
        if (variant == 3) sb.shift = 0;                       /* shifts lost */
        if (variant == 4) sb.flip = 0;                        /* flips lost */
        cb = make_config(3, NULL, NULL);
        assert_ok(mnist_train(b, ob, &data, &cb, &sb, &r));
        if (!memcmp(a->params, b->params, a->n_params * sizeof(float)))
            fail_msg("variant %d: a resume without that state still matched", variant);
        nn_model_free(b);
        optim_free(ob);
    }
    nn_model_free(a);
    optim_free(oa);
}

static void test_threads_invariant(void **state)
{
    (void)state;
    nn_model *m[2];
    for (int k = 0; k < 2; k++) {
        assert_ok(nn_set_threads(k + 1));
        m[k] = make_model(11);
        optim *o = make_adam(3e-3f);
        FILE *log = fopen(test_path(k ? "t2.jsonl" : "t1.jsonl"), "w");
        mnist_config cfg = make_config(2, log, NULL);
        cfg.shift = 2;
        mnist_state st;
        mnist_state_init(&st, &cfg, data.n_train);
        mnist_result res;
        assert_ok(mnist_train(m[k], o, &data, &cfg, &st, &res));
        fclose(log);
        optim_free(o);
    }
    assert_memory_equal(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float));
    char *a = log_without_timings(test_path("t1.jsonl")), *b = log_without_timings(test_path("t2.jsonl"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    nn_model_free(m[0]);
    nn_model_free(m[1]);
}

static void test_nan_stops_and_keeps_checkpoint(void **state)
{
    (void)state;
    nn_model *m = make_model(11);
    optim *o = make_adam(3e-3f);
    mnist_config cfg = make_config(1, NULL, test_path("good.ckpt"));
    mnist_state st;
    mnist_state_init(&st, &cfg, data.n_train);
    mnist_result res;
    assert_ok(mnist_train(m, o, &data, &cfg, &st, &res));
    size_t n_before, n_after;
    uint8_t *before = test_read_bytes(test_path("good.ckpt"), &n_before);
    /* Epoch 2 with an absurd learning rate: the weights blow up after the
     * first step and the second batch's loss is not finite. */
    st.lr = 1e30f;
    FILE *log = fopen(test_path("nan.jsonl"), "w");
    cfg = make_config(3, log, test_path("good.ckpt"));
    nn_status s = mnist_train(m, o, &data, &cfg, &st, &res);
    fclose(log);
    assert_int_equal(s, NN_ERR_NUMERIC);
    assert_error_contains("epoch 2, batch 2 of 30");
    assert_error_contains("not finite");
    assert_error_contains("last completed epoch is kept");
    assert_int_equal(st.epoch, 1);
    uint8_t *after = test_read_bytes(test_path("good.ckpt"), &n_after);
    assert_int_equal(n_before, n_after);
    assert_memory_equal(before, after, n_before);
    size_t log_len;
    char *text = (char *)test_read_bytes(test_path("nan.jsonl"), &log_len);
    assert_int_equal(log_len, 0); /* no epoch completed, no final record */
    free(text);
    free(before);
    free(after);
    nn_model_free(m);
    optim_free(o);
}

static void test_state_blob(void **state)
{
    (void)state;
    mnist_config cfg = make_config(3, NULL, NULL);
    cfg.shift = 3;
    mnist_state a, b;
    mnist_state_init(&a, &cfg, 777);
    a.epoch = 5;
    tensor_rng_next(&a.order);
    uint8_t buf[MNIST_STATE_BYTES];
    mnist_state_pack(&a, buf);
    memset(&b, 0, sizeof b);
    assert_ok(mnist_state_unpack(&b, buf, sizeof buf, "x"));
    assert_int_equal(b.epoch, 5);
    assert_memory_equal(b.order.s, a.order.s, sizeof a.order.s);
    assert_true(b.lr == a.lr && b.lr_decay == a.lr_decay);
    assert_int_equal(b.lr_step, 1);
    /* StepLR(step_size=8, gamma=0.1), the program's default. */
    b.lr = 1e-3f;
    b.lr_decay = 0.1f;
    b.lr_step = 8;
    assert_true(mnist_epoch_lr(&b, 0) == 1e-3f);
    assert_true(mnist_epoch_lr(&b, 7) == 1e-3f);
    assert_true(mnist_epoch_lr(&b, 8) == (float)((double)1e-3f * (double)0.1f));
    assert_true(mnist_epoch_lr(&b, 15) == mnist_epoch_lr(&b, 8));
    assert_true(mnist_epoch_lr(&b, 16) == (float)((double)1e-3f * pow((double)0.1f, 2.0)));
    assert_int_equal(b.batch, 32);
    assert_int_equal(b.n_train, 777);
    assert_int_equal(b.seed, 11);
    assert_int_equal(mnist_state_unpack(&b, buf, 7, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("x.ckpt: the checkpoint holds no MNIST training state");
    assert_int_equal(b.shift, 3);
    /* A version-1 blob (before shifts) is the same bytes without the last
     * field: it loads, with shift 0. Lengths and versions must agree. */
    memset(&b, 0, sizeof b);
    b.shift = 7;
    buf[4] = 1;
    assert_ok(mnist_state_unpack(&b, buf, MNIST_STATE_BYTES_V1, "x.ckpt"));
    assert_int_equal(b.epoch, 5);
    assert_int_equal(b.shift, 0);
    assert_int_equal(b.n_train, 777);
    assert_int_equal(mnist_state_unpack(&b, buf, MNIST_STATE_BYTES_V2, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("version 1 in 76 bytes");
    buf[4] = 2;
    assert_int_equal(mnist_state_unpack(&b, buf, MNIST_STATE_BYTES_V1, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("version 2 in 72 bytes");
    a.shift = MNIST_SHIFT_MAX + 1;
    mnist_state_pack(&a, buf);
    assert_int_equal(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("x.ckpt: MNIST training state has shift 9, at most 8");
    buf[4] = 9;
    assert_int_equal(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("version 9");
}

/* Version 3 adds the flip: it round-trips; a version-2 blob (the same bytes
 * without the last field) loads with flips off and its shift kept; a flip
 * other than 0 or 1 is refused. */
static void test_state_blob_flip(void **state)
{
    (void)state;
    mnist_config cfg = make_config(3, NULL, NULL);
    cfg.shift = 2;
    cfg.flip = 1;
    mnist_state a, b;
    mnist_state_init(&a, &cfg, 555);
    assert_int_equal(a.flip, 1);
    a.epoch = 2;
    uint8_t buf[MNIST_STATE_BYTES];
    assert_int_equal(sizeof buf, MNIST_STATE_BYTES_V2 + 4);
    mnist_state_pack(&a, buf);
    assert_int_equal(buf[4], 3);
    memset(&b, 0, sizeof b);
    assert_ok(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"));
    assert_memory_equal(&a, &b, sizeof a); /* every field, padding included (both zeroed) */
    cfg.flip = 0;
    mnist_state_init(&a, &cfg, 555);
    mnist_state_pack(&a, buf);
    b.flip = 1;
    assert_ok(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"));
    assert_int_equal(b.flip, 0);

    /* Version 2: flip off whatever the state held before. */
    cfg.flip = 1;
    mnist_state_init(&a, &cfg, 555);
    mnist_state_pack(&a, buf);
    buf[4] = 2;
    memset(&b, 0, sizeof b);
    b.flip = 1;
    assert_ok(mnist_state_unpack(&b, buf, MNIST_STATE_BYTES_V2, "x.ckpt"));
    assert_int_equal(b.flip, 0);
    assert_int_equal(b.shift, 2);
    assert_int_equal(b.n_train, 555);
    assert_int_equal(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("version 2 in 80 bytes");
    buf[4] = 3;
    assert_int_equal(mnist_state_unpack(&b, buf, MNIST_STATE_BYTES_V2, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("version 3 in 76 bytes");
    a.flip = 2;
    mnist_state_pack(&a, buf);
    assert_int_equal(mnist_state_unpack(&b, buf, sizeof buf, "x.ckpt"), NN_ERR_FORMAT);
    assert_error_contains("x.ckpt: MNIST training state has flip 2, expected 0 or 1");
}

/* A hand-made 3x4 image moved in each direction: the content moves down for
 * dy > 0 and right for dx > 0, zeros come in, nothing else changes. */
static void test_shift_image(void **state)
{
    (void)state;
    const uint8_t src[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    static const struct {
        int dy, dx;
        float want[12];
    } cases[] = {
        {0, 0, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
        {1, 0, {0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}},       /* down */
        {-1, 0, {5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0}},   /* up */
        {0, 1, {0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11}},     /* right */
        {0, -2, {3, 4, 0, 0, 7, 8, 0, 0, 11, 12, 0, 0}},    /* left */
        {-1, 2, {0, 0, 5, 6, 0, 0, 9, 10, 0, 0, 0, 0}},     /* up and right */
        {2, -3, {0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0}},      /* down and left */
        {0, 4, {0}},                                        /* out of the frame */
        {0, -9, {0}},
        {3, 0, {0}},
        {-3, 1, {0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float dst[12];
        for (int i = 0; i < 12; i++) dst[i] = -1.0f; /* every value must be written */
        mnist_shift_image(dst, src, 3, 4, cases[k].dy, cases[k].dx, 0, 1.0f);
        for (int i = 0; i < 12; i++)
            if (dst[i] != cases[k].want[i])
                fail_msg("shift (%d, %d): pixel %d is %g, expected %g", cases[k].dy, cases[k].dx, i,
                         (double)dst[i], (double)cases[k].want[i]);
    }
    /* A 28x28 image: (0, 0) is the plain conversion bit for bit, and every
     * offset is the definition dst[r][c] = src[r - dy][c - dx] * scale. */
    uint8_t img[28 * 28];
    tensor_rng rng;
    tensor_rng_seed(&rng, 5);
    for (int i = 0; i < 28 * 28; i++) img[i] = (uint8_t)tensor_rng_below(&rng, 256);
    float got[28 * 28], plain[28 * 28];
    nn_idx_to_float(plain, img, 28 * 28, 1.0f / 255.0f);
    mnist_shift_image(got, img, 28, 28, 0, 0, 0, 1.0f / 255.0f);
    assert_memory_equal(got, plain, sizeof got);
    for (int dy = -MNIST_SHIFT_MAX; dy <= MNIST_SHIFT_MAX; dy++)
        for (int dx = -MNIST_SHIFT_MAX; dx <= MNIST_SHIFT_MAX; dx++) {
            mnist_shift_image(got, img, 28, 28, dy, dx, 0, 1.0f / 255.0f);
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++) {
                    const int sr = r - dy, sc = c - dx;
                    const float want = sr >= 0 && sr < 28 && sc >= 0 && sc < 28 ? plain[sr * 28 + sc] : 0.0f;
                    if (got[r * 28 + c] != want)
                        fail_msg("shift (%d, %d) at (%d, %d): %g, expected %g", dy, dx, r, c,
                                 (double)got[r * 28 + c], (double)want);
                }
        }
}

/* Offsets: within [-N, N], every value reached, about uniform, dy and dx
 * independent, new for every image, epoch and seed, and a pure function. */
static void test_shift_offsets(void **state)
{
    (void)state;
    enum { IMAGES = 3000, EPOCHS = 3 };
    int dy, dx;
    mnist_shift_offsets(11, 0, 0, 0, &dy, &dx);
    assert_true(dy == 0 && dx == 0);
    for (int n = 1; n <= MNIST_SHIFT_MAX; n++) {
        int hist_y[2 * MNIST_SHIFT_MAX + 1] = {0}, hist_x[2 * MNIST_SHIFT_MAX + 1] = {0};
        int same_epoch = 0, same_seed = 0, equal_axes = 0;
        for (int i = 0; i < IMAGES; i++) {
            int y0 = 0, x0 = 0;
            for (int e = 0; e < EPOCHS; e++) {
                mnist_shift_offsets(11, e, i, n, &dy, &dx);
                if (dy < -n || dy > n || dx < -n || dx > n)
                    fail_msg("shift %d, epoch %d, image %d: offset (%d, %d)", n, e, i, dy, dx);
                hist_y[dy + n]++;
                hist_x[dx + n]++;
                equal_axes += dy == dx;
                if (e == 0) y0 = dy, x0 = dx;
                if (e == 1) same_epoch += dy == y0 && dx == x0;
                int dy2, dx2;
                mnist_shift_offsets(11, e, i, n, &dy2, &dx2);
                assert_true(dy2 == dy && dx2 == dx);
                mnist_shift_offsets(12, e, i, n, &dy2, &dx2);
                same_seed += dy2 == dy && dx2 == dx;
            }
        }
        /* Each value expected IMAGES*EPOCHS/(2n+1) times (>= 529); a 25%
         * band is over 10 standard deviations wide. */
        const double expect = (double)IMAGES * EPOCHS / (2 * n + 1);
        for (int v = 0; v <= 2 * n; v++)
            if (fabs(hist_y[v] - expect) > 0.25 * expect || fabs(hist_x[v] - expect) > 0.25 * expect)
                fail_msg("shift %d: offset %d drawn %d (dy) and %d (dx) times, expected about %.0f",
                         n, v - n, hist_y[v], hist_x[v], expect);
        /* Chance of a repeat is 1/(2n+1)^2 (<= 1/9), of dy == dx 1/(2n+1). */
        const double pair = 1.0 / ((2 * n + 1) * (2 * n + 1)), axis = 1.0 / (2 * n + 1);
        if (same_epoch > 2.0 * pair * IMAGES)
            fail_msg("shift %d: %d of %d images kept their offsets from epoch 1 to 2", n,
                     same_epoch, IMAGES);
        if (same_seed > 2.0 * pair * IMAGES * EPOCHS)
            fail_msg("shift %d: seeds 11 and 12 agree on %d of %d offsets", n, same_seed,
                     IMAGES * EPOCHS);
        if (equal_axes > 1.5 * axis * IMAGES * EPOCHS)
            fail_msg("shift %d: dy == dx in %d of %d draws", n, equal_axes, IMAGES * EPOCHS);
    }
    /* Neighbouring images differ: 100 images at shift 2 cover most of the
     * 25 offset pairs. */
    int seen[25] = {0}, distinct = 0;
    for (int i = 0; i < 100; i++) {
        mnist_shift_offsets(11, 0, i, 2, &dy, &dx);
        distinct += !seen[(dy + 2) * 5 + dx + 2]++;
    }
    if (distinct < 20) fail_msg("100 images used only %d of the 25 offsets", distinct);
}

/* What nn_model_fit does to the training images order[0..b) of a batch in
 * epoch `epoch` with mnist_train's transform: converts each (bytes / 255,
 * as nn_idx_to_float), then calls the transform with the image's index.
 * (That fit fills batches so, labels included, is tests/test_fit.c's.) */
static void fill_batch(float *batch, const int *order, int b, mnist_state *st, int epoch)
{
    nn_dataset d;
    assert_ok(nn_dataset_init_u8(&d, data.train_images, data.n_train, 3, (const int[]){8, 8, 1},
                                 1.0f / 255.0f, 0.0f));
    mnist_run run = {.st = st, .rows = 8, .cols = 8};
    for (int i = 0; i < b; i++) {
        nn_idx_to_float(batch + i * 64, data.train_images + (size_t)order[i] * 64, 64, 1.0f / 255.0f);
        assert_int_equal(mnist_transform(batch + i * 64, &d, order[i], epoch, &run), 0);
    }
}

/* The training batch holds image order[i] moved by the offsets of its own
 * index (not of its slot); shift 0 is the plain conversion. */
static void test_shift_batch(void **state)
{
    (void)state;
    const int order[5] = {5, 900, 5, 17, 959};
    float batch[5 * 64], want[64];
    mnist_config cfg = make_config(1, NULL, NULL);
    cfg.shift = 3;
    mnist_state st;
    mnist_state_init(&st, &cfg, data.n_train);
    fill_batch(batch, order, 5, &st, 4);
    int moved = 0;
    for (int i = 0; i < 5; i++) {
        int dy, dx;
        mnist_shift_offsets(11, 4, order[i], 3, &dy, &dx);
        moved += dy != 0 || dx != 0;
        mnist_shift_image(want, data.train_images + (size_t)order[i] * 64, 8, 8, dy, dx, 0, 1.0f / 255.0f);
        assert_memory_equal(batch + i * 64, want, sizeof want);
    }
    assert_true(moved >= 3);
    assert_memory_equal(batch, batch + 2 * 64, 64 * sizeof(float)); /* image 5 twice */
    st.shift = 0;
    fill_batch(batch, order, 5, &st, 4);
    for (int i = 0; i < 5; i++) {
        nn_idx_to_float(want, data.train_images + (size_t)order[i] * 64, 64, 1.0f / 255.0f);
        assert_memory_equal(batch + i * 64, want, sizeof want);
    }
}

/* The flipped image is the mirror of the original: on a hand-made 3x4
 * image, then on a 28x28 one at every offset, where a flip with (dy, dx)
 * must equal the mirror of the unflipped image shifted by (dy, -dx). */
static void test_flip_image(void **state)
{
    (void)state;
    const uint8_t src[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    static const struct {
        int dy, dx;
        float want[12];
    } cases[] = {
        {0, 0, {4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9}},
        {0, 1, {0, 4, 3, 2, 0, 8, 7, 6, 0, 12, 11, 10}},  /* mirrored, then right */
        {1, -1, {0, 0, 0, 0, 3, 2, 1, 0, 7, 6, 5, 0}},    /* down and left */
        {0, 4, {0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float dst[12];
        for (int i = 0; i < 12; i++) dst[i] = -1.0f;
        mnist_shift_image(dst, src, 3, 4, cases[k].dy, cases[k].dx, 1, 1.0f);
        for (int i = 0; i < 12; i++)
            if (dst[i] != cases[k].want[i])
                fail_msg("flip, shift (%d, %d): pixel %d is %g, expected %g", cases[k].dy,
                         cases[k].dx, i, (double)dst[i], (double)cases[k].want[i]);
    }
    uint8_t img[28 * 28];
    tensor_rng rng;
    tensor_rng_seed(&rng, 6);
    for (int i = 0; i < 28 * 28; i++) img[i] = (uint8_t)tensor_rng_below(&rng, 256);
    float got[28 * 28], plain[28 * 28];
    nn_idx_to_float(plain, img, 28 * 28, 1.0f / 255.0f);
    for (int dy = -MNIST_SHIFT_MAX; dy <= MNIST_SHIFT_MAX; dy++)
        for (int dx = -MNIST_SHIFT_MAX; dx <= MNIST_SHIFT_MAX; dx++) {
            float mirror[28 * 28];
            mnist_shift_image(got, img, 28, 28, dy, dx, 1, 1.0f / 255.0f);
            mnist_shift_image(mirror, img, 28, 28, dy, -dx, 0, 1.0f / 255.0f);
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++) {
                    const int sr = r - dy, sc = 27 - (c - dx);
                    const float want = sr >= 0 && sr < 28 && sc >= 0 && sc < 28 ? plain[sr * 28 + sc] : 0.0f;
                    if (got[r * 28 + c] != want || got[r * 28 + c] != mirror[r * 28 + 27 - c])
                        fail_msg("flip, shift (%d, %d) at (%d, %d): %g, expected %g", dy, dx, r, c,
                                 (double)got[r * 28 + c], (double)want);
                }
        }
}

/* Flip draws: never with flip 0; about half the images otherwise, a pure
 * function of (seed, epoch, index) that changes with each of the three and
 * does not follow the shifts. */
static void test_flip_draws(void **state)
{
    (void)state;
    enum { IMAGES = 20000, EPOCHS = 3 };
    int flips = 0, same_epoch = 0, same_seed = 0, same_next = 0, right = 0, right_flips = 0;
    for (int e = 0; e < EPOCHS; e++)
        for (int i = 0; i < IMAGES; i++) {
            assert_int_equal(mnist_flip_draw(11, e, i, 0), 0);
            const int f = mnist_flip_draw(11, e, i, 1);
            assert_true(f == 0 || f == 1);
            assert_int_equal(mnist_flip_draw(11, e, i, 1), f);
            flips += f;
            same_epoch += f == mnist_flip_draw(11, e + 1, i, 1);
            same_seed += f == mnist_flip_draw(12, e, i, 1);
            same_next += f == mnist_flip_draw(11, e, i + 1, 1);
            int dy, dx;
            mnist_shift_offsets(11, e, i, 1, &dy, &dx);
            if (dx > 0) right++, right_flips += f;
        }
    /* Each count is binomial with p = 1/2 over 60000 draws (sd 122, or 0.2%);
     * a 3% band is 15 standard deviations. */
    const double n = (double)IMAGES * EPOCHS;
    const int counts[4] = {flips, same_epoch, same_seed, same_next};
    static const char *const what[4] = {"flipped", "agree across epochs", "agree across seeds",
                                        "agree with the next image"};
    for (int k = 0; k < 4; k++)
        if (fabs(counts[k] / n - 0.5) > 0.03)
            fail_msg("%d of %.0f draws %s, expected about half", counts[k], n, what[k]);
    /* Among images shifted right (a third of them), still half flip. */
    if (fabs((double)right_flips / right - 0.5) > 0.04)
        fail_msg("%d of %d images shifted right flipped", right_flips, right);
}

/* The training batch with flips: each image with its own draw, mirrored
 * exactly when the draw says so, shifts on or off. */
static void test_flip_batch(void **state)
{
    (void)state;
    enum { B = 16 };
    int order[B];
    for (int i = 0; i < B; i++) order[i] = (i * 61) % data.n_train;
    float batch[B * 64], want[64];
    mnist_config cfg = make_config(1, NULL, NULL);
    cfg.flip = 1;
    for (int shift = 0; shift <= 2; shift += 2) {
        cfg.shift = shift;
        mnist_state st;
        mnist_state_init(&st, &cfg, data.n_train);
        fill_batch(batch, order, B, &st, 3);
        int flipped = 0;
        for (int i = 0; i < B; i++) {
            int dy, dx;
            mnist_shift_offsets(11, 3, order[i], shift, &dy, &dx);
            const int f = mnist_flip_draw(11, 3, order[i], 1);
            flipped += f;
            const uint8_t *img = data.train_images + (size_t)order[i] * 64;
            mnist_shift_image(want, img, 8, 8, dy, dx, f, 1.0f / 255.0f);
            assert_memory_equal(batch + i * 64, want, sizeof want);
            if (shift == 0) {
                float plain[64];
                nn_idx_to_float(plain, img, 64, 1.0f / 255.0f);
                for (int p = 0; p < 64; p++)
                    assert_true(batch[i * 64 + p] == plain[f ? p / 8 * 8 + 7 - p % 8 : p]);
            }
        }
        /* 16 fair draws: all alike has chance 2^-15. */
        assert_true(flipped > 0 && flipped < B);
    }
}

/* --shift takes 0..8 and refuses anything else, naming the value. */
static void test_shift_parse(void **state)
{
    (void)state;
    static const char *const good[] = {"0", "2", "8", "+3"};
    static const int good_value[] = {0, 2, 8, 3};
    for (int k = 0; k < 4; k++) {
        int v = -1;
        assert_ok(mnist_shift_parse(good[k], &v));
        assert_int_equal(v, good_value[k]);
    }
    static const char *const bad[] = {"9", "-1", "", "2.5", "two", "3 ", "1e1", "99999999999999999999"};
    for (int k = 0; k < 8; k++) {
        int v = 42;
        assert_int_equal(mnist_shift_parse(bad[k], &v), NN_ERR_ARG);
        assert_int_equal(v, 42);
        char want[160];
        snprintf(want, sizeof want, "--shift needs an integer in [0, 8] (pixels), but got '%s'", bad[k]);
        assert_error_contains(want);
    }
}

/* A schedule that decays below FLT_MIN is refused before the first step,
 * naming the epoch: StepLR(8, 0.1) from 1e-3 gives 1e-38 in epoch 281. */
static void test_lr_underflow(void **state)
{
    (void)state;
    mnist_config cfg = make_config(400, NULL, NULL);
    cfg.lr = 1e-3f;
    cfg.lr_decay = 0.1f;
    cfg.lr_step = 8;
    mnist_state st;
    mnist_state_init(&st, &cfg, data.n_train);
    assert_true(mnist_epoch_lr(&st, 279) >= FLT_MIN);
    assert_true(mnist_epoch_lr(&st, 280) < FLT_MIN);
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 280), -1);
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 281), 280);
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 100000), 280);
    assert_int_equal(mnist_lr_underflow_epoch(&st, 300, 301), 300); /* a resume past it */
    nn_model *m = make_model(11);
    optim *o = make_adam(cfg.lr);
    mnist_result res;
    assert_int_equal(mnist_train(m, o, &data, &cfg, &st, &res), NN_ERR_ARG);
    assert_error_contains("with --lr 0.001 --lr-decay 0.1 --lr-step 8 the learning rate falls "
                          "below the smallest normal float (FLT_MIN = 1.17549e-38) at epoch 281, "
                          "before --epochs 400 ends");
    assert_int_equal(st.epoch, 0); /* nothing was trained */
    cfg.epochs = 280;              /* the last epoch with a normal rate is allowed */
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, cfg.epochs), -1);
    /* No decay, or a step longer than the run: never. */
    st.lr_decay = 1.0f;
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 100000), -1);
    st.lr_decay = 0.1f;
    st.lr_step = 100000;
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 100000), -1);
    /* A base rate that is already subnormal fails at the first epoch. */
    st.lr = 1e-39f;
    assert_int_equal(mnist_lr_underflow_epoch(&st, 0, 1), 0);
    nn_model_free(m);
    optim_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_blob),
        cmocka_unit_test(test_shift_image),
        cmocka_unit_test(test_shift_offsets),
        cmocka_unit_test(test_shift_batch),
        cmocka_unit_test(test_shift_parse),
        cmocka_unit_test(test_state_blob_flip),
        cmocka_unit_test(test_flip_image),
        cmocka_unit_test(test_flip_draws),
        cmocka_unit_test(test_flip_batch),
        cmocka_unit_test(test_lr_underflow),
        cmocka_unit_test_setup_teardown(test_loss_falls, test_dir_setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_bit_exact, test_dir_setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_bit_exact_flips, test_dir_setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_needs_all_state, test_dir_setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_invariant, test_dir_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_stops_and_keeps_checkpoint, test_dir_setup, teardown),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
