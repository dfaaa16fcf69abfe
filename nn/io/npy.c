/* NumPy .npy reader and writer (see npy.h).
 *
 * The header is parsed by a small recursive-descent reader over exactly the
 * Python literal forms numpy writes (a dict of three keys: a string, a bool
 * and a tuple of ints), not by a general Python parser: everything else is
 * an error with the file offset where it went wrong. Loading streams the
 * data straight into the tensor instead of reading the file into memory
 * first, so a large array is held once.
 * Omitted: see npy.h (other dtypes, Fortran order, .npz, mmap).
 */
#include "nn/io/npy.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/io/atomic_file.h"
#include "nn/io/byte_order.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy itself refuses headers above 10000 bytes unless told otherwise; a
 * little more room costs nothing and still bounds what a bad file can ask. */
#define NPY_MAX_HEADER (1u << 20)
#define NPY_ALIGN 64

/* ---------------------------------------------------------------- header */

typedef struct {
    const char *s; /* header text (not NUL-terminated) */
    size_t n, i;   /* length, cursor */
    size_t base;   /* file offset of s[0], for messages */
    const char *name;
} npy_cursor;

typedef struct {
    int have_descr, have_order, have_shape;
    char descr[64];
    int fortran;
    int rank;
    int shape[TENSOR_MAX_RANK];
} npy_info;

/* A printable description of the character at the cursor. */
static const char *npy_cursor_desc(const npy_cursor *c, char *buf, size_t n)
{
    if (c->i >= c->n) {
        snprintf(buf, n, "the end of the header");
    } else {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch >= 0x20 && ch < 0x7f) snprintf(buf, n, "'%c'", ch);
        else snprintf(buf, n, "byte 0x%02x", ch);
    }
    return buf;
}

static nn_status npy_err_expected(const npy_cursor *c, const char *what)
{
    char b[32];
    return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: expected %s, found %s", c->name,
                    c->base + c->i, what, npy_cursor_desc(c, b, sizeof b));
}

static void npy_skip_ws(npy_cursor *c)
{
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                           c->s[c->i] == '\r'))
        c->i++;
}

static int npy_accept(npy_cursor *c, char ch)
{
    npy_skip_ws(c);
    if (c->i < c->n && c->s[c->i] == ch) {
        c->i++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...") without escapes, into out[cap]. */
static nn_status npy_parse_string(npy_cursor *c, char *out, size_t cap, const char *what)
{
    npy_skip_ws(c);
    if (c->i >= c->n || (c->s[c->i] != '\'' && c->s[c->i] != '"')) return npy_err_expected(c, what);
    const char q = c->s[c->i++];
    const size_t start = c->i;
    while (c->i < c->n && c->s[c->i] != q) {
        if (c->s[c->i] == '\\')
            return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: escape sequences in "
                            "strings are not supported", c->name, c->base + c->i);
        if (c->s[c->i] == '\n')
            return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: unterminated string",
                            c->name, c->base + start - 1);
        c->i++;
    }
    if (c->i >= c->n)
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: unterminated string", c->name,
                        c->base + start - 1);
    size_t len = c->i - start;
    c->i++; /* closing quote */
    if (len >= cap)
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: string of %zu characters is "
                        "too long for %s", c->name, c->base + start, len, what);
    memcpy(out, c->s + start, len);
    out[len] = '\0';
    return NN_OK;
}

static int npy_match_word(npy_cursor *c, const char *w)
{
    size_t len = strlen(w);
    if (c->n - c->i < len || memcmp(c->s + c->i, w, len)) return 0;
    /* "Truex" is a name, not the literal True. */
    if (c->i + len < c->n) {
        char next = c->s[c->i + len];
        if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') ||
            (next >= '0' && next <= '9') || next == '_')
            return 0;
    }
    c->i += len;
    return 1;
}

static nn_status npy_parse_bool(npy_cursor *c, int *out)
{
    npy_skip_ws(c);
    if (npy_match_word(c, "True")) *out = 1;
    else if (npy_match_word(c, "False")) *out = 0;
    else return npy_err_expected(c, "True or False for 'fortran_order'");
    return NN_OK;
}

/* A non-negative integer that fits an int; Python 2 wrote longs as "3L". */
static nn_status npy_parse_extent(npy_cursor *c, int *out)
{
    npy_skip_ws(c);
    const size_t start = c->i;
    if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
        return npy_err_expected(c, "a non-negative integer in 'shape'");
    long long v = 0;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') {
        v = v * 10 + (c->s[c->i] - '0');
        if (v > INT_MAX)
            return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: extent in 'shape' is "
                            "larger than %d", c->name, c->base + start, INT_MAX);
        c->i++;
    }
    if (c->i < c->n && (c->s[c->i] == 'L' || c->s[c->i] == 'l')) c->i++;
    *out = (int)v;
    return NN_OK;
}

