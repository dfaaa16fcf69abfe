/* ONNX ModelProto bytes to nn_onnx_graph (see onnx_graph.h): one function
 * per message type, each walking its fields with nn_pb_next, checking the
 * wire type of every field it keeps and skipping the others. Every error
 * names the file and the byte offset of the field. */
#include "nn/io/onnx_graph.h"

#include <stdlib.h>
#include <string.h>

#include "nn/io/onnx_schema.h"
#include "nn/io/protobuf.h"

#define PARSE_MAX_STRING 4096
/* A tensor may not hold more elements than this (1 GiB of float32). */
#define PARSE_MAX_COUNT ((size_t)1 << 28)

/* Runs a field loop: f is the field, rc the result of nn_pb_next. */
#define PARSE_FIELDS(r, f)                                                                         \
    for (int rc_; (rc_ = nn_pb_next((r), &(f))) != 0;)                                             \
        if (rc_ < 0) return NN_ERR_FORMAT;                                                         \
        else

static nn_status onnx_parse_string(const nn_pb_reader *r, const nn_pb_field *f, const char *what,
                              char **out)
{
    NN_TRY(nn_pb_expect(r, f, NN_PB_LEN, what));
    if (f->len > PARSE_MAX_STRING)
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: %s is %zu bytes long (at most %d)",
                        r->name, f->offset, what, f->len, PARSE_MAX_STRING);
    if (memchr(f->data, 0, f->len))
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: %s contains a NUL byte", r->name,
                        f->offset, what);
    char *s = malloc(f->len + 1);
    if (!s) return nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
    memcpy(s, f->data, f->len);
    s[f->len] = '\0';
    free(*out);
    *out = s;
    return NN_OK;
}

/* Makes room for one more element of an array of `size`-byte elements. */
static nn_status onnx_parse_grow(void **arr, int *cap, int n, size_t size, int max, const char *file,
                            size_t offset, const char *what)
{
    if (n >= max)
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: more than %d %s", file, offset, max, what);
    if (n < *cap) return NN_OK;
    const int c = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, (size_t)c * size);
    if (!p) return nn_error(NN_ERR_MEMORY, "%s: out of memory", file);
    memset((char *)p + (size_t)*cap * size, 0, (size_t)(c - *cap) * size);
    *arr = p;
    *cap = c;
    return NN_OK;
}

/* ---- TensorProto ---- */

void nn_onnx_tensor_free(nn_onnx_tensor *t)
{
    if (!t) return;
    free(t->name);
    free(t->f);
    free(t->i64);
    memset(t, 0, sizeof *t);
}

static nn_status onnx_parse_dim(const nn_pb_reader *r, const nn_pb_field *f, nn_onnx_tensor *t,
                           uint64_t v)
{
    if (t->rank == NN_ONNX_MAX_RANK)
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: tensor has more than %d dims", r->name,
                        f->offset, NN_ONNX_MAX_RANK);
    if ((int64_t)v < 0 || v > ((uint64_t)1 << 31))
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: tensor dimension %lld is out of range",
                        r->name, f->offset, (long long)(int64_t)v);
    t->dims[t->rank++] = (int64_t)v;
    return NN_OK;
}

