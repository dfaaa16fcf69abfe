/* conv_core: window geometry, layout transposes and padded copies, the
 * convolution's buffers and passes, col2im, deterministic per-channel sums
 * and the pooling config (see conv_core.h). The kernels the passes call are
 * in conv_gemm.c (GEMM tiles) and conv_winograd.c; what they compute is
 * written plainly in conv_reference.c.
 *
 * The passes of one convolution, NHWC, T = KH*KW*C:
 *   forward   xp = x with its padding (a copy only when there is padding
 *             and the GEMM tiles run: Winograd reads zeros outside x);
 *             y = act(tiles(xp, k) + b), bias and ReLU applied to the tile
 *             in registers before the single store
 *   dbias     per-channel sums of dz over fixed row blocks, in the same
 *             pass as the ReLU mask
 *   dkernel   dk (T, F) += sum over pixels of xp-window (T) x dz (F), in
 *             fixed groups of output rows combined in group order
 *   dx        stride 1: the correlation of dz, zero-padded by the window
 *             less the forward padding, with the flipped kernel -- the same
 *             tiles as forward; other strides: dcol = dz k^T in chunks of
 *             samples (at most 8 MB), gathered into dx by col2im
 * channels_first (NCHW) runs the same passes a chunk of samples at a time,
 * transposing each chunk in (the GEMM tiles store NCHW output themselves),
 * or the GEMM tiles' backward on the whole batch (nn_conv_forward_nchw).
 * Vector loads need rows whose length is a multiple of the vector width, so
 * a filter count F that is not gets zero-padded copies of the kernel (and of
 * dz for dkernel); the extra columns are never stored.
 */
#include "layers/conv_core.h"

#include <stdint.h>
#include <string.h>

#include "layers/conv_gemm.h"
#include "layers/conv_winograd.h"

const char *const nn_conv_paddings[] = {"valid", "same", NULL};
/* Elements per block of the per-channel sums: fixed, never derived from the
 * thread count, which keeps the summation order (and result) fixed. */
#define NN_SUM_BLOCK 16384
/* Below this many elements a loop runs on one thread. */
#define NN_PAR_MIN 32768

nn_status nn_conv_geom_init(nn_conv_geom *g, int padding, const char *who)
{
    const long ekh = (long)(g->KH - 1) * g->DH + 1, ekw = (long)(g->KW - 1) * g->DW + 1;
    if (padding == NN_PAD_SAME) {
        g->OH = (g->H + g->SH - 1) / g->SH;
        g->OW = (g->W + g->SW - 1) / g->SW;
        long th = (long)(g->OH - 1) * g->SH + ekh - g->H;
        long tw = (long)(g->OW - 1) * g->SW + ekw - g->W;
        g->PT = th > 0 ? (int)(th / 2) : 0;
        g->PL = tw > 0 ? (int)(tw / 2) : 0;
        g->Hp = g->H + (th > 0 ? (int)th : 0);
        g->Wp = g->W + (tw > 0 ? (int)tw : 0);
        return NN_OK;
    }
    if (g->H < ekh || g->W < ekw)
        return nn_error(NN_ERR_SHAPE,
                        "%s: input %dx%d is smaller than the %ldx%ld window (kernel %dx%d, "
                        "dilation %dx%d) with padding=valid; use padding=same or a smaller "
                        "kernel",
                        who, g->H, g->W, ekh, ekw, g->KH, g->KW, g->DH, g->DW);
    g->OH = (int)((g->H - ekh) / g->SH + 1);
    g->OW = (int)((g->W - ekw) / g->SW + 1);
    g->PT = g->PL = 0;
    g->Hp = g->H;
    g->Wp = g->W;
    return NN_OK;
}