/* A Python tuple of ints: "()", "(3,)", "(2, 3)", "(2, 3,)". "(3)" is the
 * int 3 in Python, not a tuple, and numpy rejects it too. */
static nn_status npy_parse_shape(npy_cursor *c, npy_info *info)
{
    npy_skip_ws(c);
    const size_t open = c->i;
    if (!npy_accept(c, '(')) return npy_err_expected(c, "'(' starting the 'shape' tuple");
    info->rank = 0;
    int trailing_comma = 0;
    while (!npy_accept(c, ')')) {
        if (info->rank == TENSOR_MAX_RANK)
            return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: 'shape' has more than %d "
                            "dimensions, the most a tensor has", c->name, c->base + c->i,
                            TENSOR_MAX_RANK);
        NN_TRY(npy_parse_extent(c, &info->shape[info->rank++]));
        trailing_comma = npy_accept(c, ',');
        if (!trailing_comma) {
            if (npy_accept(c, ')')) break;
            return npy_err_expected(c, "',' or ')' in the 'shape' tuple");
        }
    }
    if (info->rank == 1 && !trailing_comma)
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: '(%d)' is an int, not a "
                        "tuple; a 1-d shape is written '(%d,)'", c->name, c->base + open,
                        info->shape[0], info->shape[0]);
    return NN_OK;
}

static nn_status npy_parse_entry(npy_cursor *c, npy_info *info)
{
    char key[32];
    npy_skip_ws(c);
    const size_t key_off = c->base + c->i;
    NN_TRY(npy_parse_string(c, key, sizeof key, "a quoted key"));
    if (!npy_accept(c, ':')) return npy_err_expected(c, "':' after the key");
    int *have;
    if (!strcmp(key, "descr")) have = &info->have_descr;
    else if (!strcmp(key, "fortran_order")) have = &info->have_order;
    else if (!strcmp(key, "shape")) have = &info->have_shape;
    else
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: unknown key '%s' (expected "
                        "'descr', 'fortran_order' and 'shape')", c->name, key_off, key);
    if (*have)
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: key '%s' appears twice",
                        c->name, key_off, key);
    *have = 1;
    if (have == &info->have_descr) {
        npy_skip_ws(c);
        if (c->i < c->n && c->s[c->i] == '[')
            return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: 'descr' is a structured "
                            "dtype; only float32 ('<f4') is supported", c->name, c->base + c->i);
        return npy_parse_string(c, info->descr, sizeof info->descr, "a quoted dtype for 'descr'");
    }
    if (have == &info->have_order) return npy_parse_bool(c, &info->fortran);
    return npy_parse_shape(c, info);
}

static nn_status npy_parse_dict(npy_cursor *c, npy_info *info)
{
    memset(info, 0, sizeof *info);
    if (!npy_accept(c, '{')) return npy_err_expected(c, "'{' starting the header dict");
    while (!npy_accept(c, '}')) {
        NN_TRY(npy_parse_entry(c, info));
        if (!npy_accept(c, ',')) {
            if (npy_accept(c, '}')) break;
            return npy_err_expected(c, "',' or '}' after a value");
        }
    }
    npy_skip_ws(c);
    if (c->i != c->n) {
        char b[32];
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: %s after the closing '}'",
                        c->name, c->base + c->i, npy_cursor_desc(c, b, sizeof b));
    }
    const char *missing = !info->have_descr ? "descr" : !info->have_order ? "fortran_order"
                        : !info->have_shape ? "shape" : NULL;
    if (missing)
        return nn_error(NN_ERR_FORMAT, "%s: npy header at offset %zu: key '%s' is missing", c->name,
                        c->base, missing);
    return NN_OK;
}

/* Checks the magic and version in the first 8 bytes and returns where the
 * header length field is and how wide it is. */
static nn_status npy_parse_preamble(const unsigned char *p, size_t n, const char *name,
                                    size_t *len_width)
{
    if (n < NPY_MAGIC_LEN || memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN)) {
        size_t k = 0;
        while (k < n && k < NPY_MAGIC_LEN && p[k] == (unsigned char)NPY_MAGIC[k]) k++;
        if (k == n)
            return nn_error(NN_ERR_FORMAT, "%s: truncated npy file: %zu bytes, the magic "
                            "\"\\x93NUMPY\" alone takes 6", name, n);
        return nn_error(NN_ERR_FORMAT, "%s: not an npy file: bad magic at offset %zu (expected "
                        "\"\\x93NUMPY\")", name, k);
    }
    if (n < 8)
        return nn_error(NN_ERR_FORMAT, "%s: truncated npy file: %zu bytes, ends inside the "
                        "version at offset 6", name, n);
    if (p[6] == 1 && p[7] == 0) *len_width = 2;
    else if ((p[6] == 2 || p[6] == 3) && p[7] == 0) *len_width = 4;
    else
        return nn_error(NN_ERR_FORMAT, "%s: npy format version %u.%u at offset 6 is not supported "
                        "(1.0, 2.0 and 3.0 are)", name, p[6], p[7]);
    return NN_OK;
}