static nn_status onnx_parse_tensor_body(nn_pb_reader *r, nn_onnx_tensor *t, size_t start)
{
    nn_pb_field f;
    const uint8_t *raw = NULL;
    size_t raw_len = 0, n_float = 0, cap_float = 0, n_i64 = 0, cap_i64 = 0;
    float *fd = NULL;
    int64_t *id = NULL;
    int has_raw = 0, external = 0;
    nn_status s = NN_OK;
    int rc;
    while (s == NN_OK && (rc = nn_pb_next(r, &f)) != 0) {
        if (rc < 0) {
            s = NN_ERR_FORMAT;
            break;
        }
        switch (f.number) {
        case ONNX_TENSOR_DIMS:
            if (f.wire == NN_PB_VARINT) {
                s = onnx_parse_dim(r, &f, t, f.v);
                break;
            }
            if ((s = nn_pb_expect(r, &f, NN_PB_LEN, "TensorProto.dims")) == NN_OK) {
                nn_pb_reader sub;
                nn_pb_reader_sub(&sub, r, &f);
                uint64_t v;
                int k;
                while (s == NN_OK && (k = nn_pb_next_varint(&sub, &v)) == 1)
                    s = onnx_parse_dim(r, &f, t, v);
                if (s == NN_OK && k < 0) s = NN_ERR_FORMAT;
            }
            break;
        case ONNX_TENSOR_DATA_TYPE:
            if ((s = nn_pb_expect(r, &f, NN_PB_VARINT, "TensorProto.data_type")) == NN_OK)
                t->dtype = (int)(f.v & 0xffff);
            break;
        case ONNX_TENSOR_NAME:
            s = onnx_parse_string(r, &f, "TensorProto.name", &t->name);
            break;
        case ONNX_TENSOR_RAW_DATA:
            if ((s = nn_pb_expect(r, &f, NN_PB_LEN, "TensorProto.raw_data")) == NN_OK) {
                raw = f.data;
                raw_len = f.len;
                has_raw = 1;
            }
            break;
        case ONNX_TENSOR_FLOAT_DATA:
        case ONNX_TENSOR_INT64_DATA: {
            const int is_f = f.number == ONNX_TENSOR_FLOAT_DATA;
            /* packed (one length-delimited field) or one value per field */
            const uint8_t *p = NULL;
            size_t n = 1;
            if (f.wire == NN_PB_LEN) {
                if (is_f && f.len % 4) {
                    s = nn_error(NN_ERR_FORMAT, "%s: offset %zu: packed float_data of %zu bytes "
                                 "is not a whole number of floats", r->name, f.offset, f.len);
                    break;
                }
                p = f.data;
                n = is_f ? f.len / 4 : f.len; /* int64: at most one per byte */
            } else if ((s = nn_pb_expect(r, &f, is_f ? NN_PB_FIXED32 : NN_PB_VARINT,
                                          is_f ? "TensorProto.float_data"
                                               : "TensorProto.int64_data")) != NN_OK)
                break;
            size_t *cnt = is_f ? &n_float : &n_i64, *cap = is_f ? &cap_float : &cap_i64;
            if (*cnt + n > PARSE_MAX_COUNT) {
                s = nn_error(NN_ERR_FORMAT, "%s: offset %zu: too many values", r->name, f.offset);
                break;
            }
            if (*cnt + n > *cap) {
                size_t c = *cap ? *cap : 16;
                while (c < *cnt + n) c *= 2;
                void *q = realloc(is_f ? (void *)fd : (void *)id, c * (is_f ? 4 : 8));
                if (!q) {
                    s = nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
                    break;
                }
                if (is_f) fd = q;
                else id = q;
                *cap = c;
            }
            if (!p) {
                if (is_f) {
                    uint32_t u = (uint32_t)f.v;
                    memcpy(&fd[n_float++], &u, 4);
                } else
                    id[n_i64++] = (int64_t)f.v;
            } else if (is_f) {
                for (size_t i = 0; i < n; i++) {
                    uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                                 (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
                    memcpy(&fd[n_float++], &u, 4);
                }
            } else {
                nn_pb_reader sub;
                nn_pb_reader_sub(&sub, r, &f);
                uint64_t v;
                int k;
                while ((k = nn_pb_next_varint(&sub, &v)) == 1) id[n_i64++] = (int64_t)v;
                if (k < 0) s = NN_ERR_FORMAT;
            }
            break;
        }
        case ONNX_TENSOR_DATA_LOCATION:
            if ((s = nn_pb_expect(r, &f, NN_PB_VARINT, "TensorProto.data_location")) == NN_OK &&
                f.v != 0)
                external = 1;
            break;
        default:
            break;
        }
    }
    const char *tn = t->name ? t->name : "(unnamed)";
    size_t count = 1;
    for (int i = 0; s == NN_OK && i < t->rank; i++) {
        count *= (size_t)t->dims[i];
        if (count > PARSE_MAX_COUNT)
            s = nn_error(NN_ERR_FORMAT, "%s: offset %zu: tensor '%s' declares more than %zu "
                         "elements", r->name, start, tn, PARSE_MAX_COUNT);
    }
    if (s == NN_OK && external)
        s = nn_error(NN_ERR_FORMAT, "%s: offset %zu: tensor '%s' keeps its data in an external "
                     "file, which nn does not read", r->name, start, tn);
    if (s == NN_OK) {
        t->count = count;
        const int is_f = t->dtype == ONNX_DTYPE_FLOAT, is_i = t->dtype == ONNX_DTYPE_INT64;
        const size_t have = has_raw ? raw_len / (is_f ? 4 : 8) : is_f ? n_float : n_i64;
        if ((is_f || is_i) && (have != count || (has_raw && raw_len % (is_f ? 4 : 8)) ||
                               (has_raw && (n_float || n_i64))))
            s = nn_error(NN_ERR_FORMAT, "%s: offset %zu: tensor '%s' has %zu elements by its dims "
                         "but its data holds %zu", r->name, start, tn, count, have);
        else if (is_f) {
            t->f = malloc(count * 4 + 4);
            if (!t->f) s = nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
            else if (has_raw)
                for (size_t i = 0; i < count; i++) {
                    const uint8_t *p = raw + 4 * i;
                    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                 (uint32_t)p[3] << 24;
                    memcpy(&t->f[i], &u, 4);
                }
            else if (count) memcpy(t->f, fd, count * 4);
        } else if (is_i) {
            t->i64 = malloc(count * 8 + 8);
            if (!t->i64) s = nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
            else if (has_raw)
                for (size_t i = 0; i < count; i++) {
                    uint64_t u = 0;
                    for (int b = 0; b < 8; b++) u |= (uint64_t)raw[8 * i + b] << (8 * b);
                    t->i64[i] = (int64_t)u;
                }
            else if (count) memcpy(t->i64, id, count * 8);
        }
    }
    free(fd);
    free(id);
    if (s == NN_OK && !t->name && !(t->name = calloc(1, 1)))
        s = nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
    return s;
}

static nn_status onnx_parse_tensor(const nn_pb_reader *r, const nn_pb_field *f, nn_onnx_tensor *t)
{
    NN_TRY(nn_pb_expect(r, f, NN_PB_LEN, "a tensor"));
    nn_pb_reader sub;
    nn_pb_reader_sub(&sub, r, f);
    memset(t, 0, sizeof *t);
    nn_status s = onnx_parse_tensor_body(&sub, t, f->offset);
    if (s != NN_OK) nn_onnx_tensor_free(t);
    return s;
}

nn_status nn_onnx_tensor_parse(const void *buf, size_t len, const char *name, nn_onnx_tensor *t)
{
    nn_pb_reader r;
    nn_pb_reader_init(&r, buf, buf, len, name);
    memset(t, 0, sizeof *t);
    nn_status s = onnx_parse_tensor_body(&r, t, 0);
    if (s != NN_OK) nn_onnx_tensor_free(t);
    return s;
}

/* ---- NodeProto and AttributeProto ---- */

static nn_status onnx_parse_attr(const nn_pb_reader *r, const nn_pb_field *af, nn_onnx_attr *a)
{
    NN_TRY(nn_pb_expect(r, af, NN_PB_LEN, "NodeProto.attribute"));
    nn_pb_reader sub;
    nn_pb_reader_sub(&sub, r, af);
    nn_pb_field f;
    PARSE_FIELDS(&sub, f)
    {
        switch (f.number) {
        case ONNX_ATTR_NAME:
            NN_TRY(onnx_parse_string(&sub, &f, "AttributeProto.name", &a->name));
            break;
        case ONNX_ATTR_TYPE:
            NN_TRY(nn_pb_expect(&sub, &f, NN_PB_VARINT, "AttributeProto.type"));
            a->type = (int)(f.v & 0xff);
            break;
        case ONNX_ATTR_F: {
            NN_TRY(nn_pb_expect(&sub, &f, NN_PB_FIXED32, "AttributeProto.f"));
            uint32_t u = (uint32_t)f.v;
            memcpy(&a->f, &u, 4);
            break;
        }
        case ONNX_ATTR_I:
            NN_TRY(nn_pb_expect(&sub, &f, NN_PB_VARINT, "AttributeProto.i"));
            a->i = (int64_t)f.v;
            break;
        case ONNX_ATTR_S:
            NN_TRY(onnx_parse_string(&sub, &f, "AttributeProto.s", &a->s));
            break;
        case ONNX_ATTR_T:
            if (a->t) return nn_error(NN_ERR_FORMAT, "%s: offset %zu: attribute has two tensors",
                                      r->name, f.offset);
            a->t = calloc(1, sizeof *a->t);
            if (!a->t) return nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
            NN_TRY(onnx_parse_tensor(&sub, &f, a->t));
            break;
        case ONNX_ATTR_INTS: {
            uint64_t v;
            if (f.wire == NN_PB_VARINT) {
                if (a->n_ints == NN_ONNX_MAX_INTS)
                    return nn_error(NN_ERR_FORMAT, "%s: offset %zu: attribute '%s' has more than "
                                    "%d ints", r->name, f.offset, a->name ? a->name : "",
                                    NN_ONNX_MAX_INTS);
                a->ints[a->n_ints++] = (int64_t)f.v;
                break;
            }
            NN_TRY(nn_pb_expect(&sub, &f, NN_PB_LEN, "AttributeProto.ints"));
            nn_pb_reader p;
            nn_pb_reader_sub(&p, &sub, &f);
            int k;
            while ((k = nn_pb_next_varint(&p, &v)) == 1) {
                if (a->n_ints == NN_ONNX_MAX_INTS)
                    return nn_error(NN_ERR_FORMAT, "%s: offset %zu: attribute has more than %d "
                                    "ints", r->name, f.offset, NN_ONNX_MAX_INTS);
                a->ints[a->n_ints++] = (int64_t)v;
            }
            if (k < 0) return NN_ERR_FORMAT;
            break;
        }
        case ONNX_ATTR_FLOATS:
            if (f.wire == NN_PB_LEN) a->n_floats += (int)(f.len / 4 > 1000000 ? 1000000 : f.len / 4);
            else {
                NN_TRY(nn_pb_expect(&sub, &f, NN_PB_FIXED32, "AttributeProto.floats"));
                a->n_floats++;
            }
            break;
        default:
            break;
        }
    }
    if (!a->name)
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: attribute without a name", r->name,
                        af->offset);
    return NN_OK;
}

