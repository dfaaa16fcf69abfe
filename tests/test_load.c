/* nn_model_load: a saved model rebuilds itself from its file.
 * Round trips of the MNIST network (examples/mnist_cnn.txt), the residual
 * network (examples/fashion_resnet.txt, with batchnorm moving statistics)
 * and a small branching network with concatenate, through a checkpoint and
 * a .safetensors file: the rebuilt model has the same spec, input shape,
 * parameters and buffers, is in eval mode, and gives the same logits bit for
 * bit on a fixed batch. Every error path names the file and what is wrong:
 * a missing file, files cut at several offsets, a wrong magic, a stored
 * network that no longer parses, metadata that is missing or malformed;
 * *out is NULL after each. Files written by nn 0.1.0 load too. Then the
 * weights-only loads: a model with another dropout rate takes the weights,
 * one with another filter count or other inputs is refused, unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "test_util.h"

#define BATCH 3
#define V010 "tests/fixtures/v0.1.0/"

#define BRANCH_SPEC                                                  \
    "conv2d filters=4 kernel_size=3 padding=same name=a\n"           \
    "conv2d filters=3 kernel_size=1 inputs=input name=b\n"           \
    "concatenate inputs=a,b\n"                                       \
    "batchnorm activation=relu\n"                                    \
    "flatten\n"                                                      \
    "dropout rate=0.3\n"                                             \
    "dense units=5\n"

static char *read_text(const char *path)
{
    size_t n;
    return (char *)test_read_bytes(path, &n);
}

/* A fixed batch of n samples of the per-sample shape, normal(0, 1). */
static tensor *make_batch(int n, int rank, const int *shape, uint64_t seed)
{
    int s[TENSOR_MAX_RANK + 1] = {n};
    for (int d = 0; d < rank; d++) s[d + 1] = shape[d];
    tensor *x = tensor_create(rank + 1, s);
    assert_non_null(x);
    tensor_rng rng;
    tensor_rng_seed(&rng, seed);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    return x;
}

/* The model of spec, trained for two Adam steps so that its parameters and
 * batchnorm statistics are not the initial ones, left in training mode. */
static nn_model *make_trained(const char *spec, int rank, const int *shape, int classes)
{
    nn_model *m = test_make_model(spec, rank, shape, 7);
    optim *o = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    tensor *x = make_batch(BATCH, rank, shape, 11);
    int labels[BATCH];
    for (int i = 0; i < BATCH; i++) labels[i] = i % classes;
    for (int i = 0; i < 2; i++) assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
    nn_model_set_training(m, 1);
    tensor_free(x);
    optim_free(o);
    return m;
}

/* Eval-mode logits of m on x, copied out of the arena. */
static float *logits_of(nn_model *m, tensor *x, size_t *n)
{
    tensor *y;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    float *out = malloc(y->size * sizeof(float));
    memcpy(out, y->data, y->size * sizeof(float));
    *n = y->size;
    return out;
}

static char *spec_of(const nn_model *m)
{
    static char buf[8192];
    assert_ok(nn_model_spec_string(m, buf, sizeof buf));
    return buf;
}

/* b is a to the bit: network, shape, parameters, buffers (and, from a
 * checkpoint, the seeds); eval mode; the same logits on a fixed batch. */
static void assert_same_model(nn_model *a, nn_model *b, int from_checkpoint)
{
    char sa[8192];
    snprintf(sa, sizeof sa, "%s", spec_of(a));
    assert_string_equal(sa, spec_of(b));
    assert_int_equal(a->in_rank, b->in_rank);
    assert_memory_equal(a->in_shape, b->in_shape, (size_t)a->in_rank * sizeof(int));
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_buffers, b->n_buffers);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    if (a->n_buffers) assert_memory_equal(a->buffers, b->buffers, a->n_buffers * sizeof(float));
    assert_true(b->built);
    assert_false(nn_model_is_training(b));
    if (from_checkpoint) {
        assert_int_equal(a->seed, b->seed);
        for (int i = 0; i < a->n_layers; i++) {
            assert_int_equal(a->layers[i]->seed, b->layers[i]->seed);
            assert_int_equal(a->layers[i]->calls, b->layers[i]->calls);
        }
    }
    tensor *x = make_batch(BATCH, a->in_rank, a->in_shape, 99);
    size_t na, nb;
    float *ya = logits_of(a, x, &na), *yb = logits_of(b, x, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ya, yb, na * sizeof(float));
    free(ya);
    free(yb);
    tensor_free(x);
}

