/* Spatial dropout kernels on raw float buffers, in two files that need
 * nothing but the C library: this header and spatial_dropout_kernels.c.
 * They are the kernels of nn's spatial_dropout1d/2d/3d layers, and they
 * travel alone, for spatial dropout between one's own convolution kernels.
 *
 * Spatial dropout (Keras SpatialDropout1D/2D/3D, PyTorch Dropout1d/2d/3d)
 * drops whole feature maps: one keep/drop draw per (sample n, channel c),
 * keeping with probability 1 - rate. A kept map is multiplied by
 *     s = 1.0f / (float)(1.0 - rate)      (PyTorch's rounding; 0 at rate 1)
 * so results match F.dropout2d bit for bit given the same mask. A dropped
 * map is written as +0.0 without reading the input, so it is +0.0 even
 * where x is Inf or NaN (PyTorch gives NaN there, and -0.0 for negative x).
 *
 * Draws come from a counter-based hash, a pure function of its key:
 *     keep(n, c) = nn_sd_uniform(seed, call, n*C + c) < 1.0f - rate
 * so a mask depends only on (seed, call, n, c): the same for any thread
 * count or schedule, and the same (n, c) key in both layouts. nn_sd_uniform
 * is nn's tensor_hash_uniform (tensor/random.h), bit for bit.
 *
 * Layouts (all buffers dense, row-major; "spatial" is the product of the
 * spatial extents: L for 1-D, H*W for 2-D, D*H*W for 3-D):
 *     NN_SD_CHANNELS_FIRST  x[n][c][p]   (N, C, spatial)
 *     NN_SD_CHANNELS_LAST   x[n][p][c]   (N, spatial, C)
 *     mask                  mask[n*C + c], 1 = kept, 0 = dropped   (N, C) bytes
 *
 * Two versions of forward and backward: the *_reference functions are the
 * definition in a dozen plain lines each (read them first); nn_sd_forward,
 * nn_sd_apply and nn_sd_backward are the fast kernels (vectorised, OpenMP
 * above a small size), which give the same bits as the references for any
 * thread count.
 *
 * Errors: every int-returning function returns NN_SD_OK (0) or one of the
 * codes below and then leaves a message naming the function and the value
 * in a thread-local buffer (nn_sd_last_error). Bad arguments are found
 * before any output is written.
 * Nothing allocates, nothing prints.
 *
 * Using the pair in one's own build: copy the two files next to one's
 * sources and compile them with the rest, for example
 *     cc -std=c11 -O2 -march=native -fopenmp -c spatial_dropout_kernels.c
 * -fopenmp is optional (without it everything runs on one thread, same
 * results). Use -std=c11 (or -ffp-contract=off): GNU modes let the compiler
 * fuse dx + dy*s into one multiply-add, which rounds once and can change the
 * last bit of a gradient.
 * Example, between one's own convolution kernels (channels_first):
 *     uint8_t *mask = malloc((size_t)N * C);
 *     int e = nn_sd_forward(act, mask, act, N, C, H * W, NN_SD_CHANNELS_FIRST,
 *                           0.25f, seed, step);
 *     if (e) fprintf(stderr, "%s\n", nn_sd_last_error());
 *     ... later, with dact zeroed or holding other contributions:
 *     nn_sd_backward(dact, mask, dout, N, C, H * W, NN_SD_CHANNELS_FIRST, 0.25f);
 *
 * Deliberately omitted: other dtypes, strided buffers, a user-supplied noise
 * shape (Keras's noise_shape), inference (the identity: no kernel), and
 * everything of a layer (graph node, config, seeds per layer): those are in
 * nn's layers/spatial_dropout.c, whose nn_spatial_dropout_* functions wrap
 * these with nn's status codes.
 */
#ifndef NN_LAYERS_SPATIAL_DROPOUT_KERNELS_H
#define NN_LAYERS_SPATIAL_DROPOUT_KERNELS_H

#include <stdint.h>