nn_status nn_conv_image_shape(const char *layer, int in_rank, const int *in_shape,
                              int channels_first, int *H, int *W, int *C)
{
    if (in_rank != 3) {
        char b[96];
        return nn_error(NN_ERR_SHAPE,
                        "%s: expected a per-sample input of rank 3 %s (a batch of rank 4), "
                        "got %s",
                        layer, channels_first ? "(channels, height, width)" : "(height, width, channels)",
                        tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    *C = channels_first ? in_shape[0] : in_shape[2];
    *H = channels_first ? in_shape[1] : in_shape[0];
    *W = channels_first ? in_shape[2] : in_shape[1];
    return NN_OK;
}

/* ---- layout transposes: (N, A, B) -> (N, B, A), 32x32 tiles ---- */

#define TILE 32

/* Eight floats: with AVX one register, with SSE the compiler uses two. */
typedef float conv_core_v8 __attribute__((vector_size(8 * sizeof(float))));
#define CONV_CORE_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)

/* d[0..8) (+)= *v, through memory: a vector passed by value would have
 * another ABI in builds without AVX (gcc warns, -Wpsabi). */
static inline __attribute__((always_inline)) void conv_core_store8(float *d, const conv_core_v8 *v,
                                                                   int add)
{
    conv_core_v8 o = *v;
    if (add) {
        conv_core_v8 old;
        memcpy(&old, d, sizeof old);
        o += old;
    }
    memcpy(d, &o, sizeof o);
}

typedef int32_t conv_core_i8 __attribute__((vector_size(8 * sizeof(int32_t))));

/* *r = s[0..8), or 0 where !(m[i] > 0) when m is not NULL (the ReLU's
 * backward, as nn_conv_dz_pass computes it: +0 where masked). */
static inline __attribute__((always_inline)) void conv_core_load8(conv_core_v8 *r, const float *s,
                                                                  const float *m)
{
    memcpy(r, s, sizeof *r);
    if (m) {
        conv_core_v8 mv;
        memcpy(&mv, m, sizeof mv);
        *r = (conv_core_v8)((conv_core_i8)*r & (mv > (conv_core_v8){0}));
    }
}

/* d[j*ldd + i] (+)= s[i*lds + j] for i, j < 8, s masked by m (same layout)
 * when m is not NULL: eight rows loaded, swapped in registers in three
 * rounds of shuffles (pairs of lanes, pairs of pairs, halves), eight rows
 * stored. Copies (or one add per element, as the scalar loop does): exact.
 * Named variables rather than arrays, which GCC would keep on the stack. */
static inline __attribute__((always_inline)) void
conv_core_t8x8(float *restrict d, size_t ldd, const float *restrict s, const float *restrict m,
               size_t lds, int add)
{
    conv_core_v8 r0, r1, r2, r3, r4, r5, r6, r7;
    conv_core_load8(&r0, s, m);
    conv_core_load8(&r1, s + lds, m ? m + lds : NULL);
    conv_core_load8(&r2, s + 2 * lds, m ? m + 2 * lds : NULL);
    conv_core_load8(&r3, s + 3 * lds, m ? m + 3 * lds : NULL);
    conv_core_load8(&r4, s + 4 * lds, m ? m + 4 * lds : NULL);
    conv_core_load8(&r5, s + 5 * lds, m ? m + 5 * lds : NULL);
    conv_core_load8(&r6, s + 6 * lds, m ? m + 6 * lds : NULL);
    conv_core_load8(&r7, s + 7 * lds, m ? m + 7 * lds : NULL);
#define CONV_CORE_LO(a, b) CONV_CORE_SHUF(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#define CONV_CORE_HI(a, b) CONV_CORE_SHUF(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#define CONV_CORE_LO2(a, b) CONV_CORE_SHUF(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define CONV_CORE_HI2(a, b) CONV_CORE_SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
#define CONV_CORE_LO4(a, b) CONV_CORE_SHUF(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
#define CONV_CORE_HI4(a, b) CONV_CORE_SHUF(a, b, 4, 5, 6, 7, 12, 13, 14, 15)
    /* Pairs of lanes: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5]. */
    const conv_core_v8 t0 = CONV_CORE_LO(r0, r1), t1 = CONV_CORE_HI(r0, r1);
    const conv_core_v8 t2 = CONV_CORE_LO(r2, r3), t3 = CONV_CORE_HI(r2, r3);
    const conv_core_v8 t4 = CONV_CORE_LO(r4, r5), t5 = CONV_CORE_HI(r4, r5);
    const conv_core_v8 t6 = CONV_CORE_LO(r6, r7), t7 = CONV_CORE_HI(r6, r7);
    /* Pairs of pairs: u0 = column 0 of rows 0-3 | column 4 of rows 0-3. */
    const conv_core_v8 u0 = CONV_CORE_LO2(t0, t2), u1 = CONV_CORE_HI2(t0, t2);
    const conv_core_v8 u2 = CONV_CORE_LO2(t1, t3), u3 = CONV_CORE_HI2(t1, t3);
    const conv_core_v8 u4 = CONV_CORE_LO2(t4, t6), u5 = CONV_CORE_HI2(t4, t6);
    const conv_core_v8 u6 = CONV_CORE_LO2(t5, t7), u7 = CONV_CORE_HI2(t5, t7);
    /* Halves: column j of all eight rows. */
    const conv_core_v8 o0 = CONV_CORE_LO4(u0, u4), o1 = CONV_CORE_LO4(u1, u5);
    const conv_core_v8 o2 = CONV_CORE_LO4(u2, u6), o3 = CONV_CORE_LO4(u3, u7);
    const conv_core_v8 o4 = CONV_CORE_HI4(u0, u4), o5 = CONV_CORE_HI4(u1, u5);
    const conv_core_v8 o6 = CONV_CORE_HI4(u2, u6), o7 = CONV_CORE_HI4(u3, u7);
    conv_core_store8(d, &o0, add);
    conv_core_store8(d + ldd, &o1, add);
    conv_core_store8(d + 2 * ldd, &o2, add);
    conv_core_store8(d + 3 * ldd, &o3, add);
    conv_core_store8(d + 4 * ldd, &o4, add);
    conv_core_store8(d + 5 * ldd, &o5, add);
    conv_core_store8(d + 6 * ldd, &o6, add);
    conv_core_store8(d + 7 * ldd, &o7, add);
#undef CONV_CORE_LO
#undef CONV_CORE_HI
#undef CONV_CORE_LO2
#undef CONV_CORE_HI2
#undef CONV_CORE_LO4
#undef CONV_CORE_HI4
}

/* s[i], or 0 where m[i] is not positive when m is not NULL. */
static inline float conv_core_masked(const float *s, const float *m, size_t i)
{
    return m && !(m[i] > 0.0f) ? 0.0f : s[i];
}

/* d[j*ldd + i] (+)= s[i*lds + j] for i < rows, j < cols, s masked by m
 * (NULL or s's layout): 8x8 blocks, the edges one element at a time. */
static inline __attribute__((always_inline)) void
conv_core_transpose_block(float *restrict d, size_t ldd, const float *restrict s,
                          const float *restrict m, size_t lds, int rows, int cols, int add)
{
    const int r8 = rows & ~7, c8 = cols & ~7;
    for (int i = 0; i < r8; i += 8) {
        for (int j = 0; j < c8; j += 8)
            conv_core_t8x8(d + (size_t)j * ldd + i, ldd, s + (size_t)i * lds + j,
                           m ? m + (size_t)i * lds + j : NULL, lds, add);
        for (int j = c8; j < cols; j++)
            for (int i2 = i; i2 < i + 8; i2++) {
                const float v = conv_core_masked(s, m, (size_t)i2 * lds + j);
                d[(size_t)j * ldd + i2] = add ? d[(size_t)j * ldd + i2] + v : v;
            }
    }
    for (int j = 0; j < cols; j++)
        for (int i = r8; i < rows; i++) {
            const float v = conv_core_masked(s, m, (size_t)i * lds + j);
            d[(size_t)j * ldd + i] = add ? d[(size_t)j * ldd + i] + v : v;
        }
}

/* dst (N, B, A) (+)= src (N, A, B), src masked by msk (NULL or src's
 * layout). */
static void conv_core_transpose_masked(float *dst, const float *src, const float *msk, int N, int A,
                                       int B, int add)
{
    const size_t plane = (size_t)A * B;
    if (A == 1 || B == 1) {
        /* Transposing a vector moves nothing. */
        const size_t total = plane * (size_t)N;
        #pragma omp parallel for schedule(static) if (total > NN_PAR_MIN)
        for (size_t i = 0; i < total; i++) {
            const float v = conv_core_masked(src, msk, i);
            dst[i] = add ? dst[i] + v : v;
        }
        return;
    }
    const int tb = (B + TILE - 1) / TILE;
    #pragma omp parallel for collapse(2) schedule(static) if (plane * (size_t)N > NN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int t = 0; t < tb; t++) {
            const float *s = src + (size_t)n * plane, *m = msk ? msk + (size_t)n * plane : NULL;
            float *d = dst + (size_t)n * plane;
            const int b0 = t * TILE, nbt = B - b0 < TILE ? B - b0 : TILE;
            /* Each case inlined on its own, so the unmasked one tests nothing. */
            for (int a0 = 0; a0 < A; a0 += TILE) {
                float *da = d + (size_t)b0 * A + a0;
                const size_t so = (size_t)a0 * B + b0;
                const int na = A - a0 < TILE ? A - a0 : TILE;
                if (m)
                    conv_core_transpose_block(da, (size_t)A, s + so, m + so, (size_t)B, na, nbt, add);
                else
                    conv_core_transpose_block(da, (size_t)A, s + so, NULL, (size_t)B, na, nbt, add);
            }
        }
}

static void conv_core_transpose(float *dst, const float *src, int N, int A, int B, int add)
{
    conv_core_transpose_masked(dst, src, NULL, N, A, B, add);
}

void nn_conv_to_nhwc(float *dst, const float *src, int N, int C, int HW, int add)
{
    conv_core_transpose(dst, src, N, C, HW, add);
}

void nn_conv_to_nchw(float *dst, const float *src, int N, int C, int HW, int add)
{
    conv_core_transpose(dst, src, N, HW, C, add);
}

/* ---- padded copies ---- */

void nn_conv_pad(float *dst, int Hd, int Wd, const float *src, int Hs, int Ws, int N, int C, int oh,
                 int ow)
{
    /* Columns of dst that come from src: v in [v0, v1). */
    const int v0 = ow > 0 ? ow : 0, v1 = Ws + ow < Wd ? Ws + ow : Wd;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * Hd * Wd * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int u = 0; u < Hd; u++) {
            float *d = dst + ((size_t)n * Hd + u) * Wd * C;
            const int su = u - oh;
            if (su < 0 || su >= Hs || v1 <= v0) {
                memset(d, 0, (size_t)Wd * C * sizeof *d);
                continue;
            }
            const float *s = src + (((size_t)n * Hs + su) * Ws + (v0 - ow)) * C;
            memset(d, 0, (size_t)v0 * C * sizeof *d);
            memcpy(d + (size_t)v0 * C, s, (size_t)(v1 - v0) * C * sizeof *d);
            memset(d + (size_t)v1 * C, 0, (size_t)(Wd - v1) * C * sizeof *d);
        }
}

