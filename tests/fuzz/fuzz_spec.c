/* libFuzzer harness: the model spec parser, with its graph keys (name=,
 * inputs=) and merge layers.
 * Any byte string is parsed as a model spec; a spec that parses must write
 * back a spec that parses to the same text (the round trip), every input
 * must come from an earlier line, and every layer must build, or fail with a
 * message, on a small image input, each on its inputs' output shapes.
 * Building a layer only declares parameters, so hostile sizes cannot exhaust
 * memory here; a graph whose parameters are few is also built as a model
 * (the model's own checks: unread outputs, in-place layers on a shared
 * input) and run forward once in training mode, on every input ("input
 * name=... shape=..." lines declare further ones). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

/* Builds layer i of m on the outputs of its inputs; m's first input is
 * shape, a further one its declared shape (shape too when it declares
 * none). */
static nn_status fuzz_spec_build_layer(nn_model *m, int i, int rank, const int *shape)
{
    int ranks[NN_LAYER_MAX_INPUTS], shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
    for (int k = 0; k < m->n_inputs[i]; k++) {
        const int j = m->inputs[i][k];
        if (j < -1 - m->n_extra_inputs || j >= i) abort(); /* inputs come from earlier lines */
        const nn_model_input *in = j < -1 ? &m->extra_inputs[-2 - j] : NULL;
        ranks[k] = j >= 0 ? m->layers[j]->out_rank : in && in->rank ? in->rank : rank;
        memcpy(shapes[k], j >= 0 ? m->layers[j]->out_shape : in && in->rank ? in->shape : shape,
               sizeof shapes[k]);
    }
    return nn_layer_build_multi(m->layers[i], m->n_inputs[i], ranks,
                                (const int (*)[TENSOR_MAX_RANK])shapes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    nn_model *m = nn_model_create(1);
    if (nn_model_add_spec(m, text) == NN_OK) {
        static char spec[65536], again[65536];
        int written = 0;
        if (nn_model_spec_string(m, spec, sizeof spec) == NN_OK) {
            written = 1;
            nn_model *m2 = nn_model_create(1);
            if (nn_model_add_spec(m2, spec) != NN_OK) abort(); /* written specs must parse */
            if (nn_model_spec_string(m2, again, sizeof again) != NN_OK) abort();
            if (strcmp(spec, again)) abort();
            nn_model_free(m2);
        }
        const int rank = 3, shape[TENSOR_MAX_RANK] = {8, 8, 2};
        int built = 1;
        size_t params = 0;
        for (int i = 0; i < m->n_layers; i++) {
            if (fuzz_spec_build_layer(m, i, rank, shape) != NN_OK) {
                if (!nn_last_error()[0]) abort(); /* failures carry a message */
                built = 0;
                break;
            }
            params += nn_layer_param_count(m->layers[i], 1) + nn_layer_param_count(m->layers[i], 0);
        }
        if (built && written && params <= 4096) {
            nn_model *m3 = nn_model_create(1);
            if (nn_model_add_spec(m3, spec) != NN_OK) abort();
            nn_clear_error();
            if (nn_model_build(m3, rank, shape) == NN_OK) {
                tensor *xs[NN_MODEL_MAX_INPUTS] = {NULL}, *y;
                const int n_in = nn_model_input_count(m3);
                int ok = 1;
                for (int q = 0; q < n_in; q++) {
                    const int r = q ? m3->extra_inputs[q - 1].rank : rank;
                    const int *d = q ? m3->extra_inputs[q - 1].shape : shape;
                    int dims[TENSOR_MAX_RANK + 1] = {2};
                    size_t per = 1;
                    for (int k = 0; k < r; k++) per *= (size_t)(dims[k + 1] = d[k]);
                    xs[q] = per <= 4096 ? tensor_zeros(r + 1, dims) : NULL;
                    ok &= xs[q] != NULL;
                }
                if (ok && nn_model_forward_inputs(m3, n_in, xs, &y, NN_MODE_TRAIN) != NN_OK &&
                    !nn_last_error()[0])
                    abort();
                for (int q = 0; q < n_in; q++) tensor_free(xs[q]);
            } else if (!nn_last_error()[0]) {
                abort();
            }
            nn_model_free(m3);
        }
    }
    nn_model_free(m);
    free(text);
    return 0;
}
