/* Checkpoint writer and reader (format in checkpoint.h).
 * The file is assembled in memory and written with one fwrite, and read
 * whole before it is checked: checkpoints of the models nn trains are a few
 * megabytes, and having all bytes at hand makes "verify everything, then
 * copy" simple. Version 2 differs from 1 only by a model's further inputs,
 * so a one-input model is written as version 1, byte for byte as before,
 * and both are read. Deliberately omitted: partial loads (a subset of layers), memory-mapped reads. */
#include "nn/io/checkpoint.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nn/io/atomic_file.h"

#define PREFIX_LEN 32 /* magic, version, reserved, file size, header length */

enum { OPT_NONE = 0, OPT_SGD = 1, OPT_ADAM = 2 };
static const char *const opt_names[] = {"none", "sgd", "adam"};

/* ---- writing: a growing byte buffer -------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int failed;
} wbuf;

static void checkpoint_put_bytes(wbuf *b, const void *src, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void checkpoint_put_u32(wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    checkpoint_put_bytes(b, x, 4);
}

static void checkpoint_put_u64(wbuf *b, uint64_t v)
{
    checkpoint_put_u32(b, (uint32_t)v);
    checkpoint_put_u32(b, (uint32_t)(v >> 32));
}

static void checkpoint_put_f32(wbuf *b, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    checkpoint_put_u32(b, v);
}

static void checkpoint_put_f32s(wbuf *b, const float *f, size_t n)
{
    for (size_t i = 0; i < n; i++) checkpoint_put_f32(b, f[i]);
}

static void checkpoint_put_str(wbuf *b, const char *s)
{
    size_t n = strlen(s);
    checkpoint_put_u32(b, (uint32_t)n);
    checkpoint_put_bytes(b, s, n);
}

static void checkpoint_put_u64_at(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- reading: a bounds-checked cursor ------------------------------------ */

/* base is the file offset of p[0], so messages give offsets in the file. */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *path;
    int failed;
    size_t base;
} rbuf;

static int checkpoint_need(rbuf *r, size_t n)
{
    if (r->failed) return 0;
    if (n > r->len - r->pos) {
        nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %zu bytes needed at offset %zu, the "
                 "section has %zu", r->path, n, r->base + r->pos, r->len - r->pos);
        r->failed = 1;
        return 0;
    }
    return 1;
}

static uint32_t checkpoint_get_u32(rbuf *r)
{
    if (!checkpoint_need(r, 4)) return 0;
    const uint8_t *x = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)x[0] | (uint32_t)x[1] << 8 | (uint32_t)x[2] << 16 | (uint32_t)x[3] << 24;
}

static uint64_t checkpoint_get_u64(rbuf *r)
{
    uint64_t lo = checkpoint_get_u32(r);
    return lo | (uint64_t)checkpoint_get_u32(r) << 32;
}

static float checkpoint_get_f32(rbuf *r)
{
    uint32_t v = checkpoint_get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static void checkpoint_get_f32s(rbuf *r, float *dst, size_t n)
{
    if (!checkpoint_need(r, n * 4)) return;
    for (size_t i = 0; i < n; i++) dst[i] = checkpoint_get_f32(r);
}

/* A string into dst (NUL-terminated); longer than cap-1 is malformed. */
static void checkpoint_get_str(rbuf *r, char *dst, size_t cap)
{
    uint32_t n = checkpoint_get_u32(r);
    dst[0] = '\0';
    if (r->failed) return;
    if (n >= cap) {
        nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: string of %u bytes at offset %zu "
                 "(at most %zu)", r->path, n, r->base + r->pos - 4, cap - 1);
        r->failed = 1;
        return;
    }
    if (!checkpoint_need(r, n)) return;
    memcpy(dst, r->p + r->pos, n);
    dst[n] = '\0';
    r->pos += n;
}

/* ---- saving --------------------------------------------------------------- */

/* Layer i's config as stored: the layer's keys, then the spec's name= and
 * inputs= where the spec writes them (never in a sequential model with its
 * automatic names, whose files stay as they were), so a checkpoint of one
 * graph does not load into another made of the same layers. */
static nn_status checkpoint_layer_config(const nn_model *m, int i, char *buf, size_t n)
{
    NN_TRY(nn_layer_config_string(m->layers[i], buf, n));
    char keys[256];
    NN_TRY(nn_model_layer_keys(m, i, keys, sizeof keys));
    if (!keys[0]) return NN_OK;
    size_t len = strlen(buf);
    if ((size_t)snprintf(buf + len, n - len, "%s%s", len ? " " : "", keys) >= n - len)
        return nn_error(NN_ERR_ARG, "nn_checkpoint: layer %s: config and model keys need more "
                        "than %zu bytes", m->layers[i]->name, n - 1);
    return NN_OK;
}

