/* libFuzzer harness: the model spec parser.
 * Any byte string is parsed as a model spec; a spec that parses must write
 * back a spec that parses to the same text (the round trip), and every layer
 * must build, or fail with a message, on a small image input. Building only
 * declares parameters, so hostile sizes cannot exhaust memory here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    nn_model *m = nn_model_create(1);
    if (nn_model_add_spec(m, text) == NN_OK) {
        static char spec[65536], again[65536];
        if (nn_model_spec_string(m, spec, sizeof spec) == NN_OK) {
            nn_model *m2 = nn_model_create(1);
            if (nn_model_add_spec(m2, spec) != NN_OK) abort(); /* written specs must parse */
            if (nn_model_spec_string(m2, again, sizeof again) != NN_OK) abort();
            if (strcmp(spec, again)) abort();
            nn_model_free(m2);
        }
        int rank = 3, shape[TENSOR_MAX_RANK] = {8, 8, 2};
        for (int i = 0; i < m->n_layers; i++) {
            nn_layer *l = m->layers[i];
            if (nn_layer_build(l, rank, shape) != NN_OK) {
                if (!nn_last_error()[0]) abort(); /* failures carry a message */
                break;
            }
            rank = l->out_rank;
            memcpy(shape, l->out_shape, sizeof shape);
        }
    }
    nn_model_free(m);
    free(text);
    return 0;
}
