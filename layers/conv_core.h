/* conv_core: what the convolution stack shares (layers/conv2d.c,
 * maxpool2d.c, avgpool2d.c, global_avgpool2d.c, batchnorm.c): window
 * geometry with Keras's valid/same padding, layout transposes and padded
 * copies, the convolution's buffers and its dispatch to the fast kernels,
 * the adjoint of im2col, per-channel sums whose result does not depend on
 * the thread count, and the pooling layers' shared config.
 *
 * Reading order for the convolution: start with layers/conv_reference.c,
 * the direct loops that say what is computed, one loop nest per result; then
 * nn_conv_forward and nn_conv_backward in conv_core.c, which pick the
 * kernels (their _nchw twins run the same kernels a chunk of samples at a
 * time); then the kernels themselves, layers/conv_gemm.c (GEMM tiles, any
 * geometry) and layers/conv_winograd.c (3x3, stride 1). tests/test_conv.c
 * holds both to the reference.
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
    int path;   /* which kernels nn_conv_* run: NN_CONV_PATH_*, 0 = auto */
    int par_n;  /* the GEMM tiles weigh running in parallel by the multiply-adds of
                 * max(par_n, N) samples: 0, or the whole batch when the NCHW passes
                 * run them on a chunk of it */
} nn_conv_geom;

/* The convolution's kernels: AUTO lets the dispatch pick (Winograd where it
 * applies, see conv_winograd.h, else the GEMM tiles); the others force one,
 * so tests can hold each to the reference: WINOGRAD with the tile size the
 * dispatch would take, WINOGRAD_F2 and WINOGRAD_F4 with F(2x2, 3x3) or
 * F(4x4, 3x3). Where Winograd does not fit (not 3x3, stride 1, dilation 1)
 * they run the GEMM tiles. */
enum {
    NN_CONV_PATH_AUTO = 0,
    NN_CONV_PATH_GEMM = 1,
    NN_CONV_PATH_WINOGRAD = 2,
    NN_CONV_PATH_WINOGRAD_F2 = 3,
    NN_CONV_PATH_WINOGRAD_F4 = 4,
};

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
 * must be passed to the backward of the same forward. The same sums,
 * written as plain loops: nn_conv_forward_reference and
 * nn_conv_backward_reference (layers/conv_reference.h). */
typedef struct nn_conv_work {
    float *xp;      /* forward: padded input (N, Hp, Wp, C) when padded, for the GEMM
                     * tiles (Winograd reads x, zero outside it) */
    float *kp;      /* forward, direct: kernel with Fp columns when F != Fp */
    float *bp;      /* forward: bias with Fp entries */
    float *dzp;     /* dkernel: dz with Fp columns when F != Fp */
    float *part;    /* dkernel: per-group partial sums (G, T, Fp), or Winograd's (conv_winograd.h) */
    float *dzs;     /* dx, stride 1: dz padded to (N, H+(KH-1)DH, W+(KW-1)DW, F), unless
                     * that is dz itself (1x1 window, no padding) */
    float *kt;      /* dx: the kernel, flipped and transposed (stride 1) or transposed */
    float *dcol;    /* dx, strided: one chunk of columns (nb*OH*OW, T) */
    float *db;      /* dbias: per-block sums (nn_conv_db_scratch) */
    float *wk;      /* Winograd: the forward's transformed kernel */
    int wk_ready;   /* forward: wk already holds k's transform (a caller's cache, which
                     * must be nn_conv_winograd_kernel(nn_conv_winograd_m(g, F), ..., k, C, F, 0)) */
    float *wkt;     /* Winograd: dx's transformed kernel */
    float *ws;      /* Winograd: per-thread blocks, ws_slots of them */
    float *yn;      /* NCHW: one chunk's NHWC output, then its NHWC dz */
    float *dxn;     /* NCHW, dx: one chunk's NHWC dx */
    int xp_whole;   /* NCHW: xp holds the whole batch's padded NHWC input, which the
                     * forward leaves there for the backward's dkernel */
    int ws_slots;
    const float *x; /* set by forward: the input the windows read (xp or x) */
} nn_conv_work;

