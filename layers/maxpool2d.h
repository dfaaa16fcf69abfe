/* maxpool2d's kernels (layers/maxpool2d.c) on raw buffers, for the layer
 * and for tests/test_conv.c, which holds the plane kernels to the window
 * kernel. Geometry from nn_pool_kernel_geom (conv_core.h): NP samples.
 *
 *   y[n][oh][ow][c] = max over the window's taps inside x of x[n][h][w][c]
 *   dx[n][h][w][c] += dy of every window whose first winner is there
 * (the first maximum in (kh, kw) order wins, a NaN wins over numbers).
 *
 * Omits: dilation, ceil_mode.
 */
#ifndef NN_LAYERS_MAXPOOL2D_H
#define NN_LAYERS_MAXPOOL2D_H

#include "layers/conv_core.h"

/* One window at a time, a block of channels per window: x (NP, H, W, C),
 * y and dy (NP, OH, OW, C), dx (NP, H, W, C). With C = 1 the plain loop
 * that nn_maxpool2d_*_planes must equal. */
void nn_maxpool2d_forward_nhwc(float *y, const float *x, const nn_conv_geom *g, int NP);
void nn_maxpool2d_backward_nhwc(float *dx, const float *dy, const float *x, const nn_conv_geom *g,
                                int NP);

/* One-channel planes (g->C must be 1; channels_first's N*C planes): 8
 * adjacent windows of a row at a time, one per vector lane, one window at a
 * time where a window crosses the left or right edge (or the row has fewer
 * than 8 windows inside it).
 * Results equal the nhwc kernels' with C = 1, bit for bit (the same
 * comparisons, the same order of adds into dx). */
void nn_maxpool2d_forward_planes(float *y, const float *x, const nn_conv_geom *g, int NP);
void nn_maxpool2d_backward_planes(float *dx, const float *dy, const float *x, const nn_conv_geom *g,
                                  int NP);

#endif
