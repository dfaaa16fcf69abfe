/* libFuzzer harness: the ONNX reader (nn/io/onnx.h, nn_onnx_parse over the
 * protobuf decoder of nn/io/onnx_parse.c and the graph translation of
 * nn/io/onnx_load.c). A refused input must leave no model and a message
 * naming the file; an accepted one must be a working model: it predicts on
 * a small batch (when its input is small), and nn's own export of it is read
 * back into a model that predicts the same bits. Leaks are caught by the
 * sanitizer's leak check at exit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"

/* Predicts on a batch of 2 deterministic inputs; NULL if the input is too
 * large to try. The caller frees the result. */
static float *predict(nn_model *m, size_t *n)
{
    size_t per = 1;
    for (int i = 0; i < m->in_rank; i++) per *= (size_t)m->in_shape[i];
    if (per > 4096 || m->n_params > ((size_t)1 << 20)) return NULL;
    int shape[TENSOR_MAX_RANK + 1] = {2};
    memcpy(shape + 1, m->in_shape, (size_t)m->in_rank * sizeof(int));
    tensor *x = tensor_create(m->in_rank + 1, shape);
    if (!x) abort();
    for (size_t i = 0; i < x->size; i++) x->data[i] = (float)(i % 7) * 0.25f - 0.5f;
    tensor *y = NULL;
    float *out = NULL;
    if (nn_model_predict(m, x, NULL, &y, NULL, NULL) == NN_OK) {
        *n = y->size;
        out = malloc(y->size * sizeof *out + 1);
        memcpy(out, y->data, y->size * sizeof *out);
    }
    tensor_free(x);
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
