/* Model: a graph of named layers, parameter blocks, modes, summary (see
 * model.h).
 *
 * Reading order: one training step, top to bottom (nn_model_train_step below).
 *   1. nn/model.c        nn_model_train_step: rewind the graph arena, zero the
 *                        gradient block, run the layers in order.
 *   2. layers/layer.c    nn_layer_forward checks the input's shape and calls the
 *                        layer type's forward hook, found once by name in
 *                        nn/registry.c when the model was built from its spec.
 *   3. layers/<name>.c   each hook computes y and records a graph node with its
 *                        backward. Convolution: conv2d.c, conv_reference.c (the
 *                        plain loops), conv_core.c (the dispatch), conv_gemm.c
 *                        and conv_winograd.c. Spatial dropout: spatial_dropout2d.c,
 *                        spatial_dropout.c, spatial_dropout_kernels.c (plain
 *                        references first).
 *   4. tensor/graph.c    nn_graph_record keeps the node; the outputs live in
 *                        the arena until the next step.
 *   5. tensor/op_softmax_cross_entropy.c   the loss node (other losses:
 *                        tensor/loss.c picks one by name; nn_model_train_step_loss).
 *   6. tensor/graph.c    nn_graph_backward walks the nodes in reverse; every
 *                        backward ADDS into its inputs' gradients.
 *   7. optim/optim.c     optim_step, one flat loop over the parameter block
 *                        (optim/adam.c, optim/sgd.c).
 * Below this file sit layers/ and optim/, and under them tensor/ (tensors,
 * status, random numbers, threads, the tape); nothing there includes anything
 * from nn/.
 */
#include "nn/model.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"
#include "nn/registry.h"
#include "tensor/random.h"

nn_model *nn_model_create(uint64_t seed)
{
    nn_model *m = calloc(1, sizeof *m);
    if (!m) {
        nn_error(NN_ERR_MEMORY, "nn_model_create: out of memory");
        return NULL;
    }
    m->seed = seed;
    m->graph = nn_graph_create(0);
    if (!m->graph) {
        free(m);
        return NULL;
    }
    return m;
}

void nn_model_free(nn_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) nn_layer_free(m->layers[i]);
    tensor_aligned_free(m->params);
    tensor_aligned_free(m->grads);
    tensor_aligned_free(m->buffers);
    nn_graph_free(m->graph);
    free(m);
}

/* The name layer i would get without name=: "<type>_<k>", k counting the
 * layers of its type up to and including it. */
static void model_auto_name(const nn_model *m, int i, const nn_layer_type *type, char *out)
{
    int k = 1;
    for (int j = 0; j < i; j++) k += m->layers[j]->type == type;
    snprintf(out, NN_NAME_LEN, "%s_%d", type->name, k);
}

/* The name of what index j denotes: a layer, the model's first input
 * (-1) or a further one (-2 - k). */
static const char *model_node_name(const nn_model *m, int j)
{
    return j == -1 ? "input" : j < 0 ? m->extra_inputs[-2 - j].name : m->layers[j]->name;
}

/* The per-sample shape of what index j denotes. */
static void model_node_shape(const nn_model *m, int j, int *rank, const int **shape)
{
    if (j == -1) {
        *rank = m->in_rank;
        *shape = m->in_shape;
    } else if (j < 0) {
        *rank = m->extra_inputs[-2 - j].rank;
        *shape = m->extra_inputs[-2 - j].shape;
    } else {
        *rank = m->layers[j]->out_rank;
        *shape = m->layers[j]->out_shape;
    }
}

int nn_model_input_count(const nn_model *m) { return m ? 1 + m->n_extra_inputs : 0; }

const char *nn_model_input_name(const nn_model *m, int q)
{
    return m && q >= 0 && q < nn_model_input_count(m) ? model_node_name(m, -1 - q) : NULL;
}

/* The index of a layer or input by name, or -NN_MODEL_MAX_INPUTS - 2 (not
 * one of them, nor -1). */
#define MODEL_NOT_FOUND (-NN_MODEL_MAX_INPUTS - 2)
static int model_find_layer(const nn_model *m, const char *name)
{
    for (int j = 0; j < m->n_layers; j++)
        if (!strcmp(m->layers[j]->name, name)) return j;
    for (int k = 0; k < m->n_extra_inputs; k++)
        if (!strcmp(m->extra_inputs[k].name, name)) return -2 - k;
    return MODEL_NOT_FOUND;
}

/* "input, conv2d_1, ...": what an inputs= list can name so far. */
static void model_defined_names(const nn_model *m, char *buf, size_t n)
{
    snprintf(buf, n, "input");
    for (int k = 0; k < m->n_extra_inputs; k++) {
        size_t len = strlen(buf);
        if (len + 1 < n) snprintf(buf + len, n - len, ", %s", m->extra_inputs[k].name);
    }
    for (int j = 0; j < m->n_layers; j++) {
        size_t len = strlen(buf);
        if (len + 1 < n) snprintf(buf + len, n - len, ", %s", m->layers[j]->name);
    }
}

/* The model-level keys of one spec line, taken out of its config. */
typedef struct {
    char name[NN_NAME_LEN];
    char inputs[NN_LAYER_MAX_INPUTS * NN_NAME_LEN + 8];
    int has_name, has_inputs;
} model_keys;

/* Copies config into rest without the name= and inputs= tokens, which go
 * into k. rest has strlen(config) + 1 bytes. */
static nn_status model_take_keys(const char *config, char *rest, model_keys *k)
{
    memset(k, 0, sizeof *k);
    rest[0] = '\0';
    size_t used = 0;
    const char *p = config;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\v' || *p == '\f') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\v' ||
                       *p == '\f'))
            p++;
        const size_t len = (size_t)(p - start);
        const int is_name = len >= 5 && !strncmp(start, "name=", 5);
        const int is_inputs = len >= 7 && !strncmp(start, "inputs=", 7);
        if (!is_name && !is_inputs) {
            memcpy(rest + used, start, len);
            used += len;
            rest[used++] = ' ';
            rest[used] = '\0';
            continue;
        }
        const char *key = is_name ? "name" : "inputs";
        const size_t klen = is_name ? 5 : 7, vlen = len - klen;
        char *dst = is_name ? k->name : k->inputs;
        const size_t cap = is_name ? sizeof k->name : sizeof k->inputs;
        int *has = is_name ? &k->has_name : &k->has_inputs;
        if (*has) return nn_error(NN_ERR_CONFIG, "model key '%s' is given twice", key);
        if (vlen == 0) return nn_error(NN_ERR_CONFIG, "model key '%s' has an empty value", key);
        if (vlen >= cap)
            return nn_error(NN_ERR_CONFIG, "model key '%s': '%.*s...' is longer than %zu characters",
                            key, 40, start + klen, cap - 1);
        memcpy(dst, start + klen, vlen);
        dst[vlen] = '\0';
        *has = 1;
    }
    return NN_OK;
}

