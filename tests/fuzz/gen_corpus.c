/* Writes the committed seed corpora of the file-format harnesses
 * (tests/fuzz/corpus/{idx,checkpoint,npy,safetensors,onnx}/) with the library's
 * own writers, so the seeds are valid files of the current formats. Run it
 * again after a format change:
 *     make BUILD=build lib
 *     gcc -std=c11 -D_POSIX_C_SOURCE=200809L -I. -fopenmp tests/fuzz/gen_corpus.c \
 *         build/libnn.a $(pkg-config --libs openblas zlib libcjson libpng) -lm -o build/gen_corpus
 *     build/gen_corpus tests/fuzz/corpus
 * Each harness reads a leading mode byte before the file where its header
 * says so (idx, checkpoint); the seeds carry it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fuzz_io.h"

static const char *root;

static void put(const char *dir, const char *name, uint8_t mode, int with_mode, const void *data,
                size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (with_mode) fputc(mode, f);
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    if (fread(b, 1, *len, f) != *len) exit(1);
    fclose(f);
    remove(path);
    return b;
}

static void check(nn_status s)
{
    if (s != NN_OK) {
        fprintf(stderr, "gen_corpus: %s\n", nn_last_error());
        exit(1);
    }
}

static size_t gzip_bytes(const uint8_t *in, size_t n, uint8_t **out)
{
    const char *tmp = "/tmp/nn_gen_corpus.gz";
    gzFile g = gzopen(tmp, "wb9");
    gzwrite(g, in, (unsigned)n);
    gzclose(g);
    size_t len;
    *out = slurp(tmp, &len);
    return len;
}

static void idx_seeds(void)
{
    const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5};
    const uint8_t images[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2,
                              0, 255, 17, 34, 51, 68, 85, 102, 119, 136, 153, 170};
    put("idx", "labels", 0, 1, labels, sizeof labels);
    put("idx", "images", 1, 1, images, sizeof images);
    put("idx", "labels_zipped_here", 2, 1, labels, sizeof labels);
    put("idx", "images_zipped_here", 3, 1, images, sizeof images);
    uint8_t *gz;
    size_t n = gzip_bytes(labels, sizeof labels, &gz);
    put("idx", "labels_gz", 0, 1, gz, n);
    free(gz);
    n = gzip_bytes(images, sizeof images, &gz);
    put("idx", "images_gz", 1, 1, gz, n);
    free(gz);
    put("idx", "images_truncated", 1, 1, images, sizeof images - 3);
}

static void checkpoint_seeds(void)
{
    const char *tmp = "/tmp/nn_gen_corpus.ckpt";
    nn_model *m = fuzz_model();
    optim *adam = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    const uint8_t blob[16] = {'b', 'l', 'o', 'b', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    size_t n;
    uint8_t *b;
    /* Before any step: an optimizer without state. */
    check(nn_checkpoint_save(tmp, m, adam, blob, sizeof blob));
    b = slurp(tmp, &n);
    put("checkpoint", "adam_fresh", 0, 1, b, n);
    free(b);
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] = 0.02f * (float)(i % 5) - 0.03f;
    check(optim_step(adam, m->params, m->grads, m->n_params));
    m->layers[2]->calls = 3;
    check(nn_checkpoint_save(tmp, m, adam, blob, sizeof blob));
    b = slurp(tmp, &n);
    put("checkpoint", "adam", 0, 1, b, n);
    put("checkpoint", "adam_fixed", 1, 1, b, n);
    put("checkpoint", "adam_weights_only", 2, 1, b, n);
    free(b);
    check(nn_checkpoint_save(tmp, m, NULL, NULL, 0));
    b = slurp(tmp, &n);
    put("checkpoint", "no_optimizer", 2, 1, b, n);
    put("checkpoint", "no_optimizer_fixed", 3, 1, b, n);
    free(b);
    optim *sgd = optim_sgd_create(1e-2f, 0.9f, 1, 1e-4f);
    check(optim_step(sgd, m->params, m->grads, m->n_params));
    check(nn_checkpoint_save(tmp, m, sgd, blob, 4));
    b = slurp(tmp, &n);
    put("checkpoint", "sgd_fixed", 1, 1, b, n);
    free(b);
    optim_free(sgd);
    optim_free(adam);
    nn_model_free(m);
}