/* dst (rows, ldd) = src (rows, cols), zero in columns [cols, ldd). */
static void conv_core_pad_cols(float *dst, int ldd, const float *src, size_t rows, int cols)
{
    #pragma omp parallel for schedule(static) if (rows * (size_t)ldd > NN_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        memcpy(dst + r * ldd, src + r * cols, (size_t)cols * sizeof *dst);
        memset(dst + r * ldd + cols, 0, (size_t)(ldd - cols) * sizeof *dst);
    }
}

/* ---- the convolution: buffers, forward, backward ---- */

/* Upper bound of one chunk of dx columns on the strided path. */
#define NN_CONV_CHUNK_BYTES ((size_t)8 << 20)
/* Upper bound of one channels_first chunk's NHWC input and output: about
 * an L2 cache, so the chunk is still cached when its result is transposed
 * back. A constant, never the machine's cache size or the thread count: the
 * chunking decides how dkernel's sums are grouped, so it must depend on the
 * shapes alone. */
#define NN_CONV_NCHW_BYTES ((size_t)1 << 20)

static int conv_core_round_up(int n, int m) { return (n + m - 1) / m * m; }

static int conv_core_is_padded(const nn_conv_geom *g)
{
    return g->PT || g->PL || g->Hp != g->H || g->Wp != g->W;
}

static size_t conv_core_dcol_chunk(const nn_conv_geom *g, int N)
{
    const size_t per = (size_t)g->OH * g->OW * g->KH * g->KW * g->C * sizeof(float);
    size_t chunk = per ? NN_CONV_CHUNK_BYTES / per : (size_t)N;
    if (chunk < 1) chunk = 1; /* one sample's columns may exceed the bound */
    if (chunk > (size_t)N) chunk = (size_t)N;
    return chunk;
}

/* Stride-1 dx reads dz padded by the window less the forward's padding;
 * with no such padding (a 1x1 window over an unpadded input) dz itself. */
static int conv_core_dz_needs_pad(const nn_conv_geom *g)
{
    return (g->KH - 1) * g->DH != g->PT || (g->KW - 1) * g->DW != g->PL ||
           g->H + (g->KH - 1) * g->DH != g->OH || g->W + (g->KW - 1) * g->DW != g->OW;
}

/* Winograd or the GEMM tiles: the one choice every pass below follows.
 * The Winograd tile size m, or 0 for the GEMM tiles. */
static int conv_core_winograd(const nn_conv_geom *g, int F)
{
    switch (g->path) {
    case NN_CONV_PATH_GEMM: return 0;
    case NN_CONV_PATH_WINOGRAD: return nn_conv_winograd_fits(g) ? nn_conv_winograd_tile(g) : 0;
    case NN_CONV_PATH_WINOGRAD_F2: return nn_conv_winograd_fits(g) ? 2 : 0;
    case NN_CONV_PATH_WINOGRAD_F4: return nn_conv_winograd_fits(g) ? 4 : 0;
    default: return nn_conv_winograd_applies(g, F) ? nn_conv_winograd_tile(g) : 0;
    }
}