/* Letters, digits, '_' and '-': a name never holds the ',' that separates
 * inputs, the '=' of a key or the '.' of a safetensors tensor name. */
static nn_status model_check_name(const nn_model *m, const char *type, const char *name,
                                  int explicit_name)
{
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return nn_error(NN_ERR_CONFIG, "%s: name '%s': only letters, digits, '_' and '-' are "
                            "allowed", type, name);
    if (!strcmp(name, "input"))
        return nn_error(NN_ERR_CONFIG, "%s: name 'input' is the model's input; choose another "
                        "name", type);
    const int j = model_find_layer(m, name);
    if (j < -1 && j != MODEL_NOT_FOUND)
        return nn_error(NN_ERR_CONFIG, "%s: name '%s' is already used by a model input", type, name);
    if (j >= 0) {
        if (explicit_name)
            return nn_error(NN_ERR_CONFIG, "%s: name '%s' is already used by layer %d (%s)",
                            type, name, j + 1, m->layers[j]->type->name);
        return nn_error(NN_ERR_CONFIG, "%s: the automatic name '%s' is already used by layer %d "
                        "(%s); give this layer a name= of its own", type, name, j + 1,
                        m->layers[j]->type->name);
    }
    return NN_OK;
}

/* Resolves "a,b" into indices; an unknown name is copied into missing. */
static nn_status model_resolve_inputs(const nn_model *m, const char *self, const char *list,
                                      int *idx, int *n_out, char *missing)
{
    int n = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[NN_NAME_LEN];
        if (len == 0)
            return nn_error(NN_ERR_CONFIG, "%s: inputs=%s has an empty name", self, list);
        if (len >= sizeof name)
            return nn_error(NN_ERR_CONFIG, "%s: input '%.*s' is longer than any layer name", self,
                            (int)len, p);
        if (n == NN_LAYER_MAX_INPUTS)
            return nn_error(NN_ERR_CONFIG, "%s: inputs=%s names more than %d inputs", self, list,
                            NN_LAYER_MAX_INPUTS);
        memcpy(name, p, len);
        name[len] = '\0';
        if (!strcmp(name, self))
            return nn_error(NN_ERR_CONFIG, "%s: a layer cannot read its own output (a cycle); "
                            "inputs must be defined on an earlier line, which rules out cycles",
                            self);
        int j = strcmp(name, "input") ? model_find_layer(m, name) : -1;
        if (j == MODEL_NOT_FOUND) {
            char defined[512];
            model_defined_names(m, defined, sizeof defined);
            snprintf(missing, NN_NAME_LEN, "%s", name);
            return nn_error(NN_ERR_CONFIG, "%s: input '%s' is not defined (defined so far: %s)",
                            self, name, defined);
        }
        idx[n++] = j;
        if (!comma) break;
        p = comma + 1;
    }
    *n_out = n;
    return NN_OK;
}

/* "8,8,16" into a per-sample shape. */
static nn_status model_parse_shape(const char *what, const char *text, int *rank, int *shape)
{
    int r = 0;
    const char *p = text;
    for (;;) {
        long v = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9' && v <= (1L << 30)) v = v * 10 + (*p++ - '0');
        if (p == start || v < 1 || v > (1L << 30) || r == TENSOR_MAX_RANK || (*p && *p != ','))
            return nn_error(NN_ERR_CONFIG, "%s: shape=%s is not 1 to %d positive integers "
                            "separated by commas, e.g. shape=28,28,1", what, text,
                            TENSOR_MAX_RANK);
        shape[r++] = (int)v;
        if (!*p) break;
        p++;
    }
    *rank = r;
    return NN_OK;
}

/* A spec line "input name=N [shape=...]": declares a further input. */
static nn_status model_add_input(nn_model *m, const char *config)
{
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_add: the model is already built");
    nn_model_input in;
    memset(&in, 0, sizeof in);
    int has_name = 0, has_shape = 0;
    const char *p = config ? config : "";
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') p++;
        char tok[256];
        const size_t len = (size_t)(p - start);
        if (len >= sizeof tok)
            return nn_error(NN_ERR_CONFIG, "input: '%.32s...' is longer than %zu characters", start,
                            sizeof tok - 1);
        memcpy(tok, start, len);
        tok[len] = '\0';
        if (!strncmp(tok, "name=", 5) && !has_name) {
            const size_t n = strlen(tok + 5);
            if (n >= sizeof in.name || !n)
                return nn_error(NN_ERR_CONFIG, "input: name '%s' is empty or longer than %d "
                                "characters", tok + 5, NN_NAME_LEN - 1);
            memcpy(in.name, tok + 5, n + 1);
            has_name = 1;
        } else if (!strncmp(tok, "shape=", 6) && !has_shape) {
            NN_TRY(model_parse_shape("input", tok + 6, &in.rank, in.shape));
            has_shape = 1;
        } else {
            return nn_error(NN_ERR_CONFIG, "input: '%s' is not a key of an input line (name=, "
                            "shape=, each once)", tok);
        }
    }
    if (!has_name)
        return nn_error(NN_ERR_CONFIG, "input: a further input needs a name= (the first input, "
                        "'input', is there without a line)");
    NN_TRY(model_check_name(m, "input", in.name, 1));
    if (1 + m->n_extra_inputs == NN_MODEL_MAX_INPUTS)
        return nn_error(NN_ERR_STATE, "input: at most %d model inputs, 'input' included",
                        NN_MODEL_MAX_INPUTS);
    m->extra_inputs[m->n_extra_inputs++] = in;
    return NN_OK;
}

