/* .safetensors export and import of a model's parameters (see safetensors.h).
 *
 * cJSON writes and parses the header; everything the format promises about
 * offsets is then checked here, because cJSON only knows JSON: numbers come
 * back as doubles, duplicate keys are kept, and nothing stops two tensors
 * from sharing bytes. The loader reads the whole file (models are small next
 * to the data they train on) and validates before it copies anything.
 * Omitted: see safetensors.h (other dtypes, partial loads, mmap).
 */
#include "nn/io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/io/atomic_file.h"
#include "nn/io/byte_order.h"
#include "nn/nn.h"

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_MAX_RANK 8
#define ST_LAYOUT "float32 little-endian, C order; dense.kernel (in, units); " \
                  "conv2d.kernel (KH, KW, Cin, Cout); flatten of channels_last maps is (H, W, C)"

static void safetensors_shape_text(char *buf, size_t n, int rank, const int *shape)
{
    tensor_shape_str(rank, shape, buf, n);
}

/* ------------------------------------------------------------------ save */

static nn_status safetensors_spec_text(const nn_model *m, char **out)
{
    for (size_t cap = 4096; cap <= ((size_t)1 << 24); cap *= 2) {
        char *buf = malloc(cap);
        if (!buf) return nn_error(NN_ERR_MEMORY, "nn_safetensors_save: out of memory");
        if (nn_model_spec_string(m, buf, cap) == NN_OK) {
            *out = buf;
            return NN_OK;
        }
        free(buf);
    }
    return nn_error(NN_ERR_ARG, "nn_safetensors_save: model spec longer than 16 MiB");
}

/* The JSON header text (malloc'ed, unpadded). */
static nn_status safetensors_build_header(const nn_model *m, char **out)
{
    char *spec = NULL;
    NN_TRY(safetensors_spec_text(m, &spec));
    char in_shape[96] = "";
    for (int i = 0; i < m->in_rank; i++) {
        size_t used = strlen(in_shape);
        snprintf(in_shape + used, sizeof in_shape - used, i ? ",%d" : "%d", m->in_shape[i]);
    }
    int ok = 1;
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    ok = root && meta && cJSON_AddItemToObject(root, "__metadata__", meta);
    if (!ok) cJSON_Delete(meta);
    ok = ok && cJSON_AddStringToObject(meta, "format", "nn");
    ok = ok && cJSON_AddStringToObject(meta, "nn_version", NN_VERSION_STRING);
    ok = ok && cJSON_AddStringToObject(meta, "nn_input_shape", in_shape);
    ok = ok && cJSON_AddStringToObject(meta, "nn_spec", spec);
    ok = ok && cJSON_AddStringToObject(meta, "nn_layout", ST_LAYOUT);
    free(spec);
    size_t offset = 0;
    for (int i = 0; ok && i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        for (int k = 0; ok && k < l->n_params; k++) {
            const nn_param *p = &l->params[k];
            char name[2 * NN_NAME_LEN + 2];
            snprintf(name, sizeof name, "%s.%s", l->name, p->name);
            cJSON *e = cJSON_AddObjectToObject(root, name);
            cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
            ok = e && cJSON_AddStringToObject(e, "dtype", "F32") && shape;
            for (int d = 0; ok && d < p->t->rank; d++) {
                cJSON *v = cJSON_CreateNumber(p->t->shape[d]);
                ok = v && cJSON_AddItemToArray(shape, v);
                if (!ok) cJSON_Delete(v);
            }
            cJSON *offs = ok ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
            const size_t end = offset + p->t->size * sizeof(float);
            for (int d = 0; ok && d < 2; d++) {
                cJSON *v = offs ? cJSON_CreateNumber((double)(d ? end : offset)) : NULL;
                ok = v && cJSON_AddItemToArray(offs, v);
                if (!ok) cJSON_Delete(v);
            }
            offset = end;
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return nn_error(NN_ERR_MEMORY, "nn_safetensors_save: out of memory building the header");
    *out = text;
    return NN_OK;
}

nn_status nn_safetensors_save(const nn_model *m, const char *path)
{
    if (!m || !path)
        return nn_error(NN_ERR_ARG, "nn_safetensors_save: NULL argument: %s is NULL",
                        !m ? "m" : "path");
    if (!m->built) return nn_error(NN_ERR_STATE, "nn_safetensors_save: %s: build the model first", path);
    char *json = NULL;
    NN_TRY(safetensors_build_header(m, &json));
    const size_t len = strlen(json);
    const size_t padded = (8 + len + 7) / 8 * 8 - 8;
    unsigned char prefix[8];
    for (int k = 0; k < 8; k++) prefix[k] = (unsigned char)((uint64_t)padded >> (8 * k));

    /* Up to 7 spaces pad the header so the data starts 8-aligned. */
    static const char pad[] = "       ";
    nn_atomic_file af;
    nn_status s = nn_atomic_file_open(&af, path);
    if (s == NN_OK) s = nn_atomic_file_write(&af, prefix, 8);
    if (s == NN_OK) s = nn_atomic_file_write(&af, json, len);
    if (s == NN_OK) s = nn_atomic_file_write(&af, pad, padded - len);
    free(json);
    for (int i = 0; s == NN_OK && i < m->n_layers; i++)
        for (int k = 0; s == NN_OK && k < m->layers[i]->n_params; k++) {
            const tensor *t = m->layers[i]->params[k].t;
            s = nn_atomic_file_write_floats_le(&af, t->data, t->size);
        }
    return s == NN_OK ? nn_atomic_file_commit(&af) : s;
}

/* ------------------------------------------------------------------ load */

typedef struct {
    nn_param *param;       /* the model parameter this entry fills */
    char name[2 * NN_NAME_LEN + 2];
    size_t begin, end;     /* byte offsets in the data */
} st_entry;

/* A JSON number that is a whole number in [0, max]. */
static int safetensors_get_count(const cJSON *v, double max, size_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= max) || d != floor(d)) return 0;
    *out = (size_t)d;
    return 1;
}

