/* The protocol-buffers wire format (see protobuf.h): field writers over a
 * growable buffer, and a bounds-checked field reader. */
#include "nn/io/protobuf.h"

#include <stdlib.h>
#include <string.h>

#include "nn/io/byte_order.h"

/* ------------------------------------------------------------------ writer */

static void protobuf_append(nn_pb_writer *w, const void *data, size_t len)
{
    if (w->failed || !len) return;
    if (w->len + len > w->cap || !w->data) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + len) cap *= 2;
        uint8_t *p = realloc(w->data, cap);
        if (!p) {
            w->failed = 1;
            return;
        }
        w->data = p;
        w->cap = cap;
    }
    memcpy(w->data + w->len, data, len);
    w->len += len;
}

static void protobuf_varint(nn_pb_writer *w, uint64_t v)
{
    uint8_t b[10];
    int n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    protobuf_append(w, b, (size_t)n);
}

static void protobuf_key(nn_pb_writer *w, int field, int wire)
{
    protobuf_varint(w, ((uint64_t)field << 3) | (uint64_t)wire);
}

void nn_pb_write_varint_field(nn_pb_writer *w, int field, uint64_t v)
{
    protobuf_key(w, field, NN_PB_VARINT);
    protobuf_varint(w, v);
}

void nn_pb_write_int_field(nn_pb_writer *w, int field, int64_t v)
{
    nn_pb_write_varint_field(w, field, (uint64_t)v);
}

void nn_pb_write_float_field(nn_pb_writer *w, int field, float v)
{
    protobuf_key(w, field, NN_PB_FIXED32);
    uint32_t u;
    memcpy(&u, &v, 4);
    const uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    protobuf_append(w, b, 4);
}

void nn_pb_write_bytes_field(nn_pb_writer *w, int field, const void *data, size_t len)
{
    protobuf_key(w, field, NN_PB_LEN);
    protobuf_varint(w, len);
    protobuf_append(w, data, len);
}

void nn_pb_write_string_field(nn_pb_writer *w, int field, const char *s)
{
    nn_pb_write_bytes_field(w, field, s, strlen(s));
}

void nn_pb_write_message_field(nn_pb_writer *w, int field, const nn_pb_writer *child)
{
    if (child->failed) w->failed = 1;
    nn_pb_write_bytes_field(w, field, child->data, child->len);
}

void nn_pb_write_floats_field(nn_pb_writer *w, int field, const float *x, size_t n)
{
    protobuf_key(w, field, NN_PB_LEN);
    protobuf_varint(w, n * 4);
    if (nn_host_is_little_endian()) {
        protobuf_append(w, x, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        nn_swap_floats(&v, 1);
        protobuf_append(w, &v, 4);
    }
}

nn_status nn_pb_writer_status(const nn_pb_writer *w, const char *who)
{
    if (w->failed) return nn_error(NN_ERR_MEMORY, "%s: out of memory while encoding", who);
    return NN_OK;
}

void nn_pb_writer_free(nn_pb_writer *w)
{
    free(w->data);
    memset(w, 0, sizeof *w);
}

/* ------------------------------------------------------------------ reader */

void nn_pb_reader_init(nn_pb_reader *r, const uint8_t *file, const uint8_t *data, size_t len,
                       const char *name)
{
    r->file = file;
    r->p = data;
    r->end = data + len;
    r->name = name;
}

void nn_pb_reader_sub(nn_pb_reader *sub, const nn_pb_reader *r, const nn_pb_field *f)
{
    nn_pb_reader_init(sub, r->file, f->data, f->len, r->name);
}

static size_t protobuf_offset(const nn_pb_reader *r, const uint8_t *p)
{
    return (size_t)(p - r->file);
}

/* A varint at r->p; 1, or -1 with the error recorded. */
static int protobuf_read_varint(nn_pb_reader *r, uint64_t *out, const char *what)
{
    const uint8_t *start = r->p;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p == r->end) {
            nn_error(NN_ERR_FORMAT, "%s: offset %zu: truncated: the %s ends inside a varint",
                     r->name, protobuf_offset(r, start), what);
            return -1;
        }
        const uint8_t b = *r->p++;
        if (i == 9 && b > 1) {
            nn_error(NN_ERR_FORMAT, "%s: offset %zu: %s varint does not fit in 64 bits", r->name,
                     protobuf_offset(r, start), what);
            return -1;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    nn_error(NN_ERR_FORMAT, "%s: offset %zu: %s varint longer than 10 bytes", r->name,
             protobuf_offset(r, start), what);
    return -1;
}

int nn_pb_next(nn_pb_reader *r, nn_pb_field *f)
{
    if (r->p == r->end) return 0;
    memset(f, 0, sizeof *f);
    f->offset = protobuf_offset(r, r->p);
    uint64_t key;
    if (protobuf_read_varint(r, &key, "field key") < 0) return -1;
    f->wire = (int)(key & 7);
    if ((key >> 3) == 0 || (key >> 3) > 536870911u) {
        nn_error(NN_ERR_FORMAT, "%s: offset %zu: field number %llu is not a valid protobuf "
                 "field number (1 to 2^29 - 1)", r->name, f->offset,
                 (unsigned long long)(key >> 3));
        return -1;
    }
    f->number = (int)(key >> 3);
    const size_t left = (size_t)(r->end - r->p);
    switch (f->wire) {
    case NN_PB_VARINT:
        return protobuf_read_varint(r, &f->v, "field value") < 0 ? -1 : 1;
    case NN_PB_FIXED64:
    case NN_PB_FIXED32: {
        const size_t n = f->wire == NN_PB_FIXED64 ? 8 : 4;
        if (left < n) {
            nn_error(NN_ERR_FORMAT, "%s: offset %zu: truncated: field %d needs %zu bytes, %zu left",
                     r->name, f->offset, f->number, n, left);
            return -1;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= (uint64_t)r->p[i] << (8 * i);
        f->v = v;
        r->p += n;
        return 1;
    }
    case NN_PB_LEN: {
        uint64_t n;
        if (protobuf_read_varint(r, &n, "field length") < 0) return -1;
        const size_t avail = (size_t)(r->end - r->p);
        if (n > avail) {
            nn_error(NN_ERR_FORMAT, "%s: offset %zu: field %d declares %llu bytes but its message "
                     "has only %zu left (truncated file or a wrong length)", r->name, f->offset,
                     f->number, (unsigned long long)n, avail);
            return -1;
        }
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default:
        nn_error(NN_ERR_FORMAT, "%s: offset %zu: field %d has wire type %d, which is %s", r->name,
                 f->offset, f->number, f->wire,
                 f->wire == 3 || f->wire == 4 ? "a group (not used by ONNX)" : "not a wire type");
        return -1;
    }
}

nn_status nn_pb_expect(const nn_pb_reader *r, const nn_pb_field *f, int wire, const char *msg)
{
    if (f->wire == wire) return NN_OK;
    static const char *const names[] = {"varint", "fixed64", "length-delimited", "group start",
                                        "group end", "fixed32"};
    return nn_error(NN_ERR_FORMAT, "%s: offset %zu: field %d of %s has wire type %d (%s), "
                    "expected %d (%s)", r->name, f->offset, f->number, msg, f->wire,
                    f->wire >= 0 && f->wire <= 5 ? names[f->wire] : "?", wire, names[wire]);
}

int nn_pb_next_varint(nn_pb_reader *r, uint64_t *v)
{
    if (r->p == r->end) return 0;
    return protobuf_read_varint(r, v, "packed value");
}