/* nn_model_add; an input name that is not defined is copied into missing,
 * and the layer's name into self (NN_NAME_LEN bytes each), for
 * nn_model_add_spec's message. */
static nn_status model_add(nn_model *m, const char *type, const char *config, char *missing,
                           char *self)
{
    if (!m) return nn_error(NN_ERR_ARG, "nn_model_add: model is NULL");
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_add: the model is already built");
    if (type && !strcmp(type, "input")) {
        snprintf(self, NN_NAME_LEN, "input");
        return model_add_input(m, config);
    }
    if (m->n_layers == NN_MODEL_MAX_LAYERS)
        return nn_error(NN_ERR_STATE, "nn_model_add: at most %d layers", NN_MODEL_MAX_LAYERS);
    /* Only a config with model keys is copied, so every other config reaches
     * the layer (and its messages) exactly as given. */
    model_keys k;
    char *rest = NULL;
    if (config && (strstr(config, "name=") || strstr(config, "inputs="))) {
        rest = malloc(strlen(config) + 2);
        if (!rest) return nn_error(NN_ERR_MEMORY, "nn_model_add: out of memory");
        nn_status s = model_take_keys(config, rest, &k);
        if (s != NN_OK) {
            free(rest);
            return s;
        }
    } else {
        memset(&k, 0, sizeof k);
    }
    nn_layer *l = nn_layer_create(type, rest ? rest : config);
    free(rest);
    if (!l) return NN_ERR_CONFIG;
    const int i = m->n_layers;
    if (k.has_name) {
        snprintf(l->name, sizeof l->name, "%s", k.name);
    } else {
        model_auto_name(m, i, l->type, l->name);
    }
    snprintf(self, NN_NAME_LEN, "%s", l->name);
    nn_status s = model_check_name(m, l->type->name, l->name, k.has_name);
    int idx[NN_LAYER_MAX_INPUTS] = {i - 1}, n_in = 1;
    if (s == NN_OK && k.has_inputs)
        s = model_resolve_inputs(m, l->name, k.inputs, idx, &n_in, missing);
    const int merge = nn_layer_type_is_merge(l->type);
    if (s == NN_OK && merge && n_in < 2)
        s = nn_error(NN_ERR_CONFIG, "%s: %s merges 2 to %d inputs, got %d (%s); name them with "
                     "inputs=", l->name, l->type->name, NN_LAYER_MAX_INPUTS, n_in,
                     model_node_name(m, idx[0]));
    if (s == NN_OK && !merge && n_in > 1)
        s = nn_error(NN_ERR_CONFIG, "%s: %s takes 1 input, got %d (inputs=%s); merge them first "
                     "with add or concatenate", l->name, l->type->name, n_in, k.inputs);
    if (s != NN_OK) {
        nn_layer_free(l);
        return NN_ERR_CONFIG;
    }
    m->layers[i] = l;
    m->n_inputs[i] = n_in;
    memcpy(m->inputs[i], idx, sizeof idx);
    m->n_layers++;
    return NN_OK;
}

nn_status nn_model_add(nn_model *m, const char *type, const char *config)
{
    char missing[NN_NAME_LEN], self[NN_NAME_LEN];
    return model_add(m, type, config, missing, self);
}

/* The line number (from line_no + 1 on, text starting after line_no's end)
 * of a later spec line that defines `name`, or 0. An automatic name
 * "<type>_<k>" counts the model's layers of that type and the lines read. */
static int model_spec_defined_later(const nn_model *m, const char *text, int line_no,
                                    const char *cur_type, const char *name)
{
    const char *us = strrchr(name, '_');
    char type[NN_NAME_LEN] = "";
    if (us) snprintf(type, sizeof type, "%.*s", (int)(us - name), name);
    const nn_layer_type *t = type[0] ? nn_registry_find(type) : NULL;
    int count = 0;
    for (int j = 0; t && j < m->n_layers; j++) count += m->layers[j]->type == t;
    if (t && !strcmp(cur_type, type)) count++;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        line_no++;
        char line[512];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            char *hash = strchr(line, '#');
            if (hash) *hash = '\0';
            char *save = NULL, *tok = strtok_r(line, " \t\r", &save);
            if (tok) {
                const int same_type = t && !strcmp(tok, type);
                int named = 0;
                for (char *kv = strtok_r(NULL, " \t\r", &save); kv; kv = strtok_r(NULL, " \t\r", &save))
                    if (!strncmp(kv, "name=", 5)) {
                        named = 1;
                        if (!strcmp(kv + 5, name)) return line_no;
                    }
                if (same_type) {
                    count++;
                    char autoname[NN_NAME_LEN + 16];
                    snprintf(autoname, sizeof autoname, "%s_%d", type, count);
                    if (!named && !strcmp(autoname, name)) return line_no;
                }
            }
        }
        p += len;
        if (*p == '\n') p++;
    }
    return 0;
}

nn_status nn_model_add_spec(nn_model *m, const char *text)
{
    if (!m || !text)
        return nn_error(NN_ERR_ARG, "nn_model_add_spec: NULL argument: %s is NULL",
                        !m ? "m" : "text");
    /* All or nothing: a bad line removes the lines before it again, so a
     * corrected spec can be added to the same model. */
    const int n_before = m->n_layers;
    nn_status st = NN_OK;
    int line_no = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        line_no++;
        char line[512];
        if (len >= sizeof line) {
            st = nn_error(NN_ERR_CONFIG, "model spec line %d: longer than %zu characters", line_no,
                          sizeof line - 1);
            break;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (*s) {
            char *type = s;
            while (*s && *s != ' ' && *s != '\t' && *s != '\r') s++;
            if (*s) *s++ = '\0';
            char missing[NN_NAME_LEN] = "", self[NN_NAME_LEN] = "";
            if (model_add(m, type, s, missing, self) != NN_OK) {
                char msg[1024];
                snprintf(msg, sizeof msg, "%s", nn_last_error());
                const int later = missing[0] ? model_spec_defined_later(m, end ? end + 1 : "",
                                                                        line_no, type, missing) : 0;
                if (later)
                    st = nn_error(NN_ERR_CONFIG, "model spec line %d: %s: input '%s' is defined "
                                  "later, on line %d; inputs must be defined on an earlier line, "
                                  "which also rules out cycles", line_no, self, missing, later);
                else
                    st = nn_error(NN_ERR_CONFIG, "model spec line %d: %s", line_no, msg);
                break;
            }
        }
        p += len;
        if (*p == '\n') p++;
    }
    if (st != NN_OK)
        while (m->n_layers > n_before) nn_layer_free(m->layers[--m->n_layers]);
    return st;
}