static nn_param *safetensors_find_param(nn_model *m, const char *name, st_entry *entries,
                                        int n_entries, int *already)
{
    *already = 0;
    for (int i = 0; i < m->n_layers; i++) {
        nn_layer *l = m->layers[i];
        size_t ln = strlen(l->name);
        if (strncmp(name, l->name, ln) || name[ln] != '.') continue;
        for (int k = 0; k < l->n_params; k++)
            if (!strcmp(name + ln + 1, l->params[k].name)) {
                for (int j = 0; j < n_entries; j++)
                    if (entries[j].param == &l->params[k]) *already = 1;
                return &l->params[k];
            }
    }
    return NULL;
}

/* Checks one tensor entry against the model and the data size. */
static nn_status safetensors_check_entry(nn_model *m, const cJSON *e, size_t data_len,
                                         const char *file, st_entry *entries, int n_entries,
                                         st_entry *out)
{
    const char *key = e->string;
    if (strlen(key) >= sizeof out->name)
        return nn_error(NN_ERR_FORMAT, "%s: tensor name '%.40s...' is longer than any parameter "
                        "name of the model", file, key);
    int already;
    nn_param *p = safetensors_find_param(m, key, entries, n_entries, &already);
    if (!p)
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s' is not a parameter of the model (names are "
                        "'<layer>.<param>', e.g. 'dense_1.kernel')", file, key);
    if (already)
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", file, key);
    if (!cJSON_IsObject(e))
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': expected an object with dtype, shape and "
                        "data_offsets", file, key);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL, *c;
    cJSON_ArrayForEach(c, e) {
        const cJSON **slot = !strcmp(c->string, "dtype") ? &dtype
                           : !strcmp(c->string, "shape") ? &shape
                           : !strcmp(c->string, "data_offsets") ? &offs : NULL;
        if (!slot)
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': unknown field '%s'", file, key, c->string);
        if (*slot)
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': field '%s' appears twice", file, key,
                            c->string);
        *slot = c;
    }
    if (!dtype || !shape || !offs)
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': field '%s' is missing", file, key,
                        !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype))
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': dtype must be a string", file, key);
    if (strcmp(dtype->valuestring, "F32"))
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': dtype '%.16s' is not supported (only F32)",
                        file, key, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': shape must be an array", file, key);
    int rank = cJSON_GetArraySize(shape), dims[ST_MAX_RANK];
    if (rank > ST_MAX_RANK)
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': shape has %d dimensions", file, key, rank);
    size_t elements = 1, d = 0;
    int r = 0;
    cJSON_ArrayForEach(c, shape) {
        /* Bounding each extent by the data size keeps the product exact. */
        const double most = (double)(data_len / 4 < 0x7fffffff ? data_len / 4 : 0x7fffffff);
        if (!safetensors_get_count(c, most, &d) && safetensors_get_count(c, 0x7fffffff, &d))
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': shape[%d] = %zu needs more bytes than "
                            "the file's %zu of data: the file is truncated or the shape is wrong",
                            file, key, r, d, data_len);
        if (!safetensors_get_count(c, most, &d))
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a whole number "
                            "between 0 and the data size", file, key, r);
        dims[r++] = (int)d;
        if (d && elements > data_len / 4 / d)
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': shape needs more bytes than the file's "
                            "%zu of data", file, key, data_len);
        elements *= d;
    }
    char fs[96], ms[96];
    safetensors_shape_text(fs, sizeof fs, rank, dims);
    safetensors_shape_text(ms, sizeof ms, p->t->rank, p->t->shape);
    if (rank != p->t->rank || memcmp(dims, p->t->shape, (size_t)rank * sizeof(int)))
        return nn_error(NN_ERR_SHAPE, "%s: tensor '%s' has shape %s in the file, the model has %s",
                        file, key, fs, ms);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !safetensors_get_count(offs->child, (double)data_len, &out->begin) ||
        !safetensors_get_count(offs->child->next, (double)data_len, &out->end)) {
        /* Whole numbers past the end: most likely a file cut short. */
        size_t b = 0, e = 0;
        if (cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2 &&
            safetensors_get_count(offs->child, 1e15, &b) &&
            safetensors_get_count(offs->child->next, 1e15, &e) && b <= e)
            return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': data_offsets [%zu, %zu] are not "
                            "within the %zu bytes of data: the file is truncated or the "
                            "offsets are wrong", file, key, b, e, data_len);
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end], whole "
                        "numbers within the %zu bytes of data", file, key, data_len);
    }
    if (out->end < out->begin || out->end - out->begin != elements * 4)
        return nn_error(NN_ERR_FORMAT, "%s: tensor '%s': data_offsets [%zu, %zu] hold %s bytes, "
                        "shape %s needs %zu", file, key, out->begin, out->end,
                        out->end < out->begin ? "a negative number of" : "a different number of",
                        fs, elements * 4);
    out->param = p;
    snprintf(out->name, sizeof out->name, "%s", key);
    return NN_OK;
}