static int checkpoint_opt_kind(const optim *o)
{
    if (!o) return OPT_NONE;
    return o->kind == OPTIM_ADAM ? OPT_ADAM : OPT_SGD;
}

nn_status nn_checkpoint_save(const char *path, const nn_model *m, const optim *opt,
                             const void *extra, size_t extra_len)
{
    if (!path || !m || (!extra && extra_len))
        return nn_error(NN_ERR_ARG, "nn_checkpoint_save: NULL argument: %s",
                        !path ? "path is NULL" : !m ? "m is NULL"
                                               : "extra is NULL but extra_len is not 0");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_checkpoint_save: build the model first");
    if (opt && opt->n && opt->n != m->n_params)
        return nn_error(NN_ERR_STATE, "nn_checkpoint_save: the optimizer holds state for %zu "
                        "parameters, the model has %zu", opt->n, m->n_params);
    const int kind = checkpoint_opt_kind(opt);
    const size_t opt_count = opt && opt->n ? optim_state_count(opt, opt->n) : 0;
    wbuf b = {0};
    checkpoint_put_bytes(&b, NN_CHECKPOINT_MAGIC, 8);
    checkpoint_put_u32(&b, m->n_extra_inputs ? NN_CHECKPOINT_VERSION_INPUTS : NN_CHECKPOINT_VERSION);
    checkpoint_put_u32(&b, 0);
    checkpoint_put_u64(&b, 0); /* file size, patched below */
    checkpoint_put_u64(&b, 0); /* header length, patched below */

    checkpoint_put_u64(&b, m->seed);
    checkpoint_put_u32(&b, (uint32_t)m->in_rank);
    for (int i = 0; i < m->in_rank; i++) checkpoint_put_u32(&b, (uint32_t)m->in_shape[i]);
    if (m->n_extra_inputs) {
        checkpoint_put_u32(&b, (uint32_t)m->n_extra_inputs);
        for (int k = 0; k < m->n_extra_inputs; k++) {
            const nn_model_input *in = &m->extra_inputs[k];
            checkpoint_put_str(&b, in->name);
            checkpoint_put_u32(&b, (uint32_t)in->rank);
            for (int d = 0; d < in->rank; d++) checkpoint_put_u32(&b, (uint32_t)in->shape[d]);
        }
    }
    checkpoint_put_u32(&b, (uint32_t)m->n_layers);
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        char cfg[512];
        nn_status s = checkpoint_layer_config(m, i, cfg, sizeof cfg);
        if (s != NN_OK) {
            free(b.p);
            return s;
        }
        checkpoint_put_str(&b, l->type->name);
        checkpoint_put_str(&b, l->name);
        checkpoint_put_str(&b, cfg);
        checkpoint_put_u32(&b, (uint32_t)l->n_params);
        for (int k = 0; k < l->n_params; k++) {
            const nn_param *p = &l->params[k];
            checkpoint_put_str(&b, p->name);
            checkpoint_put_u32(&b, (uint32_t)p->trainable);
            checkpoint_put_u32(&b, (uint32_t)p->rank);
            for (int d = 0; d < p->rank; d++) checkpoint_put_u32(&b, (uint32_t)p->shape[d]);
        }
    }
    checkpoint_put_u64(&b, m->n_params);
    checkpoint_put_u64(&b, m->n_buffers);
    checkpoint_put_u32(&b, (uint32_t)kind);
    checkpoint_put_u64(&b, opt_count);
    checkpoint_put_u64(&b, extra_len);
    const size_t header_len = b.len - PREFIX_LEN;

    checkpoint_put_f32s(&b, m->params, m->n_params);
    checkpoint_put_f32s(&b, m->buffers, m->n_buffers);
    for (int i = 0; i < m->n_layers; i++) {
        checkpoint_put_u64(&b, m->layers[i]->seed);
        checkpoint_put_u64(&b, m->layers[i]->calls);
    }
    if (opt) {
        checkpoint_put_f32(&b, opt->lr);
        checkpoint_put_f32(&b, opt->momentum);
        checkpoint_put_u32(&b, (uint32_t)opt->nesterov);
        checkpoint_put_f32(&b, opt->beta1);
        checkpoint_put_f32(&b, opt->beta2);
        checkpoint_put_f32(&b, opt->eps);
        checkpoint_put_f32(&b, opt->weight_decay);
        checkpoint_put_u32(&b, (uint32_t)opt->decoupled);
        checkpoint_put_u64(&b, opt->t);
        checkpoint_put_u64(&b, opt->n);
        checkpoint_put_f32s(&b, opt->state, opt_count);
    }
    checkpoint_put_bytes(&b, extra, extra_len);
    checkpoint_put_u32(&b, 0); /* CRC, patched below */
    if (b.failed) {
        free(b.p);
        return nn_error(NN_ERR_MEMORY, "nn_checkpoint_save: out of memory for %s", path);
    }
    checkpoint_put_u64_at(b.p + 16, b.len);
    checkpoint_put_u64_at(b.p + 24, header_len);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 24; off < b.len - 4;) {
        size_t n = b.len - 4 - off > (1u << 30) ? (1u << 30) : b.len - 4 - off;
        crc = crc32(crc, b.p + off, (uInt)n);
        off += n;
    }
    for (int i = 0; i < 4; i++) b.p[b.len - 4 + i] = (uint8_t)(crc >> (8 * i));
    nn_status s = nn_atomic_file_save(path, b.p, b.len);
    free(b.p);
    return s;
}

