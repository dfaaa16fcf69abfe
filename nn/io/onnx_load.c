/* nn_onnx_load: an ONNX graph (decoded by nn/io/onnx_parse.c) translated
 * into nn layers (see onnx.h for what is supported).
 *
 * The nodes are read in file order, which ONNX requires to be topological:
 * a node may read only the graph input, initializers and outputs of earlier
 * nodes, so a cyclic graph fails at its first back edge with a message.
 * Each ONNX value is recorded with the nn layer that computes it, its nn
 * per-sample shape and its view: the nn tensor itself, or (nchw) the NCHW
 * transpose of an NHWC nn image, which a Transpose(0,3,1,2) produces and
 * which makes the layers reading it channels_last. Some values stand for
 * part of a pattern instead of a tensor: GlobalAveragePool's (N, C, 1, 1)
 * before its Flatten, the steps of GELU's Div/Erf/Add/Mul/Mul form, and
 * the steps by which PyTorch computes the target shape (N, -1) of
 * x.view(x.size(0), -1): Shape, Gather of element 0 (the batch size N),
 * Unsqueeze to [N], Concat with [-1].
 *
 * Layers are collected as (type, config, parameters) first; each one's
 * output shape comes from building a throwaway layer of that type, so
 * shapes follow nn's own rules. Only when the whole graph has translated is
 * the model created, built and filled: nothing is half-built.
 */
#include "nn/io/atomic_file.h"
#include "nn/io/onnx.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/io/onnx_graph.h"
#include "nn/io/onnx_schema.h"
#include "nn/registry.h"

#define LOAD_MIN_OPSET 1
#define LOAD_MAX_OPSET 17
#define LOAD_CFG 512

enum { V_INPUT, V_LAYER, V_CONST, V_POOLED, V_GELU_DIV, V_GELU_ERF, V_GELU_ADD, V_GELU_MUL,
       V_SHAPE, V_BATCH, V_BATCH1, V_FLAT_SHAPE };

typedef struct {
    const char *name;       /* borrowed from the graph */
    int kind;
    int layer;              /* the layer computing it; -1 the model input */
    int rank, shape[TENSOR_MAX_RANK]; /* nn per-sample shape */
    int nchw;
    const nn_onnx_tensor *t; /* V_CONST */
    int src;                /* V_GELU_*: the value GELU is applied to; V_SHAPE: whose shape */
    int64_t last;           /* V_FLAT_SHAPE: the second entry of [N, last] */
} onnx_load_value;

typedef struct {
    char name[NN_NAME_LEN];
    float *data; /* malloc'ed, in nn's layout */
    size_t n;
} onnx_load_param;

typedef struct {
    char type[32], cfg[LOAD_CFG], name[NN_NAME_LEN];
    int n_in, in[NN_LAYER_MAX_INPUTS]; /* layer indices, -1 - q model input q */
    int n_params;
    onnx_load_param params[NN_LAYER_MAX_PARAMS];
    int rank, shape[TENSOR_MAX_RANK];
    int matmul;  /* a dense from MatMul, whose bias an Add may still supply */
    int readers; /* ONNX nodes reading its output */
} onnx_load_layer;

typedef struct {
    const nn_onnx_graph *g;
    const char *file;
    onnx_load_value *vals;
    int n_vals, cap_vals;
    onnx_load_layer layers[NN_MODEL_MAX_LAYERS];
    int n_layers;
    int in_rank, in_shape[TENSOR_MAX_RANK];
    int64_t in_batch; /* the graph inputs' batch size, -1 when symbolic */
    int n_extra;      /* graph inputs after the first: the model's further inputs */
    nn_model_input extra[NN_MODEL_MAX_INPUTS - 1];
    const nn_onnx_node *node; /* being translated, for messages */
    int counter;
} onnx_load_ctx;

/* ---- messages ---- */

