/* .safetensors export and import.
 *
 *  - Round trip: a trained model's parameters, exported and loaded into a
 *    fresh model with other initial weights, give bit-identical predictions.
 *  - The file follows the format: 8-byte aligned data, header JSON with the
 *    documented names, shapes, offsets and metadata.
 *  - Malformed files (hand-written headers, every truncation, random byte
 *    flips) are rejected with messages and leave the model unchanged.
 *  - PyTorch cross-check: the MNIST network (examples/mnist_cnn.txt) is
 *    exported with inputs and logits as .npy, tests/torch_roundtrip.py
 *    rebuilds it in PyTorch from the file alone and compares; its logits come
 *    back through numpy.save and are compared here too. Skipped, with a
 *    message, when /usr/bin/python3 or its torch is not installed.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static int setup(void **state)
{
    /* Pin the data format: no test may depend on the user's default. */
    nn_set_image_data_format(NN_CHANNELS_LAST);
    return test_dir_setup(state);
}

static int teardown(void **state)
{
    test_dir_teardown(state);
    nn_reset_image_data_format();
    return 0;
}

static tensor *random_input(int n, int rank, const int *shape, uint64_t seed)
{
    int full[TENSOR_MAX_RANK];
    full[0] = n;
    memcpy(full + 1, shape, (size_t)rank * sizeof *shape);
    tensor *x = tensor_create(rank + 1, full);
    tensor_rng rng;
    tensor_rng_seed(&rng, seed);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    return x;
}

/* A few Adam steps, so biases and kernels are far from their initial values. */
static void train(nn_model *m, tensor *x, int classes, int steps)
{
    int labels[64];
    for (int i = 0; i < x->shape[0]; i++) labels[i] = i % classes;
    optim *o = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    for (int s = 0; s < steps; s++) assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
    optim_free(o);
}

/* Eval-mode logits, copied out of the arena. */
static tensor *predict(nn_model *m, tensor *x)
{
    tensor *y;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    tensor *c = tensor_create(y->rank, y->shape);
    memcpy(c->data, y->data, y->size * sizeof(float));
    return c;
}

static const char *const small_spec =
    "spatial_dropout2d rate=0.25 data_format=channels_last\n"
    "flatten\n"
    "dense units=16 activation=relu\n"
    "dropout rate=0.5\n"
    "dense units=5\n";

static void test_round_trip(void **state)
{
    (void)state;
    const int shape[3] = {6, 6, 2};
    nn_model *a = test_make_model(small_spec, 3, shape, 11);
    tensor *x = random_input(8, 3, shape, 3);
    train(a, x, 5, 5);
    tensor *ya = predict(a, x);
    const char *p = test_path("small.safetensors");
    assert_ok(nn_safetensors_save(a, p));

    nn_model *b = test_make_model(small_spec, 3, shape, 12);
    tensor *yb = predict(b, x);
    /* Different initial weights: the comparison below can fail. */
    assert_memory_not_equal(ya->data, yb->data, ya->size * sizeof(float));
    tensor_free(yb);
    assert_ok(nn_safetensors_load(b, p));
    yb = predict(b, x);
    assert_memory_equal(ya->data, yb->data, ya->size * sizeof(float));
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));

    /* The same through the in-memory parser. */
    size_t n;
    unsigned char *bytes = test_read_bytes(p, &n);
    nn_model *c = test_make_model(small_spec, 3, shape, 13);
    assert_ok(nn_safetensors_parse(c, bytes, n, "mem"));
    assert_memory_equal(a->params, c->params, a->n_params * sizeof(float));
    free(bytes);

    tensor_free(ya);
    tensor_free(yb);
    tensor_free(x);
    nn_model_free(a);
    nn_model_free(b);
    nn_model_free(c);
}

static const cJSON *expect_entry(const cJSON *root, const char *name, int rank, const int *shape)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!e) fail_msg("header has no tensor '%s'", name);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, "F32");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "shape");
    assert_int_equal(cJSON_GetArraySize(s), rank);
    for (int i = 0; i < rank; i++) assert_int_equal(cJSON_GetArrayItem(s, i)->valueint, shape[i]);
    return cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
}