/* ---- loading -------------------------------------------------------------- */

/* Writes into out the space-separated tokens of a that are not in b. */
static void checkpoint_tokens_missing(const char *a, const char *b, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    const char *p = a;
    while (*p) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e && *e != ' ') e++;
        size_t n = (size_t)(e - p);
        int found = 0;
        for (const char *q = b; *q && !found;) {
            while (*q == ' ') q++;
            const char *qe = q;
            while (*qe && *qe != ' ') qe++;
            found = (size_t)(qe - q) == n && !memcmp(p, q, n);
            q = qe;
        }
        if (n && !found && used < cap) {
            int k = snprintf(out + used, cap - used, "%s%.*s", used ? " " : "", (int)n, p);
            if (k > 0) used += (size_t)k;
        }
        p = e;
    }
}

static char *checkpoint_shape_str(int rank, const int *shape, char *buf, size_t n)
{
    return tensor_shape_str(rank, shape, buf, n);
}

typedef struct {
    uint64_t seed, n_params, n_buffers, opt_count, extra_len;
    int kind;
} ckpt_header;

/* The value of key ("inputs=") among config's space-separated tokens, or
 * NULL; its length goes to *n. */
static const char *checkpoint_token_value(const char *config, const char *key, size_t *n)
{
    const size_t klen = strlen(key);
    for (const char *p = config; *p;) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e && *e != ' ') e++;
        if ((size_t)(e - p) > klen && !strncmp(p, key, klen)) {
            *n = (size_t)(e - p) - klen;
            return p + klen;
        }
        p = e;
    }
    return NULL;
}

/* What layer i reads, as its stored config says: the inputs= list, or the
 * layer before it (model m's layer i-1, whose name matched already; "input"
 * for the first layer). */
static void checkpoint_inputs_of(const nn_model *m, int i, const char *config, char *out, size_t n)
{
    size_t len = 0;
    const char *v = checkpoint_token_value(config, "inputs=", &len);
    if (v)
        snprintf(out, n, "%.*s", (int)len, v);
    else
        snprintf(out, n, "%s", i ? m->layers[i - 1]->name : "input");
}

/* "layer 1 (dense_1): checkpoint has dense units=8, model has dense
 * units=16": the config tokens that differ, for a layer whose parameters do
 * not match. Writes "" when the configs are the same. */
static void checkpoint_config_difference(const char *path, int i, const nn_layer *l,
                                         const char *cfg, const char *mcfg, char *out, size_t n)
{
    out[0] = '\0';
    if (!strcmp(cfg, mcfg)) return;
    char only_ck[256], only_m[256];
    checkpoint_tokens_missing(cfg, mcfg, only_ck, sizeof only_ck);
    checkpoint_tokens_missing(mcfg, cfg, only_m, sizeof only_m);
    snprintf(out, n, "%s: layer %d (%s): checkpoint has %s %s, model has %s %s", path, i, l->name,
             l->type->name, only_ck[0] ? only_ck : "(no such key)", l->type->name,
             only_m[0] ? only_m : "(no such key)");
}

/* Version 2's further inputs, after the first input's extents (none in
 * version 1). */