static size_t npy_read_le(const unsigned char *p, size_t width)
{
    size_t v = 0;
    for (size_t k = width; k-- > 0;) v = (v << 8) | p[k];
    return v;
}

/* Validates the parsed header: dtype, order, shape; returns the data size. */
static nn_status npy_check_info(const npy_info *info, const char *name, size_t *elements)
{
    if (strcmp(info->descr, "<f4")) {
        const char *hint = !strcmp(info->descr, ">f4") ? " (this one is big-endian float32)"
                         : !strcmp(info->descr, "<f8") ? " (this one is float64: save "
                                                         "a.astype(np.float32))"
                         : "";
        return nn_error(NN_ERR_FORMAT, "%s: dtype '%s' is not supported; only little-endian "
                        "float32 '<f4' is%s", name, info->descr, hint);
    }
    if (info->fortran)
        return nn_error(NN_ERR_FORMAT, "%s: fortran_order is True; only C order is supported "
                        "(save np.ascontiguousarray(a))", name);
    if (info->rank == 0)
        return nn_error(NN_ERR_FORMAT, "%s: a 0-d array (shape ()); tensors have rank 1 to %d",
                        name, TENSOR_MAX_RANK);
    char what[300];
    snprintf(what, sizeof what, "%s: npy shape", name);
    return tensor_shape_size(info->rank, info->shape, elements, what);
}

/* Everything before the data: preamble, length, dict. *data_off is where the
 * data starts. `have` bytes of p are available; *need says how many are
 * needed when that is not enough (returns NN_OK with *need > have). */
static nn_status npy_parse_header(const unsigned char *p, size_t have, const char *name,
                                  npy_info *info, size_t *data_off, size_t *need)
{
    size_t width = 0;
    *need = 0;
    NN_TRY(npy_parse_preamble(p, have, name, &width));
    if (have < 8 + width) {
        *need = 8 + width;
        return NN_OK;
    }
    size_t hlen = npy_read_le(p + 8, width);
    if (hlen > NPY_MAX_HEADER)
        return nn_error(NN_ERR_FORMAT, "%s: npy header length %zu at offset 8 is over the %u byte "
                        "limit", name, hlen, NPY_MAX_HEADER);
    if (have < 8 + width + hlen) {
        *need = 8 + width + hlen;
        return NN_OK;
    }
    npy_cursor c = {(const char *)p + 8 + width, hlen, 0, 8 + width, name};
    NN_TRY(npy_parse_dict(&c, info));
    *data_off = 8 + width + hlen;
    return NN_OK;
}

nn_status nn_npy_parse(const void *buf, size_t len, const char *name, tensor **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_npy_parse: out is NULL");
    *out = NULL;
    if (!buf && len) return nn_error(NN_ERR_ARG, "nn_npy_parse: buf is NULL");
    if (!name) name = "(buffer)";
    npy_info info;
    size_t off = 0, need = 0, elements;
    NN_TRY(npy_parse_header(buf, len, name, &info, &off, &need));
    if (need > len)
        return nn_error(NN_ERR_FORMAT, "%s: truncated npy file: %zu bytes, the header needs %zu",
                        name, len, need);
    NN_TRY(npy_check_info(&info, name, &elements));
    const size_t bytes = elements * sizeof(float);
    if (len - off != bytes) {
        char b[96];
        tensor_shape_str(info.rank, info.shape, b, sizeof b);
        if (len - off < bytes)
            return nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but "
                            "the file has %zu (truncated)", name, b, bytes, off, len - off);
        return nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but the "
                        "file has more (trailing bytes at offset %zu)", name, b, bytes, off,
                        off + bytes);
    }
    tensor *t = tensor_create(info.rank, info.shape);
    if (!t) return NN_ERR_MEMORY;
    if (bytes) memcpy(t->data, (const unsigned char *)buf + off, bytes);
    if (!nn_host_is_little_endian()) nn_swap_floats(t->data, t->size);
    *out = t;
    return NN_OK;
}