static void test_file_layout(void **state)
{
    (void)state;
    const int shape[3] = {6, 6, 2};
    nn_model *m = test_make_model(small_spec, 3, shape, 21);
    tensor *x = random_input(4, 3, shape, 5);
    train(m, x, 5, 2);
    const char *p = test_path("layout.safetensors");
    assert_ok(nn_safetensors_save(m, p));
    size_t n;
    unsigned char *b = test_read_bytes(p, &n);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | b[k];
    assert_int_equal((8 + hlen) % 8, 0);
    assert_true(8 + hlen <= n);
    assert_int_equal(b[8], '{');
    const size_t data_len = n - 8 - (size_t)hlen;
    assert_int_equal(data_len, m->n_params * sizeof(float));

    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, (size_t)hlen);
    assert_non_null(root);
    /* Four tensors and the metadata, nothing else. */
    assert_int_equal(cJSON_GetArraySize(root), 5);
    const cJSON *o1 = expect_entry(root, "dense_1.kernel", 2, (int[]){72, 16});
    const cJSON *o2 = expect_entry(root, "dense_1.bias", 1, (int[]){16});
    const cJSON *o3 = expect_entry(root, "dense_2.kernel", 2, (int[]){16, 5});
    const cJSON *o4 = expect_entry(root, "dense_2.bias", 1, (int[]){5});
    const cJSON *offs[4] = {o1, o2, o3, o4};
    const tensor *params[4] = {m->layers[2]->params[0].t, m->layers[2]->params[1].t,
                               m->layers[4]->params[0].t, m->layers[4]->params[1].t};
    for (int i = 0; i < 4; i++) {
        size_t begin = (size_t)cJSON_GetArrayItem(offs[i], 0)->valuedouble;
        size_t end = (size_t)cJSON_GetArrayItem(offs[i], 1)->valuedouble;
        assert_int_equal(end - begin, params[i]->size * 4);
        /* Little-endian float32 on this (little-endian) machine: the raw bytes. */
        assert_memory_equal(b + 8 + hlen + begin, params[i]->data, end - begin);
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    assert_non_null(meta);
    char spec[4096];
    assert_ok(nn_model_spec_string(m, spec, sizeof spec));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "nn_spec")->valuestring, spec);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "nn_input_shape")->valuestring,
                        "6,6,2");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "nn");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "nn_version")->valuestring,
                        nn_version());
    assert_non_null(strstr(cJSON_GetObjectItemCaseSensitive(meta, "nn_layout")->valuestring,
                           "(KH, KW, Cin, Cout)"));
    /* The padding, if any, is spaces. */
    const char *end = (const char *)b + 8 + hlen;
    const char *close = end;
    while (close[-1] == ' ') close--;
    assert_int_equal(close[-1], '}');
    assert_true(end - close < 8);
    cJSON_Delete(root);
    free(b);
    tensor_free(x);
    nn_model_free(m);
}

/* The tiny model the malformed-file cases load into: dense_1.kernel (3, 2)
 * at data bytes [0, 24), dense_1.bias (2) at [24, 32). */
#define TINY_SPEC "dense units=2\n"
#define K_OK "\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}"
#define B_OK "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}"

/* Writes 8-byte length, header (padded to 8 with spaces), data_len bytes. */
static size_t make_file(unsigned char *out, const char *header, size_t data_len)
{
    size_t len = strlen(header), padded = (len + 7) / 8 * 8;
    for (int k = 0; k < 8; k++) out[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    memcpy(out + 8, header, len);
    memset(out + 8 + len, ' ', padded - len);
    for (size_t i = 0; i < data_len; i++) out[8 + padded + i] = (unsigned char)(i * 7 + 1);
    return 8 + padded + data_len;
}

/* Loads through the file and the memory paths; both must fail with `want`,
 * the same message containing `needle`, and leave the model unchanged. */
static void expect_reject(nn_model *m, const char *name, const unsigned char *b, size_t n,
                          nn_status want, const char *needle)
{
    float before[8];
    memcpy(before, m->params, sizeof before);
    const char *p = test_path(name);
    test_write_bytes(p, b, n);
    nn_status s1 = nn_safetensors_load(m, p);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nn_last_error());
    nn_status s2 = nn_safetensors_parse(m, b, n, p);
    if (s1 != want || s2 != want)
        fail_msg("%s: load gave %s (%s), parse gave %s (%s), wanted %s", name, nn_status_str(s1),
                 msg, nn_status_str(s2), nn_last_error(), nn_status_str(want));
    assert_string_equal(msg, nn_last_error());
    assert_error_contains(name);
    if (needle && !strstr(msg, needle)) fail_msg("%s: message '%s' lacks '%s'", name, msg, needle);
    assert_memory_equal(before, m->params, sizeof before);
}