static nn_status checkpoint_get_inputs(rbuf *r, uint32_t version, int *n, nn_model_input *ins)
{
    *n = 0;
    if (version < NN_CHECKPOINT_VERSION_INPUTS) return NN_OK;
    uint32_t count = checkpoint_get_u32(r);
    if (r->failed) return NN_ERR_FORMAT;
    if (count < 1 || count >= NN_MODEL_MAX_INPUTS)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %u further inputs at offset %zu "
                        "(1 to %d)", r->path, count, r->base + r->pos - 4, NN_MODEL_MAX_INPUTS - 1);
    for (uint32_t k = 0; k < count; k++) {
        nn_model_input *in = &ins[k];
        memset(in, 0, sizeof *in);
        checkpoint_get_str(r, in->name, sizeof in->name);
        uint32_t rank = checkpoint_get_u32(r);
        if (r->failed) return NN_ERR_FORMAT;
        if (rank < 1 || rank > TENSOR_MAX_RANK)
            return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: input '%s' has rank %u at "
                            "offset %zu", r->path, in->name, rank, r->base + r->pos - 4);
        in->rank = (int)rank;
        for (uint32_t d = 0; d < rank; d++) {
            uint32_t e = checkpoint_get_u32(r);
            if (r->failed) return NN_ERR_FORMAT;
            if (e < 1 || e > INT32_MAX)
                return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: input '%s' has extent %u "
                                "at offset %zu", r->path, in->name, e, r->base + r->pos - 4);
            in->shape[d] = (int)e;
        }
    }
    *n = (int)count;
    return NN_OK;
}

/* Reads the header section and checks it against m. Only what decides the
 * parameters must match: the input shape, the layer types in order, their
 * names and inputs, and every parameter's name, kind and shape. Other keys
 * (a dropout rate, a seed, inplace=, an activation) may differ; the model
 * keeps its own. */