static void round_trip(const char *spec, int rank, const int *shape, int classes)
{
    nn_model *a = make_trained(spec, rank, shape, classes);
    /* File names without the usual extensions: the kind is read from the
     * bytes. */
    const char *ck = test_path("model.a"), *st = test_path("model.b");
    assert_ok(nn_checkpoint_save(ck, a, NULL, NULL, 0));
    assert_ok(nn_safetensors_save(a, st));
    nn_model *b = NULL, *c = NULL;
    assert_ok(nn_model_load(ck, &b));
    assert_non_null(b);
    assert_same_model(a, b, 1);
    assert_ok(nn_model_load(st, &c));
    assert_non_null(c);
    assert_same_model(a, c, 0);
    nn_model_free(a);
    nn_model_free(b);
    nn_model_free(c);
}

static void test_round_trip_mnist(void **state)
{
    (void)state;
    char *spec = read_text("examples/mnist_cnn.txt");
    round_trip(spec, 3, (const int[]){28, 28, 1}, 10);
    free(spec);
}

static void test_round_trip_resnet(void **state)
{
    (void)state;
    char *spec = read_text("examples/fashion_resnet.txt");
    round_trip(spec, 3, (const int[]){28, 28, 1}, 10);
    free(spec);
}

static void test_round_trip_concatenate(void **state)
{
    (void)state;
    round_trip(BRANCH_SPEC, 3, (const int[]){6, 6, 2}, 5);
}

/* nn_model_load(path) fails with status want and a message holding the path
 * and each needle; *out is NULL afterwards. */
static void expect_load_error(const char *path, nn_status want, const char *n1, const char *n2)
{
    nn_model *m = (nn_model *)&m; /* anything but NULL */
    nn_status s = nn_model_load(path, &m);
    if (s != want)
        fail_msg("%s: status %s, expected %s (%s)", path, nn_status_str(s), nn_status_str(want),
                 nn_last_error());
    assert_null(m);
    assert_error_contains(path);
    if (n1) assert_error_contains(n1);
    if (n2) assert_error_contains(n2);
}

/* Writes the first n bytes of b to name; returns its path. */
static const char *write_part(const char *name, const uint8_t *b, size_t n)
{
    const char *p = test_path(name);
    test_write_bytes(p, b, n);
    return p;
}

/* A valid checkpoint and .safetensors file of the MNIST network. */
static void save_mnist(void)
{
    char *spec = read_text("examples/mnist_cnn.txt");
    nn_model *a = test_make_model(spec, 3, (const int[]){28, 28, 1}, 3);
    assert_ok(nn_checkpoint_save(test_path("ref.ckpt"), a, NULL, NULL, 0));
    assert_ok(nn_safetensors_save(a, test_path("ref.safetensors")));
    nn_model_free(a);
    free(spec);
}

/* Recomputes a checkpoint's CRC-32 (bytes 24 .. len-4) after a patch. */
static void fix_crc(uint8_t *b, size_t len)
{
    uLong crc = crc32(crc32(0L, Z_NULL, 0), b + 24, (uInt)(len - 28));
    for (int i = 0; i < 4; i++) b[len - 4 + i] = (uint8_t)(crc >> (8 * i));
}

/* Replaces the first occurrence of from[0..n) in b[0..len) by to[0..n). */
static void patch_n(uint8_t *b, size_t len, const char *from, const char *to, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(b + i, from, n)) {
            memcpy(b + i, to, n);
            return;
        }
    fail_msg("'%s' not found", from);
}

static void patch(uint8_t *b, size_t len, const char *from, const char *to)
{
    assert_int_equal(strlen(from), strlen(to));
    patch_n(b, len, from, to, strlen(from));
}

