/* libFuzzer harness: the checkpoint reader (nn/io/checkpoint.h).
 * The first input byte picks how the rest is loaded:
 *   bit 0  1: before writing the file, patch the size field (offset 16) and
 *          the CRC-32 (last 4 bytes) to match the bytes, so mutations get
 *          past the integrity checks and reach the structural ones (layer
 *          list, shapes, counts, optimizer section, blob); 0: as they are
 *   bit 1  1: load without optimizer and blob (weights only); 0: with both
 * Invariants: a refused file leaves the model, the optimizer and the blob
 * buffer exactly as they were (memcmp against a snapshot) and carries a
 * message naming the file; a loaded one is undone before the next input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_io.h"

static nn_model *model;
static optim *opt;
static float *params0, *buffers0, *state0;
static uint64_t seeds0[NN_MODEL_MAX_LAYERS], calls0[NN_MODEL_MAX_LAYERS], model_seed0;
static optim opt0;
static size_t state_n;

static void setup(void)
{
    model = fuzz_model();
    opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    if (!opt) abort();
    /* One step, so the optimizer has state that a load must not disturb. */
    for (size_t i = 0; i < model->n_params; i++) model->grads[i] = 0.01f * (float)(i % 7);
    if (optim_step(opt, model->params, model->grads, model->n_params) != NN_OK) abort();
    state_n = optim_state_count(opt, opt->n);
    params0 = malloc(model->n_params * sizeof(float) + 1);
    buffers0 = malloc(model->n_buffers * sizeof(float) + 1);
    state0 = malloc(state_n * sizeof(float) + 1);
    memcpy(params0, model->params, model->n_params * sizeof(float));
    if (model->n_buffers) memcpy(buffers0, model->buffers, model->n_buffers * sizeof(float));
    memcpy(state0, opt->state, state_n * sizeof(float));
    for (int i = 0; i < model->n_layers; i++) {
        seeds0[i] = model->layers[i]->seed;
        calls0[i] = model->layers[i]->calls;
    }
    model_seed0 = model->seed;
    opt0 = *opt;
}

static int unchanged(void)
{
    if (memcmp(model->params, params0, model->n_params * sizeof(float))) return 0;
    if (model->n_buffers && memcmp(model->buffers, buffers0, model->n_buffers * sizeof(float)))
        return 0;
    if (opt->state != opt0.state || memcmp(opt->state, state0, state_n * sizeof(float))) return 0;
    if (opt->n != opt0.n || opt->t != opt0.t || memcmp(&opt->lr, &opt0.lr, sizeof opt->lr) ||
        memcmp(&opt->beta1, &opt0.beta1, sizeof opt->beta1) ||
        memcmp(&opt->beta2, &opt0.beta2, sizeof opt->beta2) ||
        memcmp(&opt->eps, &opt0.eps, sizeof opt->eps) || opt->decoupled != opt0.decoupled)
        return 0;
    for (int i = 0; i < model->n_layers; i++)
        if (model->layers[i]->seed != seeds0[i] || model->layers[i]->calls != calls0[i]) return 0;
    return model->seed == model_seed0;
}

/* After a successful load: back to the reference state. */
static void restore(void)
{
    memcpy(model->params, params0, model->n_params * sizeof(float));
    if (model->n_buffers) memcpy(model->buffers, buffers0, model->n_buffers * sizeof(float));
    for (int i = 0; i < model->n_layers; i++) {
        model->layers[i]->seed = seeds0[i];
        model->layers[i]->calls = calls0[i];
    }
    model->seed = model_seed0;
    float *state = opt->state;
    if (!state || opt->n != opt0.n) {
        /* The file held a different (empty) state: make ours again. */
        tensor_aligned_free(state);
        state = tensor_aligned_alloc(state_n * sizeof(float));
        if (!state) abort();
    }
    memcpy(state, state0, state_n * sizeof(float));
    *opt = opt0;
    opt->state = state;
    opt0.state = state;
}

static void patch_integrity(uint8_t *b, size_t len)
{
    if (len < 36) return;
    for (int i = 0; i < 8; i++) b[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    uLong crc = crc32(crc32(0L, Z_NULL, 0), b + 24, (uInt)(len - 28));
    for (int i = 0; i < 4; i++) b[len - 4 + i] = (uint8_t)(crc >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model) setup();
    if (size < 1 || size > 65536) return 0;
    const int fix = data[0] & 1, weights_only = data[0] & 2;
    const size_t len = size - 1;
    uint8_t *file = malloc(len + 1);
    memcpy(file, data + 1, len);
    if (fix) patch_integrity(file, len);
    const char *path = fuzz_tmp_path(".ckpt");
    fuzz_write(path, file, len);
    free(file);

    uint8_t blob[64], blob0[64];
    memset(blob, 0xa5, sizeof blob);
    memcpy(blob0, blob, sizeof blob);
    size_t blob_len = 12345;
    nn_clear_error();
    nn_status s = weights_only ? nn_checkpoint_load(path, model, NULL, NULL, 0, NULL)
                               : nn_checkpoint_load(path, model, opt, blob, sizeof blob, &blob_len);
    if (s != NN_OK) {
        if (!unchanged() || memcmp(blob, blob0, sizeof blob) || blob_len != 12345) abort();
        if (!strstr(nn_last_error(), path)) abort();
        return 0;
    }
    if (!weights_only && blob_len > sizeof blob) abort();
    /* The loaded state must be usable: a forward pass and, with an
     * optimizer, a step run without touching memory out of bounds. */
    const int xs[3] = {2, 4, 3};
    tensor *x = tensor_zeros(3, xs);
    tensor *y = NULL;
    if (nn_model_forward(model, x, &y, NN_MODE_TRAIN) != NN_OK) abort();
    if (!weights_only && optim_step(opt, model->params, model->grads, model->n_params) != NN_OK) abort();
    nn_graph_reset(nn_model_graph(model));
    tensor_free(x);
    restore();
    return 0;
}