/* Samples per chunk of the channels_first passes: as many as keep the
 * chunk's padded NHWC input and its NHWC output within NN_CONV_NCHW_BYTES,
 * at least one, at most N. */
static int conv_core_nchw_chunk(const nn_conv_geom *g, int N, int F)
{
    const size_t per = ((size_t)g->Hp * g->Wp * g->C + (size_t)g->OH * g->OW * F) * sizeof(float);
    size_t nb = per ? NN_CONV_NCHW_BYTES / per : (size_t)N;
    if (nb < 1) nb = 1;
    if (nb > (size_t)N) nb = (size_t)N;
    return (int)nb;
}

int nn_conv_winograd_m(const nn_conv_geom *g, int F) { return conv_core_winograd(g, F); }

/* channels_first backward on the GEMM tiles, whole batch or in chunks: a
 * layer with few input channels (padded input no larger than its output: a
 * first layer) has little dkernel and dx work per float of dz, so its dz
 * transposed in chunks, while still cached, costs less than the whole
 * batch's round trip through memory; other layers run the whole batch as
 * the NHWC passes do. */
static int conv_core_nchw_bwd_whole(const nn_conv_geom *g, int F)
{
    return !conv_core_winograd(g, F) && (size_t)g->Hp * g->Wp * g->C > (size_t)g->OH * g->OW * F;
}

void nn_conv_work_sizes(nn_conv_sizes *s, const nn_conv_geom *g, int N, int F, int need_dx,
                        int need_dk, int need_db)
{
    const int VLw = nn_conv_vector_width(), Fp = conv_core_round_up(F, VLw);
    const size_t T = (size_t)g->KH * g->KW * g->C, P = (size_t)g->OH * g->OW;
    memset(s, 0, sizeof *s);
    const int wino = conv_core_winograd(g, F);
    /* Winograd reads its input's padding implicitly (as zeros outside it). */
    if (conv_core_is_padded(g) && !wino) s->xp = (size_t)N * g->Hp * g->Wp * g->C;
    if (F != Fp && !wino) s->kp = T * Fp;
    s->bp = (size_t)Fp;
    if (need_dk && wino) {
        s->part = nn_conv_winograd_dk_size(wino, g, F);
    } else if (need_dk) {
        if (F != Fp) s->dzp = (size_t)N * P * Fp;
        s->part = (size_t)nn_conv_dk_groups(g, N, F) * T * Fp;
    }
    if (wino) {
        s->wk = nn_conv_winograd_kernel_size(wino, g->C, F);
        s->ws_slots = nn_conv_winograd_slots();
        s->ws = nn_conv_winograd_scratch_size(wino, s->ws_slots, g->C, F);
    }
    if (need_dx && wino) {
        s->wkt = nn_conv_winograd_kernel_size(wino, F, g->C);
    } else if (need_dx) {
        if (g->SH == 1 && g->SW == 1) {
            if (conv_core_dz_needs_pad(g))
                s->dzs = (size_t)N * (g->H + (g->KH - 1) * g->DH) * (g->W + (g->KW - 1) * g->DW) * F;
            s->kt = (size_t)g->KH * g->KW * F * conv_core_round_up(g->C, VLw);
        } else {
            s->kt = (size_t)F * conv_core_round_up((int)T, VLw);
            s->dcol = conv_core_dcol_chunk(g, N) * P * T;
        }
    }
    if (need_db) s->db = nn_conv_db_scratch((size_t)N * P, F);
}

void nn_conv_work_sizes_nchw(nn_conv_sizes *s, const nn_conv_geom *g, int N, int F, int need_dx,
                             int need_dk, int need_db)
{
    const int nb = conv_core_nchw_chunk(g, N, F);
    const size_t whole = (size_t)N * g->Hp * g->Wp * g->C;
    if (conv_core_nchw_bwd_whole(g, F)) {
        /* The GEMM tiles' backward on the whole batch: the padded NHWC input
         * the forward leaves for dkernel, and the NHWC dz; the tiles store y
         * and stride-1 dx in NCHW themselves, strided dx goes through NHWC a
         * dcol chunk at a time. */
        nn_conv_work_sizes(s, g, N, F, need_dx, need_dk, need_db);
        s->xp = need_dk ? whole : (size_t)nb * g->Hp * g->Wp * g->C;
        s->xp_whole = need_dk;
        if (need_dx || need_dk || need_db) s->yn = (size_t)N * g->OH * g->OW * F;
        if (need_dx && (g->SH != 1 || g->SW != 1))
            s->dxn = conv_core_dcol_chunk(g, N) * g->H * g->W * g->C;
        return;
    }
    /* Otherwise the NHWC passes' buffers for one chunk (every one of them grows with
     * the sample count, so a shorter last chunk fits), plus the chunk's
     * NHWC copies; xp always holds the input, padded or not. */
    nn_conv_work_sizes(s, g, nb, F, need_dx, need_dk, need_db);
    s->xp = (size_t)nb * g->Hp * g->Wp * g->C;
    /* Few input channels: the whole padded input costs no more memory than
     * the output, and saves dkernel transposing it again. */
    if (need_dk && whole <= (size_t)N * g->OH * g->OW * F) {
        s->xp = whole;
        s->xp_whole = 1;
    }
    s->yn = (size_t)nb * g->OH * g->OW * F;
    if (need_dx) s->dxn = (size_t)nb * g->H * g->W * g->C;
}

/* The forward's setup, which depends on the kernel and bias only: the
 * bias with Fp entries, and the transformed (Winograd) or column-padded
 * kernel. Returns the Winograd tile size, 0 for the GEMM tiles. */
static int conv_core_forward_setup(const float *k, const float *b, const nn_conv_geom *g, int F,
                                   nn_conv_work *w)
{
    const int Fp = conv_core_round_up(F, nn_conv_vector_width());
    if (b) {
        memcpy(w->bp, b, (size_t)F * sizeof *b);
        memset(w->bp + F, 0, (size_t)(Fp - F) * sizeof *b);
    }
    const int wino = conv_core_winograd(g, F);
    /* The transformed kernel has padded columns of its own; a cached one
     * (wk_ready) is read only. */
    if (wino && !w->wk_ready)
        nn_conv_winograd_kernel(wino, w->wk, k, g->C, F, 0);
    else if (!wino && F != Fp)
        conv_core_pad_cols(w->kp, Fp, k, (size_t)g->KH * g->KW * g->C, F);
    return wino;
}

