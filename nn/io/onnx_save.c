/* nn_onnx_save: a built model as an ONNX inference graph (see onnx.h).
 *
 * The layers are visited in model order; each layer's config is read back
 * through its public text form (nn_layer_config_string), its parameters by
 * name, so no layer's private state is touched. Every layer output gets an
 * ONNX value named after the layer. A value may exist in two forms: the nn
 * layout, and for a channels_last image the NCHW transpose that ONNX's
 * Conv, pooling and BatchNormalization need; each form is made at most once
 * (a Transpose node) and reused by every reader.
 *
 * Omitted: see onnx.h.
 */
#include "nn/io/onnx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/io/atomic_file.h"
#include "nn/io/onnx_schema.h"
#include "nn/io/protobuf.h"
#include "nn/nn.h"

#define SAVE_NAME 64

typedef struct {
    char name[SAVE_NAME]; /* the ONNX value in its current form */
    char alt[SAVE_NAME];  /* the other form, once made ("" before) */
    int nchw;             /* name holds the NCHW form of an NHWC nn image */
    int rank;             /* ONNX rank, the batch axis included */
} onnx_save_value;

#define SAVE_AT(j) ((j) + NN_MODEL_MAX_INPUTS)

typedef struct {
    const nn_model *m;
    nn_pb_writer graph, inits;
    /* vals[SAVE_AT(j)] what index j of the model's inputs[][] denotes:
     * -1 - q model input q, i >= 0 layer i's output: its own pool entry, or
     * for a dropout the very value it passes on, so both share one cached
     * other form. */
    onnx_save_value pool[NN_MODEL_MAX_LAYERS + NN_MODEL_MAX_INPUTS];
    onnx_save_value *vals[NN_MODEL_MAX_LAYERS + NN_MODEL_MAX_INPUTS];
    int have_gelu_consts;
    nn_status err;
} onnx_save_ctx;

/* ---- nodes, attributes and initializers ---- */

static void onnx_save_attr_int(nn_pb_writer *node, const char *name, int64_t v)
{
    nn_pb_writer a = {0};
    nn_pb_write_string_field(&a, ONNX_ATTR_NAME, name);
    nn_pb_write_int_field(&a, ONNX_ATTR_I, v);
    nn_pb_write_varint_field(&a, ONNX_ATTR_TYPE, ONNX_ATTR_TYPE_INT);
    nn_pb_write_message_field(node, ONNX_NODE_ATTRIBUTE, &a);
    nn_pb_writer_free(&a);
}

static void onnx_save_attr_ints(nn_pb_writer *node, const char *name, const int *v, int n)
{
    nn_pb_writer a = {0};
    nn_pb_write_string_field(&a, ONNX_ATTR_NAME, name);
    for (int i = 0; i < n; i++) nn_pb_write_int_field(&a, ONNX_ATTR_INTS, v[i]);
    nn_pb_write_varint_field(&a, ONNX_ATTR_TYPE, ONNX_ATTR_TYPE_INTS);
    nn_pb_write_message_field(node, ONNX_NODE_ATTRIBUTE, &a);
    nn_pb_writer_free(&a);
}

static void onnx_save_attr_float(nn_pb_writer *node, const char *name, float v)
{
    nn_pb_writer a = {0};
    nn_pb_write_string_field(&a, ONNX_ATTR_NAME, name);
    nn_pb_write_float_field(&a, ONNX_ATTR_F, v);
    nn_pb_write_varint_field(&a, ONNX_ATTR_TYPE, ONNX_ATTR_TYPE_FLOAT);
    nn_pb_write_message_field(node, ONNX_NODE_ATTRIBUTE, &a);
    nn_pb_writer_free(&a);
}

/* Starts a node with its inputs, its one output (also its name) and op. */
static void onnx_save_node_begin(nn_pb_writer *node, const char *op, const char *out,
                            const char *const *in, int n_in)
{
    memset(node, 0, sizeof *node);
    for (int i = 0; i < n_in; i++) nn_pb_write_string_field(node, ONNX_NODE_INPUT, in[i]);
    nn_pb_write_string_field(node, ONNX_NODE_OUTPUT, out);
    nn_pb_write_string_field(node, ONNX_NODE_NAME, out);
    nn_pb_write_string_field(node, ONNX_NODE_OP_TYPE, op);
}

