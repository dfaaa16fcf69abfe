/* libFuzzer harness: the ONNX reader (nn/io/onnx.h, nn_onnx_parse over the
 * protobuf decoder of nn/io/onnx_parse.c and the graph translation of
 * nn/io/onnx_load.c). A refused input must leave no model and a message
 * naming the file; an accepted one must be a working model: it runs on a
 * small batch of each of its inputs (when they are small), and nn's own export of it is read
 * back into a model that predicts the same bits. Leaks are caught by the
 * sanitizer's leak check at exit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"

/* Runs the model in eval mode on a batch of 2 deterministic samples of
 * each of its inputs; NULL if an input is too large to try. The caller
 * frees the result. */
static float *predict(nn_model *m, size_t *n)
{
    const int n_in = nn_model_input_count(m);
    tensor *xs[NN_MODEL_MAX_INPUTS] = {NULL};
    float *out = NULL;
    if (m->n_params > ((size_t)1 << 20)) return NULL;
    for (int q = 0; q < n_in; q++) {
        const int rank = q ? m->extra_inputs[q - 1].rank : m->in_rank;
        const int *dims = q ? m->extra_inputs[q - 1].shape : m->in_shape;
        size_t per = 1;
        for (int i = 0; i < rank; i++) per *= (size_t)dims[i];
        if (per > 4096) goto done;
        int shape[TENSOR_MAX_RANK + 1] = {2};
        memcpy(shape + 1, dims, (size_t)rank * sizeof(int));
        xs[q] = tensor_create(rank + 1, shape);
        if (!xs[q]) abort();
        for (size_t i = 0; i < xs[q]->size; i++) xs[q]->data[i] = (float)((i + q) % 7) * 0.25f - 0.5f;
    }
    tensor *y = NULL;
    if (nn_model_forward_inputs(m, n_in, xs, &y, NN_MODE_EVAL) == NN_OK) {
        *n = y->size;
        out = malloc(y->size * sizeof *out + 1);
        memcpy(out, y->data, y->size * sizeof *out);
    }
done:
    for (int q = 0; q < n_in; q++) tensor_free(xs[q]);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    nn_model *m = (nn_model *)&size; /* must be overwritten */
    nn_clear_error();
    if (nn_onnx_parse(data, size, "fuzz.onnx", &m) != NN_OK) {
        if (m || !strstr(nn_last_error(), "fuzz.onnx")) abort();
        return 0;
    }
    if (!m || nn_model_is_training(m)) abort();
    size_t n1 = 0, n2 = 0;
    float *y1 = predict(m, &n1);
    unsigned char *buf = NULL;
    size_t len = 0;
    if (nn_onnx_encode(m, &buf, &len) != NN_OK) abort();
    nn_model *back = NULL;
    if (nn_onnx_parse(buf, len, "fuzz-again.onnx", &back) != NN_OK) abort();
    float *y2 = y1 ? predict(back, &n2) : NULL;
    if (y1 && (!y2 || n1 != n2 || memcmp(y1, y2, n1 * sizeof *y1))) abort();
    free(y1);
    free(y2);
    free(buf);
    nn_model_free(back);
    nn_model_free(m);
    return 0;
}
