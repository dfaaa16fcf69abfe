/* Checkpoint loading against damaged files, exhaustively on a small one
 * (tests/test_checkpoint.c has the round trip and a sample of these):
 *  - truncated to every length from 0 to one byte short,
 *  - every byte flipped, one at a time (magic, version, reserved, size,
 *    header, payload, CRC),
 *  - every byte of the header flipped with the size and CRC fixed up
 *    afterwards, so that what is behind the integrity checks (lengths,
 *    counts, names, shapes) is tested on its own; a layer's config text may
 *    change and still load (a weights-only load compares what decides the
 *    parameters, not settings such as a dropout rate),
 *  - optimizer hyperparameters that no constructor accepts, CRC fixed,
 *  - other versions, another network, another optimizer.
 * Every refusal must carry a message naming the file and leave the model,
 * the optimizer and the blob buffer exactly as they were (memcmp against a
 * snapshot). The network has every kind of state a checkpoint holds:
 * trainable parameters, batch-norm buffers, dropout counters, Adam moments
 * and a blob. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "test_util.h"

#define SPEC                                                                                       \
    "conv2d filters=2 kernel_size=3 activation=relu\n"                                             \
    "batchnorm\n"                                                                                  \
    "spatial_dropout2d rate=0.5\n"                                                                 \
    "flatten\n"                                                                                    \
    "dropout rate=0.25\n"                                                                          \
    "dense units=3\n"

static uint8_t *good;
static size_t good_len;
static nn_model *model;
static optim *opt;
static const uint8_t blob_ref[16] = "resumable-state";

static nn_model *make_model(const char *spec, uint64_t seed)
{
    return test_make_model(spec, 3, (const int[]){6, 6, 1}, seed);
}

static void train(nn_model *m, optim *o, int steps, uint64_t seed)
{
    const int shape[4] = {4, 6, 6, 1};
    tensor *x = tensor_create(4, shape);
    tensor_rng rng;
    tensor_rng_seed(&rng, seed);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    const int labels[4] = {0, 1, 2, 1};
    for (int i = 0; i < steps; i++) assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
    tensor_free(x);
}

/* ---- what a failed load must not change ------------------------------------ */

typedef struct {
    float *params, *buffers, *state;
    size_t n_state;
    uint64_t calls[NN_MODEL_MAX_LAYERS], seeds[NN_MODEL_MAX_LAYERS], model_seed;
    optim opt;
    uint8_t blob[64];
} snapshot;

static snapshot snap;

static void take_snapshot(const nn_model *m, const optim *o, const uint8_t *blob)
{
    snap.params = malloc(m->n_params * sizeof(float));
    memcpy(snap.params, m->params, m->n_params * sizeof(float));
    snap.buffers = malloc(m->n_buffers * sizeof(float) + 1);
    memcpy(snap.buffers, m->buffers, m->n_buffers * sizeof(float));
    snap.n_state = optim_state_count(o, o->n);
    snap.state = malloc(snap.n_state * sizeof(float) + 1);
    memcpy(snap.state, o->state, snap.n_state * sizeof(float));
    for (int i = 0; i < m->n_layers; i++) {
        snap.calls[i] = m->layers[i]->calls;
        snap.seeds[i] = m->layers[i]->seed;
    }
    snap.model_seed = m->seed;
    snap.opt = *o;
    memcpy(snap.blob, blob, sizeof snap.blob);
}

/* Compared byte for byte, including the floats (NaN-safe). */
static int unchanged(const nn_model *m, const optim *o, const uint8_t *blob)
{
    if (memcmp(m->params, snap.params, m->n_params * sizeof(float))) return 0;
    if (memcmp(m->buffers, snap.buffers, m->n_buffers * sizeof(float))) return 0;
    if (o->state != snap.opt.state || memcmp(o->state, snap.state, snap.n_state * sizeof(float)))
        return 0;
    const optim *a = &snap.opt;
    if (o->kind != a->kind || o->t != a->t || o->n != a->n || o->nesterov != a->nesterov ||
        o->decoupled != a->decoupled || memcmp(&o->lr, &a->lr, 4) || memcmp(&o->momentum, &a->momentum, 4) ||
        memcmp(&o->beta1, &a->beta1, 4) || memcmp(&o->beta2, &a->beta2, 4) ||
        memcmp(&o->eps, &a->eps, 4) || memcmp(&o->weight_decay, &a->weight_decay, 4))
        return 0;
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i]->calls != snap.calls[i] || m->layers[i]->seed != snap.seeds[i]) return 0;
    return m->seed == snap.model_seed && !memcmp(blob, snap.blob, sizeof snap.blob);
}