static nn_status onnx_parse_node(const nn_pb_reader *r, const nn_pb_field *nf, nn_onnx_node *n)
{
    NN_TRY(nn_pb_expect(r, nf, NN_PB_LEN, "GraphProto.node"));
    n->offset = nf->offset;
    nn_pb_reader sub;
    nn_pb_reader_sub(&sub, r, nf);
    nn_pb_field f;
    PARSE_FIELDS(&sub, f)
    {
        switch (f.number) {
        case ONNX_NODE_INPUT:
        case ONNX_NODE_OUTPUT: {
            const int in = f.number == ONNX_NODE_INPUT;
            int *cnt = in ? &n->n_in : &n->n_out;
            if (*cnt == NN_ONNX_MAX_IO)
                return nn_error(NN_ERR_FORMAT, "%s: offset %zu: node has more than %d %s",
                                r->name, nf->offset, NN_ONNX_MAX_IO, in ? "inputs" : "outputs");
            char **slot = in ? &n->in[*cnt] : &n->out[*cnt];
            NN_TRY(onnx_parse_string(&sub, &f, in ? "NodeProto.input" : "NodeProto.output", slot));
            (*cnt)++;
            break;
        }
        case ONNX_NODE_NAME:
            NN_TRY(onnx_parse_string(&sub, &f, "NodeProto.name", &n->name));
            break;
        case ONNX_NODE_OP_TYPE:
            NN_TRY(onnx_parse_string(&sub, &f, "NodeProto.op_type", &n->op));
            break;
        case ONNX_NODE_DOMAIN:
            NN_TRY(onnx_parse_string(&sub, &f, "NodeProto.domain", &n->domain));
            break;
        case ONNX_NODE_ATTRIBUTE:
            if (n->n_attrs == NN_ONNX_MAX_ATTRS)
                return nn_error(NN_ERR_FORMAT, "%s: offset %zu: node has more than %d attributes",
                                r->name, nf->offset, NN_ONNX_MAX_ATTRS);
            NN_TRY(onnx_parse_attr(&sub, &f, &n->attrs[n->n_attrs++]));
            break;
        default:
            break;
        }
    }
    char **strs[3] = {&n->name, &n->op, &n->domain};
    for (int i = 0; i < 3; i++)
        if (!*strs[i] && !(*strs[i] = calloc(1, 1)))
            return nn_error(NN_ERR_MEMORY, "%s: out of memory", r->name);
    if (!n->op[0])
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: node '%s' has no op_type", r->name,
                        nf->offset, n->name);
    return NN_OK;
}