static void onnx_save_node_end(onnx_save_ctx *c, nn_pb_writer *node)
{
    nn_pb_write_message_field(&c->graph, ONNX_GRAPH_NODE, node);
    nn_pb_writer_free(node);
}

/* A node without attributes. */
static void onnx_save_node(onnx_save_ctx *c, const char *op, const char *out, const char *const *in, int n_in)
{
    nn_pb_writer node;
    onnx_save_node_begin(&node, op, out, in, n_in);
    onnx_save_node_end(c, &node);
}

/* An initializer: float32 values x of shape dims[0..rank). */
static void onnx_save_init(onnx_save_ctx *c, const char *name, int rank, const int *dims, const float *x)
{
    size_t n = 1;
    nn_pb_writer t = {0};
    for (int i = 0; i < rank; i++) {
        nn_pb_write_int_field(&t, ONNX_TENSOR_DIMS, dims[i]);
        n *= (size_t)dims[i];
    }
    nn_pb_write_varint_field(&t, ONNX_TENSOR_DATA_TYPE, ONNX_DTYPE_FLOAT);
    nn_pb_write_string_field(&t, ONNX_TENSOR_NAME, name);
    nn_pb_write_floats_field(&t, ONNX_TENSOR_RAW_DATA, x, n);
    nn_pb_write_message_field(&c->inits, ONNX_GRAPH_INITIALIZER, &t);
    nn_pb_writer_free(&t);
}

/* A graph input or output: float32, (N, shape...) with N symbolic. */
static void onnx_save_value_info(nn_pb_writer *g, int field, const char *name, int rank, const int *shape)
{
    nn_pb_writer vi = {0}, type = {0}, tt = {0}, sh = {0}, dim = {0};
    nn_pb_write_string_field(&dim, ONNX_DIM_PARAM, "N");
    nn_pb_write_message_field(&sh, ONNX_SHAPE_DIM, &dim);
    for (int i = 0; i < rank; i++) {
        nn_pb_writer_free(&dim);
        nn_pb_write_int_field(&dim, ONNX_DIM_VALUE, shape[i]);
        nn_pb_write_message_field(&sh, ONNX_SHAPE_DIM, &dim);
    }
    nn_pb_write_varint_field(&tt, ONNX_TTYPE_ELEM_TYPE, ONNX_DTYPE_FLOAT);
    nn_pb_write_message_field(&tt, ONNX_TTYPE_SHAPE, &sh);
    nn_pb_write_message_field(&type, ONNX_TYPE_TENSOR, &tt);
    nn_pb_write_string_field(&vi, ONNX_VALUE_NAME, name);
    nn_pb_write_message_field(&vi, ONNX_VALUE_TYPE, &type);
    nn_pb_write_message_field(g, field, &vi);
    nn_pb_writer *all[] = {&vi, &type, &tt, &sh, &dim};
    for (int i = 0; i < 5; i++) nn_pb_writer_free(all[i]);
}

/* ---- values in the two layouts ---- */

/* The name of value v in the NCHW form (nchw = 1) or the nn layout (0),
 * adding the Transpose the first time a form is asked for. */
static const char *onnx_save_form(onnx_save_ctx *c, onnx_save_value *v, int nchw)
{
    if (v->nchw == nchw) return v->name;
    if (!v->alt[0]) {
        static const int to_nchw[4] = {0, 3, 1, 2}, to_nhwc[4] = {0, 2, 3, 1};
        snprintf(v->alt, sizeof v->alt, "%.56s/%s", v->name, nchw ? "nchw" : "nhwc");
        const char *in[1] = {v->name};
        nn_pb_writer node;
        onnx_save_node_begin(&node, "Transpose", v->alt, in, 1);
        onnx_save_attr_ints(&node, "perm", nchw ? to_nchw : to_nhwc, 4);
        onnx_save_node_end(c, &node);
    }
    return v->alt;
}

