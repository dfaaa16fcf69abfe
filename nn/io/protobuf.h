/* The protocol-buffers wire format, the bytes under ONNX files: a writer
 * that appends fields to a growable buffer and a reader that walks the
 * fields of a message in a bounded buffer.
 *
 * A message is a sequence of fields, each a varint key (field number << 3 |
 * wire type) and a value: wire type 0 a varint, 1 eight little-endian
 * bytes, 2 a varint length then that many bytes (strings, bytes, nested
 * messages, packed repeated numbers), 5 four little-endian bytes. The
 * meaning of field numbers belongs to the schema, which lives with the
 * caller (nn/io/onnx_*.c): this file knows no schema.
 *
 * Why hand-written rather than protobuf-c or generated code: ONNX needs
 * these five wire forms and nothing else, about 250 lines; a generator would
 * add a build step, a dependency and tens of thousands of lines of generated
 * tables for the full onnx.proto, and the reader here can refuse damaged
 * input with a message naming the byte offset, which generated parsers
 * report as a bare failure.
 *
 * Deliberately omitted: groups (wire types 3 and 4, deprecated; the reader
 * refuses them), zigzag sint types and fixed-width integer fields (ONNX uses
 * neither), unknown-field preservation.
 *
 * Ownership: a writer owns its buffer (nn_pb_writer_free); a reader borrows
 * the caller's bytes, which must outlive it and every field it returned.
 * Thread-safety: none needed; each object belongs to one caller.
 */
#ifndef NN_IO_PROTOBUF_H
#define NN_IO_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/status.h"

enum { NN_PB_VARINT = 0, NN_PB_FIXED64 = 1, NN_PB_LEN = 2, NN_PB_FIXED32 = 5 };

/* ---- writer ---- */

typedef struct nn_pb_writer {
    uint8_t *data;
    size_t len, cap;
    int failed; /* an allocation failed: every later call is a no-op */
} nn_pb_writer;

/* Field writers: key then value. int64 values are written as ten-byte
 * two's-complement varints when negative, as protobuf does. */
void nn_pb_write_varint_field(nn_pb_writer *w, int field, uint64_t v);
void nn_pb_write_int_field(nn_pb_writer *w, int field, int64_t v);
void nn_pb_write_float_field(nn_pb_writer *w, int field, float v);
void nn_pb_write_bytes_field(nn_pb_writer *w, int field, const void *data, size_t len);
void nn_pb_write_string_field(nn_pb_writer *w, int field, const char *s);
/* A nested message: child's bytes as a length-delimited field. */
void nn_pb_write_message_field(nn_pb_writer *w, int field, const nn_pb_writer *child);
/* Floats as little-endian bytes (raw_data of an ONNX tensor). */
void nn_pb_write_floats_field(nn_pb_writer *w, int field, const float *x, size_t n);
/* NN_OK, or NN_ERR_MEMORY naming `who` when any append failed. */
nn_status nn_pb_writer_status(const nn_pb_writer *w, const char *who);
/* Frees the buffer; the writer may be used again from empty. */
void nn_pb_writer_free(nn_pb_writer *w);

/* ---- reader ---- */

typedef struct nn_pb_reader {
    const uint8_t *p, *end;
    const uint8_t *file; /* start of the whole file, for offsets in messages */
    const char *name;    /* the file's name, for messages */
} nn_pb_reader;

typedef struct nn_pb_field {
    int number, wire;
    uint64_t v;          /* NN_PB_VARINT, NN_PB_FIXED64 and NN_PB_FIXED32 values */
    const uint8_t *data; /* NN_PB_LEN: the bytes */
    size_t len;
    size_t offset;       /* of the key, from the start of the file */
} nn_pb_field;

/* A reader over data[0..len) of the file that starts at file. */
void nn_pb_reader_init(nn_pb_reader *r, const uint8_t *file, const uint8_t *data, size_t len,
                       const char *name);
/* A reader over the bytes of a length-delimited field. */
void nn_pb_reader_sub(nn_pb_reader *sub, const nn_pb_reader *r, const nn_pb_field *f);

/* Reads the next field into *f: returns 1, or 0 at the end of the message,
 * or -1 with an error recorded (NN_ERR_FORMAT) naming the file, the offset
 * and what is wrong: a truncated key or value, a varint longer than ten
 * bytes, field number 0, a group or unknown wire type, a length beyond the
 * message's end. */
int nn_pb_next(nn_pb_reader *r, nn_pb_field *f);

/* Records "NAME: offset O: field N of MSG has wire type W, expected E" and
 * returns NN_ERR_FORMAT, unless f->wire == wire (then NN_OK). */
nn_status nn_pb_expect(const nn_pb_reader *r, const nn_pb_field *f, int wire, const char *msg);

/* Reads one varint of a packed field's bytes: 1, 0 at the end, -1 on error. */
int nn_pb_next_varint(nn_pb_reader *r, uint64_t *v);

#endif