nn_status nn_model_load_spec(nn_model *m, const char *path)
{
    if (!path) return nn_error(NN_ERR_ARG, "nn_model_load_spec: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_ERR_IO, "%s: cannot open model spec: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (1u << 24)) {
                free(text);
                fclose(f);
                return nn_error(NN_ERR_FORMAT, "%s: model spec larger than 16 MiB", path);
            }
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                return nn_error(NN_ERR_MEMORY, "%s: out of memory", path);
            }
            text = t;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(text);
        return nn_error(NN_ERR_IO, "%s: read error", path);
    }
    text[len] = '\0';
    size_t text_len = strlen(text);
    if (text_len != len) {
        free(text);
        return nn_error(NN_ERR_FORMAT, "%s: model spec contains a NUL byte at offset %zu", path,
                        text_len);
    }
    nn_status s = nn_model_add_spec(m, text);
    free(text);
    if (s != NN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        return nn_error(s, "%s: %s", path, msg);
    }
    return NN_OK;
}

/* Layer i reads the line before it (the first line, the model's input). */
static int model_reads_previous(const nn_model *m, int i)
{
    return m->n_inputs[i] == 1 && m->inputs[i][0] == i - 1;
}

int nn_model_is_sequential(const nn_model *m)
{
    if (!m) return 1;
    if (m->n_extra_inputs) return 0;
    for (int i = 0; i < m->n_layers; i++)
        if (!model_reads_previous(m, i)) return 0;
    return 1;
}

nn_status nn_model_layer_keys(const nn_model *m, int i, char *buf, size_t n)
{
    if (!m || !buf)
        return nn_error(NN_ERR_ARG, "nn_model_layer_keys: NULL argument: %s is NULL",
                        !m ? "m" : "buf");
    if (i < 0 || i >= m->n_layers)
        return nn_error(NN_ERR_ARG, "nn_model_layer_keys: layer %d of %d", i, m->n_layers);
    char autoname[NN_NAME_LEN];
    model_auto_name(m, i, m->layers[i]->type, autoname);
    size_t used = 0;
    if (n) buf[0] = '\0';
    if (strcmp(autoname, m->layers[i]->name))
        used += (size_t)snprintf(buf, n, "name=%s", m->layers[i]->name);
    if (!model_reads_previous(m, i))
        for (int k = 0; k < m->n_inputs[i]; k++)
            used += (size_t)snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, "%s%s",
                                     k ? "," : used ? " inputs=" : "inputs=",
                                     model_node_name(m, m->inputs[i][k]));
    if (used >= n)
        return nn_error(NN_ERR_ARG, "nn_model_layer_keys: needs %zu bytes, buffer has %zu",
                        used + 1, n);
    return NN_OK;
}

nn_status nn_model_spec_string(const nn_model *m, char *buf, size_t n)
{
    size_t used = 0;
    if (n) buf[0] = '\0';
    /* Further inputs first: each must come before the lines that read it. */
    for (int k = 0; k < m->n_extra_inputs; k++) {
        const nn_model_input *in = &m->extra_inputs[k];
        used += (size_t)snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0,
                                 "input name=%s%s", in->name, in->rank ? " shape=" : "");
        for (int d = 0; d < in->rank; d++)
            used += (size_t)snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0,
                                     d ? ",%d" : "%d", in->shape[d]);
        used += (size_t)snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, "\n");
    }
    for (int i = 0; i < m->n_layers; i++) {
        char cfg[512], keys[NN_NAME_LEN * (NN_LAYER_MAX_INPUTS + 1) + 32];
        NN_TRY(nn_layer_config_string(m->layers[i], cfg, sizeof cfg));
        NN_TRY(nn_model_layer_keys(m, i, keys, sizeof keys));
        int k = snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, "%s%s%s%s%s\n",
                         m->layers[i]->type->name, keys[0] ? " " : "", keys, cfg[0] ? " " : "",
                         cfg);
        used += (size_t)k;
    }
    if (used >= n)
        return nn_error(NN_ERR_ARG, "nn_model_spec_string: needs %zu bytes, buffer has %zu",
                        used + 1, n);
    return NN_OK;
}

/* The build-time checks of the graph, before any layer is built: every
 * output but the last one's is read by a later layer. */
static nn_status model_check_graph(const nn_model *m)
{
    for (int j = 0; j + 1 < m->n_layers; j++) {
        int used = 0;
        for (int i = j + 1; !used && i < m->n_layers; i++)
            for (int k = 0; k < m->n_inputs[i]; k++) used |= m->inputs[i][k] == j;
        if (!used)
            return nn_error(NN_ERR_STATE, "nn_model_build: the output of layer %d (%s) is never "
                            "used: only the last layer's output is the model's output, so every "
                            "other layer must be an input of a later one", j + 1,
                            m->layers[j]->name);
    }
    for (int q = 1 - nn_model_input_count(m); q <= 0; q++) {
        const int j = q - 1; /* -1 - (input number) */
        int used = 0;
        for (int i = 0; !used && i < m->n_layers; i++)
            for (int k = 0; k < m->n_inputs[i]; k++) used |= m->inputs[i][k] == j;
        if (!used)
            return nn_error(NN_ERR_STATE, "nn_model_build: the model input '%s' is never read: "
                            "name it in some layer's inputs=", model_node_name(m, j));
    }
    return NN_OK;
}

/* "conv2d_2 (8, 8, 16), conv2d_3 (8, 8, 32)": layer i's inputs and shapes. */
static void model_inputs_desc(const nn_model *m, int i, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int k = 0; k < m->n_inputs[i]; k++) {
        const int j = m->inputs[i][k];
        char b[96];
        size_t len = strlen(buf);
        int rank;
        const int *shape;
        model_node_shape(m, j, &rank, &shape);
        snprintf(buf + len, n - len, "%s%s %s", k ? ", " : "", model_node_name(m, j),
                 tensor_shape_str(rank, shape, b, sizeof b));
    }
}