static nn_status checkpoint_check_header(rbuf *r, uint32_t version, const nn_model *m,
                                         ckpt_header *h)
{
    const char *path = r->path;
    h->seed = checkpoint_get_u64(r);
    uint32_t in_rank = checkpoint_get_u32(r);
    if (r->failed) return NN_ERR_FORMAT;
    if (in_rank < 1 || in_rank > TENSOR_MAX_RANK)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: input rank %u at offset %zu", path,
                        in_rank, r->base + r->pos - 4);
    int in_shape[TENSOR_MAX_RANK];
    for (uint32_t d = 0; d < in_rank; d++) in_shape[d] = (int)checkpoint_get_u32(r);
    if (r->failed) return NN_ERR_FORMAT;
    int same = (int)in_rank == m->in_rank;
    for (uint32_t d = 0; same && d < in_rank; d++) same = in_shape[d] == m->in_shape[d];
    if (!same) {
        char a[96], b[96];
        return nn_error(NN_ERR_SHAPE, "%s: checkpoint was made for input shape %s, the model is "
                        "built for %s", path,
                        checkpoint_shape_str((int)in_rank, in_shape, a, sizeof a),
                        checkpoint_shape_str(m->in_rank, m->in_shape, b, sizeof b));
    }
    nn_model_input ins[NN_MODEL_MAX_INPUTS - 1];
    int n_ins;
    NN_TRY(checkpoint_get_inputs(r, version, &n_ins, ins));
    if (n_ins != m->n_extra_inputs)
        return nn_error(NN_ERR_SHAPE, "%s: checkpoint was made for a model with %d inputs, the "
                        "model has %d", path, 1 + n_ins, 1 + m->n_extra_inputs);
    for (int k = 0; k < n_ins; k++) {
        const nn_model_input *a = &ins[k], *b = &m->extra_inputs[k];
        if (strcmp(a->name, b->name) || a->rank != b->rank ||
            memcmp(a->shape, b->shape, (size_t)a->rank * sizeof *a->shape)) {
            char sa[96], sb[96];
            return nn_error(NN_ERR_SHAPE, "%s: input %d: checkpoint has '%s' of shape %s, the model "
                            "has '%s' of shape %s", path, k + 1, a->name,
                            checkpoint_shape_str(a->rank, a->shape, sa, sizeof sa), b->name,
                            checkpoint_shape_str(b->rank, b->shape, sb, sizeof sb));
        }
    }
    uint32_t n_layers = checkpoint_get_u32(r);
    if (r->failed) return NN_ERR_FORMAT;
    if ((int)n_layers != m->n_layers)
        return nn_error(NN_ERR_SHAPE, "%s: checkpoint has %u layers, the model has %d", path,
                        n_layers, m->n_layers);
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        char type[NN_NAME_LEN + 32], name[NN_NAME_LEN + 32], cfg[512], mcfg[512];
        checkpoint_get_str(r, type, sizeof type);
        checkpoint_get_str(r, name, sizeof name);
        checkpoint_get_str(r, cfg, sizeof cfg);
        uint32_t n_params = checkpoint_get_u32(r);
        if (r->failed) return NN_ERR_FORMAT;
        NN_TRY(checkpoint_layer_config(m, i, mcfg, sizeof mcfg));
        if (strcmp(type, l->type->name))
            return nn_error(NN_ERR_SHAPE, "%s: layer %d: checkpoint has %s %s, model has %s %s", path,
                            i, type, cfg, l->type->name, mcfg);
        /* Names follow from the layer order ("<type>_<k>"), so another name
         * means another network or a damaged file. */
        if (strcmp(name, l->name))
            return nn_error(NN_ERR_SHAPE, "%s: layer %d: checkpoint names it '%s', the model '%s'",
                            path, i, name, l->name);
        char in_ck[NN_LAYER_MAX_INPUTS * NN_NAME_LEN + 8], in_m[sizeof in_ck];
        checkpoint_inputs_of(m, i, cfg, in_ck, sizeof in_ck);
        checkpoint_inputs_of(m, i, mcfg, in_m, sizeof in_m);
        if (strcmp(in_ck, in_m))
            return nn_error(NN_ERR_SHAPE, "%s: layer %d (%s): checkpoint has %s inputs=%s, model "
                            "has %s inputs=%s", path, i, l->name, type, in_ck, type, in_m);
        /* A parameter that differs is reported with the config keys that
         * differ, which usually say why ("units=8" against "units=16"). */
        char why[1200];
        checkpoint_config_difference(path, i, l, cfg, mcfg, why, sizeof why);
        if ((int)n_params != l->n_params) {
            if (why[0])
                return nn_error(NN_ERR_SHAPE, "%s (%u parameter tensors against %d)", why, n_params,
                                l->n_params);
            return nn_error(NN_ERR_SHAPE, "%s: layer %d (%s): checkpoint has %u parameter tensors, "
                            "model has %d", path, i, l->name, n_params, l->n_params);
        }
        for (int k = 0; k < l->n_params; k++) {
            const nn_param *p = &l->params[k];
            char pname[NN_NAME_LEN + 32];
            checkpoint_get_str(r, pname, sizeof pname);
            uint32_t trainable = checkpoint_get_u32(r), rank = checkpoint_get_u32(r);
            if (r->failed) return NN_ERR_FORMAT;
            if (rank < 1 || rank > TENSOR_MAX_RANK)
                return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: layer %d tensor %s has "
                                "rank %u at offset %zu", path, i, pname, rank, r->base + r->pos - 4);
            int shape[TENSOR_MAX_RANK];
            for (uint32_t d = 0; d < rank; d++) shape[d] = (int)checkpoint_get_u32(r);
            if (r->failed) return NN_ERR_FORMAT;
            int ok = !strcmp(pname, p->name) && (int)trainable == p->trainable &&
                     (int)rank == p->rank;
            for (uint32_t d = 0; ok && d < rank; d++) ok = shape[d] == p->shape[d];
            if (!ok) {
                char a[96], b[96];
                checkpoint_shape_str((int)rank, shape, a, sizeof a);
                checkpoint_shape_str(p->rank, p->shape, b, sizeof b);
                if (why[0] && !strcmp(pname, p->name))
                    return nn_error(NN_ERR_SHAPE, "%s (%s %s against %s)", why, p->name, a, b);
                return nn_error(NN_ERR_SHAPE, "%s: layer %d (%s): checkpoint has %s %s %s, model "
                                "has %s %s %s", path, i, l->name, trainable ? "parameter" : "buffer",
                                pname, a, p->trainable ? "parameter" : "buffer", p->name, b);
            }
        }
    }
    h->n_params = checkpoint_get_u64(r);
    h->n_buffers = checkpoint_get_u64(r);
    uint32_t kind = checkpoint_get_u32(r);
    h->opt_count = checkpoint_get_u64(r);
    h->extra_len = checkpoint_get_u64(r);
    if (r->failed) return NN_ERR_FORMAT;
    if (h->n_params != m->n_params || h->n_buffers != m->n_buffers)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %llu parameters and %llu buffer "
                        "values, the tensors listed add up to %zu and %zu", path,
                        (unsigned long long)h->n_params, (unsigned long long)h->n_buffers,
                        m->n_params, m->n_buffers);
    if (kind > OPT_ADAM)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: optimizer kind %u", path, kind);
    h->kind = (int)kind;
    if (r->pos != r->len)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %zu unread bytes at the end of "
                        "the header", path, r->len - r->pos);
    return NN_OK;
}

