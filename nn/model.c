/* Sequential model: layers, parameter blocks, modes, summary (see model.h).
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

nn_status nn_model_add(nn_model *m, const char *type, const char *config)
{
    if (!m) return nn_error(NN_ERR_ARG, "nn_model_add: model is NULL");
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_add: the model is already built");
    if (m->n_layers == NN_MODEL_MAX_LAYERS)
        return nn_error(NN_ERR_STATE, "nn_model_add: at most %d layers", NN_MODEL_MAX_LAYERS);
    nn_layer *l = nn_layer_create(type, config);
    if (!l) return NN_ERR_CONFIG;
    int k = 1;
    for (int i = 0; i < m->n_layers; i++) k += m->layers[i]->type == l->type;
    snprintf(l->name, sizeof l->name, "%s_%d", l->type->name, k);
    m->layers[m->n_layers++] = l;
    return NN_OK;
}

nn_status nn_model_add_spec(nn_model *m, const char *text)
{
    if (!m || !text) return nn_error(NN_ERR_ARG, "nn_model_add_spec: NULL argument");
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
            if (nn_model_add(m, type, s) != NN_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", nn_last_error());
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
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        return nn_error(s, "%s: %s", path, msg);
    }
    return NN_OK;
}

nn_status nn_model_spec_string(const nn_model *m, char *buf, size_t n)
{
    size_t used = 0;
    if (n) buf[0] = '\0';
    for (int i = 0; i < m->n_layers; i++) {
        char cfg[512];
        NN_TRY(nn_layer_config_string(m->layers[i], cfg, sizeof cfg));
        int k = snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, "%s%s%s\n",
                         m->layers[i]->type->name, cfg[0] ? " " : "", cfg);
        used += (size_t)k;
    }
    if (used >= n)
        return nn_error(NN_ERR_ARG, "nn_model_spec_string: needs %zu bytes, buffer has %zu",
                        used + 1, n);
    return NN_OK;
}

nn_status nn_model_build(nn_model *m, int rank, const int *shape)
{
    if (!m) return nn_error(NN_ERR_ARG, "nn_model_build: model is NULL");
    if (m->built) return nn_error(NN_ERR_STATE, "nn_model_build: the model is already built");
    if (m->n_layers == 0) return nn_error(NN_ERR_STATE, "nn_model_build: the model has no layers");
    size_t size;
    NN_TRY(tensor_shape_size(rank, shape, &size, "nn_model_build: input shape"));
    int cur_rank = rank, cur[TENSOR_MAX_RANK];
    memcpy(cur, shape, (size_t)rank * sizeof *shape);
    m->in_rank = rank;
    memcpy(m->in_shape, shape, (size_t)rank * sizeof *shape);
    size_t n_params = 0, n_buffers = 0;
    for (int i = 0; i < m->n_layers; i++) {
        nn_layer *l = m->layers[i];
        if (!l->seed_fixed) l->seed = tensor_hash3(m->seed, 0x6c61796572ull, (uint64_t)i);
        nn_status s = nn_layer_build(l, cur_rank, cur);
        if (s != NN_OK) return s;
        cur_rank = l->out_rank;
        memcpy(cur, l->out_shape, sizeof cur);
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

void nn_model_set_training(nn_model *m, int training) { m->training = training != 0; }
int nn_model_is_training(const nn_model *m) { return m->training; }
nn_graph *nn_model_graph(nn_model *m) { return m->graph; }

void nn_model_zero_grad(nn_model *m)
{
    if (m->n_params) memset(m->grads, 0, m->n_params * sizeof(float));
}

nn_status nn_model_forward(nn_model *m, tensor *x, tensor **y, nn_mode mode)
{
    if (!m || !x || !y) return nn_error(NN_ERR_ARG, "nn_model_forward: NULL argument");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_model_forward: build the model first");
    if (mode != NN_MODE_DEFAULT && mode != NN_MODE_EVAL && mode != NN_MODE_TRAIN)
        return nn_error(NN_ERR_ARG, "nn_model_forward: mode must be -1, 0 or 1, but got %d", (int)mode);
    int training = mode == NN_MODE_DEFAULT ? m->training : (int)mode;
    tensor *cur = x;
    for (int i = 0; i < m->n_layers; i++) {
        tensor *next = NULL;
        NN_TRY(nn_layer_forward(m->layers[i], m->graph, cur, &next, training));
        cur = next;
    }
    *y = cur;
    return NN_OK;
}

nn_status nn_model_train_step(nn_model *m, optim *opt, tensor *x, const int *labels,
                              float *loss, int *correct)
{
    if (!m || !opt || !x || !labels) return nn_error(NN_ERR_ARG, "nn_model_train_step: NULL argument");
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *logits, *l;
    NN_TRY(nn_model_forward(m, x, &logits, NN_MODE_TRAIN));
    NN_TRY(nn_op_softmax_cross_entropy(m->graph, logits, labels, &l, correct));
    NN_TRY(nn_graph_backward(m->graph, l));
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    if (loss) *loss = l->data[0];
    return NN_OK;
}

nn_status nn_model_predict(nn_model *m, tensor *x, const int *labels, tensor **logits,
                           double *loss_sum, int *correct)
{
    if (!m || !x) return nn_error(NN_ERR_ARG, "nn_model_predict: NULL argument");
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 0);
    tensor *y;
    nn_status s = nn_model_forward(m, x, &y, NN_MODE_EVAL);
    if (s == NN_OK && labels) {
        tensor *l;
        s = nn_op_softmax_cross_entropy(m->graph, y, labels, &l, correct);
        if (s == NN_OK && loss_sum) *loss_sum = (double)l->data[0] * x->shape[0];
    }
    nn_graph_set_grad_enabled(m->graph, 1);
    if (s == NN_OK && logits) *logits = y;
    return s;
}

nn_status nn_model_summary(const nn_model *m, FILE *out)
{
    if (!m || !out) return nn_error(NN_ERR_ARG, "nn_model_summary: NULL argument");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_model_summary: build the model first");
    /* The name column fits the longest "name (type)", so long layer type
     * names do not push their row out of line; the rules span the table. */
    int wn = 28;
    for (int i = 0; i < m->n_layers; i++) {
        const int w = (int)(strlen(m->layers[i]->name) + strlen(m->layers[i]->type->name) + 3);
        if (w > wn) wn = w < 78 ? w : 78;
    }
    const int width = 1 + wn + 1 + 22 + 1 + 10;
    char rule[128], dbl[128];
    memset(rule, '_', (size_t)width);
    memset(dbl, '=', (size_t)width);
    rule[width] = dbl[width] = '\0';
    fprintf(out, "Model: \"sequential\"\n%s\n", rule);
    fprintf(out, " %-*s %-22s %10s\n", wn, "Layer (type)", "Output Shape", "Param #");
    fprintf(out, "%s\n", dbl);
    size_t trainable = 0, frozen = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        char name[80], shape[96] = "(None";
        snprintf(name, sizeof name, "%s (%s)", l->name, l->type->name);
        for (int k = 0; k < l->out_rank; k++) {
            size_t len = strlen(shape);
            snprintf(shape + len, sizeof shape - len, ", %d", l->out_shape[k]);
        }
        strncat(shape, ")", sizeof shape - strlen(shape) - 1);
        size_t n = nn_layer_param_count(l, 1) + nn_layer_param_count(l, 0);
        fprintf(out, " %-*s %-22s %10zu\n", wn, name, shape, n);
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
        return nn_error(NN_ERR_ARG, "nn_model_train_step_loss: NULL argument (m, opt, x and loss are required)");
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *y, *l;
    NN_TRY(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    NN_TRY(nn_op_loss(m->graph, loss, y, labels, targets, &l, correct));
    NN_TRY(nn_graph_backward(m->graph, l));
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    if (loss_value) *loss_value = l->data[0];
    return NN_OK;
}

nn_status nn_model_evaluate_loss(nn_model *m, tensor *x, const nn_loss *loss, const int *labels,
                                 const tensor *targets, tensor **pred, double *loss_sum, int *correct)
{
    if (!m || !x) return nn_error(NN_ERR_ARG, "nn_model_evaluate_loss: NULL argument (m and x are required)");
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