static int safetensors_by_begin(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static nn_status safetensors_check_metadata(const cJSON *meta, const char *file)
{
    if (!cJSON_IsObject(meta))
        return nn_error(NN_ERR_FORMAT, "%s: __metadata__ must be an object of strings", file);
    const cJSON *c;
    cJSON_ArrayForEach(c, meta) {
        if (!cJSON_IsString(c))
            return nn_error(NN_ERR_FORMAT, "%s: __metadata__ entry '%s' is not a string", file,
                            c->string);
    }
    return NN_OK;
}

static nn_status safetensors_parse_header(nn_model *m, const cJSON *root, size_t data_len,
                                          const char *file, st_entry *entries, int cap, int *n_out)
{
    if (!cJSON_IsObject(root))
        return nn_error(NN_ERR_FORMAT, "%s: the header at offset 8 is not a JSON object", file);
    int n = 0, have_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (have_meta)
                return nn_error(NN_ERR_FORMAT, "%s: __metadata__ appears twice in the header", file);
            have_meta = 1;
            NN_TRY(safetensors_check_metadata(e, file));
            continue;
        }
        st_entry entry;
        NN_TRY(safetensors_check_entry(m, e, data_len, file, entries, n, &entry));
        /* Each accepted entry is a distinct model parameter, so they fit. */
        NN_ASSERT(n < cap);
        entries[n++] = entry;
    }
    /* The data must be covered exactly: sorted by offset, each tensor starts
     * where the previous one ended and the last ends at the end of the file. */
    qsort(entries, (size_t)n, sizeof *entries, safetensors_by_begin);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (entries[i].begin < pos)
            return nn_error(NN_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap (data bytes %zu to %zu)",
                            file, entries[i - 1].name, entries[i].name, entries[i].begin, pos);
        if (entries[i].begin > pos)
            return nn_error(NN_ERR_FORMAT, "%s: data bytes %zu to %zu belong to no tensor (a gap "
                            "before '%s')", file, pos, entries[i].begin, entries[i].name);
        pos = entries[i].end;
    }
    if (pos != data_len)
        return nn_error(NN_ERR_FORMAT, "%s: data bytes %zu to %zu belong to no tensor (the file "
                        "has %zu bytes after the header)", file, pos, data_len, data_len);
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++) {
            int found = 0;
            for (int j = 0; j < n; j++) found |= entries[j].param == &m->layers[i]->params[k];
            if (!found) {
                char s[96];
                const tensor *t = m->layers[i]->params[k].t;
                return nn_error(NN_ERR_FORMAT, "%s: the model's parameter '%s.%s' (shape %s) is not "
                                "in the file", file, m->layers[i]->name,
                                m->layers[i]->params[k].name,
                                tensor_shape_str(t->rank, t->shape, s, sizeof s));
            }
        }
    *n_out = n;
    return NN_OK;
}