static void test_errors(void **state)
{
    (void)state;
    char want[256];
    nn_model *m = (nn_model *)&m;
    assert_int_equal(nn_model_load(NULL, &m), NN_ERR_ARG);
    assert_null(m);
    assert_int_equal(nn_model_load("x", NULL), NN_ERR_ARG);
    nn_checkpoint_network *net = malloc(sizeof *net);
    char *value = (char *)&value;
    assert_int_equal(nn_checkpoint_describe(NULL, 4, "x", net), NN_ERR_ARG);
    assert_int_equal(nn_checkpoint_describe("NNCKPT", 6, "six", net), NN_ERR_FORMAT);
    assert_error_contains("six: not an nn checkpoint (bad magic at offset 0)");
    assert_int_equal(nn_checkpoint_parse(NULL, 4, "x", NULL, NULL, NULL, 0, NULL), NN_ERR_ARG);
    assert_int_equal(nn_safetensors_metadata("\2\0\0\0\0\0\0\0{}", 10, "meta", "nn_spec", &value),
                     NN_ERR_FORMAT);
    assert_error_contains("meta: the header has no __metadata__");
    assert_null(value);
    free(net);
    expect_load_error(test_path("missing.ckpt"), NN_ERR_IO, "cannot open model file",
                      "No such file");

    save_mnist();
    size_t ck_len, st_len;
    uint8_t *ck = test_read_bytes(test_path("ref.ckpt"), &ck_len);
    uint8_t *st = test_read_bytes(test_path("ref.safetensors"), &st_len);

    /* A checkpoint cut short: in the magic, in the fixed prefix, in the
     * header, in the payload, one byte before the end. */
    expect_load_error(write_part("empty", ck, 0), NN_ERR_FORMAT, "neither an nn checkpoint",
                      "0 bytes");
    expect_load_error(write_part("cut5", ck, 5), NN_ERR_FORMAT, "truncated: 5 bytes", NULL);
    expect_load_error(write_part("cut20", ck, 20), NN_ERR_FORMAT,
                      "truncated: 20 bytes, a checkpoint has at least 36", NULL);
    const size_t cuts[] = {40, 200, ck_len / 2, ck_len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        snprintf(want, sizeof want, "truncated: the header at offset 16 says %zu bytes, the file "
                 "has %zu", ck_len, cuts[k]);
        expect_load_error(write_part("cut", ck, cuts[k]), NN_ERR_FORMAT, want, NULL);
    }

    /* A .safetensors file cut short: in the length, in the JSON header, in
     * the data. */
    expect_load_error(write_part("scut4", st, 4), NN_ERR_FORMAT, "neither an nn checkpoint",
                      "4 bytes");
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | st[k];
    const size_t st_cuts[] = {9, 8 + (size_t)hlen / 2};
    for (size_t k = 0; k < sizeof st_cuts / sizeof st_cuts[0]; k++) {
        snprintf(want, sizeof want, "header length %llu at offset 0 runs past the end of the file "
                 "(%zu bytes): truncated", (unsigned long long)hlen, st_cuts[k]);
        expect_load_error(write_part("scut", st, st_cuts[k]), NN_ERR_FORMAT, want, NULL);
    }
    expect_load_error(write_part("scut", st, 8 + (size_t)hlen + 100), NN_ERR_FORMAT,
                      "needs more bytes than the file's 100 of data: the file is truncated", NULL);
    snprintf(want, sizeof want, "within the %zu bytes of data: the file is truncated",
             st_len - 1 - 8 - (size_t)hlen);
    expect_load_error(write_part("scut", st, st_len - 1), NN_ERR_FORMAT, "dense_2.bias", want);

    /* Wrong magic; a checkpoint of another format version; a flipped byte. */
    uint8_t *bad = malloc(ck_len);
    memcpy(bad, ck, ck_len);
    bad[3] = 'X';
    expect_load_error(write_part("magic", bad, ck_len), NN_ERR_FORMAT, "neither an nn checkpoint",
                      "byte 8 is not '{'");
    memcpy(bad, ck, ck_len);
    bad[8] = 9;
    expect_load_error(write_part("version", bad, ck_len), NN_ERR_FORMAT,
                      "checkpoint format version 9 at offset 8", NULL);
    memcpy(bad, ck, ck_len);
    bad[ck_len / 2] ^= 0x10;
    expect_load_error(write_part("flip", bad, ck_len), NN_ERR_FORMAT, "CRC-32 mismatch", NULL);

    /* A stored network this build cannot make: a layer type that does not
     * exist, a dropout rate out of range (intact CRC). */
    memcpy(bad, ck, ck_len);
    patch_n(bad, ck_len, "\x07\0\0\0dropout", "\x07\0\0\0dropoux", 11);
    fix_crc(bad, ck_len);
    expect_load_error(write_part("type", bad, ck_len), NN_ERR_FORMAT,
                      "layer 6 (dropoux rate=0.5", "no longer parses");
    assert_error_contains("dropoux");
    memcpy(bad, ck, ck_len);
    patch(bad, ck_len, "rate=0.5", "rate=2.5");
    fix_crc(bad, ck_len);
    expect_load_error(write_part("rate", bad, ck_len), NN_ERR_FORMAT,
                      "layer 6 (dropout rate=2.5", "no longer parses");
    free(bad);

    bad = malloc(st_len);
    memcpy(bad, st, st_len);
    patch(bad, st_len, "rate=0.5", "rate=2.5");
    expect_load_error(write_part("srate", bad, st_len), NN_ERR_FORMAT,
                      "the network in __metadata__ nn_spec no longer parses", "line 7");
    memcpy(bad, st, st_len);
    patch(bad, st_len, "\"nn_spec\"", "\"nn_spex\"");
    expect_load_error(write_part("snospec", bad, st_len), NN_ERR_FORMAT,
                      "__metadata__ has no \"nn_spec\"", NULL);
    memcpy(bad, st, st_len);
    patch(bad, st_len, "\"28,28,1\"", "\"28,28,0\"");
    expect_load_error(write_part("sshape", bad, st_len), NN_ERR_FORMAT,
                      "nn_input_shape '28,28,0' is not 1 to", NULL);
    memcpy(bad, st, st_len);
    patch(bad, st_len, "\"28,28,1\"", "\"20,28,1\"");
    expect_load_error(write_part("sbuild", bad, st_len), NN_ERR_SHAPE,
                      "tensor 'dense_1.kernel' has shape (9216, 128) in the file, the model has "
                      "(6144, 128)", NULL);
    free(bad);
    free(ck);
    free(st);
}