static void npy_seeds(void)
{
    const char *tmp = "/tmp/nn_gen_corpus.npy";
    const int shapes[][4] = {{5}, {2, 3}, {1, 2, 2, 3}, {0}};
    const int ranks[] = {1, 2, 4, 1};
    const char *names[] = {"rank1", "rank2", "rank4", "empty"};
    for (int k = 0; k < 4; k++) {
        tensor *t = tensor_create(ranks[k], shapes[k]);
        for (size_t i = 0; i < t->size; i++) t->data[i] = 0.5f * (float)i - 1.0f;
        check(nn_npy_save(tmp, t));
        size_t n;
        uint8_t *b = slurp(tmp, &n);
        put("npy", names[k], 0, 0, b, n);
        free(b);
        tensor_free(t);
    }
    /* What other writers produce: version 2.0, double quotes, another key
     * order, Python 2 long suffixes, no trailing comma. */
    static const char v2[] = "\x93NUMPY\x02\x00\x3e\x00\x00\x00"
                             "{\"shape\": (2L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}  \n"
                             "\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40";
    put("npy", "v2_other_writer", 0, 0, v2, sizeof v2 - 1);
}

static void safetensors_seeds(void)
{
    const char *tmp = "/tmp/nn_gen_corpus.safetensors";
    nn_model *m = fuzz_model();
    check(nn_safetensors_save(m, tmp));
    size_t n;
    uint8_t *b = slurp(tmp, &n);
    put("safetensors", "model", 0, 0, b, n);
    free(b);
    /* The same tensors in another order with the metadata last, compact. */
    char json[1024];
    int len = snprintf(json, sizeof json,
                       "{\"dense_2.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[256,268]},"
                       "\"dense_1.kernel\":{\"shape\":[12,4],\"dtype\":\"F32\",\"data_offsets\":[0,192]},"
                       "\"dense_1.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[192,208]},"
                       "\"dense_2.kernel\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[208,256]},"
                       "\"__metadata__\":{\"format\":\"pt\"}}");
    while (len % 8) json[len++] = ' ';
    uint8_t *file = calloc(8 + (size_t)len + 268, 1);
    for (int k = 0; k < 8; k++) file[k] = (uint8_t)((uint64_t)len >> (8 * k));
    memcpy(file + 8, json, (size_t)len);
    for (int i = 0; i < 67; i++) {
        float v = 0.01f * (float)i;
        memcpy(file + 8 + len + 4 * i, &v, 4);
    }
    put("safetensors", "reordered", 0, 0, file, 8 + (size_t)len + 268);
    free(file);
    nn_model_free(m);
}

/* nn's own exports of small networks; the corpus also holds small files
 * that PyTorch 1.13 and onnx.helper wrote (copies of tests/fixtures/onnx/). */
static void onnx_seeds(void)
{
    static const char *const specs[][2] = {
        {"mlp", FUZZ_MODEL_SPEC},
        {"cnn_last", "conv2d filters=2 kernel_size=3 padding=same activation=relu data_format=channels_last\n"
                     "batchnorm name=bn data_format=channels_last\n"
                     "maxpool2d pool_size=2 padding=same data_format=channels_last\n"
                     "conv2d filters=2 kernel_size=1 activation=gelu data_format=channels_last name=a\n"
                     "avgpool2d inputs=bn pool_size=2 padding=same data_format=channels_last\n"
                     "concatenate inputs=a,avgpool2d_1 data_format=channels_last\n"
                     "flatten\ndense units=3 activation=softmax\n"},
        {"cnn_first", "conv2d filters=2 kernel_size=3 activation=elu data_format=channels_first name=c\n"
                      "conv2d filters=2 kernel_size=3 padding=same data_format=channels_first\n"
                      "add inputs=c,conv2d_2 activation=tanh\n"
                      "global_avgpool2d data_format=channels_first\n"
                      "dense units=2 activation=leaky_relu\nsigmoid\n"},
        {"two_inputs", "input name=b shape=4,3\nadd inputs=input,b\ninput name=c shape=2\n"
                       "flatten\nconcatenate inputs=flatten_1,c\ndense units=2\n"},
    };
    for (int i = 0; i < 4; i++) {
        nn_model *m = nn_model_create(3);
        const int flat[2] = {4, 3}, img[3] = {5, 5, 2}, imgf[3] = {2, 5, 5};
        check(nn_model_add_spec(m, specs[i][1]));
        check(i == 0 || i == 3 ? nn_model_build(m, 2, flat) : nn_model_build(m, 3, i == 1 ? img : imgf));
        unsigned char *b;
        size_t n;
        check(nn_onnx_encode(m, &b, &n));
        put("onnx", specs[i][0], 0, 0, b, n);
        free(b);
        nn_model_free(m);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR (tests/fuzz/corpus)\n");
        return 2;
    }
    root = argv[1];
    idx_seeds();
    checkpoint_seeds();
    npy_seeds();
    safetensors_seeds();
    onnx_seeds();
    return 0;
}
