/* Dense float32 tensors, rank 1 to TENSOR_MAX_RANK, row-major (C order).
 *
 * Ownership:
 *  - tensor_create / tensor_zeros return a tensor that owns its storage
 *    (64-byte aligned); tensor_free releases both.
 *  - tensor_view returns a tensor that shares the storage of its source and
 *    never owns it: free the view before (or after) the source, but do not
 *    use a view once the source is freed.
 *  - tensor_wrap borrows a caller's buffer; tensor_free never frees it.
 *  - tensor_free(NULL) is a no-op.
 *  - `grad` is owned by the tensor only when TENSOR_OWNS_GRAD is set; tensors
 *    made by the graph (tensor/graph.h) have data and grad in the graph's arena.
 * Thread-safety: distinct tensors may be used from distinct threads; nothing
 * here has global state.
 */
#ifndef NN_TENSOR_TENSOR_H
#define NN_TENSOR_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/status.h"

#define TENSOR_MAX_RANK 6
#define TENSOR_ALIGN 64

enum {
    TENSOR_OWNS_DATA = 1,     /* data is freed with the tensor */
    TENSOR_OWNS_GRAD = 2,     /* grad is freed with the tensor */
    TENSOR_REQUIRES_GRAD = 4, /* backward accumulates into grad */
    TENSOR_PARAM = 8,         /* a model parameter (a leaf of the graph) */
    TENSOR_GRAPH_MARK = 16    /* nn_graph_backward's own, clear outside it */
};

struct nn_node;

typedef struct tensor {
    float *data;
    float *grad;          /* same shape as data, or NULL */
    size_t size;          /* element count: product of shape */
    int rank;
    int shape[TENSOR_MAX_RANK];
    int flags;
    struct nn_node *node; /* graph node that produced it, NULL for leaves */
} tensor;

/* New tensor with uninitialised storage. NULL with an error on a bad shape
 * (rank outside 1..TENSOR_MAX_RANK, negative extent) or no memory. */
tensor *tensor_create(int rank, const int *shape);
/* As tensor_create, filled with zeros. */
tensor *tensor_zeros(int rank, const int *shape);
/* A view of src's storage with another shape of the same element count. */
tensor *tensor_view(tensor *src, int rank, const int *shape);
/* A tensor over a caller-owned buffer of the shape's element count. */
tensor *tensor_wrap(float *data, int rank, const int *shape);
void tensor_free(tensor *t);

/* Fills an already-allocated tensor struct's shape fields; checks the shape. */
nn_status tensor_set_shape(tensor *t, int rank, const int *shape);
/* Element count of a shape; checks it (error names `what`). */
nn_status tensor_shape_size(int rank, const int *shape, size_t *size,
                            const char *what);

/* dst = src; shapes must have the same element count. */
nn_status tensor_copy(tensor *dst, const tensor *src);
void tensor_fill(tensor *t, float value);
int tensor_same_shape(const tensor *a, const tensor *b);
/* Writes "(2, 3, 4)" into buf; returns buf. */
char *tensor_shape_str(int rank, const int *shape, char *buf, size_t n);

/* 64-byte aligned allocation; NULL with an error when out of memory.
 * Release with tensor_aligned_free. */
void *tensor_aligned_alloc(size_t bytes);
void tensor_aligned_free(void *p);

#endif