/* Checks the 8-byte length and the JSON header of b[0..len) and parses it
 * into *root (the caller deletes it); *hlen gets the header's length. */
static nn_status safetensors_read_header(const unsigned char *b, size_t len, const char *name,
                                         cJSON **root, uint64_t *hlen_out)
{
    if (len < 8)
        return nn_error(NN_ERR_FORMAT, "%s: truncated: %zu bytes, the header length alone takes 8",
                        name, len);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | b[k];
    if (hlen > ST_MAX_HEADER)
        return nn_error(NN_ERR_FORMAT, "%s: header length %llu at offset 0 is over the limit of "
                        "%llu bytes", name, (unsigned long long)hlen,
                        (unsigned long long)ST_MAX_HEADER);
    if (hlen > len - 8)
        return nn_error(NN_ERR_FORMAT, "%s: header length %llu at offset 0 runs past the end of the "
                        "file (%zu bytes): truncated", name, (unsigned long long)hlen, len);
    if (hlen == 0 || b[8] != '{')
        return nn_error(NN_ERR_FORMAT, "%s: the header at offset 8 does not start with '{'", name);
    const char *text = (const char *)b + 8, *end = NULL;
    cJSON *r = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (!r) {
        size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
        return nn_error(NN_ERR_FORMAT, "%s: the JSON header is malformed near offset %zu", name,
                        8 + at);
    }
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ') {
            cJSON_Delete(r);
            return nn_error(NN_ERR_FORMAT, "%s: byte 0x%02x at offset %zu after the JSON header "
                            "(only spaces may pad it)", name, (unsigned char)*p,
                            (size_t)(8 + (p - text)));
        }
    *root = r;
    *hlen_out = hlen;
    return NN_OK;
}

