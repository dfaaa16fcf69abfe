/* conv_core: the raw-buffer kernels the convolution stack shares
 * (layers/conv2d.c, maxpool2d.c, avgpool2d.c, global_avgpool2d.c,
 * batchnorm.c): window geometry with Keras's valid/same padding, layout
 * transposes and padded copies, the NHWC convolution (conv_gemm.c), the
 * adjoint of im2col, per-channel sums whose result does not depend on the
 * thread count, and the pooling layers' shared config.
 *
 * Kernels take outputs first, then inputs, then shapes; they never allocate
 * (the caller passes scratch, sized by the *_sizes functions) and never
 * record graph nodes. Loops are OpenMP-parallel and every output element is
 * computed by one thread in an order fixed by the shapes, so results are
 * bit-identical for any thread count. No BLAS is called here.
 *
 * Omits: 1-D/3-D windows, groups and depthwise convolution, causal padding,
 * explicit integer padding (only Keras's "valid" and "same").
 */
#ifndef NN_LAYERS_CONV_CORE_H
#define NN_LAYERS_CONV_CORE_H

#include <stddef.h>

#include "layers/config.h"
#include "layers/format.h"
#include "tensor/graph.h"
#include "layers/layer.h"

/* A 2-D sliding window over one sample. Inputs (H, W, C), window (KH, KW),
 * strides (SH, SW), dilation (DH, DW); nn_conv_geom_init fills the rest. */
typedef struct nn_conv_geom {
    int H, W, C;
    int KH, KW, SH, SW, DH, DW;
    int PT, PL; /* implicit padding before row 0 / column 0 */
    int OH, OW;
    int Hp, Wp; /* input extent with all its padding (what the windows span) */
} nn_conv_geom;

enum { NN_PAD_VALID = 0, NN_PAD_SAME = 1 };
extern const char *const nn_conv_paddings[]; /* {"valid", "same", NULL} */

/* Output size and padding, as TensorFlow computes them:
 *   valid: OH = (H - ((KH-1)*DH + 1)) / SH + 1; no padding; an error naming
 *          `who` when the input is smaller than the (dilated) window.
 *   same:  OH = ceil(H / SH); total = max((OH-1)*SH + (KH-1)*DH + 1 - H, 0)
 *          rows of padding, total/2 on top and the rest (one more when odd)
 *          at the bottom; likewise for columns. */
nn_status nn_conv_geom_init(nn_conv_geom *g, int padding, const char *who);

/* The per-sample channel count and spatial size of an image tensor shape
 * (H, W, C) or (C, H, W), with a message naming the layer on a bad rank. */
nn_status nn_conv_image_shape(const char *layer, int in_rank, const int *in_shape,
                              int channels_first, int *H, int *W, int *C);

/* dst (N, HW, C) = src (N, C, HW), or dst += when add. Cache-blocked. */
void nn_conv_to_nhwc(float *dst, const float *src, int N, int C, int HW, int add);
/* dst (N, C, HW) = src (N, HW, C), or dst += when add. */
void nn_conv_to_nchw(float *dst, const float *src, int N, int C, int HW, int add);
/* dst (N, Hd, Wd, C)[u][v] = src (N, Hs, Ws, C)[u - oh][v - ow] where that
 * is inside src, else 0. */
void nn_conv_pad(float *dst, int Hd, int Wd, const float *src, int Hs, int Ws, int N, int C, int oh,
                 int ow);

/* ---- the convolution, NHWC ----
 *   y (N, OH, OW, F) = act(conv(x, k) + b),  x (N, H, W, C),
 *   k (KH, KW, C, F) read as a (T, F) matrix, T = KH*KW*C, b (F) or NULL.
 * Buffers come from the caller: nn_conv_work_sizes gives their float counts
 * (0: not needed) for the gradients that will be asked for. The same work
 * must be passed to the backward of the same forward. */
