/* conv_reference: the 2-D convolution as plain direct loops -- the place to
 * start reading the convolution. The fast kernels (layers/conv_gemm.c,
 * layers/conv_winograd.c, picked by nn_conv_forward/nn_conv_backward in
 * layers/conv_core.c) compute the same sums in another order, and
 * tests/test_conv.c holds them to these loops.
 *
 * Layout: NHWC only, the layout the fast kernels use internally
 * (channels_first runs them on chunks of samples transposed to it,
 * nn_conv_forward_nchw). Geometry:
 * nn_conv_geom (conv_core.h), so any window, stride, dilation, and Keras's
 * valid or same padding: PT rows and PL columns of implicit zeros before the
 * input, the rest of Hp, Wp after it. The kernel is (KH, KW, C, F), Keras's
 * layout.
 *
 * Omits: the fused ReLU of nn_conv_forward (relu: y = max(y, 0) afterwards;
 * its backward masks dz by y > 0 first, nn_conv_dz_pass), threads,
 * blocking and vectors: these loops are slow on purpose.
 */
#ifndef NN_LAYERS_CONV_REFERENCE_H
#define NN_LAYERS_CONV_REFERENCE_H

#include "layers/conv_core.h"

/* y (N, OH, OW, F) = b[f] + sum over kh < KH, kw < KW, c < C of
 *     x[n][oh*SH - PT + kh*DH][ow*SW - PL + kw*DW][c] * k[kh][kw][c][f]
 * with x (N, H, W, C) read as 0 outside its bounds, k (KH, KW, C, F), b (F)
 * or NULL. Assigns y. */
void nn_conv_forward_reference(float *y, const float *x, const float *k, const float *b,
                               const nn_conv_geom *g, int N, int F);

/* The forward's gradients from dz (N, OH, OW, F) = dL/dy, ADDED (like every
 * backward in nn) into whichever of dx (N, H, W, C), dk (KH, KW, C, F),
 * db (F) is not NULL:
 *   dx[n][ih][iw][c] += sum over the (window, tap) pairs that read x there
 *                       of dz[n][oh][ow][f] * k[kh][kw][c][f]
 *   dk[kh][kw][c][f] += sum over n, oh, ow of x at that tap * dz[n][oh][ow][f]
 *   db[f]            += sum over n, oh, ow of dz[n][oh][ow][f]
 * x is the forward's input (read for dk only), k its kernel (for dx only). */
void nn_conv_backward_reference(float *dx, float *dk, float *db, const float *dz, const float *x,
                                const float *k, const nn_conv_geom *g, int N, int F);

#endif
