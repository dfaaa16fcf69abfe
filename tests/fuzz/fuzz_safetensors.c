/* libFuzzer harness: the .safetensors reader (nn/io/safetensors.h).
 * Each input is parsed into a fixed small model (FUZZ_MODEL_SPEC) in memory
 * with nn_safetensors_parse, then written to a file and read by
 * nn_safetensors_load, which must agree. A refused file leaves the
 * parameters exactly as they were (memcmp) and carries a message naming the
 * file; an accepted one must fill every parameter from the file's data, so
 * saving the model and loading that file back reproduces the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"

static nn_model *model;
static float *params0, *buffers0;

static int unchanged(void)
{
    return !memcmp(model->params, params0, model->n_params * sizeof(float)) &&
           (!model->n_buffers || !memcmp(model->buffers, buffers0, model->n_buffers * sizeof(float)));
}

static void restore(void)
{
    memcpy(model->params, params0, model->n_params * sizeof(float));
    if (model->n_buffers) memcpy(model->buffers, buffers0, model->n_buffers * sizeof(float));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model) {
        model = fuzz_model();
        params0 = malloc(model->n_params * sizeof(float) + 1);
        buffers0 = malloc(model->n_buffers * sizeof(float) + 1);
        memcpy(params0, model->params, model->n_params * sizeof(float));
        if (model->n_buffers) memcpy(buffers0, model->buffers, model->n_buffers * sizeof(float));
    }
    if (size > 65536) return 0;
    nn_clear_error();
    nn_status s = nn_safetensors_parse(model, data, size, "fuzz.safetensors");
    if (s != NN_OK) {
        if (!unchanged() || !strstr(nn_last_error(), "fuzz.safetensors")) abort();
    } else {
        /* Loaded: the model's values now come from the file. Save them and
         * load them back over the reference values: the same floats. */
        float *loaded = malloc(model->n_params * sizeof(float) + 1);
        memcpy(loaded, model->params, model->n_params * sizeof(float));
        const char *path = fuzz_tmp_path(".safetensors");
        if (nn_safetensors_save(model, path) != NN_OK) abort();
        restore();
        if (nn_safetensors_load(model, path) != NN_OK) abort();
        if (memcmp(loaded, model->params, model->n_params * sizeof(float))) abort();
        free(loaded);
        restore();
    }
    const char *path = fuzz_tmp_path(".safetensors");
    fuzz_write(path, data, size);
    nn_status s2 = nn_safetensors_load(model, path);
    if ((s2 == NN_OK) != (s == NN_OK)) abort();
    restore();
    return 0;
}