typedef struct nn_conv_work {
    float *xp;      /* forward: padded input (N, Hp, Wp, C) when padded */
    float *kp;      /* forward, direct: kernel with Fp columns when F != Fp */
    float *bp;      /* forward: bias with Fp entries */
    float *dzp;     /* dkernel: dz with Fp columns when F != Fp */
    float *part;    /* dkernel: per-group partial sums (G, T, Fp) */
    float *dzs;     /* dx, stride 1: dz padded to (N, H+(KH-1)DH, W+(KW-1)DW, F) */
    float *kt;      /* dx: the kernel, flipped and transposed (stride 1) or transposed */
    float *dcol;    /* dx, strided: one chunk of columns (nb*OH*OW, T) */
    float *db;      /* dbias: per-block sums (nn_conv_db_scratch) */
    float *wk;      /* Winograd: the forward's transformed kernel */
    float *wkt;     /* Winograd: dx's transformed kernel */
    float *ws;      /* Winograd: per-thread blocks, ws_slots of them */
    int ws_slots;
    const float *x; /* set by forward: the input the windows read (xp or x) */
} nn_conv_work;

typedef struct nn_conv_sizes {
    size_t xp, kp, bp, dzp, part, dzs, kt, dcol, db, wk, wkt, ws;
    int ws_slots; /* threads ws is sized for */
} nn_conv_sizes;

void nn_conv_work_sizes(nn_conv_sizes *s, const nn_conv_geom *g, int N, int F, int need_dx,
                        int need_dk, int need_db);
void nn_conv_forward(float *y, const float *x, const float *k, const float *b, int relu,
                     const nn_conv_geom *g, int N, int F, nn_conv_work *w);
/* Adds into whichever of dx (N, H, W, C), dk (T, F), db (F) is not NULL,
 * from dz (N, OH, OW, F) = dL/dy. When y (the forward's output, same shape)
 * is given, dz is first masked in place by y > 0 (the ReLU's backward). */
void nn_conv_backward(float *dx, float *dk, float *db, float *dz, const float *y, const float *k,
                      const nn_conv_geom *g, int N, int F, nn_conv_work *w);

/* The tiles behind them (conv_gemm.c); ld* are row lengths in floats, and
 * vector loads may read up to the next multiple of the vector width. */
int nn_conv_vector_width(void);
void nn_conv_forward_nhwc(float *y, const float *xp, int Hp, int Wp, const float *kp, int ldk,
                          const float *bp, int relu, const nn_conv_geom *g, int N, int F);
/* dx (N, H, W, C) += stride-1 convolution of dzs with kt (KH*KW*F, ldk). */
void nn_conv_backward_input_direct(float *dx, const float *dzs, const float *kt, int ldk,
                                   const nn_conv_geom *g, int N, int F);
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
/* dk (T, F) += sum over pixels, in G fixed groups of output rows. */
int nn_conv_dk_groups(const nn_conv_geom *g, int N, int F);
void nn_conv_backward_kernel(float *dk, const float *xp, int Hp, int Wp, const float *dz, int ldz,
                             const nn_conv_geom *g, int N, int F, float *part, int G);

/* Winograd F(2x2, 3x3) (conv_winograd.c), for 3x3 windows at stride 1 and
 * dilation 1 with at least 8 channels in and out: */
int nn_conv_winograd_applies(const nn_conv_geom *g, int F);
/* Floats of the transformed kernel U (16, Cin, Cout rounded up to vectors)
 * and of the scratch for `slots` threads; slots is the OpenMP thread limit
 * when the buffers are sized, and the kernels below never run more threads
 * than the slots they are given (the limit may rise between a forward and
 * its backward). */
size_t nn_conv_winograd_kernel_size(int Cin, int Cout);
int nn_conv_winograd_slots(void);
size_t nn_conv_winograd_scratch_size(int slots, int Cin, int Cout);
/* U from k (3, 3, C, F): Cin = C, Cout = F; flip: Cin = F, Cout = C with
 * the kernel rotated by 180 degrees (for dx). */