/* y (N, OH, OW, F) = act(tiles(xp, k) + b), xp (N, Hp, Wp, C) the input
 * with its padding, after conv_core_forward_setup; y (N, F, OH, OW) with
 * y_nchw (the GEMM tiles only). */
static void conv_core_forward_run(float *y, const float *xp, const float *k, int has_b, int relu,
                                  const nn_conv_geom *g, int N, int F, int wino,
                                  const nn_conv_work *w, int y_nchw)
{
    const int Fp = conv_core_round_up(F, nn_conv_vector_width());
    const float *bp = has_b ? w->bp : NULL;
    if (wino)
        nn_conv_winograd(wino, y, g->OH, g->OW, F, xp, g->Hp, g->Wp, g->C, 0, 0, N, w->wk, bp, relu,
                         0, w->ws, w->ws_slots);
    else
        nn_conv_forward_nhwc(y, xp, g->Hp, g->Wp, F != Fp ? w->kp : k, F != Fp ? Fp : F, bp, relu,
                             g, N, F, y_nchw);
}

/* dk (T, F) += from dz (N, OH, OW, F) and the input: for Winograd x (N,
 * H, W, C) without its padding, for the GEMM tiles xp (N, Hp, Wp, C). */
static void conv_core_backward_dk(float *dk, const float *xp, const float *dz, const nn_conv_geom *g,
                                  int N, int F, int wino, nn_conv_work *w)
{
    if (wino) {
        nn_conv_winograd_dk(wino, dk, xp, dz, g, N, F, w->part, w->ws, w->ws_slots);
        return;
    }
    const int Fp = conv_core_round_up(F, nn_conv_vector_width());
    const size_t P = (size_t)g->OH * g->OW;
    if (F != Fp) {
        conv_core_pad_cols(w->dzp, Fp, dz, (size_t)N * P, F);
        dz = w->dzp;
    }
    nn_conv_backward_kernel(dk, xp, g->Hp, g->Wp, dz, F != Fp ? Fp : F, g, N, F, w->part,
                            nn_conv_dk_groups(g, N, F));
}

/* dx's setup, which depends on the kernel only: the kernel transformed,
 * or flipped and transposed (stride 1), or transposed (strided). */
static void conv_core_dx_setup(const float *k, const nn_conv_geom *g, int F, int wino, nn_conv_work *w)
{
    const int VLw = nn_conv_vector_width(), C = g->C, KH = g->KH, KW = g->KW;
    const size_t T = (size_t)KH * KW * C;
    if (wino) {
        nn_conv_winograd_kernel(wino, w->wkt, k, C, F, 1);
    } else if (g->SH == 1 && g->SW == 1) {
        const int Cp = conv_core_round_up(C, VLw);
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++)
                for (int f = 0; f < F; f++) {
                    float *row = w->kt + ((size_t)(kh * KW + kw) * F + f) * Cp;
                    const float *src = k + (size_t)((KH - 1 - kh) * KW + (KW - 1 - kw)) * C * F + f;
                    for (int c = 0; c < C; c++) row[c] = src[(size_t)c * F];
                    for (int c = C; c < Cp; c++) row[c] = 0.0f;
                }
    } else {
        const int Tp = conv_core_round_up((int)T, VLw);
        for (int f = 0; f < F; f++)
            for (size_t t = 0; t < (size_t)Tp; t++)
                w->kt[(size_t)f * Tp + t] = t < T ? k[t * F + f] : 0.0f;
    }
}

/* dx (N, H, W, C) += from dz (N, OH, OW, F), after conv_core_dx_setup;
 * dx (N, C, H, W) with dx_nchw (the GEMM tiles only: stride 1 stores it
 * from the tiles, strided gathers a chunk into w->dxn and adds it
 * transposed). */
static void conv_core_backward_dx(float *dx, const float *dz, const nn_conv_geom *g, int N, int F,
                                  int wino, nn_conv_work *w, int dx_nchw)
{
    const int VLw = nn_conv_vector_width(), C = g->C, KH = g->KH, KW = g->KW;
    const size_t T = (size_t)KH * KW * C, P = (size_t)g->OH * g->OW;
    if (wino) {
        /* dx is the correlation of dz (zero outside it) with the flipped
         * kernel, shifted by the window less the forward's padding. */
        nn_conv_winograd(wino, dx, g->H, g->W, C, dz, g->OH, g->OW, F, g->PT - 2, g->PL - 2, N, w->wkt,
                         NULL, 0, 1, w->ws, w->ws_slots);
        return;
    }
    if (g->SH == 1 && g->SW == 1) {
        /* Stride 1: dx is the correlation of dz, padded by the window less
         * the forward's padding, with the flipped kernel. */
        const int Hs = g->H + (KH - 1) * g->DH, Ws = g->W + (KW - 1) * g->DW;
        if (conv_core_dz_needs_pad(g)) {
            nn_conv_pad(w->dzs, Hs, Ws, dz, g->OH, g->OW, N, F, (KH - 1) * g->DH - g->PT,
                        (KW - 1) * g->DW - g->PL);
            dz = w->dzs;
        }
        nn_conv_backward_input_direct(dx, dz, w->kt, conv_core_round_up(C, VLw), g, N, F, dx_nchw);
        return;
    }
    /* Strided: columns dcol = dz k^T a chunk of samples at a time, each
     * gathered back into dx. */
    const int Tp = conv_core_round_up((int)T, VLw);
    const size_t in_per = (size_t)g->H * g->W * C;
    const int chunk = (int)conv_core_dcol_chunk(g, N);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        const int nb = N - n0 < chunk ? N - n0 : chunk;
        nn_conv_backward_cols(w->dcol, dz + (size_t)n0 * P * F, w->kt, Tp, (size_t)nb * P, F, (int)T);
        if (dx_nchw) {
            nn_conv_col2im(w->dxn, w->dcol, g, nb, 0);
            nn_conv_to_nchw(dx + (size_t)n0 * in_per, w->dxn, nb, C, g->H * g->W, 1);
        } else {
            nn_conv_col2im(dx + (size_t)n0 * in_per, w->dcol, g, nb, 1);
        }
    }
}

