/* Tensor storage and shape bookkeeping (see tensor.h). */
#include "tensor/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *tensor_aligned_alloc(size_t bytes)
{
    /* Rounding up must not wrap a huge request around to a small block. */
    if (bytes > SIZE_MAX - TENSOR_ALIGN) {
        nn_error(NN_ERR_MEMORY, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    size_t rounded = (bytes + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    if (rounded == 0) rounded = TENSOR_ALIGN;
    void *p = aligned_alloc(TENSOR_ALIGN, rounded);
    if (!p) nn_error(NN_ERR_MEMORY, "out of memory allocating %zu bytes", bytes);
    return p;
}

void tensor_aligned_free(void *p) { free(p); }

char *tensor_shape_str(int rank, const int *shape, char *buf, size_t n)
{
    size_t used = 0;
    if (n == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < rank && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %d" : "%d", shape[i]);
    if (used < n) snprintf(buf + used, n - used, rank == 1 ? ",)" : ")");
    return buf;
}

nn_status tensor_shape_size(int rank, const int *shape, size_t *size,
                            const char *what)
{
    if (rank < 1 || rank > TENSOR_MAX_RANK)
        return nn_error(NN_ERR_SHAPE, "%s: rank %d is outside 1..%d", what, rank,
                        TENSOR_MAX_RANK);
    if (!shape) return nn_error(NN_ERR_ARG, "%s: shape is NULL", what);
    size_t s = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0) {
            char b[96];
            return nn_error(NN_ERR_SHAPE, "%s: negative extent in shape %s", what,
                            tensor_shape_str(rank, shape, b, sizeof b));
        }
        if (shape[i] && s > SIZE_MAX / 4 / (size_t)shape[i])
            return nn_error(NN_ERR_SHAPE, "%s: shape too large", what);
        s *= (size_t)shape[i];
    }
    *size = s;
    return NN_OK;
}

nn_status tensor_set_shape(tensor *t, int rank, const int *shape)
{
    size_t size;
    NN_TRY(tensor_shape_size(rank, shape, &size, "tensor_set_shape"));
    t->rank = rank;
    memset(t->shape, 0, sizeof t->shape);
    memcpy(t->shape, shape, (size_t)rank * sizeof *shape);
    t->size = size;
    return NN_OK;
}

static tensor *tensor_new(int rank, const int *shape, const char *fn)
{
    size_t size;
    if (tensor_shape_size(rank, shape, &size, fn) != NN_OK) return NULL;
    tensor *t = calloc(1, sizeof *t);
    if (!t) {
        nn_error(NN_ERR_MEMORY, "%s: out of memory", fn);
        return NULL;
    }
    tensor_set_shape(t, rank, shape);
    return t;
}

tensor *tensor_create(int rank, const int *shape)
{
    tensor *t = tensor_new(rank, shape, "tensor_create");
    if (!t) return NULL;
    t->data = tensor_aligned_alloc(t->size * sizeof(float));
    if (!t->data) {
        free(t);
        return NULL;
    }
    t->flags = TENSOR_OWNS_DATA;
    return t;
}

tensor *tensor_zeros(int rank, const int *shape)
{
    tensor *t = tensor_create(rank, shape);
    if (t) memset(t->data, 0, t->size * sizeof(float));
    return t;
}

tensor *tensor_view(tensor *src, int rank, const int *shape)
{
    if (!src) {
        nn_error(NN_ERR_ARG, "tensor_view: src is NULL");
        return NULL;
    }
    tensor *t = tensor_new(rank, shape, "tensor_view");
    if (!t) return NULL;
    if (t->size != src->size) {
        char a[96], b[96];
        nn_error(NN_ERR_SHAPE, "tensor_view: cannot view %s (%zu elements) as %s (%zu elements)",
                 tensor_shape_str(src->rank, src->shape, a, sizeof a), src->size,
                 tensor_shape_str(rank, shape, b, sizeof b), t->size);
        free(t);
        return NULL;
    }
    t->data = src->data;
    t->grad = src->grad;
    return t;
}

tensor *tensor_wrap(float *data, int rank, const int *shape)
{
    tensor *t = tensor_new(rank, shape, "tensor_wrap");
    if (!t) return NULL;
    if (!data && t->size) {
        nn_error(NN_ERR_ARG, "tensor_wrap: data is NULL");
        free(t);
        return NULL;
    }
    t->data = data;
    return t;
}

void tensor_free(tensor *t)
{
    if (!t) return;
    if (t->flags & TENSOR_OWNS_DATA) tensor_aligned_free(t->data);
    if (t->flags & TENSOR_OWNS_GRAD) tensor_aligned_free(t->grad);
    free(t);
}

nn_status tensor_copy(tensor *dst, const tensor *src)
{
    if (!dst || !src)
        return nn_error(NN_ERR_ARG, "tensor_copy: NULL tensor: %s is NULL", !dst ? "dst" : "src");
    if (dst->size != src->size) {
        char a[96], b[96];
        return nn_error(NN_ERR_SHAPE, "tensor_copy: destination %s and source %s differ in size",
                        tensor_shape_str(dst->rank, dst->shape, a, sizeof a),
                        tensor_shape_str(src->rank, src->shape, b, sizeof b));
    }
    if (dst->data != src->data && src->size)
        memcpy(dst->data, src->data, src->size * sizeof(float));
    return NN_OK;
}

void tensor_fill(tensor *t, float value)
{
    for (size_t i = 0; i < t->size; i++) t->data[i] = value;
}

int tensor_same_shape(const tensor *a, const tensor *b)
{
    if (a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}