/* The checks that need no model: magic, version, reserved field, size and
 * CRC-32; *header_len gets the header section's length. */
static nn_status checkpoint_check_prefix(const char *path, const uint8_t *data, size_t len,
                                         size_t *header_len, uint32_t *version_out)
{
    if (len < 8 || memcmp(data, NN_CHECKPOINT_MAGIC, 8))
        return nn_error(NN_ERR_FORMAT, "%s: not an nn checkpoint (bad magic at offset 0)", path);
    if (len < PREFIX_LEN + 4)
        return nn_error(NN_ERR_FORMAT, "%s: truncated: %zu bytes, a checkpoint has at least %d",
                        path, len, PREFIX_LEN + 4);
    rbuf r = {data, len, 8, path, 0, 0};
    uint32_t version = checkpoint_get_u32(&r);
    if (version != NN_CHECKPOINT_VERSION && version != NN_CHECKPOINT_VERSION_INPUTS)
        return nn_error(NN_ERR_FORMAT, "%s: checkpoint format version %u at offset 8; this build "
                        "reads versions %u and %u", path, version, NN_CHECKPOINT_VERSION,
                        NN_CHECKPOINT_VERSION_INPUTS);
    *version_out = version;
    /* Outside the CRC, like the version and the size, so checked on its own. */
    uint32_t reserved = checkpoint_get_u32(&r);
    if (reserved != 0)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: reserved field at offset 12 is "
                        "0x%08x, must be 0", path, reserved);
    uint64_t file_size = checkpoint_get_u64(&r), hlen = checkpoint_get_u64(&r);
    if (file_size != len)
        return nn_error(NN_ERR_FORMAT, "%s: %s: the header at offset 16 says %llu bytes, the file "
                        "has %zu", path, file_size > len ? "truncated" : "trailing data",
                        (unsigned long long)file_size, len);
    r.pos = len - 4;
    uint32_t stored = checkpoint_get_u32(&r);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 24; off < len - 4;) {
        size_t n = len - 4 - off > (1u << 30) ? (1u << 30) : len - 4 - off;
        crc = crc32(crc, data + off, (uInt)n);
        off += n;
    }
    if ((uint32_t)crc != stored)
        return nn_error(NN_ERR_FORMAT, "%s: CRC-32 mismatch: stored 0x%08x at offset %zu, computed "
                        "0x%08x: the file is corrupted", path, stored, len - 4, (unsigned)crc);
    if (hlen > len - 4 - PREFIX_LEN)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: header length %llu at offset 24",
                        path, (unsigned long long)hlen);
    *header_len = (size_t)hlen;
    return NN_OK;
}

/* Checks data[0..len) against m and opt, then copies it in; nothing is
 * changed unless every check passes. */