static nn_status onnx_load_fail(onnx_load_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static nn_status onnx_load_fail(onnx_load_ctx *c, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const nn_onnx_node *n = c->node;
    if (!n) return nn_error(NN_ERR_FORMAT, "%s: %s", c->file, what);
    return nn_error(NN_ERR_FORMAT, "%s: node '%s' (%s, offset %zu): %s", c->file, n->name, n->op,
                    n->offset, what);
}

/* ---- values ---- */

static int onnx_load_find(const onnx_load_ctx *c, const char *name)
{
    for (int i = c->n_vals - 1; i >= 0; i--)
        if (!strcmp(c->vals[i].name, name)) return i;
    return -1;
}

static nn_status onnx_load_define(onnx_load_ctx *c, const char *name, const onnx_load_value *v)
{
    if (!name[0]) return NN_OK; /* an omitted optional output */
    if (onnx_load_find(c, name) >= 0) return onnx_load_fail(c, "value '%s' is defined twice", name);
    if (c->n_vals == c->cap_vals) {
        const int cap = c->cap_vals ? 2 * c->cap_vals : 64;
        onnx_load_value *p = realloc(c->vals, (size_t)cap * sizeof *p);
        if (!p) return nn_error(NN_ERR_MEMORY, "%s: out of memory", c->file);
        c->vals = p;
        c->cap_vals = cap;
    }
    c->vals[c->n_vals] = *v;
    c->vals[c->n_vals].name = name;
    c->n_vals++;
    return NN_OK;
}

/* Input k of the node, as an index into c->vals. */
static nn_status onnx_load_in(onnx_load_ctx *c, int k, int *out)
{
    const nn_onnx_node *n = c->node;
    if (k >= n->n_in || !n->in[k][0])
        return onnx_load_fail(c, "input %d is missing", k);
    const int i = onnx_load_find(c, n->in[k]);
    if (i < 0)
        return onnx_load_fail(c, "input %d '%s' is not the graph input, an initializer or the output "
                         "of an earlier node (the nodes are not in topological order, or the "
                         "graph has a cycle)", k, n->in[k]);
    *out = i;
    return NN_OK;
}

/* Input k as a tensor that a layer can read (not a constant or a part of
 * a pattern). */
static nn_status onnx_load_tensor_in(onnx_load_ctx *c, int k, const onnx_load_value **v)
{
    int i;
    NN_TRY(onnx_load_in(c, k, &i));
    const onnx_load_value *x = &c->vals[i];
    if (x->kind == V_CONST)
        return onnx_load_fail(c, "input %d '%s' is a constant; nn computes this operator only on "
                         "the network's activations", k, x->name);
    if (x->kind == V_POOLED)
        return onnx_load_fail(c, "input %d '%s' is GlobalAveragePool's (N, C, 1, 1) output, which nn "
                         "supports only when a Flatten reads it", k, x->name);
    if (x->kind >= V_SHAPE)
        return onnx_load_fail(c, "input %d '%s' is a step in computing a target shape (N, -1) "
                         "from Shape; nn supports Shape, Gather, Unsqueeze and Concat only as the "
                         "steps of that shape, which a Reshape must read", k, x->name);
    if (x->kind >= V_GELU_DIV)
        return onnx_load_fail(c, "input %d '%s' is part of an unfinished GELU pattern (x / sqrt 2, "
                         "Erf, + 1, * x, * 0.5); nn supports Div, Erf and Mul only inside it", k,
                         x->name);
    *v = x;
    return NN_OK;
}

/* Input k as a float32 constant with `count` elements (0: any). */
static nn_status onnx_load_const_in(onnx_load_ctx *c, int k, const nn_onnx_tensor **t, const char *what)
{
    int i;
    NN_TRY(onnx_load_in(c, k, &i));
    const onnx_load_value *v = &c->vals[i];
    if (v->kind != V_CONST)
        return onnx_load_fail(c, "%s (input %d '%s') must be an initializer or a constant", what, k,
                         v->name);
    if (!v->t->f)
        return onnx_load_fail(c, "%s '%s' has data type %d; nn reads float32 (type 1) only", what,
                         v->name, v->t->dtype);
    *t = v->t;
    return NN_OK;
}

/* The ONNX rank of a value (batch axis included). */
static int onnx_load_onnx_rank(const onnx_load_value *v) { return v->rank + 1; }

/* ---- attributes ---- */

static nn_status onnx_load_attr_int(onnx_load_ctx *c, const char *name, int64_t def, int64_t *out)
{
    const nn_onnx_attr *a = nn_onnx_node_attr(c->node, name);
    *out = def;
    if (!a) return NN_OK;
    if (a->type != ONNX_ATTR_TYPE_INT) return onnx_load_fail(c, "attribute %s is not an int", name);
    *out = a->i;
    return NN_OK;
}

static nn_status onnx_load_attr_float(onnx_load_ctx *c, const char *name, float def, float *out)
{
    const nn_onnx_attr *a = nn_onnx_node_attr(c->node, name);
    *out = def;
    if (!a) return NN_OK;
    if (a->type != ONNX_ATTR_TYPE_FLOAT) return onnx_load_fail(c, "attribute %s is not a float", name);
    *out = a->f;
    return NN_OK;
}

/* An ints attribute of exactly n entries in [lo, hi], or def when absent. */
static nn_status onnx_load_attr_ints(onnx_load_ctx *c, const char *name, int n, const int *def, int lo,
                                int hi, int *out)
{
    const nn_onnx_attr *a = nn_onnx_node_attr(c->node, name);
    if (!a) {
        if (!def) return onnx_load_fail(c, "attribute %s is required", name);
        memcpy(out, def, (size_t)n * sizeof *out);
        return NN_OK;
    }
    if (a->type != ONNX_ATTR_TYPE_INTS || a->n_ints != n)
        return onnx_load_fail(c, "attribute %s must be %d ints (nn supports 2-D windows only)", name, n);
    for (int i = 0; i < n; i++) {
        if (a->ints[i] < lo || a->ints[i] > hi)
            return onnx_load_fail(c, "attribute %s[%d] = %lld is not supported (nn needs %d to %d)",
                             name, i, (long long)a->ints[i], lo, hi);
        out[i] = (int)a->ints[i];
    }
    return NN_OK;
}

/* Only the attributes listed may appear. */
static nn_status onnx_load_known_attrs(onnx_load_ctx *c, const char *const *known)
{
    const nn_onnx_node *n = c->node;
    for (int i = 0; i < n->n_attrs; i++) {
        int ok = 0;
        for (int k = 0; known[k]; k++) ok |= !strcmp(known[k], n->attrs[i].name);
        if (!ok) return onnx_load_fail(c, "attribute '%s' is not supported", n->attrs[i].name);
    }
    return NN_OK;
}

/* ---- layers ---- */

static int onnx_load_name_ok(const onnx_load_ctx *c, const char *s)
{
    const size_t len = strlen(s);
    if (!len || len >= NN_NAME_LEN || !strcmp(s, "input")) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return 0;
    for (int i = 0; i < c->n_layers; i++)
        if (!strcmp(c->layers[i].name, s)) return 0;
    for (int k = 0; k < c->n_extra; k++)
        if (!strcmp(c->extra[k].name, s)) return 0;
    return 1;
}

/* Appends layer `type` with config cfg (the layer's own keys) reading the
 * values x[0..n_in), with the given parameters (taken over: freed here on
 * error), and defines the node's output 0 as its output with view nchw. */
static nn_status onnx_load_layer_add(onnx_load_ctx *c, const char *type, const char *cfg,
                                const onnx_load_value *const *x, int n_in, onnx_load_param *params,
                                int n_params, int nchw)
{
    nn_status s = NN_OK;
    if (c->n_layers == NN_MODEL_MAX_LAYERS)
        s = onnx_load_fail(c, "the network needs more than %d nn layers", NN_MODEL_MAX_LAYERS);
    nn_layer *l = NULL;
    if (s == NN_OK && !(l = nn_layer_create(type, cfg))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        s = onnx_load_fail(c, "nn's %s layer refuses its config '%s': %s", type, cfg, msg);
    }
    if (s == NN_OK) {
        int ranks[NN_LAYER_MAX_INPUTS], shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
        for (int k = 0; k < n_in; k++) {
            ranks[k] = x[k]->rank;
            memcpy(shapes[k], x[k]->shape, sizeof shapes[k]);
        }
        if (nn_layer_build_multi(l, n_in, ranks, (const int(*)[TENSOR_MAX_RANK])shapes) != NN_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            s = onnx_load_fail(c, "does not fit nn's %s layer: %s", type, msg);
        }
    }
    /* The parameters must be the layer's, with its element counts. */
    for (int p = 0; s == NN_OK && p < l->n_params; p++) {
        size_t want = 1;
        for (int d = 0; d < l->params[p].rank; d++) want *= (size_t)l->params[p].shape[d];
        int found = 0;
        for (int q = 0; q < n_params; q++)
            if (!strcmp(params[q].name, l->params[p].name)) {
                found = 1;
                if (params[q].n != want)
                    s = onnx_load_fail(c, "%s has %zu values, nn's %s layer needs %zu", params[q].name,
                                  params[q].n, type, want);
            }
        if (s == NN_OK && !found)
            s = onnx_load_fail(c, "no values for the %s layer's %s", type, l->params[p].name);
    }
    if (s != NN_OK) {
        nn_layer_free(l);
        for (int q = 0; q < n_params; q++) free(params[q].data);
        return s;
    }
    onnx_load_layer *L = &c->layers[c->n_layers];
    memset(L, 0, sizeof *L);
    snprintf(L->type, sizeof L->type, "%s", type);
    snprintf(L->cfg, sizeof L->cfg, "%s", cfg);
    if (onnx_load_name_ok(c, c->node->name)) snprintf(L->name, sizeof L->name, "%s", c->node->name);
    else
        do snprintf(L->name, sizeof L->name, "%.16s_%d", type, ++c->counter % 1000000);
        while (!onnx_load_name_ok(c, L->name));
    L->n_in = n_in;
    for (int k = 0; k < n_in; k++) {
        L->in[k] = x[k]->layer;
        if (x[k]->layer >= 0) c->layers[x[k]->layer].readers++;
    }
    L->n_params = n_params;
    if (n_params) memcpy(L->params, params, (size_t)n_params * sizeof *params);
    L->rank = l->out_rank;
    memcpy(L->shape, l->out_shape, sizeof L->shape);
    nn_layer_free(l);
    onnx_load_value v = {.kind = V_LAYER, .layer = c->n_layers, .rank = L->rank, .nchw = nchw};
    memcpy(v.shape, L->shape, sizeof v.shape);
    c->n_layers++;
    return onnx_load_define(c, c->node->out[0], &v);
}

static nn_status onnx_load_param_copy(onnx_load_ctx *c, onnx_load_param *p, const char *name, const float *x,
                                 size_t n)
{
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n = n;
    p->data = malloc(n * sizeof *p->data + 1);
    if (!p->data) return nn_error(NN_ERR_MEMORY, "%s: out of memory", c->file);
    if (n) memcpy(p->data, x, n * sizeof *x);
    return NN_OK;
}

/* Defines output 0 as the same tensor as x in view nchw. */
static nn_status onnx_load_alias(onnx_load_ctx *c, const onnx_load_value *x, int nchw)
{
    onnx_load_value v = *x;
    v.nchw = nchw;
    return onnx_load_define(c, c->node->out[0], &v);
}

/* No output but the first may be read: only output 0 is defined. */
static nn_status onnx_load_one_output(onnx_load_ctx *c)
{
    if (c->node->n_out < 1 || !c->node->out[0][0]) return onnx_load_fail(c, "no output");
    return NN_OK;
}

/* ---- image operators: the view decides the data format ---- */

static const char *onnx_load_format(const onnx_load_value *x)
{
    return x->nchw ? "channels_last" : "channels_first";
}

/* H and W of an image value. */
static void onnx_load_hw(const onnx_load_value *x, int *H, int *W)
{
    if (x->nchw) *H = x->shape[0], *W = x->shape[1];
    else *H = x->shape[1], *W = x->shape[2];
}

static nn_status onnx_load_image_in(onnx_load_ctx *c, const onnx_load_value **x)
{
    NN_TRY(onnx_load_tensor_in(c, 0, x));
    if (onnx_load_onnx_rank(*x) != 4)
        return onnx_load_fail(c, "input of rank %d; nn supports 2-D images (N, C, H, W) only",
                         onnx_load_onnx_rank(*x));
    return NN_OK;
}

/* Padding from pads / auto_pad: "valid", "same" (TensorFlow's, the odd one
 * after), or an error. */
static nn_status onnx_load_padding(onnx_load_ctx *c, const onnx_load_value *x, const int *k, const int *s,
                              const int *d, const char **out)
{
    const nn_onnx_attr *ap = nn_onnx_node_attr(c->node, "auto_pad");
    const char *mode = ap && ap->s ? ap->s : "NOTSET";
    int H, W;
    onnx_load_hw(x, &H, &W);
    const int n[2] = {H, W};
    int same[4];
    for (int a = 0; a < 2; a++) {
        const int o = (n[a] + s[a] - 1) / s[a];
        int total = (o - 1) * s[a] + (k[a] - 1) * d[a] + 1 - n[a];
        if (total < 0) total = 0;
        same[a] = total / 2;
        same[a + 2] = total - total / 2;
    }
    if (!strcmp(mode, "VALID")) *out = "valid";
    else if (!strcmp(mode, "SAME_UPPER")) *out = "same";
    else if (!strcmp(mode, "SAME_LOWER")) {
        if (same[0] != same[2] || same[1] != same[3])
            return onnx_load_fail(c, "auto_pad SAME_LOWER puts the odd padding first; nn pads as "
                             "TensorFlow does (SAME_UPPER)");
        *out = "same";
    } else if (!strcmp(mode, "NOTSET")) {
        static const int zero[4] = {0, 0, 0, 0};
        int p[4];
        NN_TRY(onnx_load_attr_ints(c, "pads", 4, zero, 0, 1 << 20, p));
        if (!memcmp(p, zero, sizeof p)) *out = "valid";
        else if (!memcmp(p, same, sizeof p)) *out = "same";
        else
            return onnx_load_fail(c, "pads (%d, %d, %d, %d) for a %dx%d input are neither none nor "
                             "TensorFlow's \"same\" (%d, %d, %d, %d), the only padding nn has",
                             p[0], p[1], p[2], p[3], H, W, same[0], same[1], same[2], same[3]);
    } else
        return onnx_load_fail(c, "auto_pad '%s' is not supported", mode);
    return NN_OK;
}

static nn_status onnx_load_conv(onnx_load_ctx *c)
{
    static const char *const known[] = {"kernel_shape", "strides", "dilations", "pads",
                                        "auto_pad", "group", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    const nn_onnx_tensor *w, *b = NULL;
    NN_TRY(onnx_load_image_in(c, &x));
    NN_TRY(onnx_load_const_in(c, 1, &w, "the weight"));
    if (c->node->n_in > 2 && c->node->in[2][0]) NN_TRY(onnx_load_const_in(c, 2, &b, "the bias"));
    int64_t group;
    NN_TRY(onnx_load_attr_int(c, "group", 1, &group));
    if (group != 1) return onnx_load_fail(c, "group = %lld: nn has no grouped or depthwise "
                                     "convolution", (long long)group);
    if (w->rank != 4) return onnx_load_fail(c, "the weight has rank %d, not 4", w->rank);
    const int F = (int)w->dims[0], C = (int)w->dims[1], KH = (int)w->dims[2], KW = (int)w->dims[3];
    const int Cx = x->nchw ? x->shape[2] : x->shape[0];
    if (C != Cx) return onnx_load_fail(c, "the weight reads %d channels, the input has %d", C, Cx);
    if (!F || !KH || !KW) return onnx_load_fail(c, "the weight has an empty dimension");
    if (b && (b->count != (size_t)F))
        return onnx_load_fail(c, "the bias has %zu values for %d filters", b->count, F);
    const int one[2] = {1, 1}, kdef[2] = {KH, KW};
    int k[2], s[2], d[2];
    NN_TRY(onnx_load_attr_ints(c, "kernel_shape", 2, kdef, 1, 4096, k));
    if (k[0] != KH || k[1] != KW)
        return onnx_load_fail(c, "kernel_shape (%d, %d) differs from the weight's (%d, %d)", k[0], k[1],
                         KH, KW);
    NN_TRY(onnx_load_attr_ints(c, "strides", 2, one, 1, 4096, s));
    NN_TRY(onnx_load_attr_ints(c, "dilations", 2, one, 1, 4096, d));
    const char *pad;
    NN_TRY(onnx_load_padding(c, x, k, s, d, &pad));
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "filters=%d kernel_size=%d,%d strides=%d,%d padding=%s "
             "dilation_rate=%d,%d use_bias=%s data_format=%s", F, KH, KW, s[0], s[1], pad, d[0],
             d[1], b ? "true" : "false", onnx_load_format(x));
    onnx_load_param p[2] = {{.data = NULL}};
    snprintf(p[0].name, sizeof p[0].name, "kernel");
    p[0].n = w->count;
    p[0].data = malloc(w->count * sizeof(float) + 1);
    if (!p[0].data) return nn_error(NN_ERR_MEMORY, "%s: out of memory", c->file);
    /* (F, C, KH, KW) -> (KH, KW, C, F) */
    for (int f = 0; f < F; f++)
        for (int ci = 0; ci < C; ci++)
            for (int i = 0; i < KH; i++)
                for (int j = 0; j < KW; j++)
                    p[0].data[(((size_t)i * KW + j) * C + ci) * F + f] =
                        w->f[(((size_t)f * C + ci) * KH + i) * KW + j];
    int np = 1;
    if (b) {
        nn_status s2 = onnx_load_param_copy(c, &p[1], "bias", b->f, b->count);
        if (s2 != NN_OK) {
            free(p[0].data);
            return s2;
        }
        np = 2;
    }
    return onnx_load_layer_add(c, "conv2d", cfg, &x, 1, p, np, x->nchw);
}

static nn_status onnx_load_pool(onnx_load_ctx *c, int avg)
{
    static const char *const known[] = {"kernel_shape", "strides", "dilations", "pads", "auto_pad",
                                        "ceil_mode", "count_include_pad", "storage_order", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    if (c->node->n_out > 1 && c->node->out[1][0])
        return onnx_load_fail(c, "the Indices output is not supported");
    const onnx_load_value *x;
    NN_TRY(onnx_load_image_in(c, &x));
    const int one[2] = {1, 1};
    int k[2], s[2], d[2];
    int64_t ceil_mode, cip, order;
    NN_TRY(onnx_load_attr_ints(c, "kernel_shape", 2, NULL, 1, 4096, k));
    NN_TRY(onnx_load_attr_ints(c, "strides", 2, one, 1, 4096, s));
    NN_TRY(onnx_load_attr_ints(c, "dilations", 2, one, 1, 1, d));
    NN_TRY(onnx_load_attr_int(c, "ceil_mode", 0, &ceil_mode));
    NN_TRY(onnx_load_attr_int(c, "count_include_pad", 0, &cip));
    NN_TRY(onnx_load_attr_int(c, "storage_order", 0, &order));
    if (ceil_mode) return onnx_load_fail(c, "ceil_mode = 1 is not supported");
    if (order) return onnx_load_fail(c, "storage_order = 1 is not supported");
    const char *pad;
    NN_TRY(onnx_load_padding(c, x, k, s, d, &pad));
    if (avg && cip && !strcmp(pad, "same"))
        return onnx_load_fail(c, "count_include_pad = 1 with padding: nn averages over the window's "
                         "elements inside the input only");
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "pool_size=%d,%d strides=%d,%d padding=%s data_format=%s", k[0],
             k[1], s[0], s[1], pad, onnx_load_format(x));
    return onnx_load_layer_add(c, avg ? "avgpool2d" : "maxpool2d", cfg, &x, 1, NULL, 0, x->nchw);
}

static nn_status onnx_load_global_avgpool(onnx_load_ctx *c)
{
    static const char *const known[] = {NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    NN_TRY(onnx_load_image_in(c, &x));
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "data_format=%s", onnx_load_format(x));
    NN_TRY(onnx_load_layer_add(c, "global_avgpool2d", cfg, &x, 1, NULL, 0, 0));
    c->vals[c->n_vals - 1].kind = V_POOLED; /* (N, C, 1, 1) until a Flatten */
    return NN_OK;
}

static nn_status onnx_load_batchnorm(onnx_load_ctx *c)
{
    static const char *const known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    for (int k = 1; k < c->node->n_out; k++)
        if (c->node->out[k][0]) return onnx_load_fail(c, "the training outputs are not supported");
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    const int r = onnx_load_onnx_rank(x);
    if (r != 2 && r != 4)
        return onnx_load_fail(c, "input of rank %d; nn normalises (N, C) and (N, C, H, W)", r);
    int64_t training, spatial;
    float eps, momentum;
    NN_TRY(onnx_load_attr_int(c, "training_mode", 0, &training));
    if (training) return onnx_load_fail(c, "training_mode = 1 is not an inference graph");
    NN_TRY(onnx_load_attr_int(c, "spatial", 1, &spatial));
    if (!spatial) return onnx_load_fail(c, "spatial = 0 (statistics per position) is not supported");
    NN_TRY(onnx_load_attr_float(c, "epsilon", 1e-5f, &eps));
    NN_TRY(onnx_load_attr_float(c, "momentum", 0.9f, &momentum));
    const nn_onnx_tensor *t[4];
    static const char *const what[4] = {"scale", "B", "mean", "var"};
    static const char *const pn[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
    const int C = r == 2 ? x->shape[0] : x->nchw ? x->shape[2] : x->shape[0];
    for (int k = 0; k < 4; k++) {
        NN_TRY(onnx_load_const_in(c, k + 1, &t[k], what[k]));
        if (t[k]->count != (size_t)C)
            return onnx_load_fail(c, "%s has %zu values for %d channels", what[k], t[k]->count, C);
    }
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "epsilon=%.9g momentum=%.9g data_format=%s", (double)eps,
             (double)momentum, r == 2 ? "channels_last" : onnx_load_format(x));
    onnx_load_param p[4];
    for (int k = 0; k < 4; k++) {
        nn_status s = onnx_load_param_copy(c, &p[k], pn[k], t[k]->f, t[k]->count);
        if (s != NN_OK) {
            for (int q = 0; q < k; q++) free(p[q].data);
            return s;
        }
    }
    return onnx_load_layer_add(c, "batchnorm", cfg, &x, 1, p, 4, x->nchw);
}

static nn_status onnx_load_gemm(onnx_load_ctx *c, int matmul)
{
    static const char *const known_gemm[] = {"alpha", "beta", "transA", "transB", NULL};
    static const char *const none[] = {NULL};
    NN_TRY(onnx_load_known_attrs(c, matmul ? none : known_gemm));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    const nn_onnx_tensor *w, *b = NULL;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    if (onnx_load_onnx_rank(x) != 2)
        return onnx_load_fail(c, "input of rank %d; nn's dense reads (N, features) (flatten first)",
                         onnx_load_onnx_rank(x));
    NN_TRY(onnx_load_const_in(c, 1, &w, "B"));
    int64_t ta = 0, tb = 0;
    float alpha = 1.0f, beta = 1.0f;
    if (!matmul) {
        NN_TRY(onnx_load_attr_int(c, "transA", 0, &ta));
        NN_TRY(onnx_load_attr_int(c, "transB", 0, &tb));
        NN_TRY(onnx_load_attr_float(c, "alpha", 1.0f, &alpha));
        NN_TRY(onnx_load_attr_float(c, "beta", 1.0f, &beta));
        if (c->node->n_in > 2 && c->node->in[2][0]) NN_TRY(onnx_load_const_in(c, 2, &b, "C"));
    }
    if (ta) return onnx_load_fail(c, "transA = 1 is not supported");
    if (alpha != 1.0f || (b && beta != 1.0f))
        return onnx_load_fail(c, "alpha = %g, beta = %g: nn's dense computes x W + b", (double)alpha,
                         (double)beta);
    if (w->rank != 2) return onnx_load_fail(c, "B has rank %d, not 2", w->rank);
    const int In = (int)(tb ? w->dims[1] : w->dims[0]), U = (int)(tb ? w->dims[0] : w->dims[1]);
    if (In != x->shape[0])
        return onnx_load_fail(c, "B takes %d features, the input has %d", In, x->shape[0]);
    if (b && b->count != (size_t)U && !(b->rank == 2 && b->dims[0] == 1 && b->dims[1] == U))
        return onnx_load_fail(c, "C must hold one bias per unit (%d), as a (%d) or (1, %d) tensor", U,
                         U, U);
    if (!U) return onnx_load_fail(c, "B has no columns");
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "units=%d use_bias=%s", U, b ? "true" : "false");
    onnx_load_param p[2];
    snprintf(p[0].name, sizeof p[0].name, "kernel");
    p[0].n = w->count;
    p[0].data = malloc(w->count * sizeof(float) + 1);
    if (!p[0].data) return nn_error(NN_ERR_MEMORY, "%s: out of memory", c->file);
    for (int i = 0; i < In; i++)
        for (int u = 0; u < U; u++)
            p[0].data[(size_t)i * U + u] = tb ? w->f[(size_t)u * In + i] : w->f[(size_t)i * U + u];
    int np = 1;
    if (b) {
        nn_status s = onnx_load_param_copy(c, &p[1], "bias", b->f, b->count);
        if (s != NN_OK) {
            free(p[0].data);
            return s;
        }
        np = 2;
    }
    NN_TRY(onnx_load_layer_add(c, "dense", cfg, &x, 1, p, np, 0));
    c->layers[c->n_layers - 1].matmul = matmul;
    return NN_OK;
}