void nn_conv_forward(float *y, const float *x, const float *k, const float *b, int relu,
                     const nn_conv_geom *g, int N, int F, nn_conv_work *w)
{
    /* Winograd gathers its input patches one at a time and reads the
     * padding as zeros outside x, so it needs no padded copy (at batch 128
     * a 14x14x64 input's copy is 8 MB kept until the backward); the GEMM
     * tiles read rows of the padded input directly. */
    const int wino = conv_core_winograd(g, F);
    w->x = x;
    if (conv_core_is_padded(g) && !wino) {
        nn_conv_pad(w->xp, g->Hp, g->Wp, x, g->H, g->W, N, g->C, g->PT, g->PL);
        w->x = w->xp;
    }
    if (N == 0 || g->OH == 0 || g->OW == 0) return;
    conv_core_forward_setup(k, b, g, F, w);
    if (wino)
        nn_conv_winograd_same(wino, y, x, g, N, F, w->wk, b ? w->bp : NULL, relu, w->ws,
                              w->ws_slots);
    else
        conv_core_forward_run(y, w->x, k, b != NULL, relu, g, N, F, 0, w, 0);
}

void nn_conv_backward(float *dx, float *dk, float *db, float *dz, const float *y, const float *k,
                      const nn_conv_geom *g, int N, int F, nn_conv_work *w)
{
    const size_t T = (size_t)g->KH * g->KW * g->C, P = (size_t)g->OH * g->OW;
    if (N == 0 || P == 0) return;
    nn_conv_dz_pass(dz, y, db, w->db, (size_t)N * P, F);
    const int wino = conv_core_winograd(g, F);
    if (dk && T) conv_core_backward_dk(dk, w->x, dz, g, N, F, wino, w);
    if (!dx || !T) return;
    conv_core_dx_setup(k, g, F, wino, w);
    conv_core_backward_dx(dx, dz, g, N, F, wino, w, 0);
}

/* ---- the convolution, NCHW, a chunk of samples at a time ---- */

/* dst (nb, Hp, Wp, C) = src (nb, C, H, W) placed at row PT, column PL of
 * each sample, zero around it: the transpose and the padded copy in one
 * pass. Parallel over (sample, row); the (C, W) slice of a row is
 * transposed in TILE x TILE blocks. */
static void conv_core_nchw_to_padded(float *dst, const float *src, const nn_conv_geom *g, int nb)
{
    const int H = g->H, W = g->W, C = g->C, Hp = g->Hp, Wp = g->Wp, PL = g->PL;
    if (!conv_core_is_padded(g)) {
        conv_core_transpose(dst, src, nb, C, H * W, 0);
        return;
    }
    const size_t HW = (size_t)H * W;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)nb * Hp * Wp * C > NN_PAR_MIN)
    for (int n = 0; n < nb; n++)
        for (int u = 0; u < Hp; u++) {
            float *restrict d = dst + ((size_t)n * Hp + u) * Wp * C;
            const int h = u - g->PT;
            if (h < 0 || h >= H) {
                memset(d, 0, (size_t)Wp * C * sizeof *d);
                continue;
            }
            memset(d, 0, (size_t)PL * C * sizeof *d);
            memset(d + (size_t)(PL + W) * C, 0, (size_t)(Wp - PL - W) * C * sizeof *d);
            d += (size_t)PL * C;
            const float *restrict s = src + (size_t)n * C * HW + (size_t)h * W;
            for (int c0 = 0; c0 < C; c0 += TILE)
                for (int v0 = 0; v0 < W; v0 += TILE)
                    conv_core_transpose_block(d + (size_t)v0 * C + c0, (size_t)C, s + (size_t)c0 * HW + v0,
                                              NULL, HW, C - c0 < TILE ? C - c0 : TILE, W - v0 < TILE ? W - v0 : TILE,
                                              0);
        }
}

void nn_conv_forward_nchw(float *y, const float *x, const float *k, const float *b, int relu,
                          const nn_conv_geom *g0, int N, int F, nn_conv_work *w)
{
    nn_conv_geom gb = *g0, *g = &gb;
    g->par_n = N;
    const size_t P = (size_t)g->OH * g->OW, in_per = (size_t)g->C * g->H * g->W;
    if (N == 0 || P == 0) return;
    const int wino = conv_core_forward_setup(k, b, g, F, w);
    const int chunk = conv_core_nchw_chunk(g, N, F);
    const size_t xp_per = (size_t)g->Hp * g->Wp * g->C;
    for (int n0 = 0; n0 < N; n0 += chunk) {
        const int nb = N - n0 < chunk ? N - n0 : chunk;
        float *xp = w->xp + (w->xp_whole ? (size_t)n0 * xp_per : 0);
        conv_core_nchw_to_padded(xp, x + (size_t)n0 * in_per, g, nb);
        /* The GEMM tiles store y in NCHW themselves. */
        if (!wino) {
            conv_core_forward_run(y + (size_t)n0 * F * P, xp, k, b != NULL, relu, g, nb, F, 0, w, 1);
            continue;
        }
        conv_core_forward_run(w->yn, xp, k, b != NULL, relu, g, nb, F, wino, w, 0);
        nn_conv_to_nchw(y + (size_t)n0 * F * P, w->yn, nb, F, (int)P, 0);
    }
}