/* ---- ValueInfoProto ---- */

static nn_status onnx_parse_value(const nn_pb_reader *r, const nn_pb_field *vf, nn_onnx_value *v)
{
    NN_TRY(nn_pb_expect(r, vf, NN_PB_LEN, "GraphProto.input/output"));
    v->rank = -1;
    nn_pb_reader sub;
    nn_pb_reader_sub(&sub, r, vf);
    nn_pb_field f;
    PARSE_FIELDS(&sub, f)
    {
        if (f.number == ONNX_VALUE_NAME) {
            NN_TRY(onnx_parse_string(&sub, &f, "ValueInfoProto.name", &v->name));
            continue;
        }
        if (f.number != ONNX_VALUE_TYPE) continue;
        NN_TRY(nn_pb_expect(&sub, &f, NN_PB_LEN, "ValueInfoProto.type"));
        nn_pb_reader ty;
        nn_pb_reader_sub(&ty, &sub, &f);
        nn_pb_field g;
        PARSE_FIELDS(&ty, g)
        {
            if (g.number != ONNX_TYPE_TENSOR) continue;
            NN_TRY(nn_pb_expect(&ty, &g, NN_PB_LEN, "TypeProto.tensor_type"));
            nn_pb_reader tt;
            nn_pb_reader_sub(&tt, &ty, &g);
            nn_pb_field h;
            PARSE_FIELDS(&tt, h)
            {
                if (h.number == ONNX_TTYPE_ELEM_TYPE) {
                    NN_TRY(nn_pb_expect(&tt, &h, NN_PB_VARINT, "TypeProto.Tensor.elem_type"));
                    v->elem = (int)(h.v & 0xffff);
                } else if (h.number == ONNX_TTYPE_SHAPE) {
                    NN_TRY(nn_pb_expect(&tt, &h, NN_PB_LEN, "TypeProto.Tensor.shape"));
                    v->rank = 0;
                    nn_pb_reader sh;
                    nn_pb_reader_sub(&sh, &tt, &h);
                    nn_pb_field d;
                    PARSE_FIELDS(&sh, d)
                    {
                        if (d.number != ONNX_SHAPE_DIM) continue;
                        NN_TRY(nn_pb_expect(&sh, &d, NN_PB_LEN, "TensorShapeProto.dim"));
                        if (v->rank == NN_ONNX_MAX_RANK)
                            return nn_error(NN_ERR_FORMAT, "%s: offset %zu: value has more than "
                                            "%d dims", r->name, d.offset, NN_ONNX_MAX_RANK);
                        int64_t dim = -1;
                        nn_pb_reader dr;
                        nn_pb_reader_sub(&dr, &sh, &d);
                        nn_pb_field e;
                        PARSE_FIELDS(&dr, e)
                        {
                            if (e.number != ONNX_DIM_VALUE) continue;
                            NN_TRY(nn_pb_expect(&dr, &e, NN_PB_VARINT, "Dimension.dim_value"));
                            dim = (int64_t)e.v < 0 ? -1 : (int64_t)e.v;
                        }
                        v->dims[v->rank++] = dim;
                    }
                }
            }
        }
    }
    if (!v->name)
        return nn_error(NN_ERR_FORMAT, "%s: offset %zu: graph input or output without a name",
                        r->name, vf->offset);
    return NN_OK;
}