/* Sets layer output value v to name in form nchw. */
static void onnx_save_set(onnx_save_value *v, const char *name, int nchw, int rank)
{
    snprintf(v->name, sizeof v->name, "%s", name);
    v->alt[0] = '\0';
    v->nchw = nchw;
    v->rank = rank;
}

/* ---- configs ---- */

static const char *onnx_save_cfg(const nn_config *cfg, const char *key)
{
    for (int i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->kv[i].key, key)) return cfg->kv[i].value;
    return "";
}

static void onnx_save_cfg_pair(const nn_config *cfg, const char *key, int def, int out[2])
{
    const char *v = onnx_save_cfg(cfg, key);
    out[0] = out[1] = def;
    if (*v && sscanf(v, "%d,%d", &out[0], &out[1]) == 1) out[1] = out[0];
}

static const float *onnx_save_param(const nn_layer *l, const char *name, int *n)
{
    for (int i = 0; i < l->n_params; i++)
        if (!strcmp(l->params[i].name, name)) {
            if (n) *n = (int)l->params[i].t->size;
            return l->params[i].t->data;
        }
    return NULL;
}

/* Keras's padding along one axis of extent n: before and after. */
static void onnx_save_pads(int n, int k, int s, int d, int same, int *before, int *after)
{
    *before = *after = 0;
    if (!same) return;
    const int out = (n + s - 1) / s;
    int total = (out - 1) * s + (k - 1) * d + 1 - n;
    if (total < 0) total = 0;
    *before = total / 2;
    *after = total - total / 2;
}

/* ---- activations ---- */

/* out = act(in) in in's layout (axis: softmax's ONNX axis). "linear" makes
 * no node: the caller's value keeps the name in. */
static const char *onnx_save_activation(onnx_save_ctx *c, const char *act, float alpha, const char *in,
                                   const char *out, int axis)
{
    const char *ins[1] = {in};
    static const char *const simple[][2] = {
        {"relu", "Relu"}, {"sigmoid", "Sigmoid"}, {"tanh", "Tanh"}};
    if (!*act || !strcmp(act, "linear")) return in;
    for (int i = 0; i < 3; i++)
        if (!strcmp(act, simple[i][0])) {
            onnx_save_node(c, simple[i][1], out, ins, 1);
            return out;
        }
    nn_pb_writer node;
    if (!strcmp(act, "leaky_relu") || !strcmp(act, "elu")) {
        onnx_save_node_begin(&node, act[0] == 'l' ? "LeakyRelu" : "Elu", out, ins, 1);
        onnx_save_attr_float(&node, "alpha", alpha);
        onnx_save_node_end(c, &node);
        return out;
    }
    if (!strcmp(act, "softmax")) {
        onnx_save_node_begin(&node, "Softmax", out, ins, 1);
        onnx_save_attr_int(&node, "axis", axis);
        onnx_save_node_end(c, &node);
        return out;
    }
    if (!strcmp(act, "gelu")) {
        /* 0.5 x (1 + erf(x / sqrt 2)), PyTorch's own export of GELU before
         * opset 20, which nn_onnx_load recognises. */
        if (!c->have_gelu_consts) {
            const float sqrt2 = 1.41421356237309504880f, one = 1.0f, half = 0.5f;
            onnx_save_init(c, "nn.sqrt2", 0, NULL, &sqrt2);
            onnx_save_init(c, "nn.one", 0, NULL, &one);
            onnx_save_init(c, "nn.half", 0, NULL, &half);
            c->have_gelu_consts = 1;
        }
        char t[4][SAVE_NAME + 8];
        snprintf(t[0], sizeof t[0], "%s/div", out);
        snprintf(t[1], sizeof t[1], "%s/erf", out);
        snprintf(t[2], sizeof t[2], "%s/add", out);
        snprintf(t[3], sizeof t[3], "%s/mul", out);
        const char *div[2] = {in, "nn.sqrt2"}, *erf[1] = {t[0]}, *add[2] = {t[1], "nn.one"};
        const char *mul[2] = {in, t[2]}, *half[2] = {t[3], "nn.half"};
        onnx_save_node(c, "Div", t[0], div, 2);
        onnx_save_node(c, "Erf", t[1], erf, 1);
        onnx_save_node(c, "Add", t[2], add, 2);
        onnx_save_node(c, "Mul", t[3], mul, 2);
        onnx_save_node(c, "Mul", out, half, 2);
        return out;
    }
    c->err = nn_error(NN_ERR_ARG, "nn_onnx_save: activation '%s' has no ONNX form", act);
    return in;
}