void nn_conv_backward_nchw(float *dx, float *dk, float *db, float *dz, const float *y,
                           const float *x, const float *k, const nn_conv_geom *g0, int N, int F,
                           nn_conv_work *w)
{
    nn_conv_geom gb = *g0, *g = &gb;
    g->par_n = N;
    const size_t T = (size_t)g->KH * g->KW * g->C, P = (size_t)g->OH * g->OW;
    const size_t in_per = (size_t)g->C * g->H * g->W;
    if (N == 0 || P == 0 || !T) return;
    const int wino = conv_core_winograd(g, F);
    if (dx) conv_core_dx_setup(k, g, F, wino, w);
    if (conv_core_nchw_bwd_whole(g, F)) {
        /* The GEMM tiles on the whole batch, as nn_conv_backward runs them:
         * dz transposed (and masked) once; the forward's NHWC input. */
        conv_core_transpose_masked(w->yn, dz, y, N, F, (int)P, 0);
        nn_conv_dz_pass(w->yn, NULL, db, w->db, (size_t)N * P, F);
        if (dk) conv_core_backward_dk(dk, w->xp, w->yn, g, N, F, 0, w);
        if (dx) conv_core_backward_dx(dx, w->yn, g, N, F, 0, w, 1);
        return;
    }
    /* Chunks in sample order: db and the GEMM tiles' dk add each chunk's
     * sums in turn, so the result depends on the shapes alone; Winograd's
     * dk sums in its transformed domain across the chunks, as over the
     * whole batch, and transforms back once. */
    const int chunk = conv_core_nchw_chunk(g, N, F);
    if (dk && wino) nn_conv_winograd_dk_begin(wino, w->part, g, F);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        const int nb = N - n0 < chunk ? N - n0 : chunk;
        float *dzc = dz + (size_t)n0 * F * P;
        /* The ReLU's mask applied as the chunk is transposed: one pass
         * over dz fewer. */
        conv_core_transpose_masked(w->yn, dzc, y ? y + (size_t)n0 * F * P : NULL, nb, F, (int)P, 0);
        nn_conv_dz_pass(w->yn, NULL, db, w->db, (size_t)nb * P, F);
        if (dk) {
            /* The forward's copy, or the chunk transposed again. */
            float *xp = w->xp;
            if (w->xp_whole)
                xp += (size_t)n0 * g->Hp * g->Wp * g->C;
            else
                conv_core_nchw_to_padded(xp, x + (size_t)n0 * in_per, g, nb);
            if (wino)
                nn_conv_winograd_dk_add(wino, w->part, xp, w->yn, g, N, n0, nb, F, w->ws,
                                        w->ws_slots);
            else
                conv_core_backward_dk(dk, xp, w->yn, g, nb, F, wino, w);
        }
        if (dx) {
            memset(w->dxn, 0, (size_t)nb * in_per * sizeof *w->dxn);
            conv_core_backward_dx(w->dxn, w->yn, g, nb, F, wino, w, 0);
            nn_conv_to_nchw(dx + (size_t)n0 * in_per, w->dxn, nb, g->C, g->H * g->W, 1);
        }
    }
    if (dk && wino) nn_conv_winograd_dk_end(wino, dk, w->part, g, F);
}

/* ---- col2im ---- */

void nn_conv_col2im(float *dx, const float *col, const nn_conv_geom *g, int nb, int add)
{
    const int H = g->H, W = g->W, C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW;
    const size_t K = (size_t)KH * KW * C;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)nb * OH * OW * K > NN_PAR_MIN)
    for (int n = 0; n < nb; n++)
        for (int ih = 0; ih < H; ih++) {
            float *restrict dxr = dx + ((size_t)n * H + ih) * W * C;
            if (!add) memset(dxr, 0, (size_t)W * C * sizeof *dxr);
            for (int kh = 0; kh < KH; kh++) {
                const int t = ih + g->PT - kh * g->DH;
                if (t < 0 || t % g->SH) continue;
                const int oh = t / g->SH;
                if (oh >= OH) continue;
                const float *colr = col + ((size_t)n * OH + oh) * OW * K + (size_t)kh * KW * C;
                for (int iw = 0; iw < W; iw++) {
                    float *restrict d = dxr + (size_t)iw * C;
                    for (int kw = 0; kw < KW; kw++) {
                        const int u = iw + g->PL - kw * g->DW;
                        if (u < 0 || u % g->SW) continue;
                        const int ow = u / g->SW;
                        if (ow >= OW) continue;
                        const float *restrict s = colr + (size_t)ow * K + (size_t)kw * C;
                        for (int c = 0; c < C; c++) d[c] += s[c];
                    }
                }
            }
        }
}

/* ---- deterministic per-channel sums ---- */

/* Eight channels of float and of double. Generic vectors: with AVX-512 a
 * double vector is one register, with less the compiler splits it. This
 * file keeps ISO C's separate multiply and add (no conv_simd.h), so the
 * vector sums round exactly as the scalar loop does. */
typedef float conv_core_f8 __attribute__((vector_size(8 * sizeof(float))));
typedef double conv_core_d8 __attribute__((vector_size(8 * sizeof(double))));

/* Writes through a pointer: a vector returned by value would have a
 * different ABI in builds without AVX-512 (gcc warns, -Wpsabi). */
static inline __attribute__((always_inline)) void conv_core_load_d8(conv_core_d8 *out, const float *p)
{
    conv_core_f8 v;
    memcpy(&v, p, sizeof v);
    *out = __builtin_convertvector(v, conv_core_d8);
}

/* Channels-last block: p[c0 + 8v + e] += term over rows [o0, o1) for the
 * nv (constant, 1 to 4) vectors of 8 channels from c0, each channel's rows
 * in order as the scalar loop adds them, in registers meanwhile (nv
 * independent chains instead of one load-add-store per element). */