/* Layouts; the same values as nn's NN_CHANNELS_LAST / NN_CHANNELS_FIRST. */
enum {
    NN_SD_CHANNELS_LAST = 0,
    NN_SD_CHANNELS_FIRST = 1
};

/* Return codes. */
enum {
    NN_SD_OK = 0,
    NN_SD_ERR_ARG = 1,  /* rate not a number in [0, 1], unknown layout, NULL
                           buffer for a non-empty shape */
    NN_SD_ERR_SHAPE = 2 /* negative N, C or spatial; N*C*spatial floats do
                           not fit in a size_t */
};

/* The message of the last failing call of this pair on this thread, e.g.
 * "nn_sd_forward: rate must be between 0 and 1, but got 1.5"; "" when none
 * has failed. Valid until the next failing call on the same thread. */
const char *nn_sd_last_error(void);

/* Uniform in [0, 1) with 24 random bits, a pure function of the key. */
float nn_sd_uniform(uint64_t seed, uint64_t call, uint64_t index);

/* The kept-map scale 1.0f / (float)(1.0 - rate), or 0 when rate is 1. */
float nn_sd_scale(float rate);

/* ---- the definition: plain scalar loops -------------------------------- */

/* y = keep(n, c) ? x * s : +0.0, with mask[n*C + c] = keep(n, c) when mask
 * is not NULL.
 *   y    (N, C, spatial) or (N, spatial, C) out; may equal x
 *   mask (N, C) out or NULL
 *   x    same shape as y
 * At rate 0 this is y = x * 1, the fast kernel's copy for every x but a
 * signalling NaN (which the multiply quiets). */
int nn_sd_forward_reference(float *y, uint8_t *mask, const float *x, int N, int C, long spatial,
                            int layout, float rate, uint64_t seed, uint64_t call);

/* dx += mask[n*C + c] ? dy * s : (nothing); at rate 1 nothing at all.
 *   dx   (N, C, spatial) or (N, spatial, C) in/out; must not overlap dy
 *   mask (N, C) in;  dy same shape as dx */
int nn_sd_backward_reference(float *dx, const uint8_t *mask, const float *dy, int N, int C,
                             long spatial, int layout, float rate);

/* ---- the fast kernels: the same results -------------------------------- */

/* mask[n*C + c] = keep(n, c) for the key (seed, call).
 *   mask (N, C) out */
int nn_sd_mask(uint8_t *mask, int N, int C, float rate, uint64_t seed, uint64_t call);

/* Draws the mask for (seed, call) and applies it:
 *   y = keep(n, c) ? x * s : +0.0
 *   y    (N, C, spatial) or (N, spatial, C) out; may equal x (in place), must
 *        not otherwise overlap it
 *   mask (N, C) out; may be NULL when no backward follows
 *   x    same shape as y
 * rate 0 copies x (nothing when y == x) and sets every mask entry to 1. */
int nn_sd_forward(float *y, uint8_t *mask, const float *x, int N, int C, long spatial, int layout,
                  float rate, uint64_t seed, uint64_t call);

/* As the forward pass with a given mask: y = mask[n*C + c] ? x * s : +0.0.
 *   y (N, C, spatial) or (N, spatial, C) out; may equal x
 *   mask (N, C) in;  x same shape as y */
int nn_sd_apply(float *y, const uint8_t *mask, const float *x, int N, int C, long spatial,
                int layout, float rate);

/* Backward with the forward's mask; ADDS into dx (zero dx first to get
 * dx = dy * mask * s):
 *   dx += mask[n*C + c] ? dy * s : (nothing)
 * Dropped maps leave dx untouched, even where dy is Inf or NaN.
 *   dx (N, C, spatial) or (N, spatial, C) in/out; must not overlap dy
 *   mask (N, C) in;  dy same shape as dx */
int nn_sd_backward(float *dx, const uint8_t *mask, const float *dy, int N, int C, long spatial,
                   int layout, float rate);

#endif