/* A layer's fused activation= after its linear node: the linear node's
 * output is "<layer>/linear" when an activation follows, else the layer's
 * name. Returns the name the linear node writes. */
static const char *onnx_save_linear_name(const nn_layer *l, const nn_config *cfg, char *buf, size_t n)
{
    const char *act = onnx_save_cfg(cfg, "activation");
    if (*act && strcmp(act, "linear")) snprintf(buf, n, "%s/linear", l->name);
    else snprintf(buf, n, "%s", l->name);
    return buf;
}

static float onnx_save_alpha(const nn_config *cfg)
{
    const char *a = onnx_save_cfg(cfg, "alpha");
    return *a ? strtof(a, NULL) : 0.0f;
}

/* ---- layers ---- */

static void onnx_save_conv2d(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value *x,
                        onnx_save_value *y)
{
    const int cl = !strcmp(onnx_save_cfg(cfg, "data_format"), "channels_last");
    int k[2], s[2], d[2], pads[4];
    onnx_save_cfg_pair(cfg, "kernel_size", 1, k);
    onnx_save_cfg_pair(cfg, "strides", 1, s);
    onnx_save_cfg_pair(cfg, "dilation_rate", 1, d);
    const int same = !strcmp(onnx_save_cfg(cfg, "padding"), "same");
    const int H = cl ? l->in_shape[0] : l->in_shape[1], W = cl ? l->in_shape[1] : l->in_shape[2];
    const int C = cl ? l->in_shape[2] : l->in_shape[0];
    onnx_save_pads(H, k[0], s[0], d[0], same, &pads[0], &pads[2]);
    onnx_save_pads(W, k[1], s[1], d[1], same, &pads[1], &pads[3]);
    int F = 0;
    const float *kern = onnx_save_param(l, "kernel", &F);
    F /= k[0] * k[1] * C;
    /* (KH, KW, C, F) -> (F, C, KH, KW) */
    float *w = malloc((size_t)F * C * k[0] * k[1] * sizeof *w + 1);
    if (!w) {
        c->err = nn_error(NN_ERR_MEMORY, "nn_onnx_save: out of memory");
        return;
    }
    for (int f = 0; f < F; f++)
        for (int ci = 0; ci < C; ci++)
            for (int i = 0; i < k[0]; i++)
                for (int j = 0; j < k[1]; j++)
                    w[(((size_t)f * C + ci) * k[0] + i) * k[1] + j] =
                        kern[(((size_t)i * k[1] + j) * C + ci) * F + f];
    char wname[SAVE_NAME], bname[SAVE_NAME], lin[SAVE_NAME];
    snprintf(wname, sizeof wname, "%s.kernel", l->name);
    snprintf(bname, sizeof bname, "%s.bias", l->name);
    const int wdims[4] = {F, C, k[0], k[1]};
    onnx_save_init(c, wname, 4, wdims, w);
    free(w);
    const float *bias = onnx_save_param(l, "bias", NULL);
    if (bias) onnx_save_init(c, bname, 1, &F, bias);
    const char *in[3] = {onnx_save_form(c, x, cl), wname, bname};
    nn_pb_writer node;
    onnx_save_node_begin(&node, "Conv", onnx_save_linear_name(l, cfg, lin, sizeof lin), in, bias ? 3 : 2);
    onnx_save_attr_ints(&node, "kernel_shape", k, 2);
    onnx_save_attr_ints(&node, "strides", s, 2);
    onnx_save_attr_ints(&node, "dilations", d, 2);
    onnx_save_attr_ints(&node, "pads", pads, 4);
    onnx_save_node_end(c, &node);
    onnx_save_set(y, onnx_save_activation(c, onnx_save_cfg(cfg, "activation"), onnx_save_alpha(cfg), lin, l->name,
                                cl ? 1 : -1),
             cl, 4);
}

