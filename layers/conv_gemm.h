/* conv_gemm: the register-blocked GEMM tiles of layers/conv_gemm.c, which
 * compute the convolution on NHWC tensors without a column matrix, and the
 * element-wise passes over dz that share their vector width (the ReLU's
 * backward, the bias gradient).
 *
 * Internal to the convolution: layers/conv_core.c dispatches to these,
 * layers/conv_winograd.c runs its products on nn_conv_gemm's tiles. What
 * the tiles compute is written plainly in layers/conv_reference.c.
 *
 * ld* are row lengths in floats; vector loads may read up to the next
 * multiple of the vector width, so rows are padded to it where noted.
 * Loops are OpenMP-parallel unless a function says "one thread"; each output
 * element is summed by one thread in an order fixed by the shapes.
 *
 * Omits: everything that is not a GEMM-shaped product or a pass over dz
 * (buffers, padding, transposes and dispatch are in conv_core.h).
 */
#ifndef NN_LAYERS_CONV_GEMM_H
#define NN_LAYERS_CONV_GEMM_H

#include <stddef.h>

#include "layers/conv_core.h"

/* Floats per vector (16 with AVX-512, 8 with AVX, 4 otherwise). */
int nn_conv_vector_width(void);

/* y (N, OH, OW, F) = act(conv(xp, kp) + bp): xp (N, Hp, Wp, C) is the input
 * with its padding, kp (KH*KW*C, ldk) the kernel with ldk a multiple of the
 * vector width, bp (ldk) or NULL, relu 0 or 1. With y_nchw, y is
 * (N, F, OH, OW) instead, the same values. */
void nn_conv_forward_nhwc(float *y, const float *xp, int Hp, int Wp, const float *kp, int ldk,
                          const float *bp, int relu, const nn_conv_geom *g, int N, int F, int y_nchw);
/* dx (N, H, W, C) += stride-1 convolution of dzs (N, H + (KH-1)DH,
 * W + (KW-1)DW, F) with kt (KH*KW*F, ldk), the flipped, transposed kernel;
 * with dx_nchw, dx is (N, C, H, W). */
void nn_conv_backward_input_direct(float *dx, const float *dzs, const float *kt, int ldk,
                                   const nn_conv_geom *g, int N, int F, int dx_nchw);
/* dcol (M, T) = dz (M, F) kt2 (F, ldk). */
void nn_conv_backward_cols(float *dcol, const float *dz, const float *kt2, int ldk, size_t M, int F,
                           int T);
/* out (rows, cols) = a (rows, K) b (K, cols), rows strided lda, ldb, ldo;
 * one thread (callers parallelize around it). Columns past a multiple of
 * the vector width are computed but not stored. */
void nn_conv_gemm(float *out, size_t ldo, int rows, int cols, const float *a, size_t lda, int K,
                  const float *b, size_t ldb);
/* out (rows, cols) += a^T b, a (K, rows) and b (K, cols) row-major; one
 * thread; cols a multiple of the vector width. */
void nn_conv_gemm_tn_add(float *out, size_t ldo, int rows, int cols, const float *a, size_t lda,
                         int K, const float *b, size_t ldb);
/* dk (T, F) += sum over pixels of xp-window (T) x dz (F), xp (N, Hp, Wp, C),
 * dz (N*OH*OW, ldz); in G fixed groups of output rows (nn_conv_dk_groups),
 * whose partial sums part (G, T, ldz rounded up to vectors) are combined in
 * group order. */
int nn_conv_dk_groups(const nn_conv_geom *g, int N, int F);
void nn_conv_backward_kernel(float *dk, const float *xp, int Hp, int Wp, const float *dz, int ldz,
                             const nn_conv_geom *g, int N, int F, float *part, int G);

/* One pass over dz (rows, F): the ReLU mask (when y, same shape, is not
 * NULL) and, when db (F) is not NULL, db += the column sums -- float within
 * fixed blocks of 256 rows, the blocks combined in order in double. part
 * holds nn_conv_db_scratch(rows, F) floats. */
size_t nn_conv_db_scratch(size_t rows, int F);
void nn_conv_dz_pass(float *dz, const float *y, float *db, float *part, size_t rows, int F);

#endif