static void fix_integrity(uint8_t *b, size_t len)
{
    for (int i = 0; i < 8; i++) b[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    uLong crc = crc32(crc32(0L, Z_NULL, 0), b + 24, (uInt)(len - 28));
    for (int i = 0; i < 4; i++) b[len - 4 + i] = (uint8_t)(crc >> (8 * i));
}

/* Loads path with the optimizer and a blob buffer; returns the status and
 * checks the refusal contract when it fails. */
static nn_status try_load(const char *path, const char *what, size_t where)
{
    uint8_t blob[64];
    memcpy(blob, snap.blob, sizeof blob);
    size_t blob_len = 777;
    nn_clear_error();
    nn_status s = nn_checkpoint_load(path, model, opt, blob, sizeof blob, &blob_len);
    if (s == NN_OK) return s;
    if (!unchanged(model, opt, blob) || blob_len != 777)
        fail_msg("%s at %zu: refused (%s) but the state changed", what, where, nn_last_error());
    if (!strstr(nn_last_error(), path))
        fail_msg("%s at %zu: message '%s' does not name the file", what, where, nn_last_error());
    return s;
}

static int setup(void **state)
{
    if (test_dir_setup(state) != 0) return -1;
    /* The reference file, from a model trained a few steps. */
    nn_model *m = make_model(SPEC, 5);
    optim *o = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 1e-4f, 1);
    train(m, o, 3, 1);
    assert_ok(nn_checkpoint_save(test_path("ref.ckpt"), m, o, blob_ref, sizeof blob_ref));
    good = test_read_bytes(test_path("ref.ckpt"), &good_len);
    nn_model_free(m);
    optim_free(o);
    /* The model loaded into: same network, other weights and state. */
    model = make_model(SPEC, 99);
    opt = optim_adam_create(3e-3f, 0.8f, 0.99f, 1e-8f, 0.0f, 0);
    train(model, opt, 2, 2);
    uint8_t blob[64];
    memset(blob, 0x5a, sizeof blob);
    take_snapshot(model, opt, blob);
    return 0;
}

static int teardown(void **state)
{
    test_dir_teardown(state);
    free(good);
    free(snap.params);
    free(snap.buffers);
    free(snap.state);
    nn_model_free(model);
    optim_free(opt);
    return 0;
}

/* Header length, from the file's own prefix. */
static size_t header_len(void)
{
    size_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | good[24 + i];
    return h;
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    const char *p = test_path("cut.ckpt");
    for (size_t len = 0; len < good_len; len++) {
        test_write_bytes(p, good, len);
        nn_status s = try_load(p, "truncated", len);
        if (s != NN_ERR_FORMAT) fail_msg("cut at %zu: status %d, %s", len, s, nn_last_error());
        assert_error_contains(len < 8 ? "bad magic" : "truncated");
    }
    printf("    %zu truncations of a %zu-byte file refused\n", good_len, good_len);
}

static void test_every_byte_flipped(void **state)
{
    (void)state;
    const char *p = test_path("flip.ckpt");
    uint8_t *b = malloc(good_len);
    int crc = 0;
    for (size_t at = 0; at < good_len; at++) {
        memcpy(b, good, good_len);
        b[at] ^= 0x41;
        test_write_bytes(p, b, good_len);
        nn_status s = try_load(p, "flipped byte", at);
        if (s != NN_ERR_FORMAT) fail_msg("byte %zu flipped: status %d, %s", at, s, nn_last_error());
        const char *want = at < 8 ? "bad magic" : at < 12 ? "format version" : at < 16 ? "reserved field"
                         : at < 24 ? "the header at offset 16 says" : "CRC-32 mismatch";
        if (!strstr(nn_last_error(), want))
            fail_msg("byte %zu flipped: '%s' does not say '%s'", at, nn_last_error(), want);
        crc += at >= 24;
    }
    printf("    %zu single-byte flips refused (%d of them by the CRC)\n", good_len, crc);
    free(b);
}

static uint32_t read_u32(size_t at)
{
    return (uint32_t)good[at] | (uint32_t)good[at + 1] << 8 | (uint32_t)good[at + 2] << 16 |
           (uint32_t)good[at + 3] << 24;
}

/* Marks in is_config the bytes of the header that are the text of a layer's
 * config (not its length), walking the layout of nn/io/checkpoint.h. */