static void onnx_save_dense(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value *x,
                       onnx_save_value *y)
{
    const int In = l->in_shape[0], U = l->out_shape[0];
    char wname[SAVE_NAME], bname[SAVE_NAME], lin[SAVE_NAME];
    snprintf(wname, sizeof wname, "%s.kernel", l->name);
    snprintf(bname, sizeof bname, "%s.bias", l->name);
    const int wdims[2] = {In, U};
    onnx_save_init(c, wname, 2, wdims, onnx_save_param(l, "kernel", NULL));
    const float *bias = onnx_save_param(l, "bias", NULL);
    if (bias) onnx_save_init(c, bname, 1, &U, bias);
    const char *in[3] = {onnx_save_form(c, x, 0), wname, bname};
    onnx_save_node(c, "Gemm", onnx_save_linear_name(l, cfg, lin, sizeof lin), in, bias ? 3 : 2);
    onnx_save_set(y, onnx_save_activation(c, onnx_save_cfg(cfg, "activation"), onnx_save_alpha(cfg), lin, l->name, -1),
             0, 2);
}

static void onnx_save_pool(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value *x,
                      onnx_save_value *y, const char *op)
{
    const int cl = !strcmp(onnx_save_cfg(cfg, "data_format"), "channels_last");
    int k[2], s[2], pads[4];
    onnx_save_cfg_pair(cfg, "pool_size", 2, k);
    onnx_save_cfg_pair(cfg, "strides", k[0], s);
    if (!*onnx_save_cfg(cfg, "strides")) s[0] = k[0], s[1] = k[1];
    const int same = !strcmp(onnx_save_cfg(cfg, "padding"), "same");
    const int H = cl ? l->in_shape[0] : l->in_shape[1], W = cl ? l->in_shape[1] : l->in_shape[2];
    onnx_save_pads(H, k[0], s[0], 1, same, &pads[0], &pads[2]);
    onnx_save_pads(W, k[1], s[1], 1, same, &pads[1], &pads[3]);
    const char *in[1] = {onnx_save_form(c, x, cl)};
    nn_pb_writer node;
    onnx_save_node_begin(&node, op, l->name, in, 1);
    onnx_save_attr_ints(&node, "kernel_shape", k, 2);
    onnx_save_attr_ints(&node, "strides", s, 2);
    onnx_save_attr_ints(&node, "pads", pads, 4);
    if (!strcmp(op, "AveragePool")) onnx_save_attr_int(&node, "count_include_pad", 0);
    onnx_save_node_end(c, &node);
    onnx_save_set(y, l->name, cl, 4);
}

static void onnx_save_global_avgpool(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg,
                                onnx_save_value *x, onnx_save_value *y)
{
    const int cl = !strcmp(onnx_save_cfg(cfg, "data_format"), "channels_last");
    char pooled[SAVE_NAME];
    snprintf(pooled, sizeof pooled, "%s/pool", l->name);
    const char *in[1] = {onnx_save_form(c, x, cl)}, *p[1] = {pooled};
    onnx_save_node(c, "GlobalAveragePool", pooled, in, 1);
    nn_pb_writer node;
    onnx_save_node_begin(&node, "Flatten", l->name, p, 1);
    onnx_save_attr_int(&node, "axis", 1);
    onnx_save_node_end(c, &node);
    onnx_save_set(y, l->name, 0, 2);
}