static void test_malformed(void **state)
{
    (void)state;
    nn_model *m = test_make_model(TINY_SPEC, 1, (int[]){3}, 1);
    unsigned char buf[1024];
    /* The valid file first: the cases below differ from it in one thing. */
    size_t n = make_file(buf, "{" K_OK "," B_OK "}", 32);
    assert_ok(nn_safetensors_parse(m, buf, n, "valid"));
    for (int i = 0; i < 8; i++) {
        uint32_t u = 0;
        for (int k = 0; k < 4; k++) u |= (uint32_t)(unsigned char)((i * 4 + k) * 7 + 1) << (8 * k);
        float f;
        memcpy(&f, &u, 4);
        assert_memory_equal(&m->params[i], &f, 4);
    }
    n = make_file(buf, "{\"__metadata__\":{\"a\":\"b\"}," B_OK "," K_OK "}", 32);
    assert_ok(nn_safetensors_parse(m, buf, n, "valid, other order"));

    static const struct {
        const char *name, *header;
        size_t data_len;
        nn_status want;
        const char *needle;
    } cases[] = {
        {"dtype", "{\"dense_1.kernel\":{\"dtype\":\"F16\",\"shape\":[3,2],\"data_offsets\":[0,12]},"
                  B_OK "}", 32, NN_ERR_FORMAT, "dtype 'F16' is not supported"},
        {"shape", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                  B_OK "}", 32, NN_ERR_SHAPE, "has shape (2, 3) in the file, the model has (3, 2)"},
        {"rank", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                 B_OK "}", 32, NN_ERR_SHAPE, "has shape (6,) in the file"},
        {"missing", "{" K_OK "}", 24, NN_ERR_FORMAT, "'dense_1.bias' (shape (2,)) is not in the file"},
        {"extra", "{" K_OK "," B_OK ",\"dense_2.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[32,40]}}", 40, NN_ERR_FORMAT,
         "'dense_2.bias' is not a parameter of the model"},
        {"dup", "{" K_OK "," B_OK "," B_OK "}", 32, NN_ERR_FORMAT, "appears twice"},
        {"reordered", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[8,32]},"
                      "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 32,
         NN_OK, NULL},
        {"overlap2", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
                     "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
         32, NN_ERR_FORMAT, "overlap"},
        {"gap", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
                "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]}}", 36,
         NN_ERR_FORMAT, "data bytes 24 to 28 belong to no tensor"},
        {"tail", "{" K_OK "," B_OK "}", 40, NN_ERR_FORMAT, "data bytes 32 to 40 belong to no tensor"},
        {"short_data", "{" K_OK "," B_OK "}", 28, NN_ERR_FORMAT, "within the 28 bytes of data"},
        {"size", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,20]},"
                 "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,32]}}", 32,
         NN_ERR_FORMAT, "shape (3, 2) needs 24"},
        {"backwards", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[24,0]},"
                      B_OK "}", 32, NN_ERR_FORMAT, "negative number of"},
        {"fraction", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24.5]},"
                     B_OK "}", 32, NN_ERR_FORMAT, "whole numbers"},
        {"negative", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[-8,24]},"
                     B_OK "}", 32, NN_ERR_FORMAT, "data_offsets must be"},
        {"huge", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,1e300]},"
                 B_OK "}", 32, NN_ERR_FORMAT, "data_offsets must be"},
        {"three_offsets", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],"
                          "\"data_offsets\":[0,24,32]}," B_OK "}", 32, NN_ERR_FORMAT,
         "data_offsets must be"},
        {"string_offset", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],"
                          "\"data_offsets\":[\"0\",24]}," B_OK "}", 32, NN_ERR_FORMAT,
         "data_offsets must be"},
        {"shape_neg", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,-2],\"data_offsets\":[0,24]},"
                      B_OK "}", 32, NN_ERR_FORMAT, "shape[1] is not a whole number"},
        {"shape_big", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[4000000000,2],"
                      "\"data_offsets\":[0,24]}," B_OK "}", 32, NN_ERR_FORMAT, "shape[0]"},
        {"shape_product", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[8,8,8],"
                          "\"data_offsets\":[0,24]}," B_OK "}", 32, NN_ERR_FORMAT,
         "needs more bytes than"},
        {"shape_obj", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,24]},"
                      B_OK "}", 32, NN_ERR_FORMAT, "shape must be an array"},
        {"no_dtype", "{\"dense_1.kernel\":{\"shape\":[3,2],\"data_offsets\":[0,24]}," B_OK "}", 32,
         NN_ERR_FORMAT, "field 'dtype' is missing"},
        {"dtype_num", "{\"dense_1.kernel\":{\"dtype\":4,\"shape\":[3,2],\"data_offsets\":[0,24]},"
                      B_OK "}", 32, NN_ERR_FORMAT, "dtype must be a string"},
        {"field", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24],"
                  "\"x\":1}," B_OK "}", 32, NN_ERR_FORMAT, "unknown field 'x'"},
        {"field_twice", "{\"dense_1.kernel\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[3,2],"
                        "\"data_offsets\":[0,24]}," B_OK "}", 32, NN_ERR_FORMAT,
         "field 'dtype' appears twice"},
        {"entry_array", "{\"dense_1.kernel\":[1,2]," B_OK "}", 32, NN_ERR_FORMAT,
         "expected an object"},
        {"meta_num", "{\"__metadata__\":{\"a\":1}," K_OK "," B_OK "}", 32, NN_ERR_FORMAT,
         "__metadata__ entry 'a' is not a string"},
        {"meta_twice", "{\"__metadata__\":{},\"__metadata__\":{}," K_OK "," B_OK "}", 32,
         NN_ERR_FORMAT, "__metadata__ appears twice"},
        {"meta_array", "{\"__metadata__\":[]," K_OK "," B_OK "}", 32, NN_ERR_FORMAT,
         "__metadata__ must be an object"},
        {"not_object", "[1,2]", 32, NN_ERR_FORMAT, "does not start with '{'"},
        {"json_syntax", "{\"dense_1.kernel\":{\"dtype\":\"F32\",,}}", 32, NN_ERR_FORMAT,
         "malformed near offset"},
        {"json_after", "{" K_OK "," B_OK "}x", 32, NN_ERR_FORMAT, "byte 0x78 at offset"},
        {"layer_prefix", "{\"dense_1kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],"
                         "\"data_offsets\":[0,24]}," B_OK "}", 32, NN_ERR_FORMAT,
         "not a parameter of the model"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (cases[k].want == NN_OK) {
            /* Data in another order than the model's is fine. */
            n = make_file(buf, cases[k].header, cases[k].data_len);
            assert_ok(nn_safetensors_parse(m, buf, n, cases[k].name));
            continue;
        }
        n = make_file(buf, cases[k].header, cases[k].data_len);
        expect_reject(m, cases[k].name, buf, n, cases[k].want, cases[k].needle);
    }

    /* Header length field problems. */
    n = make_file(buf, "{" K_OK "," B_OK "}", 32);
    unsigned char bad[sizeof buf];
    memcpy(bad, buf, n);
    bad[0] = (unsigned char)(bad[0] + 8);
    expect_reject(m, "hlen_long", bad, n, NN_ERR_FORMAT, NULL);
    memcpy(bad, buf, n);
    memset(bad, 0xff, 8);
    expect_reject(m, "hlen_huge", bad, n, NN_ERR_FORMAT, "over the limit");
    memcpy(bad, buf, n);
    bad[2] = 0x10; /* about 1 MB: under the limit, past the end */
    expect_reject(m, "hlen_past", bad, n, NN_ERR_FORMAT, "runs past the end");
    memset(bad, 0, 8);
    expect_reject(m, "hlen_zero", bad, 8, NN_ERR_FORMAT, "does not start with '{'");
    expect_reject(m, "short", buf, 5, NN_ERR_FORMAT, "the header length alone takes 8");
    /* Every truncation of the valid file. */
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_not_equal(nn_safetensors_parse(m, buf, cut, "cut"), NN_OK);
        assert_error_contains("cut");
    }
    /* Wrong model: the valid file into a model of another width. */
    nn_model *w = test_make_model("dense units=3\n", 1, (int[]){3}, 1);
    assert_int_equal(nn_safetensors_parse(w, buf, n, "wide"), NN_ERR_SHAPE);
    assert_error_contains("'dense_1.kernel' has shape (3, 2) in the file, the model has (3, 3)");
    nn_model_free(w);
    /* Unbuilt model, NULL arguments, missing file. */
    nn_model *u = nn_model_create(1);
    assert_ok(nn_model_add(u, "dense", "units=2"));
    assert_int_equal(nn_safetensors_parse(u, buf, n, "x"), NN_ERR_STATE);
    assert_int_equal(nn_safetensors_save(u, test_path("u.safetensors")), NN_ERR_STATE);
    nn_model_free(u);
    assert_int_equal(nn_safetensors_load(m, test_path("absent.safetensors")), NN_ERR_IO);
    assert_error_contains("absent.safetensors: cannot open");
    assert_int_equal(nn_safetensors_load(NULL, "x"), NN_ERR_ARG);
    assert_int_equal(nn_safetensors_save(m, NULL), NN_ERR_ARG);
    assert_int_equal(nn_safetensors_save(m, "/nonexistent-dir/m.safetensors"), NN_ERR_IO);
    assert_error_contains("/nonexistent-dir/m.safetensors");
    nn_model_free(m);
}