static void config_bytes(uint8_t *is_config)
{
    size_t at = 32 + 8;
    at += 4 + 4 * (size_t)read_u32(at);
    const uint32_t n_layers = read_u32(at);
    at += 4;
    for (uint32_t i = 0; i < n_layers; i++) {
        at += 4 + read_u32(at); /* type */
        at += 4 + read_u32(at); /* name */
        const uint32_t n = read_u32(at);
        memset(is_config + at + 4, 1, n);
        at += 4 + n;
        const uint32_t n_params = read_u32(at);
        at += 4;
        for (uint32_t k = 0; k < n_params; k++) {
            at += 4 + read_u32(at); /* name */
            at += 4;                /* trainable */
            at += 4 + 4 * (size_t)read_u32(at);
        }
    }
}

/* Behind the CRC: each header byte changed, size and CRC made consistent. */
static void test_header_bytes_behind_the_crc(void **state)
{
    (void)state;
    const char *p = test_path("hdr.ckpt");
    const size_t H = header_len(), end = 32 + H;
    uint8_t *is_config = calloc(good_len, 1);
    config_bytes(is_config);
    int n_config = 0;
    for (size_t at = 32; at < end; at++) n_config += is_config[at];
    assert_true(n_config > 0);
    uint8_t *b = malloc(good_len);
    int refused = 0, loaded = 0;
    for (size_t at = 32; at < end; at++) {
        for (int variant = 0; variant < 2; variant++) {
            memcpy(b, good, good_len);
            b[at] = variant ? (uint8_t)(b[at] + 1) : (uint8_t)(b[at] ^ 0x80);
            fix_integrity(b, good_len);
            test_write_bytes(p, b, good_len);
            nn_status s = try_load(p, "header byte", at);
            if (s == NN_OK) {
                /* Only the model seed (the header's first 8 bytes) and
                 * the config texts may change without making the file
                 * describe other parameters. */
                if (at >= 40 && !is_config[at])
                    fail_msg("header byte %zu changed, and the file still loaded", at);
                loaded++;
                /* Undo, for the next round. */
                memcpy(model->params, snap.params, model->n_params * sizeof(float));
                memcpy(model->buffers, snap.buffers, model->n_buffers * sizeof(float));
                memcpy(opt->state, snap.state, snap.n_state * sizeof(float));
                float *st = opt->state;
                *opt = snap.opt;
                opt->state = st;
                snap.opt.state = st;
                for (int i = 0; i < model->n_layers; i++) {
                    model->layers[i]->calls = snap.calls[i];
                    model->layers[i]->seed = snap.seeds[i];
                }
                model->seed = snap.model_seed;
                continue;
            }
            refused++;
        }
    }
    printf("    header bytes 32..%zu: %d changes refused, %d accepted (the model seed, %d bytes "
           "of config text)\n", end, refused, loaded, n_config);
    assert_true(refused >= 2 * (int)(H - 8 - (size_t)n_config));
    free(b);
    free(is_config);
}

/* Bytes of the payload, CRC fixed: floats of the weights are data (any bit
 * pattern loads), but optimizer hyperparameters must be in range. */
static void test_optimizer_fields_behind_the_crc(void **state)
{
    (void)state;
    const size_t H = header_len();
    const size_t layers_at = 32 + H + 4 * (model->n_params + model->n_buffers);
    const size_t opt_at = layers_at + 16 * (size_t)model->n_layers;
    /* lr, momentum, nesterov, beta1, beta2, eps, weight_decay, decoupled */
    const struct {
        int field;
        uint32_t bits;
        const char *name;
    } bad[] = {
        {0, 0x7fc00000u, "lr NaN"},       {0, 0x00000000u, "lr 0"},
        {0, 0xbf800000u, "lr -1"},        {0, 0x7f800000u, "lr inf"},
        {3, 0x3f800000u, "beta1 1"},      {4, 0xbf000000u, "beta2 -0.5"},
        {5, 0x00000000u, "eps 0"},        {5, 0x7fc00000u, "eps NaN"},
        {6, 0xbf800000u, "weight_decay -1"}, {7, 7u, "decoupled 7"},
    };
    uint8_t *b = malloc(good_len);
    const char *p = test_path("opt.ckpt");
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memcpy(b, good, good_len);
        for (int i = 0; i < 4; i++) b[opt_at + 4 * (size_t)bad[k].field + (size_t)i] = (uint8_t)(bad[k].bits >> (8 * i));
        fix_integrity(b, good_len);
        test_write_bytes(p, b, good_len);
        if (try_load(p, bad[k].name, opt_at) != NN_ERR_FORMAT)
            fail_msg("%s: not refused (%s)", bad[k].name, nn_last_error());
        assert_error_contains("adam hyperparameters out of range at offset");
    }
    /* A weight set to NaN is data, not damage: it loads (training would
     * then stop on a non-finite loss, see test_mnist_train.c). */
    memcpy(b, good, good_len);
    const uint32_t nan_bits = 0x7fc00000u;
    memcpy(b + 32 + H, &nan_bits, 4);
    fix_integrity(b, good_len);
    test_write_bytes(p, b, good_len);
    nn_model *m = make_model(SPEC, 1);
    assert_ok(nn_checkpoint_load(p, m, NULL, NULL, 0, NULL));
    assert_true(isnan(m->params[0]));
    nn_model_free(m);
    free(b);
}