typedef struct nn_conv_sizes {
    size_t xp, kp, bp, dzp, part, dzs, kt, dcol, db, wk, wkt, ws, yn, dxn;
    int ws_slots; /* threads ws is sized for */
    int xp_whole; /* NCHW: nn_conv_work.xp_whole */
} nn_conv_sizes;

/* The Winograd tile size m nn_conv_forward runs (g, F) with, or 0 when it
 * runs the GEMM tiles. */
int nn_conv_winograd_m(const nn_conv_geom *g, int F);
void nn_conv_work_sizes(nn_conv_sizes *s, const nn_conv_geom *g, int N, int F, int need_dx,
                        int need_dk, int need_db);
void nn_conv_forward(float *y, const float *x, const float *k, const float *b, int relu,
                     const nn_conv_geom *g, int N, int F, nn_conv_work *w);
/* Adds into whichever of dx (N, H, W, C), dk (T, F), db (F) is not NULL,
 * from dz (N, OH, OW, F) = dL/dy. When y (the forward's output, same shape)
 * is given, dz is first masked in place by y > 0 (the ReLU's backward). */
void nn_conv_backward(float *dx, float *dk, float *db, float *dz, const float *y, const float *k,
                      const nn_conv_geom *g, int N, int F, nn_conv_work *w);

/* ---- the convolution, NCHW ----
 *   y (N, F, OH, OW) = act(conv(x, k) + b),  x (N, C, H, W), k and b as above.
 * The NHWC kernels, run a chunk of samples at a time: each chunk of x is
 * transposed (and padded) into w->xp and convolved; the GEMM tiles store
 * into y in NCHW themselves, Winograd into w->yn, transposed into y. A
 * chunk is as many samples as keep its NHWC input and output within about
 * an L2 cache (at least one), so the copies stay cached.
 * Backward on the GEMM tiles, unless the padded input is no larger than the
 * output (few input channels: a first layer), runs on the whole batch as
 * nn_conv_backward does: dz transposed (and masked) once into w->yn, dkernel
 * from the forward's whole NHWC input (xp_whole), stride-1 dx stored NCHW by
 * the tiles, strided dx gathered a column chunk at a time and added
 * transposed. Otherwise backward goes chunk by chunk, transposing a chunk of
 * dz in and a chunk of dx back out (added), and x again for dkernel unless
 * xp_whole (dkernel wanted and the padded input no larger than the output:
 * the forward kept it). Buffers: from nn_conv_work_sizes_nchw; backward
 * needs the forward's buffers. The chunked backward's db and GEMM dk add
 * the chunks' sums in sample order (Winograd's dk sums over the chunks in its
 * transformed domain); the chunking depends on the shapes alone, so results
 * do not depend on the thread count. y, stride-1 dx, Winograd's dk and the
 * whole-batch backward's dk and db equal nn_conv_forward's and
 * nn_conv_backward's on the transposed tensors bit for bit; the chunked
 * backward's db and GEMM dk do when the batch is one chunk; strided dx does
 * when dx starts at 0 (NCHW gathers a chunk into zeros and adds it). */
void nn_conv_work_sizes_nchw(nn_conv_sizes *s, const nn_conv_geom *g, int N, int F, int need_dx,
                             int need_dk, int need_db);
void nn_conv_forward_nchw(float *y, const float *x, const float *k, const float *b, int relu,
                          const nn_conv_geom *g, int N, int F, nn_conv_work *w);
/* Adds into whichever of dx (N, C, H, W), dk (T, F), db (F) is not NULL,
 * from dz (N, F, OH, OW), masked by y > 0 when y (the forward's output) is
 * given -- in its NHWC copies: dz itself is left as it was; x is the
 * forward's input. */
void nn_conv_backward_nchw(float *dx, float *dk, float *db, float *dz, const float *y,
                           const float *x, const float *k, const nn_conv_geom *g, int N, int F,
                           nn_conv_work *w);

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