/* Relu, Sigmoid, Tanh, LeakyRelu, Elu: the view is kept. */
static nn_status onnx_load_activation(onnx_load_ctx *c, const char *type)
{
    const int has_alpha = !strcmp(type, "leaky_relu") || !strcmp(type, "elu");
    static const char *const with_alpha[] = {"alpha", NULL}, *const none[] = {NULL};
    NN_TRY(onnx_load_known_attrs(c, has_alpha ? with_alpha : none));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    char cfg[LOAD_CFG] = "";
    if (has_alpha) {
        float alpha;
        NN_TRY(onnx_load_attr_float(c, "alpha", type[0] == 'l' ? 0.01f : 1.0f, &alpha));
        snprintf(cfg, sizeof cfg, "alpha=%.9g", (double)alpha);
    }
    return onnx_load_layer_add(c, type, cfg, &x, 1, NULL, 0, x->nchw);
}

static nn_status onnx_load_softmax(onnx_load_ctx *c)
{
    static const char *const known[] = {"axis", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    /* Before opset 13 Softmax flattened the axes from `axis` (default 1) on
     * into one: the same as nn's only when that is the last axis alone. */
    const int old = c->g->opset < 13;
    int64_t axis;
    NN_TRY(onnx_load_attr_int(c, "axis", old ? 1 : -1, &axis));
    const int r = onnx_load_onnx_rank(x);
    if (axis < 0) axis += r;
    if (old && x->nchw)
        return onnx_load_fail(c, "opset %lld Softmax of an NCHW view is not supported",
                         (long long)c->g->opset);
    /* nn's softmax runs over the last axis of its own layout, which in the
     * NCHW view of an NHWC tensor is axis 1. */
    const int want = x->nchw ? 1 : r - 1;
    if (axis != want)
        return onnx_load_fail(c, "softmax over axis %lld of a rank-%d tensor; nn's softmax runs over "
                         "the last axis of the nn tensor (axis %d here)", (long long)axis, r, want);
    return onnx_load_layer_add(c, "softmax", "", &x, 1, NULL, 0, x->nchw);
}

/* Output 0 = value i with everything but the batch axis flattened, in
 * ONNX's (row-major) order: nn's flatten when nn's layout is the ONNX
 * view's. */
static nn_status onnx_load_flatten_to(onnx_load_ctx *c, int i)
{
    if (c->vals[i].kind == V_POOLED) { /* GlobalAveragePool's (N, C, 1, 1): nn's (N, C) */
        onnx_load_value v = c->vals[i];
        v.kind = V_LAYER;
        return onnx_load_define(c, c->node->out[0], &v);
    }
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    if (x->nchw)
        return onnx_load_fail(c, "flattens the NCHW view of an NHWC tensor; nn flattens in its own "
                         "layout, which a Transpose (0, 2, 3, 1) before the flatten would give");
    if (onnx_load_onnx_rank(x) == 2) return onnx_load_alias(c, x, 0);
    return onnx_load_layer_add(c, "flatten", "", &x, 1, NULL, 0, 0);
}

static nn_status onnx_load_flatten(onnx_load_ctx *c)
{
    static const char *const known[] = {"axis", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int i;
    NN_TRY(onnx_load_in(c, 0, &i));
    int64_t axis;
    NN_TRY(onnx_load_attr_int(c, "axis", 1, &axis));
    if (c->vals[i].kind == V_POOLED) { /* GlobalAveragePool + Flatten: nn's (N, C) */
        if (axis != 1 && axis != -3) return onnx_load_fail(c, "axis %lld is not supported", (long long)axis);
        onnx_load_value v = c->vals[i];
        v.kind = V_LAYER;
        return onnx_load_define(c, c->node->out[0], &v);
    }
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    const int r = onnx_load_onnx_rank(x);
    if (axis < 0) axis += r;
    if (axis != 1)
        return onnx_load_fail(c, "axis %lld: nn flattens everything but the batch axis (axis 1)",
                         (long long)axis);
    return onnx_load_flatten_to(c, i);
}

/* ---- Reshape as a flatten, and PyTorch's target shape (N, -1) ----
 * x.view(x.size(0), -1) exports as Shape(x) -> Gather(0) -> Unsqueeze(0) ->
 * Concat with [-1] -> Reshape(x, .); x.view(-1, K) and a fixed batch as a
 * Reshape to a constant. Each step is recorded as a value of its own kind,
 * and only a Reshape that ends up flattening all but the batch axis is a
 * layer. Anything else (another Gather index, x.size(1), a shape that
 * splits or merges the batch) is refused where it appears. */

/* An int64 constant input k, or NULL with a message naming `what`. */
static nn_status onnx_load_ints_in(onnx_load_ctx *c, int k, const nn_onnx_tensor **t, const char *what)
{
    int i;
    NN_TRY(onnx_load_in(c, k, &i));
    const onnx_load_value *v = &c->vals[i];
    if (v->kind != V_CONST || !v->t->i64)
        return onnx_load_fail(c, "%s (input %d '%s') must be an int64 initializer or constant", what,
                         k, v->name);
    *t = v->t;
    return NN_OK;
}

static nn_status onnx_load_shape(onnx_load_ctx *c)
{
    static const char *const known[] = {"start", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int64_t start;
    NN_TRY(onnx_load_attr_int(c, "start", 0, &start));
    if (start != 0) return onnx_load_fail(c, "start = %lld; nn supports the whole shape only", (long long)start);
    int i;
    NN_TRY(onnx_load_in(c, 0, &i));
    if (c->vals[i].kind != V_POOLED) {
        const onnx_load_value *x;
        NN_TRY(onnx_load_tensor_in(c, 0, &x));
    }
    onnx_load_value v = {.kind = V_SHAPE, .layer = -1, .src = i};
    return onnx_load_define(c, c->node->out[0], &v);
}

/* Gather of element 0 of a shape: the batch size (a scalar for a scalar
 * index, [N] for the index [0]). */
static nn_status onnx_load_gather(onnx_load_ctx *c)
{
    static const char *const known[] = {"axis", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int i;
    NN_TRY(onnx_load_in(c, 0, &i));
    if (c->vals[i].kind != V_SHAPE)
        return onnx_load_fail(c, "nn supports Gather only of a Shape's batch size (element 0), for a "
                         "Reshape to (N, -1); input 0 '%s' is not a Shape output", c->vals[i].name);
    const int r = c->vals[c->vals[i].src].kind == V_POOLED ? 4 : onnx_load_onnx_rank(&c->vals[c->vals[i].src]);
    int64_t axis;
    NN_TRY(onnx_load_attr_int(c, "axis", 0, &axis));
    const nn_onnx_tensor *t;
    NN_TRY(onnx_load_ints_in(c, 1, &t, "the index"));
    if (axis != 0 && axis != -1) return onnx_load_fail(c, "axis %lld of a shape", (long long)axis);
    if (t->count != 1 || t->rank > 1 || (t->i64[0] != 0 && t->i64[0] != -r))
        return onnx_load_fail(c, "gathers element %lld%s of the shape; nn supports only element 0, the "
                         "batch size, as the first entry of a Reshape's target (N, -1)",
                         (long long)(t->count ? t->i64[0] : -1), t->count == 1 ? "" : " (several)");
    onnx_load_value v = {.kind = t->rank == 0 ? V_BATCH : V_BATCH1, .layer = -1};
    return onnx_load_define(c, c->node->out[0], &v);
}

/* Unsqueeze of the batch size into [N] (axes from an attribute before
 * opset 13, from input 1 since). */
static nn_status onnx_load_unsqueeze(onnx_load_ctx *c)
{
    static const char *const known[] = {"axes", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int i;
    NN_TRY(onnx_load_in(c, 0, &i));
    if (c->vals[i].kind != V_BATCH)
        return onnx_load_fail(c, "nn supports Unsqueeze only of the batch size taken from a Shape (for "
                         "a Reshape to (N, -1)); input 0 '%s' is not", c->vals[i].name);
    int64_t axis;
    const nn_onnx_attr *a = nn_onnx_node_attr(c->node, "axes");
    if (a) {
        if (a->type != ONNX_ATTR_TYPE_INTS || a->n_ints != 1)
            return onnx_load_fail(c, "attribute axes must be one int");
        axis = a->ints[0];
    } else {
        const nn_onnx_tensor *t;
        NN_TRY(onnx_load_ints_in(c, 1, &t, "axes"));
        if (t->count != 1) return onnx_load_fail(c, "axes must hold one entry");
        axis = t->i64[0];
    }
    if (axis != 0 && axis != -1) return onnx_load_fail(c, "axes = %lld; nn supports 0 here", (long long)axis);
    onnx_load_value v = {.kind = V_BATCH1, .layer = -1};
    return onnx_load_define(c, c->node->out[0], &v);
}

/* Concat of [N] and a constant [K]: the target shape [N, K]. */
static nn_status onnx_load_shape_concat(onnx_load_ctx *c)
{
    static const char *const known[] = {"axis", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int64_t axis;
    NN_TRY(onnx_load_attr_int(c, "axis", 0, &axis));
    const nn_onnx_tensor *t;
    if (axis != 0 && axis != -1)
        return onnx_load_fail(c, "joins the batch size [N] along axis %lld", (long long)axis);
    if (c->node->n_in != 2)
        return onnx_load_fail(c, "builds a target shape of %d parts from the batch size [N]; nn "
                         "supports Reshape only as a flatten, to (N, -1) or (N, K): a Concat of [N] "
                         "only with one constant [K]", c->node->n_in);
    NN_TRY(onnx_load_ints_in(c, 1, &t, "the second entry of the target shape"));
    if (t->count != 1)
        return onnx_load_fail(c, "joins [N] with %zu entries; nn supports a target shape (N, K) only",
                         t->count);
    onnx_load_value v = {.kind = V_FLAT_SHAPE, .layer = -1, .last = t->i64[0]};
    return onnx_load_define(c, c->node->out[0], &v);
}

/* Reshape to (N, -1) or (N, K) with K all but the batch axis: a flatten.
 * N may be the Shape pattern's batch size, 0 (copy the batch size), -1
 * (when K is given), or the graph input's fixed batch size. */
static nn_status onnx_load_reshape(onnx_load_ctx *c)
{
    static const char *const known[] = {"allowzero", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    int64_t allowzero;
    NN_TRY(onnx_load_attr_int(c, "allowzero", 0, &allowzero));
    int i, s;
    NN_TRY(onnx_load_in(c, 0, &i));
    NN_TRY(onnx_load_in(c, 1, &s));
    const onnx_load_value *x = &c->vals[i], *sh = &c->vals[s];
    /* The per-sample element count of x, as ONNX sees it. */
    int64_t per = 1;
    if (x->kind == V_POOLED) per = x->shape[x->rank - 1];
    else {
        const onnx_load_value *t;
        NN_TRY(onnx_load_tensor_in(c, 0, &t));
        for (int k = 0; k < x->rank; k++) per *= x->shape[k];
    }
    int64_t last;
    char target[96];
    if (sh->kind == V_FLAT_SHAPE) { /* (the input's batch size, last) */
        last = sh->last;
        snprintf(target, sizeof target, "(N, %lld)", (long long)last);
    } else if (sh->kind == V_CONST && sh->t->i64) {
        const nn_onnx_tensor *t = sh->t;
        int n = snprintf(target, sizeof target, "(");
        for (size_t k = 0; k < t->count && k < 6 && n < (int)sizeof target - 24; k++)
            n += snprintf(target + n, sizeof target - (size_t)n, "%s%lld", k ? ", " : "",
                          (long long)t->i64[k]);
        snprintf(target + n, sizeof target - (size_t)n, "%s)", t->count > 6 ? ", ..." : "");
        if (t->count != 2 || t->rank != 1)
            return onnx_load_fail(c, "reshapes to %s; nn supports Reshape only as a flatten to (N, -1)",
                             target);
        const int64_t first = t->i64[0];
        last = t->i64[1];
        if (first == 0 && allowzero)
            return onnx_load_fail(c, "a target %s with allowzero = 1 asks for an empty batch", target);
        if (first == -1 && last == -1)
            return onnx_load_fail(c, "target %s has two -1 entries", target);
        if (first > 0 && first != c->in_batch)
            return onnx_load_fail(c, "reshapes to %s: the batch size %lld is fixed in the graph, but "
                             "the graph input's batch size is %s; nn supports (N, -1), (0, -1) and "
                             "(-1, K)", target, (long long)first,
                             c->in_batch < 0 ? "symbolic" : "different");
        if (first < -1)
            return onnx_load_fail(c, "target %s has a negative size", target);
    } else
        return onnx_load_fail(c, "the target shape (input 1 '%s') must be an int64 constant or "
                         "computed from the input's batch size (Shape, Gather, Unsqueeze, Concat)",
                         sh->name);
    if (last != -1 && last != per)
        return onnx_load_fail(c, "reshapes to %s; nn supports Reshape only as a flatten, whose "
                         "second size here is %lld (or -1)", target, (long long)per);
    return onnx_load_flatten_to(c, i);
}

static nn_status onnx_load_transpose(onnx_load_ctx *c)
{
    static const char *const known[] = {"perm", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    const nn_onnx_attr *a = nn_onnx_node_attr(c->node, "perm");
    static const int64_t to_nchw[4] = {0, 3, 1, 2}, to_nhwc[4] = {0, 2, 3, 1}, id[4] = {0, 1, 2, 3};
    if (a && a->type == ONNX_ATTR_TYPE_INTS && a->n_ints == 4 && onnx_load_onnx_rank(x) == 4) {
        if (!memcmp(a->ints, id, sizeof id)) return onnx_load_alias(c, x, x->nchw);
        if (!x->nchw && !memcmp(a->ints, to_nchw, sizeof to_nchw)) return onnx_load_alias(c, x, 1);
        if (x->nchw && !memcmp(a->ints, to_nhwc, sizeof to_nhwc)) return onnx_load_alias(c, x, 0);
    }
    return onnx_load_fail(c, "nn has no transpose layer: it supports a Transpose only between NHWC "
                     "and NCHW around its image layers (perm 0,3,1,2 of an NHWC tensor, then "
                     "0,2,3,1 back)");
}

/* Add: two tensors (an add layer), the bias after a MatMul, or GELU's + 1. */
static nn_status onnx_load_add(onnx_load_ctx *c)
{
    static const char *const none[] = {NULL};
    NN_TRY(onnx_load_known_attrs(c, none));
    NN_TRY(onnx_load_one_output(c));
    int a, b;
    NN_TRY(onnx_load_in(c, 0, &a));
    NN_TRY(onnx_load_in(c, 1, &b));
    if (c->vals[a].kind == V_CONST) {
        const int t = a;
        a = b;
        b = t;
    }
    const onnx_load_value *x = &c->vals[a], *y = &c->vals[b];
    if (y->kind == V_CONST) {
        const nn_onnx_tensor *t = y->t;
        if (x->kind == V_GELU_ERF && t->f && t->count == 1 && t->f[0] == 1.0f) {
            onnx_load_value v = *x;
            v.kind = V_GELU_ADD;
            return onnx_load_define(c, c->node->out[0], &v);
        }
        onnx_load_layer *L = x->kind == V_LAYER && x->layer >= 0 ? &c->layers[x->layer] : NULL;
        if (!L || !L->matmul || L->readers || !t->f)
            return onnx_load_fail(c, "adds the constant '%s'; nn supports a constant Add only as the "
                             "bias right after a MatMul", y->name);
        const int U = L->shape[0];
        if (t->count != (size_t)U)
            return onnx_load_fail(c, "the bias '%s' has %zu values for %d units", y->name, t->count, U);
        NN_TRY(onnx_load_param_copy(c, &L->params[1], "bias", t->f, t->count));
        L->n_params = 2;
        L->matmul = 0;
        char *ub = strstr(L->cfg, "use_bias=false");
        if (ub) memcpy(ub, "use_bias=true ", 14);
        return onnx_load_alias(c, x, 0);
    }
    const onnx_load_value *xs[2];
    NN_TRY(onnx_load_tensor_in(c, 0, &xs[0]));
    NN_TRY(onnx_load_tensor_in(c, 1, &xs[1]));
    if (xs[0]->nchw != xs[1]->nchw)
        return onnx_load_fail(c, "adds an NCHW view of an NHWC tensor to a tensor in nn's layout");
    return onnx_load_layer_add(c, "add", "", xs, 2, NULL, 0, xs[0]->nchw);
}

static nn_status onnx_load_concat(onnx_load_ctx *c)
{
    static const char *const known[] = {"axis", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const int n = c->node->n_in;
    int i0;
    if (n >= 1 && !onnx_load_in(c, 0, &i0) && c->vals[i0].kind == V_BATCH1)
        return onnx_load_shape_concat(c);
    if (n < 2 || n > NN_LAYER_MAX_INPUTS)
        return onnx_load_fail(c, "%d inputs; nn's concatenate joins 2 to %d", n, NN_LAYER_MAX_INPUTS);
    const onnx_load_value *xs[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n; k++) {
        NN_TRY(onnx_load_tensor_in(c, k, &xs[k]));
        if (xs[k]->nchw != xs[0]->nchw)
            return onnx_load_fail(c, "joins tensors in different layouts");
    }
    int64_t axis;
    const nn_onnx_attr *at = nn_onnx_node_attr(c->node, "axis");
    if (!at) return onnx_load_fail(c, "attribute axis is required");
    NN_TRY(onnx_load_attr_int(c, "axis", 1, &axis));
    const int r = onnx_load_onnx_rank(xs[0]);
    if (axis < 0) axis += r;
    const char *fmt;
    if (xs[0]->nchw && axis == 1) fmt = "channels_last";
    else if (!xs[0]->nchw && axis == 1) fmt = "channels_first";
    else if (!xs[0]->nchw && axis == r - 1) fmt = "channels_last";
    else
        return onnx_load_fail(c, "joins along axis %lld; nn's concatenate joins along the channel axis",
                         (long long)axis);
    char cfg[LOAD_CFG];
    snprintf(cfg, sizeof cfg, "data_format=%s", fmt);
    return onnx_load_layer_add(c, "concatenate", cfg, xs, n, NULL, 0, xs[0]->nchw);
}

static int onnx_load_scalar_is(const onnx_load_value *v, float want, float tol)
{
    return v->kind == V_CONST && v->t->f && v->t->count == 1 && fabsf(v->t->f[0] - want) <= tol;
}

/* GELU written as 0.5 x (1 + erf(x / sqrt 2)): Div, Erf, Add (above), Mul, Mul. */
static nn_status onnx_load_gelu_step(onnx_load_ctx *c, const char *op)
{
    NN_TRY(onnx_load_one_output(c));
    int a, b = -1;
    NN_TRY(onnx_load_in(c, 0, &a));
    if (strcmp(op, "Erf")) NN_TRY(onnx_load_in(c, 1, &b));
    onnx_load_value v;
    if (!strcmp(op, "Div")) {
        const onnx_load_value *x;
        NN_TRY(onnx_load_tensor_in(c, 0, &x));
        if (!onnx_load_scalar_is(&c->vals[b], 1.41421356f, 1e-6f))
            return onnx_load_fail(c, "Div is supported only as the x / sqrt 2 of GELU");
        v = *x;
        v.kind = V_GELU_DIV;
        v.src = a;
    } else if (!strcmp(op, "Erf")) {
        if (c->vals[a].kind != V_GELU_DIV)
            return onnx_load_fail(c, "Erf is supported only as the erf(x / sqrt 2) of GELU");
        v = c->vals[a];
        v.kind = V_GELU_ERF;
    } else { /* Mul */
        const onnx_load_value *p = &c->vals[a], *q = &c->vals[b];
        if (q->kind == V_GELU_ADD || q->kind == V_GELU_MUL) {
            const onnx_load_value *t = p;
            p = q;
            q = t;
        }
        if (p->kind == V_GELU_ADD && q == &c->vals[p->src]) {
            v = *p;
            v.kind = V_GELU_MUL;
        } else if (p->kind == V_GELU_MUL && onnx_load_scalar_is(q, 0.5f, 0.0f)) {
            const onnx_load_value *x = &c->vals[p->src];
            return onnx_load_layer_add(c, "gelu", "", &x, 1, NULL, 0, x->nchw);
        } else
            return onnx_load_fail(c, "Mul is supported only inside GELU's pattern (x * (1 + erf(x / "
                             "sqrt 2)) * 0.5)");
    }
    return onnx_load_define(c, c->node->out[0], &v);
}

/* Dropout and Identity: the identity at inference. */
static nn_status onnx_load_identity(onnx_load_ctx *c)
{
    static const char *const known[] = {"seed", "ratio", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    if (!strcmp(c->node->op, "Dropout") && c->node->n_in > 2 && c->node->in[2][0])
        return onnx_load_fail(c, "a training_mode input is not supported (export in eval mode)");
    for (int k = 1; k < c->node->n_out; k++)
        if (c->node->out[k][0]) return onnx_load_fail(c, "the mask output is not supported");
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    return onnx_load_alias(c, x, x->nchw);
}

/* Pad with all-zero pads (PyTorch 1.13 writes one before AveragePool). */
static nn_status onnx_load_pad(onnx_load_ctx *c)
{
    static const char *const known[] = {"mode", NULL};
    NN_TRY(onnx_load_known_attrs(c, known));
    NN_TRY(onnx_load_one_output(c));
    const onnx_load_value *x;
    NN_TRY(onnx_load_tensor_in(c, 0, &x));
    int i;
    NN_TRY(onnx_load_in(c, 1, &i));
    const onnx_load_value *p = &c->vals[i];
    int zero = p->kind == V_CONST && p->t->i64;
    for (size_t k = 0; zero && k < p->t->count; k++) zero = p->t->i64[k] == 0;
    if (!zero) return onnx_load_fail(c, "Pad is supported only when it pads nothing");
    return onnx_load_alias(c, x, x->nchw);
}

static nn_status onnx_load_constant(onnx_load_ctx *c)
{
    const nn_onnx_node *n = c->node;
    const nn_onnx_attr *a = nn_onnx_node_attr(n, "value");
    if (n->n_attrs != 1 || !a || !a->t)
        return onnx_load_fail(c, "only a Constant with a tensor 'value' is supported");
    NN_TRY(onnx_load_one_output(c));
    onnx_load_value v = {.kind = V_CONST, .layer = -1, .t = a->t};
    return onnx_load_define(c, n->out[0], &v);
}

static nn_status onnx_load_node(onnx_load_ctx *c, const nn_onnx_node *n)
{
    c->node = n;
    const char *op = n->op;
    if (n->domain[0] && strcmp(n->domain, "ai.onnx"))
        return onnx_load_fail(c, "operator domain '%s' is not supported (only the default domain)",
                         n->domain);
    if (!strcmp(op, "Conv")) return onnx_load_conv(c);
    if (!strcmp(op, "MaxPool")) return onnx_load_pool(c, 0);
    if (!strcmp(op, "AveragePool")) return onnx_load_pool(c, 1);
    if (!strcmp(op, "GlobalAveragePool")) return onnx_load_global_avgpool(c);
    if (!strcmp(op, "BatchNormalization")) return onnx_load_batchnorm(c);
    if (!strcmp(op, "Gemm")) return onnx_load_gemm(c, 0);
    if (!strcmp(op, "MatMul")) return onnx_load_gemm(c, 1);
    if (!strcmp(op, "Relu")) return onnx_load_activation(c, "relu");
    if (!strcmp(op, "Sigmoid")) return onnx_load_activation(c, "sigmoid");
    if (!strcmp(op, "Tanh")) return onnx_load_activation(c, "tanh");
    if (!strcmp(op, "LeakyRelu")) return onnx_load_activation(c, "leaky_relu");
    if (!strcmp(op, "Elu")) return onnx_load_activation(c, "elu");
    if (!strcmp(op, "Softmax")) return onnx_load_softmax(c);
    if (!strcmp(op, "Flatten")) return onnx_load_flatten(c);
    if (!strcmp(op, "Transpose")) return onnx_load_transpose(c);
    if (!strcmp(op, "Reshape")) return onnx_load_reshape(c);
    if (!strcmp(op, "Shape")) return onnx_load_shape(c);
    if (!strcmp(op, "Gather")) return onnx_load_gather(c);
    if (!strcmp(op, "Unsqueeze")) return onnx_load_unsqueeze(c);
    if (!strcmp(op, "Add")) return onnx_load_add(c);
    if (!strcmp(op, "Concat")) return onnx_load_concat(c);
    if (!strcmp(op, "Div") || !strcmp(op, "Erf") || !strcmp(op, "Mul")) return onnx_load_gelu_step(c, op);
    if (!strcmp(op, "Dropout") || !strcmp(op, "Identity")) return onnx_load_identity(c);
    if (!strcmp(op, "Pad")) return onnx_load_pad(c);
    if (!strcmp(op, "Constant")) return onnx_load_constant(c);
    return onnx_load_fail(c, "operator %s is not supported by nn (supported: Conv, Gemm, MatMul + Add, "
                     "MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Flatten, Reshape to "
                     "(N, -1) with its Shape/Gather/Unsqueeze/Concat target, Add, "
                     "Concat, Relu, Sigmoid, Tanh, LeakyRelu, Elu, GELU as Div/Erf/Add/Mul, "
                     "Softmax, Dropout, Identity, Transpose NHWC<->NCHW, Constant)", op);
}

/* ---- the graph ---- */

/* Graph input q (not an initializer) as model input q: the first is nn's
 * "input", a further one keeps its ONNX name where that is a valid nn name
 * ("input_<q+1>" otherwise). */
static nn_status onnx_load_one_input(onnx_load_ctx *c, const nn_onnx_value *in, int q)
{
    if (in->elem != ONNX_DTYPE_FLOAT)
        return onnx_load_fail(c, "graph input '%s' has element type %d; nn reads float32 (type 1)",
                         in->name, in->elem);
    if (in->rank < 2 || in->rank > TENSOR_MAX_RANK)
        return onnx_load_fail(c, "graph input '%s' has %s rank %d; nn needs (N, ...) of rank 2 to %d",
                         in->name, in->rank < 0 ? "no shape, so no" : "", in->rank,
                         TENSOR_MAX_RANK);
    const int64_t batch = in->dims[0] >= 1 ? in->dims[0] : -1;
    if (q == 0)
        c->in_batch = batch;
    else if (batch != c->in_batch)
        return onnx_load_fail(c, "graph input '%s' has batch size %lld, the first input %lld; the "
                         "inputs of an nn model share one batch", in->name, (long long)batch,
                         (long long)c->in_batch);
    int rank = in->rank - 1, shape[TENSOR_MAX_RANK];
    for (int k = 1; k < in->rank; k++) {
        if (in->dims[k] < 1 || in->dims[k] > (1 << 24))
            return onnx_load_fail(c, "graph input '%s': dimension %d is not a fixed size (only the "
                             "batch may be symbolic)", in->name, k);
        shape[k - 1] = (int)in->dims[k];
    }
    if (q == 0) {
        c->in_rank = rank;
        memcpy(c->in_shape, shape, sizeof shape);
    } else {
        nn_model_input *e = &c->extra[c->n_extra];
        if (onnx_load_name_ok(c, in->name)) snprintf(e->name, sizeof e->name, "%s", in->name);
        else snprintf(e->name, sizeof e->name, "input_%d", q + 1);
        e->rank = rank;
        memcpy(e->shape, shape, sizeof shape);
        c->n_extra++;
    }
    onnx_load_value v = {.kind = V_INPUT, .layer = -1 - q, .rank = rank};
    memcpy(v.shape, shape, sizeof v.shape);
    return onnx_load_define(c, in->name, &v);
}

static nn_status onnx_load_graph_input(onnx_load_ctx *c)
{
    const nn_onnx_graph *g = c->g;
    int q = 0;
    for (int i = 0; i < g->n_inputs; i++) {
        int is_init = 0;
        for (int k = 0; k < g->n_inits; k++) is_init |= !strcmp(g->inits[k].name, g->inputs[i].name);
        if (is_init) continue; /* IR < 4 lists initializers as inputs too */
        if (q == NN_MODEL_MAX_INPUTS)
            return onnx_load_fail(c, "the graph has more than %d inputs ('%s' is one too many); an "
                             "nn model takes at most %d", NN_MODEL_MAX_INPUTS, g->inputs[i].name,
                             NN_MODEL_MAX_INPUTS);
        NN_TRY(onnx_load_one_input(c, &g->inputs[i], q++));
    }
    if (!q) return onnx_load_fail(c, "the graph has no input");
    return NN_OK;
}

static nn_status onnx_load_translate(onnx_load_ctx *c)
{
    const nn_onnx_graph *g = c->g;
    if (g->opset < LOAD_MIN_OPSET || g->opset > LOAD_MAX_OPSET)
        return onnx_load_fail(c, "opset %lld of the default domain; nn reads opsets %d to %d",
                         (long long)g->opset, LOAD_MIN_OPSET, LOAD_MAX_OPSET);
    for (int i = 0; i < g->n_inits; i++) {
        onnx_load_value v = {.kind = V_CONST, .layer = -1, .t = &g->inits[i]};
        NN_TRY(onnx_load_define(c, g->inits[i].name, &v));
    }
    NN_TRY(onnx_load_graph_input(c));
    for (int i = 0; i < g->n_nodes; i++) NN_TRY(onnx_load_node(c, &g->nodes[i]));
    c->node = NULL;
    if (g->n_outputs != 1)
        return onnx_load_fail(c, "the graph has %d outputs; an nn model has one", g->n_outputs);
    const int o = onnx_load_find(c, g->outputs[0].name);
    if (o < 0) return onnx_load_fail(c, "the graph output '%s' is never computed", g->outputs[0].name);
    const onnx_load_value *v = &c->vals[o];
    /* GlobalAveragePool's (N, C, 1, 1) as the output holds the values of
     * nn's (N, C) in the same order. */
    if ((v->kind != V_LAYER && v->kind != V_POOLED) || v->layer < 0)
        return onnx_load_fail(c, "the graph output '%s' is %s", v->name,
                         v->kind == V_INPUT ? "the input itself: there is no layer to build"
                                            : "not a tensor an nn layer computes");
    if (v->nchw)
        return onnx_load_fail(c, "the graph output '%s' is the NCHW view of an NHWC tensor; nn's "
                         "output would be NHWC", v->name);
    if (v->layer != c->n_layers - 1)
        return onnx_load_fail(c, "the graph output '%s' is not computed by the last layer: layers "
                         "after it compute values nothing reads", v->name);
    return NN_OK;
}

static nn_status onnx_load_build(onnx_load_ctx *c, nn_model **out)
{
    nn_model *m = nn_model_create(0);
    if (!m) return nn_error(NN_ERR_MEMORY, "%s: out of memory", c->file);
    nn_status s = NN_OK;
    for (int k = 0; s == NN_OK && k < c->n_extra; k++) {
        const nn_model_input *e = &c->extra[k];
        char cfg[NN_NAME_LEN + 16 + TENSOR_MAX_RANK * 12];
        snprintf(cfg, sizeof cfg, "name=%s shape=", e->name);
        for (int d = 0; d < e->rank; d++)
            snprintf(cfg + strlen(cfg), sizeof cfg - strlen(cfg), d ? ",%d" : "%d", e->shape[d]);
        if (nn_model_add(m, "input", cfg) != NN_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            s = nn_error(NN_ERR_FORMAT, "%s: graph input %s: %s", c->file, e->name, msg);
        }
    }
    for (int i = 0; s == NN_OK && i < c->n_layers; i++) {
        const onnx_load_layer *L = &c->layers[i];
        char cfg[LOAD_CFG + 256], ins[NN_LAYER_MAX_INPUTS * NN_NAME_LEN] = "";
        for (int k = 0; k < L->n_in; k++)
            snprintf(ins + strlen(ins), sizeof ins - strlen(ins), "%s%s", k ? "," : "",
                     L->in[k] == -1 ? "input" : L->in[k] < 0 ? c->extra[-2 - L->in[k]].name
                                                             : c->layers[L->in[k]].name);
        snprintf(cfg, sizeof cfg, "name=%s inputs=%s %s", L->name, ins, L->cfg);
        if (nn_model_add(m, L->type, cfg) != NN_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            s = nn_error(NN_ERR_FORMAT, "%s: layer %s (%s %s): %s", c->file, L->name, L->type,
                         cfg, msg);
        }
    }
    if (s == NN_OK && nn_model_build(m, c->in_rank, c->in_shape) != NN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        s = nn_error(NN_ERR_FORMAT, "%s: the graph does not make an nn model: %s", c->file, msg);
    }
    for (int i = 0; s == NN_OK && i < c->n_layers; i++) {
        const onnx_load_layer *L = &c->layers[i];
        nn_layer *l = m->layers[i];
        for (int p = 0; p < l->n_params; p++)
            for (int q = 0; q < L->n_params; q++)
                if (!strcmp(L->params[q].name, l->params[p].name) &&
                    L->params[q].n == l->params[p].t->size)
                    memcpy(l->params[p].t->data, L->params[q].data, L->params[q].n * sizeof(float));
    }
    if (s != NN_OK) {
        nn_model_free(m);
        return s;
    }
    nn_model_set_training(m, 0);
    *out = m;
    return NN_OK;
}

nn_status nn_onnx_graph_load(const nn_onnx_graph *g, nn_model **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_onnx_load: out is NULL");
    *out = NULL;
    const char *name = g->file ? g->file : "(memory)";
    onnx_load_ctx *c = calloc(1, sizeof *c);
    if (!c) return nn_error(NN_ERR_MEMORY, "%s: out of memory", name);
    c->g = g;
    c->file = name;
    nn_status s = onnx_load_translate(c);
    if (s == NN_OK) s = onnx_load_build(c, out);
    for (int i = 0; i < c->n_layers; i++)
        for (int p = 0; p < c->layers[i].n_params; p++) free(c->layers[i].params[p].data);
    free(c->vals);
    free(c);
    return s;
}

nn_status nn_onnx_parse(const void *buf, size_t len, const char *name, nn_model **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_onnx_load: out is NULL");
    *out = NULL;
    nn_onnx_graph g;
    NN_TRY(nn_onnx_graph_parse(buf, len, name ? name : "(memory)", &g));
    nn_status s = nn_onnx_graph_load(&g, out);
    nn_onnx_graph_free(&g);
    return s;
}

nn_status nn_onnx_load(const char *path, nn_model **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_onnx_load: out is NULL");
    *out = NULL;
    if (!path) return nn_error(NN_ERR_ARG, "nn_onnx_load: path is NULL");
    uint8_t *buf;
    size_t n;
    NN_TRY(nn_file_read_all(path, NULL, &buf, &n));
    const nn_status s = nn_onnx_parse(buf, n, path, out);
    free(buf);
    return s;
}