/* A layer that writes over its input (inplace=true) must be its only
 * reader: another would see the overwritten values, or its backward would. */
static nn_status model_check_overwrite(const nn_model *m, int i)
{
    const int j = m->inputs[i][0];
    for (int c = 0; c < m->n_layers; c++) {
        if (c == i) continue;
        for (int k = 0; k < m->n_inputs[c]; k++)
            if (m->inputs[c][k] == j) {
                char what[NN_NAME_LEN + 32];
                snprintf(what, sizeof what, j < 0 ? "the model's input '%s'" : "%s",
                         model_node_name(m, j));
                return nn_error(NN_ERR_STATE, "nn_model_build: %s writes over its input in place, "
                                "the output of %s, which %s reads too; use inplace=false",
                                m->layers[i]->name, what, m->layers[c]->name);
            }
    }
    return NN_OK;
}

nn_status nn_model_build(nn_model *m, int rank, const int *shape)
{
    if (!m) return nn_error(NN_ERR_ARG, "nn_model_build: model is NULL");
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_build: the model is already built");
    if (m->n_layers == 0) return nn_error(NN_ERR_STATE, "nn_model_build: the model has no layers");
    size_t size;
    NN_TRY(tensor_shape_size(rank, shape, &size, "nn_model_build: input shape"));
    for (int k = 0; k < m->n_extra_inputs; k++)
        if (!m->extra_inputs[k].rank)
            return nn_error(NN_ERR_STATE, "nn_model_build: the model input '%s' has no shape: give "
                            "shape= on its input line, or build with nn_model_build_inputs",
                            m->extra_inputs[k].name);
    NN_TRY(model_check_graph(m));
    m->in_rank = rank;
    memcpy(m->in_shape, shape, (size_t)rank * sizeof *shape);
    size_t n_params = 0, n_buffers = 0;
    for (int i = 0; i < m->n_layers; i++) {
        nn_layer *l = m->layers[i];
        if (!l->seed_fixed) l->seed = tensor_hash3(m->seed, 0x6c61796572ull, (uint64_t)i);
        int ranks[NN_LAYER_MAX_INPUTS], shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
        for (int k = 0; k < m->n_inputs[i]; k++) {
            const int *shape_k;
            model_node_shape(m, m->inputs[i][k], &ranks[k], &shape_k);
            memcpy(shapes[k], shape_k, sizeof shapes[k]);
        }
        nn_status s = m->n_inputs[i] == 1 && !nn_layer_type_is_merge(l->type)
                          ? nn_layer_build(l, ranks[0], shapes[0])
                          : nn_layer_build_multi(l, m->n_inputs[i], ranks,
                                                 (const int (*)[TENSOR_MAX_RANK])shapes);
        if (s != NN_OK) {
            if (model_reads_previous(m, i)) return s;
            char msg[512], desc[384];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            model_inputs_desc(m, i, desc, sizeof desc);
            return nn_error(s, "%s (inputs: %s)", msg, desc);
        }
        if (l->overwrites_input) NN_TRY(model_check_overwrite(m, i));
        n_params += nn_layer_param_count(l, 1);
        n_buffers += nn_layer_param_count(l, 0);
    }
    m->params = tensor_aligned_alloc((n_params ? n_params : 1) * sizeof(float));
    m->grads = tensor_aligned_alloc((n_params ? n_params : 1) * sizeof(float));
    m->buffers = tensor_aligned_alloc((n_buffers ? n_buffers : 1) * sizeof(float));
    if (!m->params || !m->grads || !m->buffers) return NN_ERR_MEMORY;
    memset(m->grads, 0, (n_params ? n_params : 1) * sizeof(float));
    m->n_params = n_params;
    m->n_buffers = n_buffers;
    tensor_rng rng;
    tensor_rng_seed(&rng, m->seed);
    size_t po = 0, bo = 0;
    for (int i = 0; i < m->n_layers; i++) {
        nn_layer *l = m->layers[i];
        for (int k = 0; k < l->n_params; k++) {
            nn_param *p = &l->params[k];
            float *data = p->trainable ? m->params + po : m->buffers + bo;
            p->t = tensor_wrap(data, p->rank, p->shape);
            if (!p->t) return NN_ERR_MEMORY;
            p->t->flags |= TENSOR_PARAM;
            if (p->trainable) {
                p->t->grad = m->grads + po;
                p->t->flags |= TENSOR_REQUIRES_GRAD;
                po += p->t->size;
            } else {
                bo += p->t->size;
            }
            nn_param_init(p, &rng);
        }
    }
    m->built = 1;
    return NN_OK;
}

/* "input, b, c": the model's input names. */
static void model_input_names(const nn_model *m, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int q = 0; q < nn_model_input_count(m); q++) {
        const size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", q ? ", " : "", nn_model_input_name(m, q));
    }
}

nn_status nn_model_build_inputs(nn_model *m, int n, const int *ranks, const int *const *shapes)
{
    if (!m || !ranks || !shapes)
        return nn_error(NN_ERR_ARG, "nn_model_build_inputs: NULL argument: %s is NULL",
                        !m ? "m" : !ranks ? "ranks" : "shapes");
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_build_inputs: the model is already built");
    char names[NN_MODEL_MAX_INPUTS * (NN_NAME_LEN + 2)];
    model_input_names(m, names, sizeof names);
    if (n != nn_model_input_count(m))
        return nn_error(NN_ERR_ARG, "nn_model_build_inputs: n is %d, but the model has %d input%s "
                        "(%s)", n, nn_model_input_count(m), nn_model_input_count(m) == 1 ? "" : "s",
                        names);
    for (int q = 0; q < n; q++) {
        char what[NN_NAME_LEN + 64];
        snprintf(what, sizeof what, "nn_model_build_inputs: shapes[%d] (input '%s')", q,
                 nn_model_input_name(m, q));
        if (!shapes[q]) return nn_error(NN_ERR_ARG, "%s is NULL", what);
        size_t size;
        NN_TRY(tensor_shape_size(ranks[q], shapes[q], &size, what));
        const nn_model_input *in = q ? &m->extra_inputs[q - 1] : NULL;
        if (in && in->rank &&
            (in->rank != ranks[q] || memcmp(in->shape, shapes[q], (size_t)ranks[q] * sizeof(int)))) {
            char a[96], b[96];
            return nn_error(NN_ERR_SHAPE, "%s is %s, but its input line declares shape %s", what,
                            tensor_shape_str(ranks[q], shapes[q], a, sizeof a),
                            tensor_shape_str(in->rank, in->shape, b, sizeof b));
        }
    }
    for (int q = 1; q < n; q++) {
        m->extra_inputs[q - 1].rank = ranks[q];
        memcpy(m->extra_inputs[q - 1].shape, shapes[q], (size_t)ranks[q] * sizeof(int));
    }
    return nn_model_build(m, ranks[0], shapes[0]);
}

