/* Spatial dropout in nn: drop whole feature maps (Keras SpatialDropout1D/
 * 2D/3D, PyTorch Dropout1d/2d/3d), as raw-buffer functions usable without
 * the graph, and the plumbing the three layer files share.
 *
 * The raw-buffer functions below are nn's face of the self-contained
 * kernels in layers/spatial_dropout_kernels.h (included here, so nn/nn.h
 * users see both): the same computation, the same bits, with nn's types
 * (nn_data_format, nn_status) and messages through nn_last_error(). That
 * header defines the operation (mask, scale, +0.0 for dropped maps, the
 * counter-based draws, the layouts) and holds the plain scalar reference
 * (nn_sd_forward_reference, nn_sd_backward_reference). To use spatial
 * dropout without nn, copy spatial_dropout_kernels.h and .c instead.
 *
 * In brief: one keep/drop draw per (sample n, channel c),
 *     keep(n, c) = tensor_hash_uniform(seed, call, n*C + c) < 1.0f - rate
 * (nn_sd_uniform is the same function), kept maps scaled by
 * s = 1.0f / (float)(1.0 - rate), dropped maps +0.0 whatever x holds.
 *     NN_CHANNELS_FIRST  x[n][c][p]   (N, C, spatial)
 *     NN_CHANNELS_LAST   x[n][p][c]   (N, spatial, C)
 *     mask               mask[n*C + c], 1 = kept, 0 = dropped   (N, C) bytes
 * "spatial" is L for 1-D, H*W for 2-D, D*H*W for 3-D.
 *
 * The functions allocate nothing, never print, use OpenMP above a small
 * size, and give bit-identical results for any thread count. Errors
 * (negative extents or a size that overflows: NN_ERR_SHAPE; a rate that is
 * not a finite number in [0, 1], an unknown format, a NULL buffer for a
 * non-empty shape: NN_ERR_ARG) return a status with a message naming the
 * function and the value.
 *
 * Example, between one's own convolution kernels (channels_first):
 *     uint8_t *mask = malloc((size_t)N * C);
 *     nn_spatial_dropout_forward(act, mask, act, N, C, H * W,
 *                                NN_CHANNELS_FIRST, 0.25f, seed, step);
 *     ... later, with dact zeroed or holding other contributions:
 *     nn_spatial_dropout_backward(dact, mask, dout, N, C, H * W,
 *                                 NN_CHANNELS_FIRST, 0.25f);
 *
 * The layers, created by name (spatial_dropout1d, spatial_dropout2d,
 * spatial_dropout3d), take rate (required), data_format, seed and inplace.
 * In training mode they draw with (l->seed, l->calls) and advance l->calls
 * once per call (also at rate 0); in inference they return x itself.
 *
 * In place (inplace=true): in training mode the layer writes into x's
 * storage and returns a tensor sharing it; backward needs only the mask. It
 * refuses with NN_ERR_STATE, writing nothing, when x is a model parameter,
 * a leaf that requires a gradient, or the output of an op whose backward
 * reads that output (relu, dense with activation=relu). It cannot see other
 * readers of x: do not use x again after the layer (nothing in a sequential
 * model does). As a model's first layer it overwrites the caller's batch.
 *
 * Deliberately omitted: other dtypes, strided buffers, a user-supplied
 * noise shape (Keras's noise_shape); inference needs no kernel at all (it is
 * the identity).
 */
#ifndef NN_LAYERS_SPATIAL_DROPOUT_H
#define NN_LAYERS_SPATIAL_DROPOUT_H

#include <stdint.h>

#include "layers/format.h"
#include "layers/layer.h"
#include "layers/spatial_dropout_kernels.h"

/* The raw-buffer functions: nn_sd_scale, nn_sd_mask, nn_sd_forward,
 * nn_sd_apply and nn_sd_backward with nn's types and statuses. */

/* The kept-map scale 1.0f / (float)(1.0 - rate), or 0 when rate is 1. */
float nn_spatial_dropout_scale(float rate);

/* mask[n*C + c] = keep(n, c) for the key (seed, call).
 *   mask (N, C) out */
nn_status nn_spatial_dropout_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed,
                                  uint64_t call);

/* Draws the mask for (seed, call) and applies it:
 *   y = keep(n, c) ? x * s : +0.0
 *   y    (N, C, spatial) or (N, spatial, C) out; may equal x (in place), must
 *        not otherwise overlap it
 *   mask (N, C) out; may be NULL when no backward follows
 *   x    same shape as y
 * rate 0 copies x (nothing when y == x) and sets every mask entry to 1. */
nn_status nn_spatial_dropout_forward(float *y, uint8_t *mask, const float *x, int N, int C,
                                     long spatial, nn_data_format fmt, float rate, uint64_t seed,
                                     uint64_t call);

/* As the forward pass with a given mask: y = mask[n*C + c] ? x * s : +0.0.
 *   y (N, C, spatial) or (N, spatial, C) out; may equal x
 *   mask (N, C) in;  x same shape as y */
nn_status nn_spatial_dropout_apply(float *y, const uint8_t *mask, const float *x, int N, int C,
                                   long spatial, nn_data_format fmt, float rate);

/* Backward with the forward's mask; ADDS into dx, as every backward in nn
 * does (zero dx first to get dx = dy * mask * s):
 *   dx += mask[n*C + c] ? dy * s : (nothing)
 * Dropped maps leave dx untouched, even where dy is Inf or NaN.
 *   dx (N, C, spatial) or (N, spatial, C) in/out; must not overlap dy
 *   mask (N, C) in;  dy same shape as dx */
nn_status nn_spatial_dropout_backward(float *dx, const uint8_t *mask, const float *dy, int N,
                                      int C, long spatial, nn_data_format fmt, float rate);

/* Layer plumbing shared by layers/spatial_dropout{1,2,3}d.c; users create the
 * layers by name ("spatial_dropout2d rate=0.25") and need none of this. */
typedef struct nn_spatial_dropout_state {
    float rate;
    nn_data_format format;
    int inplace;
    int dims; /* spatial dimensions: 1, 2 or 3 */
} nn_spatial_dropout_state;

nn_status nn_spatial_dropout_layer_parse(nn_layer *l, nn_config *c, int dims);
void nn_spatial_dropout_layer_write(const nn_layer *l, nn_config_writer *w);
nn_status nn_spatial_dropout_layer_build(nn_layer *l, int in_rank, const int *in_shape);
nn_status nn_spatial_dropout_layer_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **y,
                                           int training);

#endif