/* Random byte flips and truncations of a real export: never a crash or a
 * sanitizer report; a rejected file leaves the model unchanged. */
static void test_mutations(void **state)
{
    (void)state;
    const int shape[3] = {6, 6, 2};
    nn_model *m = test_make_model(small_spec, 3, shape, 31);
    const char *p = test_path("mut.safetensors");
    assert_ok(nn_safetensors_save(m, p));
    size_t n;
    unsigned char *orig = test_read_bytes(p, &n), *b = malloc(n);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | orig[k];
    float *before = malloc(m->n_params * sizeof(float));
    tensor_rng rng;
    tensor_rng_seed(&rng, 77);
    int rejected = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, orig, n);
        int flips = 1 + (int)tensor_rng_below(&rng, 3);
        for (int f = 0; f < flips; f++) {
            /* Mostly in the header, where the structure is. */
            size_t at = tensor_rng_below(&rng, 4) ? tensor_rng_below(&rng, (uint32_t)(8 + hlen))
                                                  : tensor_rng_below(&rng, (uint32_t)n);
            b[at] = (unsigned char)tensor_rng_below(&rng, 256);
        }
        size_t len = tensor_rng_below(&rng, 8) ? n : tensor_rng_below(&rng, (uint32_t)n);
        memcpy(before, m->params, m->n_params * sizeof(float));
        if (nn_safetensors_parse(m, b, len, "mutant") != NN_OK) {
            rejected++;
            assert_memory_equal(before, m->params, m->n_params * sizeof(float));
            assert_true(strlen(nn_last_error()) > 0);
        }
    }
    assert_true(rejected > 1000);
    free(before);
    free(orig);
    free(b);
    nn_model_free(m);
}