void nn_model_set_training(nn_model *m, int training) { m->training = training != 0; }
int nn_model_is_training(const nn_model *m) { return m->training; }
nn_graph *nn_model_graph(nn_model *m) { return m->graph; }

void nn_model_zero_grad(nn_model *m)
{
    if (m->n_params) memset(m->grads, 0, m->n_params * sizeof(float));
}

/* Before layer i writes over its input: some layers return their input's
 * storage (flatten's view, dropout at inference), so the build-time check of
 * direct readers is repeated here on storage. Any tensor made so far that
 * shares the storage may be read only by layers on that chain of views. */
static nn_status model_check_alias(const nn_model *m, int i, tensor *const *xs, tensor *const *outs)
{
    const tensor *in = m->inputs[i][0] < 0 ? xs[-1 - m->inputs[i][0]] : outs[m->inputs[i][0]];
    for (int j = -nn_model_input_count(m); j < i; j++) {
        if ((j < 0 ? xs[-1 - j] : outs[j])->data != in->data) continue;
        for (int c = j + 1; c < m->n_layers; c++) {
            if (c == i || (c < i && outs[c]->data == in->data)) continue;
            for (int k = 0; k < m->n_inputs[c]; k++)
                if (m->inputs[c][k] == j)
                    return nn_error(NN_ERR_STATE, "nn_model_forward: %s writes over its input in "
                                    "place, whose storage %s shares, which %s reads; use "
                                    "inplace=false", m->layers[i]->name, model_node_name(m, j),
                                    m->layers[c]->name);
        }
    }
    return NN_OK;
}

/* The layers in spec order, which is a topological order (inputs come from
 * earlier lines); every output is kept for its readers, in the arena like
 * all others. */
static nn_status model_run_layers(nn_model *m, tensor *const *xs, tensor **y, int training)
{
    tensor *outs[NN_MODEL_MAX_LAYERS];
    for (int i = 0; i < m->n_layers; i++) {
        nn_layer *l = m->layers[i];
        tensor *in[NN_LAYER_MAX_INPUTS];
        for (int k = 0; k < m->n_inputs[i]; k++)
            in[k] = m->inputs[i][k] < 0 ? xs[-1 - m->inputs[i][k]] : outs[m->inputs[i][k]];
        if (l->overwrites_input) NN_TRY(model_check_alias(m, i, xs, outs));
        if (m->n_inputs[i] == 1 && !nn_layer_type_is_merge(l->type))
            NN_TRY(nn_layer_forward(l, m->graph, in[0], &outs[i], training));
        else
            NN_TRY(nn_layer_forward_multi(l, m->graph, m->n_inputs[i], in, &outs[i], training));
    }
    *y = outs[m->n_layers - 1];
    return NN_OK;
}

/* The two rules of nn_model_forward (model.h) that keep the arena bounded.
 * The model can reset the graph only when nothing in it is the caller's:
 * the graph was empty when the model's first forward since the last reset
 * began, and x is not in it. A training tape whose backward has not run is
 * kept, so an eval forward may follow a training forward (to compare the
 * two) without destroying it. */
static nn_status model_begin_pass(nn_model *m, int n, tensor *const *xs, int training)
{
    nn_graph *g = m->graph;
    const int ours = m->pass_generation == nn_graph_generation(g);
    const int tape = ours && m->pass_taped_training;
    if (training && tape)
        return nn_error(NN_ERR_STATE, "nn_model_forward: a training forward needs the graph reset "
                        "since the previous one, whose %d recorded nodes are still in it (%s); "
                        "call nn_graph_reset(nn_model_graph(m)) at the start of each step, as "
                        "nn_model_train_step does", nn_graph_node_count(g),
                        nn_graph_backward_ran(g) ? "backward ran" : "backward has not run");
    int held = 0;
    for (int q = 0; q < n; q++) held |= nn_graph_holds(g, xs[q]) || nn_graph_holds(g, xs[q]->data);
    if (ours && m->pass_alone && !(tape && !nn_graph_backward_ran(g)) && !held)
        nn_graph_reset(g);
    if (m->pass_generation != nn_graph_generation(g)) {
        m->pass_generation = nn_graph_generation(g);
        m->pass_alone = nn_graph_arena_used(g) == 0 && nn_graph_node_count(g) == 0;
        m->pass_taped_training = 0;
    }
    return NN_OK;
}

/* The forward of both entry points, after their argument checks. */
static nn_status model_forward(nn_model *m, int n, tensor *const *xs, tensor **y, nn_mode mode)
{
    int training = mode == NN_MODE_DEFAULT ? m->training : (int)mode;
    NN_TRY(model_begin_pass(m, n, xs, training));
    const int nodes_before = nn_graph_node_count(m->graph);
    nn_status s = model_run_layers(m, xs, y, training);
    if (training && nn_graph_node_count(m->graph) > nodes_before) m->pass_taped_training = 1;
    return s;
}

/* NN_OK for a model with one input; otherwise an error of fn that says
 * what to use instead. */
static nn_status model_one_input(const nn_model *m, const char *fn, const char *instead)
{
    if (!m->n_extra_inputs) return NN_OK;
    char names[NN_MODEL_MAX_INPUTS * (NN_NAME_LEN + 2)];
    model_input_names(m, names, sizeof names);
    return nn_error(NN_ERR_STATE, "%s: the model has %d inputs (%s); %s", fn,
                    nn_model_input_count(m), names, instead);
}