/* Files written by nn 0.1.0 rebuild into the model they were saved from:
 * the same values as a model made in code and loaded the old way. */
static void test_v0_1_0(void **state)
{
    (void)state;
    static const char *spec = "conv2d filters=4 kernel_size=3 activation=relu\n"
                              "spatial_dropout2d rate=0.25\nflatten\ndense units=3\n";
    const int shape[3] = {8, 8, 1};
    nn_model *a = test_make_model(spec, 3, shape, 2), *b = NULL;
    assert_ok(nn_checkpoint_load(V010 "model.ckpt", a, NULL, NULL, 0, NULL));
    assert_ok(nn_model_load(V010 "model.ckpt", &b));
    assert_same_model(a, b, 1);
    nn_model_free(b);
    b = NULL;
    assert_ok(nn_safetensors_load(a, V010 "model.safetensors"));
    assert_ok(nn_model_load(V010 "model.safetensors", &b));
    assert_same_model(a, b, 0);
    nn_model_free(a);
    nn_model_free(b);
}

/* The weights-only loads compare what decides the parameters. */
static void test_weights_only(void **state)
{
    (void)state;
    char *spec = read_text("examples/mnist_cnn.txt");
    const int shape[3] = {28, 28, 1};
    nn_model *a = make_trained(spec, 3, shape, 10);
    assert_ok(nn_checkpoint_save(test_path("w.ckpt"), a, NULL, NULL, 0));
    assert_ok(nn_safetensors_save(a, test_path("w.safetensors")));

    /* Other dropout rates, an explicit seed and inplace=false: no parameter
     * changes, so both files load, and eval-mode logits are a's. */
    static const char *other_dropout =
        "conv2d filters=32 kernel_size=3 activation=relu\n"
        "conv2d filters=64 kernel_size=3 activation=relu\n"
        "maxpool2d pool_size=2\n"
        "spatial_dropout2d rate=0.1 seed=5\n"
        "flatten\n"
        "dense units=128 activation=relu\n"
        "dropout rate=0.3\n"
        "dense units=10\n";
    for (int kind = 0; kind < 2; kind++) {
        nn_model *b = test_make_model(other_dropout, 3, shape, 1);
        if (kind == 0)
            assert_ok(nn_checkpoint_load(test_path("w.ckpt"), b, NULL, NULL, 0, NULL));
        else
            assert_ok(nn_safetensors_load(b, test_path("w.safetensors")));
        assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
        assert_true(strstr(spec_of(b), "dropout rate=0.3") != NULL); /* b keeps its settings */
        tensor *x = make_batch(BATCH, 3, shape, 99);
        size_t na, nb;
        float *ya = logits_of(a, x, &na), *yb = logits_of(b, x, &nb);
        assert_memory_equal(ya, yb, na * sizeof(float));
        free(ya);
        free(yb);
        tensor_free(x);
        nn_model_free(b);
    }

    /* Another filter count: refused with the key that explains it and the
     * shapes, the model unchanged. */
    static const char *other_filters =
        "conv2d filters=16 kernel_size=3 activation=relu\n"
        "conv2d filters=64 kernel_size=3 activation=relu\n"
        "maxpool2d pool_size=2\n"
        "spatial_dropout2d rate=0.25 inplace=true\n"
        "flatten\n"
        "dense units=128 activation=relu\n"
        "dropout rate=0.5\n"
        "dense units=10\n";
    nn_model *c = test_make_model(other_filters, 3, shape, 1);
    float *before = malloc(c->n_params * sizeof(float));
    memcpy(before, c->params, c->n_params * sizeof(float));
    assert_int_equal(nn_checkpoint_load(test_path("w.ckpt"), c, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("layer 0 (conv2d_1): checkpoint has conv2d filters=32, model has conv2d "
                          "filters=16 (kernel (3, 3, 1, 32) against (3, 3, 1, 16))");
    assert_memory_equal(before, c->params, c->n_params * sizeof(float));
    assert_int_equal(nn_safetensors_load(c, test_path("w.safetensors")), NN_ERR_SHAPE);
    assert_error_contains("tensor 'conv2d_1.kernel' has shape (3, 3, 1, 32) in the file, the model "
                          "has (3, 3, 1, 16)");
    assert_memory_equal(before, c->params, c->n_params * sizeof(float));
    free(before);
    nn_model_free(c);
    nn_model_free(a);
    free(spec);

    /* Same layers and shapes, other inputs: a checkpoint refuses it. */
    const int bshape[3] = {6, 6, 2};
    nn_model *d = make_trained(BRANCH_SPEC, 3, bshape, 5);
    assert_ok(nn_checkpoint_save(test_path("b.ckpt"), d, NULL, NULL, 0));
    nn_model_free(d);
    static const char *swapped =
        "conv2d filters=4 kernel_size=3 padding=same name=a\n"
        "conv2d filters=3 kernel_size=1 inputs=input name=b\n"
        "concatenate inputs=b,a\n"
        "batchnorm activation=relu\n"
        "flatten\n"
        "dropout rate=0.3\n"
        "dense units=5\n";
    nn_model *e = test_make_model(swapped, 3, bshape, 1);
    assert_int_equal(nn_checkpoint_load(test_path("b.ckpt"), e, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("layer 2 (concatenate_1): checkpoint has concatenate inputs=a,b, model "
                          "has concatenate inputs=b,a");
    nn_model_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_mnist, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_resnet, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_concatenate, test_dir_setup,
                                        test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_errors, test_dir_setup, test_dir_teardown),
        cmocka_unit_test(test_v0_1_0),
        cmocka_unit_test_setup_teardown(test_weights_only, test_dir_setup, test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