nn_status nn_safetensors_parse(nn_model *m, const void *buf, size_t len, const char *name)
{
    if (!m) return nn_error(NN_ERR_ARG, "nn_safetensors_parse: model is NULL");
    if (!buf && len) return nn_error(NN_ERR_ARG, "nn_safetensors_parse: buf is NULL");
    if (!name) name = "(buffer)";
    if (!m->built) return nn_error(NN_ERR_STATE, "%s: build the model before loading its parameters",
                                   name);
    const unsigned char *b = buf;
    cJSON *root = NULL;
    uint64_t hlen = 0;
    NN_TRY(safetensors_read_header(b, len, name, &root, &hlen));
    int cap = 0;
    for (int i = 0; i < m->n_layers; i++) cap += m->layers[i]->n_params;
    st_entry *entries = calloc((size_t)(cap ? cap : 1), sizeof *entries);
    if (!entries) {
        cJSON_Delete(root);
        return nn_error(NN_ERR_MEMORY, "%s: out of memory", name);
    }
    const size_t data_off = 8 + (size_t)hlen, data_len = len - data_off;
    int n = 0;
    nn_status s = safetensors_parse_header(m, root, data_len, name, entries, cap, &n);
    cJSON_Delete(root);
    if (s == NN_OK)
        for (int i = 0; i < n; i++) {
            tensor *t = entries[i].param->t;
            if (t->size) memcpy(t->data, b + data_off + entries[i].begin, t->size * sizeof(float));
            if (!nn_host_is_little_endian()) nn_swap_floats(t->data, t->size);
        }
    free(entries);
    return s;
}

nn_status nn_safetensors_load(nn_model *m, const char *path)
{
    if (!m || !path)
        return nn_error(NN_ERR_ARG, "nn_safetensors_load: NULL argument: %s is NULL",
                        !m ? "m" : "path");
    if (!m->built) return nn_error(NN_ERR_STATE, "%s: build the model before loading its parameters",
                                   path);
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    nn_status s = NN_OK;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                s = nn_error(NN_ERR_MEMORY, "%s: out of memory reading %zu bytes", path, cap);
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) s = nn_error(NN_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (s == NN_OK) s = nn_safetensors_parse(m, buf, len, path);
    free(buf);
    return s;
}

nn_status nn_safetensors_metadata(const void *buf, size_t len, const char *name, const char *key,
                                  char **value)
{
    if (!key || !value || (!buf && len))
        return nn_error(NN_ERR_ARG, "nn_safetensors_metadata: NULL argument");
    *value = NULL;
    if (!name) name = "(buffer)";
    cJSON *root = NULL;
    uint64_t hlen = 0;
    NN_TRY(safetensors_read_header(buf, len, name, &root, &hlen));
    nn_status s = NN_OK;
    const cJSON *meta = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "__metadata__")
                                             : NULL;
    const cJSON *v = meta ? cJSON_GetObjectItemCaseSensitive(meta, key) : NULL;
    if (!cJSON_IsObject(root))
        s = nn_error(NN_ERR_FORMAT, "%s: the header at offset 8 is not a JSON object", name);
    else if (!meta)
        s = nn_error(NN_ERR_FORMAT, "%s: the header has no __metadata__ (a file not written by nn "
                     "names no network)", name);
    else if (!v)
        s = nn_error(NN_ERR_FORMAT, "%s: __metadata__ has no \"%s\" (a file not written by nn, or "
                     "by an older version)", name, key);
    else if (!cJSON_IsString(v))
        s = nn_error(NN_ERR_FORMAT, "%s: __metadata__ entry '%s' is not a string", name, key);
    else if (!(*value = strdup(v->valuestring)))
        s = nn_error(NN_ERR_MEMORY, "%s: out of memory", name);
    cJSON_Delete(root);
    return s;
}
