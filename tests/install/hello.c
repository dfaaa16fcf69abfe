/* A program that uses an installed nn, built out of the source tree by
 * tests/test_install.sh with nothing but pkg-config:
 *     cc hello.c $(pkg-config --cflags --libs nn)
 * It trains a small convolutional model for a few steps (OpenBLAS and
 * OpenMP inside the library), exports its parameters to .safetensors and its
 * logits to .npy in the directory given as argv[1], loads the export into a
 * fresh model and checks the predictions are identical. The script compares
 * the output of the shared and the static build line by line. */
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"

static const char *const spec =
    "conv2d filters=4 kernel_size=3 activation=relu data_format=channels_last\n"
    "spatial_dropout2d rate=0.25 data_format=channels_last\n"
    "flatten\n"
    "dense units=3\n";

static nn_model *make_model(uint64_t seed)
{
    nn_model *m = nn_model_create(seed);
    if (!m) return NULL;
    if (nn_model_add_spec(m, spec) != NN_OK || nn_model_build(m, 3, (int[]){8, 8, 1}) != NN_OK) {
        nn_model_free(m);
        return NULL;
    }
    return m;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    printf("nn %s\n", nn_version());
    int status = 1;
    nn_model *a = make_model(1), *b = make_model(2);
    optim *opt = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    tensor *x = tensor_create(4, (int[]){6, 8, 8, 1}), *ya = NULL;
    if (!a || !b || !opt || !x) goto done;
    tensor_rng rng;
    tensor_rng_seed(&rng, 7);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    const int labels[6] = {0, 1, 2, 0, 1, 2};
    float loss = 0.0f;
    for (int step = 0; step < 5; step++)
        if (nn_model_train_step(a, opt, x, labels, &loss, NULL) != NN_OK) goto done;
    printf("loss after 5 steps: %.6f\n", loss);

    tensor *y;
    if (nn_model_predict(a, x, NULL, &y, NULL, NULL) != NN_OK) goto done;
    ya = tensor_create(y->rank, y->shape);
    if (!ya) goto done;
    memcpy(ya->data, y->data, y->size * sizeof(float));
    double sum = 0.0;
    for (size_t i = 0; i < ya->size; i++) sum += ya->data[i];
    printf("logits (%d, %d), sum %.6f\n", ya->shape[0], ya->shape[1], sum);

    char path[4096];
    snprintf(path, sizeof path, "%s/logits.npy", argv[1]);
    if (nn_npy_save(path, ya) != NN_OK) goto done;
    snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
    if (nn_safetensors_save(a, path) != NN_OK || nn_safetensors_load(b, path) != NN_OK) goto done;
    if (nn_model_predict(b, x, NULL, &y, NULL, NULL) != NN_OK) goto done;
    if (memcmp(y->data, ya->data, ya->size * sizeof(float))) {
        fprintf(stderr, "hello: predictions differ after the safetensors round trip\n");
        goto done;
    }
    printf("safetensors round trip: identical predictions\n");
    status = 0;
done:
    if (status) fprintf(stderr, "hello: %s\n", nn_last_error());
    tensor_free(ya);
    tensor_free(x);
    optim_free(opt);
    nn_model_free(a);
    nn_model_free(b);
    return status;
}