nn_status nn_npy_load(const char *path, tensor **out)
{
    if (!out) return nn_error(NN_ERR_ARG, "nn_npy_load: out is NULL");
    *out = NULL;
    if (!path) return nn_error(NN_ERR_ARG, "nn_npy_load: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* Read the preamble, then exactly the header it announces, then the data. */
    unsigned char *head = NULL;
    size_t have = 0, need = 12, off = 0, elements;
    npy_info info;
    nn_status s = NN_OK;
    tensor *t = NULL;
    for (;;) {
        unsigned char *h = realloc(head, need);
        if (!h) {
            s = nn_error(NN_ERR_MEMORY, "%s: out of memory reading the npy header", path);
            goto done;
        }
        head = h;
        have += fread(head + have, 1, need - have, f);
        s = npy_parse_header(head, have, path, &info, &off, &need);
        if (s != NN_OK) goto done;
        if (need == 0) break;
        if (have < need && (feof(f) || ferror(f))) {
            s = ferror(f) ? nn_error(NN_ERR_IO, "%s: read error", path)
                          : nn_error(NN_ERR_FORMAT, "%s: truncated npy file: %zu bytes, the header "
                                     "needs %zu", path, have, need);
            goto done;
        }
    }
    s = npy_check_info(&info, path, &elements);
    if (s != NN_OK) goto done;
    /* A header may promise far more data than the file holds: compare with
     * the file's size before allocating (a pipe is checked as it is read). */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size >= off &&
        (size_t)st.st_size - off != elements * sizeof(float)) {
        char b[96];
        const size_t bytes = elements * sizeof(float), held = (size_t)st.st_size - off;
        tensor_shape_str(info.rank, info.shape, b, sizeof b);
        if (held < bytes)
            s = nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but the "
                         "file has %zu (truncated)", path, b, bytes, off, held);
        else
            s = nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but the "
                         "file has more (trailing bytes at offset %zu)", path, b, bytes, off,
                         off + bytes);
        goto done;
    }
    t = tensor_create(info.rank, info.shape);
    if (!t) {
        s = NN_ERR_MEMORY;
        goto done;
    }
    /* The 12-byte first read may already hold the start of the data. */
    size_t early = have - off, bytes = elements * sizeof(float);
    if (early > bytes) early = bytes;
    if (early) memcpy(t->data, head + off, early);
    size_t got = early + (bytes > early ? fread((unsigned char *)t->data + early, 1, bytes - early, f)
                                        : 0);
    if (ferror(f)) {
        s = nn_error(NN_ERR_IO, "%s: read error", path);
        goto done;
    }
    unsigned char extra;
    size_t trailing = (have - off - early) + fread(&extra, 1, 1, f);
    if (got != bytes || trailing) {
        char b[96];
        tensor_shape_str(info.rank, info.shape, b, sizeof b);
        if (got != bytes)
            s = nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but the "
                         "file has %zu (truncated)", path, b, bytes, off, got);
        else
            s = nn_error(NN_ERR_FORMAT, "%s: shape %s needs %zu data bytes at offset %zu, but the "
                         "file has more (trailing bytes at offset %zu)", path, b, bytes, off,
                         off + bytes);
        goto done;
    }
    if (!nn_host_is_little_endian()) nn_swap_floats(t->data, t->size);
    *out = t;
    t = NULL;
done:
    tensor_free(t);
    free(head);
    fclose(f);
    return s;
}

/* ------------------------------------------------------------------ save */

/* Writes head then n floats (little-endian) through nn/io/atomic_file.h, so
 * readers see the old file or the new one. */
static nn_status npy_write_atomic(const char *path, const void *head, size_t head_len,
                                  const float *data, size_t n)
{
    nn_atomic_file af;
    NN_TRY(nn_atomic_file_open(&af, path));
    NN_TRY(nn_atomic_file_write(&af, head, head_len));
    NN_TRY(nn_atomic_file_write_floats_le(&af, data, n));
    return nn_atomic_file_commit(&af);
}

nn_status nn_npy_save(const char *path, const tensor *t)
{
    if (!path || !t)
        return nn_error(NN_ERR_ARG, "nn_npy_save: NULL argument: %s is NULL",
                        !path ? "path" : "t");
    if (t->size && !t->data) return nn_error(NN_ERR_ARG, "nn_npy_save: %s: tensor has no data", path);
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < t->rank; i++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%d%s", t->shape[i],
                        t->rank == 1 ? "," : i + 1 < t->rank ? ", " : "");
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    /* Version 1.0 holds headers up to 65535 bytes, which this one never
     * reaches: rank <= 6 with int extents stays under 200 characters. */
    NN_ASSERT((size_t)len + 1 + 10 + NPY_ALIGN < sizeof dict);
    /* Pad with spaces so magic + version + length + header ends at a multiple
     * of 64, then end the header with '\n' as numpy does. */
    unsigned char head[10 + sizeof dict + NPY_ALIGN];
    size_t total = (10 + (size_t)len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t hlen = total - 10;
    memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
    head[6] = 1;
    head[7] = 0;
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)len);
    memset(head + 10 + len, ' ', hlen - (size_t)len - 1);
    head[total - 1] = '\n';
    return npy_write_atomic(path, head, total, t->data, t->size);
}