#define MODEL_TRAIN_ONE_INPUT "training and evaluation take a model with one input; run this " \
                              "one with nn_model_forward_inputs"

nn_status nn_model_forward(nn_model *m, tensor *x, tensor **y, nn_mode mode)
{
    if (!m || !x || !y)
        return nn_error(NN_ERR_ARG, "nn_model_forward: NULL argument: %s is NULL",
                        !m ? "m" : !x ? "x" : "y");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_model_forward: build the model first");
    if (mode != NN_MODE_DEFAULT && mode != NN_MODE_EVAL && mode != NN_MODE_TRAIN)
        return nn_error(NN_ERR_ARG, "nn_model_forward: mode must be -1, 0 or 1, but got %d", (int)mode);
    NN_TRY(model_one_input(m, "nn_model_forward", "pass them all with nn_model_forward_inputs"));
    return model_forward(m, 1, &x, y, mode);
}

nn_status nn_model_forward_inputs(nn_model *m, int n, tensor *const *xs, tensor **y, nn_mode mode)
{
    if (!m || !xs || !y)
        return nn_error(NN_ERR_ARG, "nn_model_forward_inputs: NULL argument: %s is NULL",
                        !m ? "m" : !xs ? "xs" : "y");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_model_forward_inputs: build the model first");
    if (mode != NN_MODE_DEFAULT && mode != NN_MODE_EVAL && mode != NN_MODE_TRAIN)
        return nn_error(NN_ERR_ARG, "nn_model_forward_inputs: mode must be -1, 0 or 1, but got %d",
                        (int)mode);
    const int count = nn_model_input_count(m);
    if (n != count) {
        char names[NN_MODEL_MAX_INPUTS * (NN_NAME_LEN + 2)];
        model_input_names(m, names, sizeof names);
        return nn_error(NN_ERR_ARG, "nn_model_forward_inputs: n is %d, but the model has %d "
                        "input%s (%s)", n, count, count == 1 ? "" : "s", names);
    }
    for (int q = 0; q < n; q++) {
        const char *name = nn_model_input_name(m, q);
        if (!xs[q])
            return nn_error(NN_ERR_ARG, "nn_model_forward_inputs: xs[%d] (input '%s') is NULL", q,
                            name);
        int rank;
        const int *shape;
        model_node_shape(m, -1 - q, &rank, &shape);
        int ok = xs[q]->rank == rank + 1 && (q == 0 || xs[q]->shape[0] == xs[0]->shape[0]);
        for (int d = 0; ok && d < rank; d++) ok = xs[q]->shape[d + 1] == shape[d];
        if (!ok) {
            char a[96], b[96], c[96];
            int want[TENSOR_MAX_RANK + 1];
            want[0] = xs[0]->shape[0];
            memcpy(want + 1, shape, (size_t)rank * sizeof *shape);
            return nn_error(NN_ERR_SHAPE, "nn_model_forward_inputs: xs[%d] (input '%s') has shape "
                            "%s, but the model takes %s for it (per sample %s; the batch of xs[0])",
                            q, name, tensor_shape_str(xs[q]->rank, xs[q]->shape, a, sizeof a),
                            tensor_shape_str(rank + 1, want, b, sizeof b),
                            tensor_shape_str(rank, shape, c, sizeof c));
        }
    }
    return model_forward(m, n, xs, y, mode);
}

nn_status nn_model_train_step(nn_model *m, optim *opt, tensor *x, const int *labels,
                              float *loss, int *correct)
{
    if (!m || !opt || !x || !labels)
        return nn_error(NN_ERR_ARG, "nn_model_train_step: NULL argument: %s is NULL",
                        !m ? "m" : !opt ? "opt" : !x ? "x" : "labels");
    NN_TRY(model_one_input(m, "nn_model_train_step", MODEL_TRAIN_ONE_INPUT));
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *logits, *l;
    NN_TRY(nn_model_forward(m, x, &logits, NN_MODE_TRAIN));
    NN_TRY(nn_op_softmax_cross_entropy(m->graph, logits, labels, &l, correct));
    /* Read before backward, which recycles the step's arena. */
    if (loss) *loss = l->data[0];
    NN_TRY(nn_graph_backward_recycle(m->graph, l, 1.0f));
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    return NN_OK;
}

/* One nn_model_predict pass, from a reset graph. */
static nn_status model_predict_pass(nn_model *m, tensor *x, const int *labels, tensor **y,
                                    double *loss_sum, int *correct)
{
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 0);
    nn_status s = nn_model_forward(m, x, y, NN_MODE_EVAL);
    if (s == NN_OK && labels) {
        tensor *l;
        s = nn_op_softmax_cross_entropy(m->graph, *y, labels, &l, correct);
        if (s == NN_OK && loss_sum) *loss_sum = (double)l->data[0] * x->shape[0];
    }
    nn_graph_set_grad_enabled(m->graph, 1);
    return s;
}

nn_status nn_model_predict(nn_model *m, tensor *x, const int *labels, tensor **logits,
                           double *loss_sum, int *correct)
{
    if (!m || !x)
        return nn_error(NN_ERR_ARG, "nn_model_predict: NULL argument: %s is NULL",
                        !m ? "m" : "x");
    NN_TRY(model_one_input(m, "nn_model_predict", MODEL_TRAIN_ONE_INPUT));
    tensor *y;
    const size_t arena = nn_graph_arena_bytes(m->graph);
    nn_status s = model_predict_pass(m, x, labels, &y, loss_sum, correct);
    /* A pass that outgrew the arena chained blocks to it, which the next
     * reset merges into one: an allocation in the next call. Running the
     * pass again now (an eval pass changes no state, so it gives the same
     * result) does that merge here, and every later call with this shape
     * makes the same requests into one block that holds them: after the
     * first call of a shape, prediction allocates nothing. */
    if (s == NN_OK && nn_graph_arena_bytes(m->graph) != arena)
        s = model_predict_pass(m, x, labels, &y, loss_sum, correct);
    if (s == NN_OK && logits) *logits = y;
    return s;
}

