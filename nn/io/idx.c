/* IDX reader for MNIST-style files, plain or gzip-compressed (see idx.h).
 * Deliberately omitted: element types other than unsigned bytes, ranks other
 * than 1 and 3, and writing IDX files. */
#include "nn/io/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* A file being read, with the offset (in uncompressed bytes) for messages. */
typedef struct {
    gzFile f;
    const char *path;
    uint64_t offset;
} idx_file;

static nn_status idx_open(idx_file *r, const char *path)
{
    r->path = path;
    r->offset = 0;
    errno = 0;
    r->f = gzopen(path, "rb");
    if (!r->f)
        return nn_error(NN_ERR_IO, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory in zlib");
    gzbuffer(r->f, 1 << 17);
    return NN_OK;
}

/* Reads up to len bytes; *got is how many arrived before the end of the data.
 * Errors: a corrupt gzip stream or a failing read. */
static nn_status idx_read(idx_file *r, void *buf, uint64_t len, uint64_t *got)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < len) {
        uint64_t want = len - *got;
        unsigned chunk = want > (1u << 30) ? (1u << 30) : (unsigned)want;
        int k = gzread(r->f, p + *got, chunk);
        if (k < 0) {
            int zerr;
            const char *msg = gzerror(r->f, &zerr);
            return nn_error(NN_ERR_FORMAT, "%s: read error at offset %llu: %s", r->path,
                            (unsigned long long)(r->offset + *got), msg);
        }
        if (k == 0) break;
        *got += (uint64_t)k;
    }
    /* A gzip file cut short ends the data early and flags Z_BUF_ERROR; the
     * caller reports it as truncation, which is what it is. */
    r->offset += *got;
    return NN_OK;
}

static uint32_t idx_be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads the magic and `dims` extents; fills ext[0..dims). */
static nn_status idx_header(idx_file *r, uint32_t magic, int dims, uint32_t *ext, const char *what)
{
    uint8_t b[4 + 4 * 3];
    const uint64_t len = 4 + 4 * (uint64_t)dims;
    uint64_t got;
    NN_TRY(idx_read(r, b, 4, &got));
    if (got < 4)
        return nn_error(NN_ERR_FORMAT, "%s: truncated header: expected 4 bytes of magic at offset 0, "
                        "got %llu", r->path, (unsigned long long)got);
    uint32_t m = idx_be32(b);
    if (m != magic)
        return nn_error(NN_ERR_FORMAT, "%s: wrong magic 0x%08x at offset 0, expected 0x%08x (an IDX "
                        "file of %s: unsigned bytes, %d dimension%s)", r->path, m, magic, what, dims,
                        dims > 1 ? "s" : "");
    NN_TRY(idx_read(r, b + 4, len - 4, &got));
    if (got < len - 4)
        return nn_error(NN_ERR_FORMAT, "%s: truncated header: expected %llu bytes of dimensions at "
                        "offset 4, got %llu", r->path, (unsigned long long)(len - 4),
                        (unsigned long long)got);
    for (int d = 0; d < dims; d++) ext[d] = idx_be32(b + 4 + 4 * d);
    return NN_OK;
}

/* Reads exactly `bytes` of element data into a new buffer, growing it as
 * data arrives so that a header promising more than the file holds fails as
 * truncated without first allocating what it promised. Then checks that
 * nothing follows. */
static nn_status idx_payload(idx_file *r, uint64_t bytes, uint8_t **out)
{
    const uint64_t start = r->offset;
    uint64_t cap = bytes < (64u << 20) ? bytes : (64u << 20), have = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return nn_error(NN_ERR_MEMORY, "%s: out of memory for %llu bytes", r->path,
                              (unsigned long long)cap);
    while (have < bytes) {
        if (have == cap) {
            cap = cap * 2 < bytes ? cap * 2 : bytes;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return nn_error(NN_ERR_MEMORY, "%s: out of memory for %llu bytes", r->path,
                                (unsigned long long)cap);
            }
            buf = nb;
        }
        uint64_t want = cap - have, got;
        nn_status s = idx_read(r, buf + have, want, &got);
        if (s != NN_OK) {
            free(buf);
            return s;
        }
        have += got;
        if (got < want) break; /* end of data */
    }
    if (have < bytes) {
        free(buf);
        return nn_error(NN_ERR_FORMAT, "%s: truncated data: expected %llu bytes from offset %llu, "
                        "got %llu (the data ends at offset %llu)", r->path,
                        (unsigned long long)bytes, (unsigned long long)start,
                        (unsigned long long)have, (unsigned long long)(start + have));
    }
    uint8_t extra;
    uint64_t got;
    nn_status s = idx_read(r, &extra, 1, &got);
    if (s == NN_OK && got)
        s = nn_error(NN_ERR_FORMAT, "%s: unexpected bytes after the data at offset %llu (the header "
                     "promises %llu bytes of data from offset %llu)", r->path,
                     (unsigned long long)(start + bytes), (unsigned long long)bytes,
                     (unsigned long long)start);
    if (s != NN_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    return NN_OK;
}

static nn_status idx_check_count(const idx_file *r, uint32_t n, uint64_t offset, const char *what)
{
    if (n == 0 || n > INT_MAX)
        return nn_error(NN_ERR_FORMAT, "%s: bad %s count %u at offset %llu (must be 1..%d)", r->path,
                        what, n, (unsigned long long)offset, INT_MAX);
    return NN_OK;
}

