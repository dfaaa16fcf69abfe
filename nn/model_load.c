/* nn_model_load: a model rebuilt from a checkpoint or a .safetensors file
 * (see model_load.h). The file is read once into memory; the network comes
 * from nn_checkpoint_describe or from the .safetensors metadata, the values
 * from nn_checkpoint_parse or nn_safetensors_parse over the same bytes, so
 * a file replaced between two reads cannot mix two models. Omitted: see
 * model_load.h. */
#include "nn/model_load.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/io/atomic_file.h"
#include "nn/io/checkpoint.h"
#include "nn/io/safetensors.h"

/* Replaces the last message by "<path>: <what>: <last message>". */
static nn_status model_load_wrap(nn_status s, const char *path, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nn_last_error());
    return nn_error(s, "%s: %s: %s", path, what, msg);
}

static nn_status model_load_checkpoint(const char *path, const uint8_t *data, size_t len,
                                       nn_model **out)
{
    nn_checkpoint_network *net = malloc(sizeof *net);
    if (!net) return nn_error(NN_ERR_MEMORY, "%s: out of memory", path);
    nn_status s = nn_checkpoint_describe(data, len, path, net);
    nn_model *m = s == NN_OK ? nn_model_create(net->seed) : NULL;
    if (s == NN_OK && !m) s = model_load_wrap(NN_ERR_MEMORY, path, "cannot create the model");
    for (int k = 0; s == NN_OK && k < net->n_extra_inputs; k++) {
        const nn_model_input *in = &net->extra_inputs[k];
        char cfg[NN_NAME_LEN + 16 + TENSOR_MAX_RANK * 12] = "";
        snprintf(cfg, sizeof cfg, "name=%s shape=", in->name);
        for (int d = 0; d < in->rank; d++)
            snprintf(cfg + strlen(cfg), sizeof cfg - strlen(cfg), d ? ",%d" : "%d", in->shape[d]);
        if (nn_model_add(m, "input", cfg) != NN_OK)
            s = model_load_wrap(NN_ERR_FORMAT, path, "a stored model input does not parse");
    }
    for (int i = 0; s == NN_OK && i < net->n_layers; i++) {
        const nn_checkpoint_layer *l = &net->layers[i];
        if (nn_model_add(m, l->type, l->config) != NN_OK) {
            char what[NN_NAME_LEN * 2 + 600];
            snprintf(what, sizeof what, "layer %d (%s %s) no longer parses", i, l->type, l->config);
            s = model_load_wrap(NN_ERR_FORMAT, path, what);
        }
    }
    if (s == NN_OK && nn_model_build(m, net->in_rank, net->in_shape) != NN_OK) {
        char what[128], shape[96];
        snprintf(what, sizeof what, "the stored network does not build for its input shape %s",
                 tensor_shape_str(net->in_rank, net->in_shape, shape, sizeof shape));
        s = model_load_wrap(NN_ERR_FORMAT, path, what);
    }
    free(net);
    if (s == NN_OK) s = nn_checkpoint_parse(data, len, path, m, NULL, NULL, 0, NULL);
    if (s != NN_OK) {
        nn_model_free(m);
        return s;
    }
    *out = m;
    return NN_OK;
}

/* "28,28,1" into rank and shape. */
static nn_status model_load_parse_shape(const char *path, const char *text, int *rank, int *shape)
{
    int r = 0;
    const char *p = text;
    for (;;) {
        long v = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9' && v <= INT32_MAX) v = v * 10 + (*p++ - '0');
        if (p == start || v < 1 || v > INT32_MAX || r == TENSOR_MAX_RANK || (*p && *p != ','))
            return nn_error(NN_ERR_FORMAT, "%s: __metadata__ nn_input_shape '%.64s' is not 1 to %d "
                            "positive integers separated by commas, e.g. \"28,28,1\"", path, text,
                            TENSOR_MAX_RANK);
        shape[r++] = (int)v;
        if (!*p) break;
        p++;
    }
    *rank = r;
    return NN_OK;
}

static nn_status model_load_safetensors(const char *path, const uint8_t *data, size_t len,
                                        nn_model **out)
{
    char *spec = NULL, *shape_text = NULL;
    int rank = 0, shape[TENSOR_MAX_RANK];
    nn_status s = nn_safetensors_metadata(data, len, path, "nn_spec", &spec);
    if (s == NN_OK) s = nn_safetensors_metadata(data, len, path, "nn_input_shape", &shape_text);
    if (s == NN_OK) s = model_load_parse_shape(path, shape_text, &rank, shape);
    nn_model *m = s == NN_OK ? nn_model_create(0) : NULL;
    if (s == NN_OK && !m) s = model_load_wrap(NN_ERR_MEMORY, path, "cannot create the model");
    if (s == NN_OK && nn_model_add_spec(m, spec) != NN_OK)
        s = model_load_wrap(NN_ERR_FORMAT, path, "the network in __metadata__ nn_spec no longer "
                            "parses");
    if (s == NN_OK && nn_model_build(m, rank, shape) != NN_OK) {
        char what[160];
        snprintf(what, sizeof what, "the network in __metadata__ nn_spec does not build for "
                 "nn_input_shape %s", shape_text);
        s = model_load_wrap(NN_ERR_FORMAT, path, what);
    }
    free(spec);
    free(shape_text);
    if (s == NN_OK) s = nn_safetensors_parse(m, data, len, path);
    if (s != NN_OK) {
        nn_model_free(m);
        return s;
    }
    *out = m;
    return NN_OK;
}

nn_status nn_model_load(const char *path, nn_model **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_model_load: out is NULL");
    *out = NULL;
    if (!path) return nn_error(NN_ERR_ARG, "nn_model_load: path is NULL");
    uint8_t *data = NULL;
    size_t len = 0;
    NN_TRY(nn_file_read_all(path, "model file", &data, &len));
    static const char magic[8] = NN_CHECKPOINT_MAGIC;
    nn_status s;
    if (len >= 8 && !memcmp(data, magic, 8))
        s = model_load_checkpoint(path, data, len, out);
    else if (len > 8 && data[8] == '{')
        s = model_load_safetensors(path, data, len, out);
    else if (len > 0 && len < 8 && !memcmp(data, magic, len))
        s = nn_error(NN_ERR_FORMAT, "%s: truncated: %zu bytes, the start of a checkpoint's magic "
                     "(which takes 8)", path, len);
    else
        s = nn_error(NN_ERR_FORMAT, "%s: neither an nn checkpoint (magic \"NNCKPT\\0\\n\" at offset "
                     "0) nor a .safetensors file (JSON header from offset 8): %zu bytes%s", path,
                     len, len > 8 ? ", byte 8 is not '{'" : "");
    free(data);
    if (s == NN_OK) nn_model_set_training(*out, 0);
    return s;
}