static nn_status checkpoint_load_image(const char *path, const uint8_t *data, size_t len,
                                       nn_model *m, optim *opt, void *extra, size_t extra_cap,
                                       size_t *extra_len)
{
    size_t header_len = 0;
    uint32_t version = 0;
    NN_TRY(checkpoint_check_prefix(path, data, len, &header_len, &version));
    rbuf hr = {data + PREFIX_LEN, header_len, 0, path, 0, PREFIX_LEN};
    ckpt_header h = {0};
    NN_TRY(checkpoint_check_header(&hr, version, m, &h));

    /* The payload's size follows from the header; check it before reading. */
    const size_t payload_len = len - 4 - PREFIX_LEN - header_len;
    const uint64_t opt_fields = h.kind != OPT_NONE ? 8 * 4 + 8 + 8 : 0;
    const uint64_t want = 4 * (h.n_params + h.n_buffers) + 16 * (uint64_t)m->n_layers + opt_fields +
                          4 * h.opt_count + h.extra_len;
    if (want != payload_len)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: the header describes %llu payload "
                        "bytes, the file holds %zu", path, (unsigned long long)want, payload_len);
    if (opt && h.kind == OPT_NONE)
        return nn_error(NN_ERR_STATE, "%s: checkpoint has no optimizer state (saved without one); "
                        "load it without an optimizer", path);
    if (opt && h.kind != checkpoint_opt_kind(opt))
        return nn_error(NN_ERR_STATE, "%s: checkpoint has optimizer %s, the run uses %s", path,
                        opt_names[h.kind], opt_names[checkpoint_opt_kind(opt)]);
    if (extra && h.extra_len > extra_cap)
        return nn_error(NN_ERR_ARG, "%s: the training-state blob has %llu bytes, the buffer %zu",
                        path, (unsigned long long)h.extra_len, extra_cap);

    rbuf p = {data + PREFIX_LEN + header_len, payload_len, 0, path, 0, PREFIX_LEN + header_len};
    const size_t layers_at = 4 * (size_t)(h.n_params + h.n_buffers);
    const size_t extra_at = p.len - (size_t)h.extra_len;
    optim o = {0};
    float *new_state = NULL;
    if (h.kind != OPT_NONE) {
        p.pos = layers_at + 16 * (size_t)m->n_layers;
        o.kind = h.kind == OPT_ADAM ? OPTIM_ADAM : OPTIM_SGD;
        o.lr = checkpoint_get_f32(&p);
        o.momentum = checkpoint_get_f32(&p);
        o.nesterov = (int)checkpoint_get_u32(&p);
        o.beta1 = checkpoint_get_f32(&p);
        o.beta2 = checkpoint_get_f32(&p);
        o.eps = checkpoint_get_f32(&p);
        o.weight_decay = checkpoint_get_f32(&p);
        o.decoupled = (int)checkpoint_get_u32(&p);
        o.t = checkpoint_get_u64(&p);
        o.n = (size_t)checkpoint_get_u64(&p);
        /* A file that passes the CRC can still have been written by other
         * code: hyperparameters the constructors would refuse are refused. */
        const int bad_hyper = !(isfinite(o.lr) && o.lr > 0.0f) ||
                              !(o.weight_decay >= 0.0f && isfinite(o.weight_decay)) ||
                              (o.kind == OPTIM_SGD
                                   ? !(o.momentum >= 0.0f && o.momentum < 1.0f) ||
                                         (unsigned)o.nesterov > 1 || (o.nesterov && o.momentum == 0.0f)
                                   : !(o.beta1 >= 0.0f && o.beta1 < 1.0f) ||
                                         !(o.beta2 >= 0.0f && o.beta2 < 1.0f) ||
                                         !(o.eps > 0.0f && isfinite(o.eps)) ||
                                         (unsigned)o.decoupled > 1);
        if (bad_hyper)
            return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %s hyperparameters out of "
                            "range at offset %zu (lr %g, momentum %g, nesterov %d, betas "
                            "(%g, %g), eps %g, weight_decay %g, decoupled %d)", path,
                            opt_names[h.kind], PREFIX_LEN + (size_t)header_len + layers_at +
                            16 * (size_t)m->n_layers, (double)o.lr,
                            (double)o.momentum, o.nesterov, (double)o.beta1, (double)o.beta2,
                            (double)o.eps, (double)o.weight_decay, o.decoupled);
        const size_t expect = o.n ? optim_state_count(&o, o.n) : 0;
        if (o.n && o.n != m->n_params)
            return nn_error(NN_ERR_FORMAT, "%s: optimizer state is for %zu parameters, the model "
                            "has %zu", path, o.n, m->n_params);
        if (expect != h.opt_count)
            return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %llu optimizer state values, "
                            "%s over %zu parameters needs %zu", path,
                            (unsigned long long)h.opt_count, opt_names[h.kind], o.n, expect);
        if (opt && h.opt_count) {
            new_state = tensor_aligned_alloc((size_t)h.opt_count * sizeof(float));
            if (!new_state) return NN_ERR_MEMORY;
            checkpoint_get_f32s(&p, new_state, (size_t)h.opt_count);
        }
    }

    /* Everything is checked: from here on nothing can fail. */
    p.pos = 0;
    checkpoint_get_f32s(&p, m->params, m->n_params);
    checkpoint_get_f32s(&p, m->buffers, m->n_buffers);
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i]->seed = checkpoint_get_u64(&p);
        m->layers[i]->calls = checkpoint_get_u64(&p);
    }
    NN_ASSERT(!p.failed);
    m->seed = h.seed;
    if (opt) {
        opt->lr = o.lr;
        opt->momentum = o.momentum;
        opt->nesterov = o.nesterov;
        opt->beta1 = o.beta1;
        opt->beta2 = o.beta2;
        opt->eps = o.eps;
        opt->weight_decay = o.weight_decay;
        opt->decoupled = o.decoupled;
        opt->t = o.t;
        opt->n = o.n;
        tensor_aligned_free(opt->state);
        opt->state = new_state;
    }
    if (extra) memcpy(extra, p.p + extra_at, (size_t)h.extra_len);
    if (extra_len) *extra_len = (size_t)h.extra_len;
    return NN_OK;
}