static void onnx_save_batchnorm(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value *x,
                           onnx_save_value *y)
{
    const int cl = !strcmp(onnx_save_cfg(cfg, "data_format"), "channels_last");
    if (l->in_rank != 1 && l->in_rank != 3) {
        c->err = nn_error(NN_ERR_ARG, "nn_onnx_save: %s: batchnorm of a rank-%d sample has no "
                          "ONNX form here (ONNX normalises axis 1; only (C) and images are "
                          "written)", l->name, l->in_rank);
        return;
    }
    const int image = l->in_rank == 3;
    int C = 0;
    const float *mean = onnx_save_param(l, "moving_mean", &C);
    const float *var = onnx_save_param(l, "moving_variance", NULL);
    const float *gamma = onnx_save_param(l, "gamma", NULL), *beta = onnx_save_param(l, "beta", NULL);
    float *fill = malloc(2 * (size_t)C * sizeof *fill + 1);
    if (!fill) {
        c->err = nn_error(NN_ERR_MEMORY, "nn_onnx_save: out of memory");
        return;
    }
    for (int i = 0; i < C; i++) fill[i] = 1.0f, fill[C + i] = 0.0f;
    char names[4][SAVE_NAME], lin[SAVE_NAME];
    static const char *const pn[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
    const float *data[4] = {gamma ? gamma : fill, beta ? beta : fill + C, mean, var};
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s.%s", l->name, pn[i]);
        onnx_save_init(c, names[i], 1, &C, data[i]);
    }
    free(fill);
    const char *in[5] = {onnx_save_form(c, x, image && cl), names[0], names[1], names[2], names[3]};
    nn_pb_writer node;
    onnx_save_node_begin(&node, "BatchNormalization", onnx_save_linear_name(l, cfg, lin, sizeof lin), in, 5);
    onnx_save_attr_float(&node, "epsilon", strtof(onnx_save_cfg(cfg, "epsilon"), NULL));
    onnx_save_node_end(c, &node);
    const int nchw = image && cl;
    onnx_save_set(y, onnx_save_activation(c, onnx_save_cfg(cfg, "activation"), onnx_save_alpha(cfg), lin, l->name,
                                nchw ? 1 : -1),
             nchw, x->rank);
}

static void onnx_save_flatten(onnx_save_ctx *c, const nn_layer *l, onnx_save_value *x, onnx_save_value *y)
{
    const char *in[1] = {onnx_save_form(c, x, 0)};
    nn_pb_writer node;
    onnx_save_node_begin(&node, "Flatten", l->name, in, 1);
    onnx_save_attr_int(&node, "axis", 1);
    onnx_save_node_end(c, &node);
    onnx_save_set(y, l->name, 0, 2);
}

/* add: a left-to-right chain of Add nodes, as nn sums; every input in the
 * first one's form. */
static void onnx_save_add(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value **x,
                     int n_in, onnx_save_value *y)
{
    const int nchw = x[0]->nchw;
    char lin[SAVE_NAME], acc[SAVE_NAME], next[SAVE_NAME];
    onnx_save_linear_name(l, cfg, lin, sizeof lin);
    snprintf(acc, sizeof acc, "%s", onnx_save_form(c, x[0], nchw));
    for (int k = 1; k < n_in; k++) {
        if (k == n_in - 1) snprintf(next, sizeof next, "%s", lin);
        else snprintf(next, sizeof next, "%s/sum%d", l->name, k);
        const char *in[2] = {acc, onnx_save_form(c, x[k], nchw)};
        onnx_save_node(c, "Add", next, in, 2);
        snprintf(acc, sizeof acc, "%s", next);
    }
    const int axis = nchw ? 1 : -1;
    onnx_save_set(y, onnx_save_activation(c, onnx_save_cfg(cfg, "activation"), onnx_save_alpha(cfg), lin, l->name, axis),
             nchw, x[0]->rank);
}