static void test_other_versions_networks_optimizers(void **state)
{
    (void)state;
    uint8_t *b = malloc(good_len);
    const char *p = test_path("v.ckpt");
    for (uint32_t v = 0; v < 4; v++) {
        if (v == NN_CHECKPOINT_VERSION || v == NN_CHECKPOINT_VERSION_INPUTS) continue;
        memcpy(b, good, good_len);
        b[8] = (uint8_t)v;
        fix_integrity(b, good_len);
        test_write_bytes(p, b, good_len);
        assert_int_equal(try_load(p, "version", v), NN_ERR_FORMAT);
        char want[96];
        snprintf(want, sizeof want, "checkpoint format version %u at offset 8; this build reads "
                 "versions %u and %u", v, NN_CHECKPOINT_VERSION, NN_CHECKPOINT_VERSION_INPUTS);
        assert_error_contains(want);
    }
    free(b);

    /* Another network: one more filter. */
    nn_model *other = make_model("conv2d filters=3 kernel_size=3 activation=relu\nbatchnorm\n"
                                 "spatial_dropout2d rate=0.5\nflatten\ndropout rate=0.25\n"
                                 "dense units=3\n", 1);
    float *before = malloc(other->n_params * sizeof(float));
    memcpy(before, other->params, other->n_params * sizeof(float));
    assert_int_equal(nn_checkpoint_load(test_path("ref.ckpt"), other, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("layer 0 (conv2d_1): checkpoint has conv2d filters=2, model has conv2d filters=3");
    assert_memory_equal(before, other->params, other->n_params * sizeof(float));
    free(before);
    nn_model_free(other);
    /* Another spatial dropout rate holds the same parameters: it loads,
     * weights, buffers and counters, and keeps its own rate. */
    other = make_model("conv2d filters=2 kernel_size=3 activation=relu\nbatchnorm\n"
                       "spatial_dropout2d rate=0.3\nflatten\ndropout rate=0.25\ndense units=3\n", 1);
    nn_model *same = make_model(SPEC, 1);
    assert_ok(nn_checkpoint_load(test_path("ref.ckpt"), other, NULL, NULL, 0, NULL));
    assert_ok(nn_checkpoint_load(test_path("ref.ckpt"), same, NULL, NULL, 0, NULL));
    assert_memory_equal(other->params, same->params, same->n_params * sizeof(float));
    assert_memory_equal(other->buffers, same->buffers, same->n_buffers * sizeof(float));
    for (int i = 0; i < same->n_layers; i++)
        assert_int_equal(other->layers[i]->calls, same->layers[i]->calls);
    char spec[512];
    assert_ok(nn_model_spec_string(other, spec, sizeof spec));
    assert_non_null(strstr(spec, "spatial_dropout2d rate=0.3"));
    nn_model_free(same);
    nn_model_free(other);

    /* Another optimizer, and a blob buffer that is too small. */
    optim *sgd = optim_sgd_create(0.1f, 0.9f, 0, 0.0f);
    nn_model *m = make_model(SPEC, 1);
    assert_int_equal(nn_checkpoint_load(test_path("ref.ckpt"), m, sgd, NULL, 0, NULL), NN_ERR_STATE);
    assert_error_contains("checkpoint has optimizer adam, the run uses sgd");
    assert_int_equal(try_load(test_path("ref.ckpt"), "loaded", 0), NN_OK); /* control: it loads */
    uint8_t tiny[4] = {1, 2, 3, 4};
    assert_int_equal(nn_checkpoint_load(test_path("ref.ckpt"), m, NULL, tiny, sizeof tiny, NULL), NN_ERR_ARG);
    assert_error_contains("the training-state blob has 16 bytes, the buffer 4");
    assert_int_equal(tiny[0], 1);
    optim_free(sgd);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_every_byte_flipped),
        cmocka_unit_test(test_header_bytes_behind_the_crc),
        cmocka_unit_test(test_optimizer_fields_behind_the_crc),
        cmocka_unit_test(test_other_versions_networks_optimizers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