nn_status nn_idx_load_images(const char *path, uint8_t **pixels, int *n, int *rows, int *cols)
{
    if (!path || !pixels || !n || !rows || !cols)
        return nn_error(NN_ERR_ARG, "nn_idx_load_images: NULL argument: %s is NULL",
                        !path ? "path" : !pixels ? "pixels" : !n ? "n" : !rows ? "rows" : "cols");
    idx_file r;
    NN_TRY(idx_open(&r, path));
    uint32_t ext[3];
    nn_status s = idx_header(&r, NN_IDX_MAGIC_IMAGES, 3, ext, "images");
    if (s == NN_OK) s = idx_check_count(&r, ext[0], 4, "image");
    for (int d = 1; d < 3 && s == NN_OK; d++)
        if (ext[d] == 0 || ext[d] > NN_IDX_MAX_SIDE)
            s = nn_error(NN_ERR_FORMAT, "%s: bad image %s %u at offset %d (must be 1..%d)", path,
                         d == 1 ? "rows" : "cols", ext[d], 4 + 4 * d, NN_IDX_MAX_SIDE);
    uint64_t bytes = 0;
    if (s == NN_OK) {
        bytes = (uint64_t)ext[0] * ext[1] * ext[2];
        if (bytes > NN_IDX_MAX_BYTES)
            s = nn_error(NN_ERR_FORMAT, "%s: header at offset 4 promises %u images of %ux%u = %llu "
                         "bytes, more than the %llu allowed", path, ext[0], ext[1], ext[2],
                         (unsigned long long)bytes, (unsigned long long)NN_IDX_MAX_BYTES);
    }
    uint8_t *data = NULL;
    if (s == NN_OK) s = idx_payload(&r, bytes, &data);
    gzclose(r.f);
    if (s != NN_OK) return s;
    *pixels = data;
    *n = (int)ext[0];
    *rows = (int)ext[1];
    *cols = (int)ext[2];
    return NN_OK;
}

nn_status nn_idx_load_labels(const char *path, uint8_t **labels, int *n)
{
    if (!path || !labels || !n)
        return nn_error(NN_ERR_ARG, "nn_idx_load_labels: NULL argument: %s is NULL",
                        !path ? "path" : !labels ? "labels" : "n");
    idx_file r;
    NN_TRY(idx_open(&r, path));
    uint32_t count;
    nn_status s = idx_header(&r, NN_IDX_MAGIC_LABELS, 1, &count, "labels");
    if (s == NN_OK) s = idx_check_count(&r, count, 4, "label");
    uint8_t *data = NULL;
    if (s == NN_OK) s = idx_payload(&r, count, &data);
    gzclose(r.f);
    if (s != NN_OK) return s;
    *labels = data;
    *n = (int)count;
    return NN_OK;
}

void nn_idx_to_float(float *dst, const uint8_t *src, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i] * scale;
}

/* dir/name, or dir/name.gz when only that exists; error if neither does. */
static nn_status idx_find_file(const char *dir, const char *name, char *path, size_t cap)
{
    int k = snprintf(path, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k + 3 >= cap)
        return nn_error(NN_ERR_ARG, "nn_mnist_load: directory name too long: %s", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return NN_OK;
    }
    strcat(path, ".gz");
    f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return NN_OK;
    }
    return nn_error(NN_ERR_IO, "%s: neither %s nor %s.gz exists (or they cannot be read); "
                    "fetch MNIST with examples/fetch_mnist.sh %s", dir, name, name, dir);
}

static nn_status idx_load_pair(const char *dir, const char *img_name, const char *lab_name,
                               uint8_t **images, uint8_t **labels, int *n, int *rows, int *cols)
{
    char ipath[4096], lpath[4096];
    int ni, nl;
    NN_TRY(idx_find_file(dir, img_name, ipath, sizeof ipath));
    NN_TRY(idx_find_file(dir, lab_name, lpath, sizeof lpath));
    NN_TRY(nn_idx_load_images(ipath, images, &ni, rows, cols));
    nn_status s = nn_idx_load_labels(lpath, labels, &nl);
    if (s != NN_OK) {
        free(*images);
        *images = NULL;
        return s;
    }
    if (ni != nl)
        s = nn_error(NN_ERR_FORMAT, "%s has %d images but %s has %d labels", ipath, ni, lpath, nl);
    for (int i = 0; s == NN_OK && i < nl; i++)
        if ((*labels)[i] > 9)
            s = nn_error(NN_ERR_FORMAT, "%s: label %d at offset %d is outside 0..9", lpath,
                         (*labels)[i], 8 + i);
    if (s != NN_OK) {
        free(*images);
        free(*labels);
        *images = *labels = NULL;
        return s;
    }
    *n = ni;
    return NN_OK;
}

nn_status nn_mnist_load(const char *dir, nn_mnist *out)
{
    if (!dir || !out)
        return nn_error(NN_ERR_ARG, "nn_mnist_load: NULL argument: %s is NULL",
                        !dir ? "dir" : "out");
    nn_mnist m;
    memset(&m, 0, sizeof m);
    memset(out, 0, sizeof *out);
    int trows, tcols;
    NN_TRY(idx_load_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", &m.train_images,
                         &m.train_labels, &m.n_train, &m.rows, &m.cols));
    nn_status s = idx_load_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                &m.test_images, &m.test_labels, &m.n_test, &trows, &tcols);
    if (s == NN_OK && (trows != m.rows || tcols != m.cols))
        s = nn_error(NN_ERR_FORMAT, "%s: training images are %dx%d but test images are %dx%d", dir,
                     m.rows, m.cols, trows, tcols);
    if (s != NN_OK) {
        nn_mnist_free(&m);
        return s;
    }
    *out = m;
    return NN_OK;
}

void nn_mnist_free(nn_mnist *m)
{
    if (!m) return;
    free(m->train_images);
    free(m->train_labels);
    free(m->test_images);
    free(m->test_labels);
    memset(m, 0, sizeof *m);
}