static void onnx_save_concatenate(onnx_save_ctx *c, const nn_layer *l, const nn_config *cfg, onnx_save_value **x,
                             int n_in, onnx_save_value *y)
{
    const int cl = !strcmp(onnx_save_cfg(cfg, "data_format"), "channels_last");
    /* channels_last images joined in their NCHW form when the first input
     * already has it (axis 1), else in the nn layout (the last axis). */
    const int nchw = cl && x[0]->nchw;
    const int axis = l->in_rank == 1 || nchw || !cl ? 1 : l->in_rank;
    const char *in[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < n_in; k++) in[k] = onnx_save_form(c, x[k], nchw);
    nn_pb_writer node;
    onnx_save_node_begin(&node, "Concat", l->name, in, n_in);
    onnx_save_attr_int(&node, "axis", axis);
    onnx_save_node_end(c, &node);
    onnx_save_set(y, l->name, nchw, x[0]->rank);
}

static void onnx_save_layer(onnx_save_ctx *c, int i)
{
    const nn_model *m = c->m;
    const nn_layer *l = m->layers[i];
    const char *type = l->type->name;
    char text[1024];
    nn_config cfg;
    if (nn_layer_config_string(l, text, sizeof text) != NN_OK ||
        nn_config_parse(&cfg, type, text) != NN_OK) {
        c->err = nn_error(NN_ERR_ARG, "nn_onnx_save: %s: cannot read the layer's config", l->name);
        return;
    }
    onnx_save_value *x[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < m->n_inputs[i]; k++) x[k] = c->vals[SAVE_AT(m->inputs[i][k])];
    onnx_save_value *y = c->vals[SAVE_AT(i)] = &c->pool[SAVE_AT(i)];
    const char *act = NULL;
    static const char *const act_layers[] = {"relu", "sigmoid", "tanh", "leaky_relu", "elu",
                                             "gelu", "softmax", NULL};
    for (int k = 0; act_layers[k]; k++)
        if (!strcmp(type, act_layers[k])) act = act_layers[k];
    if (!strcmp(type, "conv2d")) onnx_save_conv2d(c, l, &cfg, x[0], y);
    else if (!strcmp(type, "dense")) onnx_save_dense(c, l, &cfg, x[0], y);
    else if (!strcmp(type, "maxpool2d")) onnx_save_pool(c, l, &cfg, x[0], y, "MaxPool");
    else if (!strcmp(type, "avgpool2d")) onnx_save_pool(c, l, &cfg, x[0], y, "AveragePool");
    else if (!strcmp(type, "global_avgpool2d")) onnx_save_global_avgpool(c, l, &cfg, x[0], y);
    else if (!strcmp(type, "batchnorm")) onnx_save_batchnorm(c, l, &cfg, x[0], y);
    else if (!strcmp(type, "flatten") && l->in_rank == 1) c->vals[SAVE_AT(i)] = x[0]; /* (N, features) */
    else if (!strcmp(type, "flatten")) onnx_save_flatten(c, l, x[0], y);
    else if (!strcmp(type, "add")) onnx_save_add(c, l, &cfg, x, m->n_inputs[i], y);
    else if (!strcmp(type, "concatenate")) onnx_save_concatenate(c, l, &cfg, x, m->n_inputs[i], y);
    else if (!strcmp(type, "dropout") || !strncmp(type, "spatial_dropout", 15)) {
        /* The identity at inference: the output is the input's value. */
        c->vals[SAVE_AT(i)] = x[0];
    } else if (act) {
        const int axis = x[0]->nchw ? 1 : -1;
        onnx_save_set(y, onnx_save_activation(c, act, onnx_save_alpha(&cfg), x[0]->name, l->name, axis),
                 x[0]->nchw, x[0]->rank);
    } else
        c->err = nn_error(NN_ERR_ARG, "nn_onnx_save: layer '%s' of type '%s' has no ONNX form "
                          "(supported: conv2d, dense, maxpool2d, avgpool2d, global_avgpool2d, "
                          "batchnorm, flatten, add, concatenate, the activations, dropouts)",
                          l->name, type);
}