/* ---- GraphProto and ModelProto ---- */

static nn_status onnx_parse_graph(const nn_pb_reader *r, const nn_pb_field *gf, nn_onnx_graph *g)
{
    NN_TRY(nn_pb_expect(r, gf, NN_PB_LEN, "ModelProto.graph"));
    nn_pb_reader sub;
    nn_pb_reader_sub(&sub, r, gf);
    nn_pb_field f;
    PARSE_FIELDS(&sub, f)
    {
        switch (f.number) {
        case ONNX_GRAPH_NODE:
            NN_TRY(onnx_parse_grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes,
                              NN_ONNX_MAX_NODES, r->name, f.offset, "nodes"));
            g->n_nodes++;
            NN_TRY(onnx_parse_node(&sub, &f, &g->nodes[g->n_nodes - 1]));
            break;
        case ONNX_GRAPH_INITIALIZER:
            NN_TRY(onnx_parse_grow((void **)&g->inits, &g->cap_inits, g->n_inits, sizeof *g->inits,
                              NN_ONNX_MAX_TENSORS, r->name, f.offset, "initializers"));
            NN_TRY(onnx_parse_tensor(&sub, &f, &g->inits[g->n_inits]));
            g->n_inits++;
            break;
        case ONNX_GRAPH_INPUT:
        case ONNX_GRAPH_OUTPUT: {
            const int in = f.number == ONNX_GRAPH_INPUT;
            nn_onnx_value **arr = in ? &g->inputs : &g->outputs;
            int *n = in ? &g->n_inputs : &g->n_outputs, *cap = in ? &g->cap_inputs : &g->cap_outputs;
            NN_TRY(onnx_parse_grow((void **)arr, cap, *n, sizeof **arr, NN_ONNX_MAX_TENSORS, r->name,
                              f.offset, in ? "graph inputs" : "graph outputs"));
            (*n)++;
            NN_TRY(onnx_parse_value(&sub, &f, &(*arr)[*n - 1]));
            break;
        }
        case ONNX_GRAPH_SPARSE_INITIALIZER:
            return nn_error(NN_ERR_FORMAT, "%s: offset %zu: sparse initializers are not supported",
                            r->name, f.offset);
        default:
            break;
        }
    }
    return NN_OK;
}