void nn_conv_winograd_kernel(float *U, const float *k, int C, int F, int flip);
/* y (N, OH, OW, Cout) = (add ? y : 0) + act(b + sum over 3x3 windows of
 * x (N, H, W, Cin) read at (oh + oy + a, ow + ox + b), zero outside x).
 * bias: NULL or Cout rounded up to vectors. */
void nn_conv_winograd(float *y, int OH, int OW, int Cout, const float *x, int H, int W, int Cin,
                      int oy, int ox, int N, const float *U, const float *bias, int relu, int add,
                      float *scratch, int slots);

/* dk (3, 3, C, F) += sum over pixels of x windows x dz, as Winograd
 * F(3x3, 2x2) (the transpose of the forward's algorithm): x (N, Hp, Wp, C)
 * is the input with its padding, dz (N, OH, OW, F). The sum over 2x2 tiles
 * runs in fixed groups combined in order; part holds
 * nn_conv_winograd_dk_size() floats. */
size_t nn_conv_winograd_dk_size(const nn_conv_geom *g, int N, int F);
void nn_conv_winograd_dk(float *dk, const float *x, const float *dz, const nn_conv_geom *g, int N,
                         int F, float *part, float *scratch, int slots);

/* dz[i] = y[i] > 0 ? dz[i] : 0: the ReLU's backward, in place, branch-free
 * (the sign of y is random, which a branch would mispredict half the time). */
void nn_conv_relu_mask(float *dz, const float *y, size_t n);
/* One pass over dz (rows, F): the ReLU mask (when y is not NULL) and, when
 * db is not NULL, db += the column sums -- float within fixed blocks of 256
 * rows, the blocks combined in order in double. part holds
 * nn_conv_db_scratch(rows, F) floats. */
size_t nn_conv_db_scratch(size_t rows, int F);
void nn_conv_dz_pass(float *dz, const float *y, float *db, float *part, size_t rows, int F);

/* The adjoint of im2col: dx (nb, H, W, C) = (add ? dx : 0) + for each
 * element the sum of the entries of col (nb*OH*OW, KH*KW*C) -- row (n, oh,
 * ow), column (kh, kw, c) -- that a window placed there would read. A
 * gather in fixed (kh, kw) order: race-free and deterministic. */
void nn_conv_col2im(float *dx, const float *col, const nn_conv_geom *g, int nb, int add);

/* Per-channel sums over a tensor viewed as (outer, C, inner):
 *   out[c] = sum_{o, i} (a[o,c,i] - sa[c]) * (b ? b[o,c,i] - sb[c] : 1)
 * with sa, sb NULL meaning 0. Channels-last data is (rows, C, 1), NCHW is
 * (N, C, HW). Accumulates in double over fixed blocks of `outer` whose size
 * depends only on the shape, then adds the blocks in order: the result is
 * the same for any thread count. part holds nn_conv_sum_scratch() doubles;
 * out (C doubles) may be part itself. */
size_t nn_conv_sum_scratch(size_t outer, int C, size_t inner);
void nn_conv_channel_sums(double *out, const float *a, const float *sa, const float *b,
                          const float *sb, size_t outer, int C, size_t inner, double *part);

/* Pooling layers share their config: pool_size (2), strides (pool_size),
 * padding valid | same (valid), data_format (the framework default). */
typedef struct nn_pool_state {
    int pool[2], strides[2], padding;
    nn_data_format format;
    nn_conv_geom geom; /* set by nn_pool_build; C is the channel count */
} nn_pool_state;
nn_status nn_pool_parse(nn_pool_state *s, nn_config *c);
void nn_pool_write(const nn_pool_state *s, nn_config_writer *w);
/* Geometry and output shape for an image input (rank 3 per sample). */
nn_status nn_pool_build(nn_layer *l, nn_pool_state *s, int in_rank, const int *in_shape);
/* The geometry a pooling kernel runs on: channels_last is (N, H, W, C);
 * channels_first, whose (H, W) planes are contiguous, is the same problem
 * with N*C samples of one channel. Sets *planes to the sample count. */
nn_conv_geom nn_pool_kernel_geom(const nn_pool_state *s, int N, int *planes);

#endif