/* ------------------------------------------------------ PyTorch cross-check */

static int have_torch_python(void)
{
    return access("/usr/bin/python3", X_OK) == 0 && access("tests/torch_roundtrip.py", R_OK) == 0;
}

/* Exports a model built from spec_path (a file) or spec (text) for input
 * (H, W, C) in format fmt, runs the script on it and compares. */
static void torch_case(const char *tag, const char *spec_path, const char *spec, const int hwc[3],
                       int classes, nn_data_format fmt)
{
    if (!have_torch_python()) {
        printf("    skipped: /usr/bin/python3 or tests/torch_roundtrip.py not found\n");
        skip();
    }
    assert_ok(nn_set_image_data_format(fmt));
    nn_model *m = nn_model_create(2024);
    if (spec_path) assert_ok(nn_model_load_spec(m, spec_path));
    else assert_ok(nn_model_add_spec(m, spec));
    const int chw[3] = {hwc[2], hwc[0], hwc[1]};
    const int *shape = fmt == NN_CHANNELS_LAST ? hwc : chw;
    assert_ok(nn_model_build(m, 3, shape));
    tensor *x = random_input(16, 3, shape, 9);
    train(m, x, classes, 3);
    tensor *y = predict(m, x);
    char sub[64];
    snprintf(sub, sizeof sub, "%s, %s", tag, nn_data_format_name(fmt));
    assert_ok(nn_safetensors_save(m, test_path("model.safetensors")));
    assert_ok(nn_npy_save(test_path("inputs.npy"), x));
    assert_ok(nn_npy_save(test_path("logits.npy"), y));
    unlink(test_path("torch_logits.npy"));

    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/torch_roundtrip.py %s", test_dir());
    fflush(stdout);
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
        fail_msg("%s: %s failed (status %d)", sub, cmd, rc);

    tensor *t = NULL;
    if (access(test_path("torch_logits.npy"), R_OK) != 0) {
        /* The script printed why it skipped (no numpy or no torch). */
        tensor_free(y);
        tensor_free(x);
        nn_model_free(m);
        skip();
    }
    /* numpy.save wrote these; reading them back is the numpy -> nn check. */
    assert_ok(nn_npy_load(test_path("torch_logits.npy"), &t));
    assert_int_equal(t->rank, 2);
    assert_memory_equal(t->shape, y->shape, sizeof t->shape);
    double max_err = 0.0, max_abs = 0.0;
    for (size_t i = 0; i < y->size; i++) {
        max_err = fmax(max_err, fabs((double)t->data[i] - y->data[i]));
        max_abs = fmax(max_abs, fabs((double)y->data[i]));
    }
    printf("    %s: max |torch - nn| = %.3g (logits up to %.3g)\n", sub, max_err, max_abs);
    assert_true(max_err <= 1e-4 * (1.0 + max_abs));
    /* numpy re-saved our input file byte for byte: our header is numpy's. */
    size_t n1, n2;
    unsigned char *ours = test_read_bytes(test_path("inputs.npy"), &n1);
    unsigned char *theirs = test_read_bytes(test_path("numpy_inputs.npy"), &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(ours, theirs, n1);
    free(ours);
    free(theirs);
    tensor_free(t);
    tensor_free(y);
    tensor_free(x);
    nn_model_free(m);
    assert_ok(nn_set_image_data_format(NN_CHANNELS_LAST));
}

/* The MNIST network of examples/mnist_cnn.txt: conv2d, maxpool2d,
 * spatial_dropout2d, flatten, dense, dropout. */
static const int mnist_hwc[3] = {28, 28, 1};

static void test_torch_mnist_channels_last(void **state)
{
    (void)state;
    torch_case("mnist_cnn", "examples/mnist_cnn.txt", NULL, mnist_hwc, 10, NN_CHANNELS_LAST);
}

static void test_torch_mnist_channels_first(void **state)
{
    (void)state;
    torch_case("mnist_cnn", "examples/mnist_cnn.txt", NULL, mnist_hwc, 10, NN_CHANNELS_FIRST);
}

/* Odd sizes, strides, 'same' padding (odd totals, so the extra row and
 * column go bottom/right), dilation, no bias, average pooling, and batchnorm
 * whose moving statistics are non-trainable tensors in the file. */
static const char *const mixed_spec =
    "conv2d filters=6 kernel_size=3 strides=2 padding=same activation=relu\n"
    "batchnorm\n"
    "avgpool2d pool_size=2 strides=1 padding=same\n"
    "spatial_dropout2d rate=0.3\n"
    "conv2d filters=5 kernel_size=2 dilation_rate=2 use_bias=false\n"
    "maxpool2d pool_size=3 strides=2 padding=same\n"
    "flatten\n"
    "dense units=12 activation=relu\n"
    "batchnorm\n"
    "dropout rate=0.2\n"
    "dense units=4\n";
static const int mixed_hwc[3] = {15, 15, 3};

static void test_torch_mixed_channels_last(void **state)
{
    (void)state;
    torch_case("mixed", NULL, mixed_spec, mixed_hwc, 4, NN_CHANNELS_LAST);
}

static void test_torch_mixed_channels_first(void **state)
{
    (void)state;
    torch_case("mixed", NULL, mixed_spec, mixed_hwc, 4, NN_CHANNELS_FIRST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_file_layout),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_torch_mnist_channels_last),
        cmocka_unit_test(test_torch_mnist_channels_first),
        cmocka_unit_test(test_torch_mixed_channels_last),
        cmocka_unit_test(test_torch_mixed_channels_first),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
