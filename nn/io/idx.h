/* IDX files, the format MNIST ships in, and the four-file MNIST set.
 *
 * An IDX file is a big-endian header, magic 0x0000TTDD (TT = element type,
 * DD = number of dimensions), then one 32-bit extent per dimension, then the
 * elements in row-major order. Only what MNIST uses is read: unsigned bytes
 * (type 0x08) as images (N, rows, cols) (magic 0x00000803) or labels (N)
 * (magic 0x00000801). Other element types and ranks are rejected with a
 * message, not converted.
 *
 * Files are read through zlib's gzopen/gzread, which reads plain and
 * gzip-compressed files alike, so "train-images-idx3-ubyte" and
 * "train-images-idx3-ubyte.gz" both work.
 *
 * Every error names the file and the byte offset (in the uncompressed
 * stream) where the data stopped matching: a missing file, a wrong magic,
 * a zero or absurd extent, fewer bytes than the header promises (expected
 * vs got), bytes after the data, image and label counts that differ.
 *
 * Ownership: the loaders return buffers from malloc that the caller releases
 * with free(); nn_mnist_free releases an nn_mnist's buffers. On error nothing
 * is allocated and the outputs are left as they were.
 * Thread-safety: no shared state; distinct calls may run on distinct threads.
 */
#ifndef NN_IO_IDX_H
#define NN_IO_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/status.h"

#define NN_IDX_MAGIC_IMAGES 0x00000803u
#define NN_IDX_MAGIC_LABELS 0x00000801u
/* Limits that catch a corrupted header before it asks for gigabytes. */
#define NN_IDX_MAX_SIDE 16384           /* rows, cols */
#define NN_IDX_MAX_BYTES (1ull << 32)   /* a file's element data */

/* Reads an image file: *pixels gets n*rows*cols bytes, image i at
 * pixels + i*rows*cols, row-major within the image. */
nn_status nn_idx_load_images(const char *path, uint8_t **pixels, int *n, int *rows, int *cols);
/* Reads a label file: *labels gets n bytes. */
nn_status nn_idx_load_labels(const char *path, uint8_t **labels, int *n);

/* dst[i] = src[i] * scale for n values: pixels to floats (scale 1/255). */
void nn_idx_to_float(float *dst, const uint8_t *src, size_t n, float scale);

/* The MNIST training and test sets. Images are rows x cols (28 x 28) bytes. */
typedef struct nn_mnist {
    uint8_t *train_images, *train_labels; /* n_train images, n_train labels */
    uint8_t *test_images, *test_labels;   /* n_test images, n_test labels */
    int n_train, n_test, rows, cols;
} nn_mnist;

/* Loads the four standard files from dir, each as NAME or NAME.gz:
 * train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 * t10k-labels-idx1-ubyte. Errors besides the per-file ones: a file missing
 * in both forms, image and label counts that differ, training and test
 * images of different sizes, a label outside 0..9. On error *out is zeroed. */
nn_status nn_mnist_load(const char *dir, nn_mnist *out);
/* Frees the buffers and zeroes the struct; NULL is a no-op. */
void nn_mnist_free(nn_mnist *m);

#endif