static inline __attribute__((always_inline)) void
conv_core_sums_last(double *restrict p, const float *a, const float *sa, const float *b,
                    const float *sb, size_t o0, size_t o1, int C, int c0, const int nv)
{
    conv_core_d8 acc[4], ma[4], mb[4];
    for (int v = 0; v < nv; v++) {
        memcpy(&acc[v], p + c0 + 8 * v, sizeof acc[v]);
        ma[v] = mb[v] = (conv_core_d8){0};
        if (sa) conv_core_load_d8(&ma[v], sa + c0 + 8 * v);
        if (sb) conv_core_load_d8(&mb[v], sb + c0 + 8 * v);
    }
    for (size_t o = o0; o < o1; o++) {
        const float *ar = a + o * C + c0, *br = b ? b + o * C + c0 : NULL;
        for (int v = 0; v < nv; v++) {
            conv_core_d8 x, y;
            conv_core_load_d8(&x, ar + 8 * v);
            if (br) {
                conv_core_load_d8(&y, br + 8 * v);
                acc[v] += (x - ma[v]) * (y - mb[v]);
            } else if (sa)
                acc[v] += x - ma[v];
            else
                acc[v] += x;
        }
    }
    for (int v = 0; v < nv; v++) memcpy(p + c0 + 8 * v, &acc[v], sizeof acc[v]);
}

static size_t conv_core_sum_rows_per_block(int C, size_t inner)
{
    const size_t per = (size_t)C * inner;
    const size_t r = per ? NN_SUM_BLOCK / per : 1;
    return r ? r : 1;
}

size_t nn_conv_sum_scratch(size_t outer, int C, size_t inner)
{
    const size_t rpb = conv_core_sum_rows_per_block(C, inner);
    const size_t blocks = (outer + rpb - 1) / rpb;
    return (blocks ? blocks : 1) * (size_t)(C > 0 ? C : 1);
}

void nn_conv_channel_sums(double *out, const float *a, const float *sa, const float *b,
                          const float *sb, size_t outer, int C, size_t inner, double *part)
{
    const size_t rpb = conv_core_sum_rows_per_block(C, inner);
    const size_t blocks = (outer + rpb - 1) / rpb;
    #pragma omp parallel for schedule(static) if (outer * (size_t)C * inner > NN_PAR_MIN)
    for (size_t blk = 0; blk < blocks; blk++) {
        double *restrict p = part + blk * C;
        for (int c = 0; c < C; c++) p[c] = 0.0;
        const size_t o1 = (blk + 1) * rpb < outer ? (blk + 1) * rpb : outer;
        int cv = 0; /* channels done by the vector loop */
        if (inner == 1) {
            for (; cv + 32 <= C; cv += 32) conv_core_sums_last(p, a, sa, b, sb, blk * rpb, o1, C, cv, 4);
            for (; cv + 8 <= C; cv += 8) conv_core_sums_last(p, a, sa, b, sb, blk * rpb, o1, C, cv, 1);
            if (cv == C) continue;
        }
        for (size_t o = blk * rpb; o < o1; o++) {
            const float *ar = a + o * C * inner, *br = b ? b + o * C * inner : NULL;
            if (inner == 1) {
                /* Channels-last: the channel loop is the contiguous one. */
                if (br)
                    for (int c = cv; c < C; c++)
                        p[c] += ((double)ar[c] - (sa ? sa[c] : 0.0f)) *
                                ((double)br[c] - (sb ? sb[c] : 0.0f));
                else if (sa)
                    for (int c = cv; c < C; c++) p[c] += (double)ar[c] - sa[c];
                else
                    for (int c = cv; c < C; c++) p[c] += ar[c];
                continue;
            }
            for (int c = 0; c < C; c++) {
                const float *ap = ar + (size_t)c * inner, *bp = br ? br + (size_t)c * inner : NULL;
                const double sac = sa ? sa[c] : 0.0, sbc = sb ? sb[c] : 0.0;
                double s = 0.0;
                if (bp)
                    for (size_t i = 0; i < inner; i++) s += (ap[i] - sac) * (bp[i] - sbc);
                else
                    for (size_t i = 0; i < inner; i++) s += ap[i] - sac;
                p[c] += s;
            }
        }
    }
    /* Blocks combine in index order; out may alias part (row 0 is read
     * before it is written). */
    for (int c = 0; c < C; c++) {
        double s = blocks ? part[c] : 0.0;
        for (size_t blk = 1; blk < blocks; blk++) s += part[blk * C + c];
        out[c] = s;
    }
}

/* ---- pooling config ---- */

nn_status nn_pool_parse(nn_pool_state *s, nn_config *c)
{
    static const int two[2] = {2, 2};
    NN_TRY(nn_config_get_ints(c, "pool_size", s->pool, 2, two, 0, 1, 4096));
    NN_TRY(nn_config_get_ints(c, "strides", s->strides, 2, s->pool, 0, 1, 4096));
    NN_TRY(nn_config_get_choice(c, "padding", &s->padding, NN_PAD_VALID, nn_conv_paddings));
    return nn_config_get_data_format(c, &s->format);
}

void nn_pool_write(const nn_pool_state *s, nn_config_writer *w)
{
    nn_config_write(w, "pool_size", "%d,%d", s->pool[0], s->pool[1]);
    nn_config_write(w, "strides", "%d,%d", s->strides[0], s->strides[1]);
    nn_config_write(w, "padding", "%s", nn_conv_paddings[s->padding]);
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
}

nn_status nn_pool_build(nn_layer *l, nn_pool_state *s, int in_rank, const int *in_shape)
{
    const int cf = s->format == NN_CHANNELS_FIRST;
    nn_conv_geom *g = &s->geom;
    memset(g, 0, sizeof *g);
    NN_TRY(nn_conv_image_shape(l->name, in_rank, in_shape, cf, &g->H, &g->W, &g->C));
    g->KH = s->pool[0];
    g->KW = s->pool[1];
    g->SH = s->strides[0];
    g->SW = s->strides[1];
    g->DH = g->DW = 1;
    NN_TRY(nn_conv_geom_init(g, s->padding, l->name));
    l->out_rank = 3;
    l->out_shape[0] = cf ? g->C : g->OH;
    l->out_shape[1] = cf ? g->OH : g->OW;
    l->out_shape[2] = cf ? g->OW : g->C;
    return NN_OK;
}

nn_conv_geom nn_pool_kernel_geom(const nn_pool_state *s, int N, int *planes)
{
    nn_conv_geom g = s->geom;
    *planes = N;
    if (s->format == NN_CHANNELS_FIRST) {
        *planes = N * g.C;
        g.C = 1;
    }
    return g;
}
