/* libFuzzer harness: the IDX reader (nn/io/idx.h), plain and gzip.
 * The first input byte picks the call and the encoding:
 *   bit 0  0: nn_idx_load_labels, 1: nn_idx_load_images
 *   bit 1  0: the rest of the input is the file as it is (which may itself
 *          be a gzip stream: the corpus holds some, so corrupt gzip data is
 *          fuzzed too); 1: the rest is gzip-compressed here first, so
 *          mutations of the IDX content also reach the reader through zlib.
 * A load that succeeds must describe exactly the bytes that follow the
 * header (n*rows*cols of them); a failure must leave the outputs unchanged
 * and carry a message naming the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_io.h"

static void write_gzip(const char *path, const uint8_t *data, size_t size)
{
    gzFile g = gzopen(path, "wb");
    if (!g || (size && gzwrite(g, data, (unsigned)size) != (int)size) || gzclose(g) != Z_OK) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536) return 0;
    const int images = data[0] & 1, compress = data[0] & 2;
    const uint8_t *body = data + 1;
    const size_t len = size - 1;
    const char *path = fuzz_tmp_path(".idx");
    if (compress) write_gzip(path, body, len);
    else fuzz_write(path, body, len);

    uint8_t *const sentinel = (uint8_t *)&sentinel;
    uint8_t *buf = sentinel;
    int n = -7, rows = -7, cols = -7;
    nn_clear_error();
    nn_status s = images ? nn_idx_load_images(path, &buf, &n, &rows, &cols)
                         : nn_idx_load_labels(path, &buf, &n);
    if (s != NN_OK) {
        if (buf != sentinel || n != -7 || rows != -7 || cols != -7) abort();
        if (!strstr(nn_last_error(), path)) abort(); /* the message names the file */
        return 0;
    }
    /* The plain file's size is known: header plus exactly the data. */
    const size_t elems = images ? (size_t)n * (size_t)rows * (size_t)cols : (size_t)n;
    if (n < 1 || (images && (rows < 1 || cols < 1))) abort();
    if (!compress && len >= 2 && !(body[0] == 0x1f && body[1] == 0x8b) &&
        len != (images ? 16 : 8) + elems)
        abort();
    /* Every byte is readable (ASan catches a short buffer). */
    unsigned sum = 0;
    for (size_t i = 0; i < elems; i++) sum += buf[i];
    (void)sum;
    free(buf);
    return 0;
}