nn_status nn_checkpoint_load(const char *path, nn_model *m, optim *opt, void *extra,
                             size_t extra_cap, size_t *extra_len)
{
    if (!path || !m)
        return nn_error(NN_ERR_ARG, "nn_checkpoint_load: NULL argument: %s is NULL",
                        !path ? "path" : "m");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_checkpoint_load: build the model first");
    uint8_t *data = NULL;
    size_t len = 0;
    NN_TRY(nn_file_read_all(path, "checkpoint", &data, &len));
    nn_status s = checkpoint_load_image(path, data, len, m, opt, extra, extra_cap, extra_len);
    free(data);
    return s;
}

nn_status nn_checkpoint_parse(const void *buf, size_t len, const char *name, nn_model *m,
                              optim *opt, void *extra, size_t extra_cap, size_t *extra_len)
{
    if (!m || (!buf && len)) return nn_error(NN_ERR_ARG, "nn_checkpoint_parse: NULL argument");
    if (!name) name = "(buffer)";
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_checkpoint_parse: %s: build the model first",
                                   name);
    static const uint8_t empty[1];
    return checkpoint_load_image(name, buf ? buf : empty, len, m, opt, extra, extra_cap, extra_len);
}

nn_status nn_checkpoint_describe(const void *buf, size_t len, const char *name,
                                 nn_checkpoint_network *net)
{
    if (!net || (!buf && len)) return nn_error(NN_ERR_ARG, "nn_checkpoint_describe: NULL argument");
    if (!name) name = "(buffer)";
    static const uint8_t empty[1];
    const uint8_t *data = buf ? buf : empty;
    size_t header_len = 0;
    uint32_t version = 0;
    NN_TRY(checkpoint_check_prefix(name, data, len, &header_len, &version));
    memset(net, 0, sizeof *net);
    rbuf r = {data + PREFIX_LEN, header_len, 0, name, 0, PREFIX_LEN};
    net->seed = checkpoint_get_u64(&r);
    uint32_t in_rank = checkpoint_get_u32(&r);
    if (r.failed) return NN_ERR_FORMAT;
    if (in_rank < 1 || in_rank > TENSOR_MAX_RANK)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: input rank %u at offset %zu", name,
                        in_rank, r.base + r.pos - 4);
    net->in_rank = (int)in_rank;
    for (uint32_t d = 0; d < in_rank; d++) {
        uint32_t e = checkpoint_get_u32(&r);
        if (r.failed) return NN_ERR_FORMAT;
        if (e < 1 || e > INT32_MAX)
            return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: input extent %u at offset %zu",
                            name, e, r.base + r.pos - 4);
        net->in_shape[d] = (int)e;
    }
    NN_TRY(checkpoint_get_inputs(&r, version, &net->n_extra_inputs, net->extra_inputs));
    uint32_t n_layers = checkpoint_get_u32(&r);
    if (r.failed) return NN_ERR_FORMAT;
    if (n_layers > NN_MODEL_MAX_LAYERS)
        return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: %u layers at offset %zu (a model "
                        "has at most %d)", name, n_layers, r.base + r.pos - 4, NN_MODEL_MAX_LAYERS);
    net->n_layers = (int)n_layers;
    for (int i = 0; i < net->n_layers; i++) {
        nn_checkpoint_layer *l = &net->layers[i];
        checkpoint_get_str(&r, l->type, sizeof l->type);
        checkpoint_get_str(&r, l->name, sizeof l->name);
        checkpoint_get_str(&r, l->config, sizeof l->config);
        uint32_t n_params = checkpoint_get_u32(&r);
        /* The tensors' names and shapes are skipped: the rebuilt model is
         * checked against them when the values are loaded. */
        for (uint32_t k = 0; k < n_params && !r.failed; k++) {
            char pname[NN_NAME_LEN + 32];
            checkpoint_get_str(&r, pname, sizeof pname);
            (void)checkpoint_get_u32(&r);
            uint32_t rank = checkpoint_get_u32(&r);
            if (!r.failed && rank > TENSOR_MAX_RANK)
                return nn_error(NN_ERR_FORMAT, "%s: malformed checkpoint: layer %d tensor %s has "
                                "rank %u at offset %zu", name, i, pname, rank, r.base + r.pos - 4);
            if (checkpoint_need(&r, 4 * (size_t)rank)) r.pos += 4 * (size_t)rank;
        }
        if (r.failed) return NN_ERR_FORMAT;
    }
    return NN_OK;
}