static nn_status onnx_parse_model(nn_pb_reader *r, nn_onnx_graph *g)
{
    nn_pb_field f;
    int graphs = 0;
    PARSE_FIELDS(r, f)
    {
        switch (f.number) {
        case ONNX_MODEL_IR_VERSION:
            NN_TRY(nn_pb_expect(r, &f, NN_PB_VARINT, "ModelProto.ir_version"));
            g->ir_version = (int64_t)f.v;
            break;
        case ONNX_MODEL_OPSET_IMPORT: {
            NN_TRY(nn_pb_expect(r, &f, NN_PB_LEN, "ModelProto.opset_import"));
            nn_pb_reader sub;
            nn_pb_reader_sub(&sub, r, &f);
            nn_pb_field o;
            char *domain = NULL;
            int64_t version = 0;
            nn_status s = NN_OK;
            int rc;
            while (s == NN_OK && (rc = nn_pb_next(&sub, &o)) != 0) {
                if (rc < 0) s = NN_ERR_FORMAT;
                else if (o.number == ONNX_OPSET_DOMAIN)
                    s = onnx_parse_string(&sub, &o, "OperatorSetIdProto.domain", &domain);
                else if (o.number == ONNX_OPSET_VERSION &&
                         (s = nn_pb_expect(&sub, &o, NN_PB_VARINT, "OperatorSetIdProto.version")) == NN_OK)
                    version = (int64_t)o.v;
            }
            if (s == NN_OK && (!domain || !domain[0] || !strcmp(domain, "ai.onnx")))
                g->opset = version;
            free(domain);
            NN_TRY(s);
            break;
        }
        case ONNX_MODEL_GRAPH:
            if (graphs++)
                return nn_error(NN_ERR_FORMAT, "%s: offset %zu: a second graph", r->name, f.offset);
            NN_TRY(onnx_parse_graph(r, &f, g));
            break;
        default:
            break;
        }
    }
    if (!graphs)
        return nn_error(NN_ERR_FORMAT, "%s: no graph in the file (not an ONNX model?)", r->name);
    return NN_OK;
}

nn_status nn_onnx_graph_parse(const void *buf, size_t len, const char *name, nn_onnx_graph *g)
{
    memset(g, 0, sizeof *g);
    g->file = name;
    if (!buf && len) return nn_error(NN_ERR_ARG, "%s: NULL buffer", name);
    nn_pb_reader r;
    nn_pb_reader_init(&r, buf, buf, len, name);
    nn_status s = onnx_parse_model(&r, g);
    if (s != NN_OK) nn_onnx_graph_free(g);
    return s;
}

void nn_onnx_graph_free(nn_onnx_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_nodes; i++) {
        nn_onnx_node *n = &g->nodes[i];
        free(n->name);
        free(n->op);
        free(n->domain);
        for (int k = 0; k < n->n_in; k++) free(n->in[k]);
        for (int k = 0; k < n->n_out; k++) free(n->out[k]);
        for (int k = 0; k < n->n_attrs; k++) {
            free(n->attrs[k].name);
            free(n->attrs[k].s);
            nn_onnx_tensor_free(n->attrs[k].t);
            free(n->attrs[k].t);
        }
    }
    for (int i = 0; i < g->n_inits; i++) nn_onnx_tensor_free(&g->inits[i]);
    for (int i = 0; i < g->n_inputs; i++) free(g->inputs[i].name);
    for (int i = 0; i < g->n_outputs; i++) free(g->outputs[i].name);
    free(g->nodes);
    free(g->inits);
    free(g->inputs);
    free(g->outputs);
    const char *file = g->file;
    memset(g, 0, sizeof *g);
    g->file = file;
}

const nn_onnx_attr *nn_onnx_node_attr(const nn_onnx_node *n, const char *name)
{
    for (int i = 0; i < n->n_attrs; i++)
        if (!strcmp(n->attrs[i].name, name)) return &n->attrs[i];
    return NULL;
}