/* "(None, 8, 8, 16)": a per-sample shape with Keras's batch placeholder. */
static void model_summary_shape(int rank, const int *dims, char *shape, size_t n)
{
    snprintf(shape, n, "(None");
    for (int k = 0; k < rank; k++) {
        size_t len = strlen(shape);
        snprintf(shape + len, n - len, ", %d", dims[k]);
    }
    strncat(shape, ")", n - strlen(shape) - 1);
}

nn_status nn_model_summary(const nn_model *m, FILE *out)
{
    if (!m || !out)
        return nn_error(NN_ERR_ARG, "nn_model_summary: NULL argument: %s is NULL",
                        !m ? "m" : "out");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_model_summary: build the model first");
    /* A sequential model's table is Keras's Sequential one; any other graph
     * adds the input's row and a "Connected to" column, one input per line,
     * as Keras's summary of a functional model. */
    const int graph = !nn_model_is_sequential(m);
    /* The name column fits the longest "name (type)", so long layer type
     * names do not push their row out of line; the rules span the table. */
    int wn = 28, wc = 12;
    for (int q = 1; q < nn_model_input_count(m); q++) {
        const int w = (int)strlen(nn_model_input_name(m, q)) + 13;
        if (w > wn) wn = w < 78 ? w : 78;
    }
    for (int i = 0; i < m->n_layers; i++) {
        const int w = (int)(strlen(m->layers[i]->name) + strlen(m->layers[i]->type->name) + 3);
        if (w > wn) wn = w < 78 ? w : 78;
        const int c = (int)strlen(m->layers[i]->name);
        if (c > wc) wc = c;
    }
    const int width = 1 + wn + 1 + 22 + 1 + 10 + (graph ? 2 + wc : 0);
    char rule[160], dbl[160];
    memset(rule, '_', (size_t)width);
    memset(dbl, '=', (size_t)width);
    rule[width] = dbl[width] = '\0';
    fprintf(out, "Model: \"%s\"\n%s\n", graph ? "functional" : "sequential", rule);
    if (graph)
        fprintf(out, " %-*s %-22s %10s  %s\n", wn, "Layer (type)", "Output Shape", "Param #",
                "Connected to");
    else
        fprintf(out, " %-*s %-22s %10s\n", wn, "Layer (type)", "Output Shape", "Param #");
    fprintf(out, "%s\n", dbl);
    char shape[96];
    for (int q = 0; graph && q < nn_model_input_count(m); q++) {
        int rank;
        const int *dims;
        char name[80];
        model_node_shape(m, -1 - q, &rank, &dims);
        model_summary_shape(rank, dims, shape, sizeof shape);
        snprintf(name, sizeof name, "%s (InputLayer)", nn_model_input_name(m, q));
        fprintf(out, " %-*s %-22s %10d  -\n\n", wn, name, shape, 0);
    }
    size_t trainable = 0, frozen = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        char name[80];
        snprintf(name, sizeof name, "%s (%s)", l->name, l->type->name);
        model_summary_shape(l->out_rank, l->out_shape, shape, sizeof shape);
        size_t n = nn_layer_param_count(l, 1) + nn_layer_param_count(l, 0);
        if (graph) {
            fprintf(out, " %-*s %-22s %10zu  %s\n", wn, name, shape, n,
                    model_node_name(m, m->inputs[i][0]));
            for (int k = 1; k < m->n_inputs[i]; k++)
                fprintf(out, " %-*s %-22s %10s  %s\n", wn, "", "", "",
                        model_node_name(m, m->inputs[i][k]));
        } else {
            fprintf(out, " %-*s %-22s %10zu\n", wn, name, shape, n);
        }
        if (i + 1 < m->n_layers) fprintf(out, "\n");
        trainable += nn_layer_param_count(l, 1);
        frozen += nn_layer_param_count(l, 0);
    }
    fprintf(out, "%s\n", dbl);
    fprintf(out, "Total params: %zu (%.2f KB)\nTrainable params: %zu\nNon-trainable params: %zu\n%s\n",
            trainable + frozen, (double)(trainable + frozen) * 4.0 / 1024.0, trainable, frozen, rule);
    return NN_OK;
}

/* Training and evaluation with a chosen loss: the steps of
 * nn_model_train_step and nn_model_predict, with nn_op_loss (tensor/loss.c)
 * in place of the fixed softmax cross-entropy. */
nn_status nn_model_train_step_loss(nn_model *m, optim *opt, tensor *x, const nn_loss *loss,
                                   const int *labels, const tensor *targets, float *loss_value,
                                   int *correct)
{
    if (!m || !opt || !x || !loss)
        return nn_error(NN_ERR_ARG, "nn_model_train_step_loss: NULL argument (m, opt, x and loss "
                                    "are required): %s is NULL",
                        !m ? "m" : !opt ? "opt" : !x ? "x" : "loss");
    NN_TRY(model_one_input(m, "nn_model_train_step_loss", MODEL_TRAIN_ONE_INPUT));
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *y, *l;
    NN_TRY(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    NN_TRY(nn_op_loss(m->graph, loss, y, labels, targets, &l, correct));
    if (loss_value) *loss_value = l->data[0]; /* before backward recycles the arena */
    NN_TRY(nn_graph_backward_recycle(m->graph, l, 1.0f));
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    return NN_OK;
}

nn_status nn_model_evaluate_loss(nn_model *m, tensor *x, const nn_loss *loss, const int *labels,
                                 const tensor *targets, tensor **pred, double *loss_sum, int *correct)
{
    if (!m || !x)
        return nn_error(NN_ERR_ARG, "nn_model_evaluate_loss: NULL argument (m and x are required): "
                                    "%s is NULL", !m ? "m" : "x");
    NN_TRY(model_one_input(m, "nn_model_evaluate_loss", MODEL_TRAIN_ONE_INPUT));
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 0);
    tensor *y;
    nn_status s = nn_model_forward(m, x, &y, NN_MODE_EVAL);
    if (s == NN_OK && loss) {
        tensor *l;
        s = nn_op_loss(m->graph, loss, y, labels, targets, &l, correct);
        if (s == NN_OK && loss_sum) *loss_sum = (double)l->data[0] * x->shape[0];
    }
    nn_graph_set_grad_enabled(m->graph, 1);
    if (s == NN_OK && pred) *pred = y;
    return s;
}