nn_status nn_onnx_encode(const nn_model *m, unsigned char **data, size_t *len)
{
    if (!m || !data || !len) return nn_error(NN_ERR_ARG, "nn_onnx_save: NULL argument");
    *data = NULL;
    *len = 0;
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_onnx_save: the model is not built");
    onnx_save_ctx *c = calloc(1, sizeof *c);
    if (!c) return nn_error(NN_ERR_MEMORY, "nn_onnx_save: out of memory");
    c->m = m;
    for (int q = 0; q < nn_model_input_count(m); q++) {
        const int j = -1 - q, rank = q ? m->extra_inputs[q - 1].rank : m->in_rank;
        c->vals[SAVE_AT(j)] = &c->pool[SAVE_AT(j)];
        onnx_save_set(c->vals[SAVE_AT(j)], nn_model_input_name(m, q), 0, rank + 1);
    }
    for (int i = 0; i < m->n_layers && c->err == NN_OK; i++) onnx_save_layer(c, i);
    nn_status s = c->err;
    nn_pb_writer model = {0};
    if (s == NN_OK) {
        const nn_layer *last = m->layers[m->n_layers - 1];
        onnx_save_value *out = c->vals[SAVE_AT(m->n_layers - 1)];
        const char *name = onnx_save_form(c, out, 0);
        int is_input = 0;
        for (int q = 0; q < nn_model_input_count(m); q++)
            is_input |= !strcmp(name, nn_model_input_name(m, q));
        if (is_input) { /* a model of dropouts only */
            const char *in[1] = {name};
            onnx_save_node(c, "Identity", "output", in, 1);
            name = "output";
        }
        nn_pb_write_string_field(&c->graph, ONNX_GRAPH_NAME, "nn");
        if (c->inits.len) {
            /* initializers are already encoded fields of the graph */
            nn_pb_writer *g = &c->graph;
            if (g->len + c->inits.len > g->cap) {
                unsigned char *p = realloc(g->data, g->len + c->inits.len);
                if (!p) g->failed = 1;
                else g->data = p, g->cap = g->len + c->inits.len;
            }
            if (!g->failed) {
                memcpy(g->data + g->len, c->inits.data, c->inits.len);
                g->len += c->inits.len;
            }
        }
        if (c->inits.failed) c->graph.failed = 1;
        onnx_save_value_info(&c->graph, ONNX_GRAPH_INPUT, "input", m->in_rank, m->in_shape);
        for (int k = 0; k < m->n_extra_inputs; k++)
            onnx_save_value_info(&c->graph, ONNX_GRAPH_INPUT, m->extra_inputs[k].name,
                                 m->extra_inputs[k].rank, m->extra_inputs[k].shape);
        onnx_save_value_info(&c->graph, ONNX_GRAPH_OUTPUT, name, last->out_rank, last->out_shape);
        nn_pb_writer opset = {0};
        nn_pb_write_string_field(&opset, ONNX_OPSET_DOMAIN, "");
        nn_pb_write_int_field(&opset, ONNX_OPSET_VERSION, NN_ONNX_OPSET);
        nn_pb_write_int_field(&model, ONNX_MODEL_IR_VERSION, NN_ONNX_IR_VERSION);
        nn_pb_write_string_field(&model, ONNX_MODEL_PRODUCER_NAME, "nn");
        nn_pb_write_string_field(&model, ONNX_MODEL_PRODUCER_VERSION, nn_version());
        nn_pb_write_message_field(&model, ONNX_MODEL_GRAPH, &c->graph);
        nn_pb_write_message_field(&model, ONNX_MODEL_OPSET_IMPORT, &opset);
        nn_pb_writer_free(&opset);
        s = nn_pb_writer_status(&model, "nn_onnx_save");
    }
    nn_pb_writer_free(&c->graph);
    nn_pb_writer_free(&c->inits);
    free(c);
    if (s != NN_OK) {
        nn_pb_writer_free(&model);
        return s;
    }
    *data = model.data;
    *len = model.len;
    return NN_OK;
}

nn_status nn_onnx_save(const nn_model *m, const char *path)
{
    if (!path) return nn_error(NN_ERR_ARG, "nn_onnx_save: path is NULL");
    unsigned char *data = NULL;
    size_t len = 0;
    NN_TRY(nn_onnx_encode(m, &data, &len));
    nn_status s = nn_atomic_file_save(path, data, len);
    free(data);
    return s;
}
