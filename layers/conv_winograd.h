/* conv_winograd: the Winograd F(m x m, 3x3) kernels of
 * layers/conv_winograd.c, m = 2 or 4, NHWC: 3x3 windows at stride 1 and
 * dilation 1, forward, dx, and (as F(3x3, m x m)) dkernel.
 *
 * Internal to the convolution: layers/conv_core.c sizes their buffers and
 * dispatches to them. They compute the same sums as the direct loop in
 * layers/conv_reference.c, rounded differently (the transforms add and
 * subtract neighbouring values).
 *
 * Omits: other window sizes, strides and dilation (layers/conv_gemm.h).
 */
#ifndef NN_LAYERS_CONV_WINOGRAD_H
#define NN_LAYERS_CONV_WINOGRAD_H

#include <stddef.h>

#include "layers/conv_core.h"

/* Winograd computes this geometry's convolution: 3x3 windows, stride 1,
 * dilation 1. */
int nn_conv_winograd_fits(const nn_conv_geom *g);
/* ... and pays: it fits, with at least 8 channels in (g->C) and out (F). */
int nn_conv_winograd_applies(const nn_conv_geom *g, int F);
/* The tile size m the dispatch runs this geometry with (it fits): 4, or 2
 * for outputs under 3x3. Every function below takes m first. */
int nn_conv_winograd_tile(const nn_conv_geom *g);
/* Floats of the transformed kernel U ((m+2)^2, Cin, Cout rounded up to vectors)
 * and of the scratch for `slots` threads; slots is the OpenMP thread limit
 * when the buffers are sized, and the kernels below never run more threads
 * than the slots they are given (the limit may rise between a forward and
 * its backward). */
size_t nn_conv_winograd_kernel_size(int m, int Cin, int Cout);
int nn_conv_winograd_slots(void);
size_t nn_conv_winograd_scratch_size(int m, int slots, int Cin, int Cout);
/* U from k (3, 3, C, F): Cin = C, Cout = F; flip: Cin = F, Cout = C with
 * the kernel rotated by 180 degrees (for dx). */
void nn_conv_winograd_kernel(int m, float *U, const float *k, int C, int F, int flip);
/* y (N, OH, OW, Cout) = (add ? y : 0) + act(b + sum over 3x3 windows of
 * x (N, H, W, Cin) read at (oh + oy + a, ow + ox + b), zero outside x).
 * bias: NULL or Cout rounded up to vectors. */
void nn_conv_winograd(int m, float *y, int OH, int OW, int Cout, const float *x, int H, int W,
                      int Cin, int oy, int ox, int N, const float *U, const float *bias, int relu,
                      int add, float *scratch, int slots);
/* nn_conv_winograd for the forward of geometry g (3x3, stride 1, any
 * padding): y (N, OH, OW, F) = act(b + conv(x, k)), x (N, H, W, C)
 * without its padding, U = the kernel's transform, bias as above. Equals
 * nn_conv_winograd on x's padded copy (N, Hp, Wp, C) bit for bit. */
void nn_conv_winograd_same(int m, float *y, const float *x, const nn_conv_geom *g, int N, int F,
                           const float *U, const float *bias, int relu, float *scratch, int slots);

/* dk (3, 3, C, F) += sum over pixels of x windows x dz, as Winograd
 * F(3x3, m x m) (the transpose of the forward's algorithm): x (N, H, W, C)
 * is the input without its padding (read as zero outside it, as the
 * forward reads it; the sum equals _add's on the padded copy bit for bit),
 * dz (N, OH, OW, F). The sum over m x m
 * tiles runs in fixed blocks added in order, so it does not depend on the
 * thread count; part holds nn_conv_winograd_dk_size() floats. */
size_t nn_conv_winograd_dk_size(int m, const nn_conv_geom *g, int F);
void nn_conv_winograd_dk(int m, float *dk, const float *x, const float *dz, const nn_conv_geom *g,
                         int N, int F, float *part, float *scratch, int slots);
/* The same sum brought a chunk of samples at a time: _begin, then _add for
 * the samples [n0, n0 + nb) of the batch of N, chunk after chunk in sample
 * order (x, here (nb, Hp, Wp, C) with its padding, and dz hold only the
 * chunk's samples), then _end adds the sum
 * into dk. part carries the sums from one call to the next; scratch may
 * serve other kernels in between. The result equals nn_conv_winograd_dk's
 * on the whole batch bit for bit, however the batch is cut. */
void nn_conv_winograd_dk_begin(int m, float *part, const nn_conv_geom *g, int F);
void nn_conv_winograd_dk_add(int m, float *part, const float *x, const float *dz,
                             const nn_conv_geom *g, int N, int n0, int nb, int F, float *scratch,
                             int slots);
void nn_conv_winograd_dk_end(int m, float *dk, const float *part, const nn_conv_geom *g, int F);

#endif
