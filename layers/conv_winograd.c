/* conv_winograd: 3x3 stride-1 convolutions by Winograd's minimal filtering
 * algorithm F(m x m, 3x3), m = 2 or 4, NHWC.
 *
 * An m x m block of outputs of a 3x3 window reads a P x P patch d of the
 * input, P = m + 2. With the transforms (Lavin and Gray, 2015)
 *     U = G g G^T   (kernel, P x P per input/output channel pair)
 *     V = B^T d B   (patch, P x P per input channel)
 *     y = A^T [ sum_c U[c] (.) V[c] ] A
 * the P*P positions xi of the transformed domain are independent, so the
 * sum over channels becomes P*P GEMMs, M[xi] (tiles, Cout) = V[xi] (tiles,
 * Cin) U[xi] (Cin, Cout): per m*m outputs, P*P multiplies instead of 9 m*m,
 * 2.25x fewer for F(2x2) (16 per 4 outputs) and 4x fewer for F(4x4) (36 per
 * 16). The transforms cost a few additions per value and no extra pass over
 * memory: tiles are processed in blocks whose V and M (P*P x block x C
 * each) stay in the L2 cache, gathered from the image and scattered back to
 * the output by the thread that computes the block.
 *
 * Used for the forward (x with the kernel), for dx (dz with the flipped,
 * transposed kernel, zero outside dz: a "full" correlation) and, with the
 * roles transposed (F(3x3, m x m), at the end of the file), for the kernel
 * gradient of conv2d layers with 3x3 windows, stride 1 and dilation 1.
 *
 * Which m: F(4x4) needs fewer multiplies on every output of at least 3x3
 * (a 7x7 map: 4 tiles of 36 against 16 of 16; 24x24: 1296 against 2304),
 * so the dispatch takes it there and F(2x2) below. Its price is precision:
 * F(2x2)'s transforms have coefficients 0, +-1/2 and +-1, F(4x4)'s reach 8
 * (A), 5 (B) and 1/24 (G), so intermediate values grow up to 6x larger per
 * dimension relative to the direct sum's terms and rounding errors with
 * them: about 1e-6 of the largest term instead of 1e-7, which is what
 * deep-learning libraries accept for F(4x4); tests/test_conv.c bounds both
 * against the direct sums (conv_reference.c).
 *
 * Determinism: every output is computed by one tile whose sums run in an
 * order fixed by the shapes, and the kernel gradient adds fixed blocks of
 * tiles in order, each element by one thread, so the result is the same
 * for any thread count (and, for channels_first, any chunking).
 *
 * Omits: F(6x6, 3x3) (another digit of precision lost), other window
 * sizes, strides, dilation.
 */
#include "layers/conv_winograd.h"

#include <stddef.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "layers/conv_gemm.h"
#include "layers/conv_simd.h"

/* Tiles per block: a multiple of the GEMM tile's rows (6 and 8), small
 * enough that V, M and U[xi] stay in a 1 MB L2 for 64 channels each way
 * (F(2x2): 16 x 48 tiles; F(4x4): 36 x 24). */
#define TB2 48
#define TB4 24
/* Below this many multiply-adds nn_conv_winograd runs serially (as
 * CONV_GEMM_PAR_MIN_MACS in conv_gemm.c). */
#define WINOGRAD_PAR_MIN_MACS 16777216.0

/* The transforms' arrays must live in registers: unroll fully. */
#define UNROLL36 _Pragma("GCC unroll 36")

static int conv_winograd_round_up(int n, int m) { return (n + m - 1) / m * m; }

/* Patch size, positions and tiles per block of F(m x m, 3x3). */
INLINE int conv_winograd_p(int m) { return m + 2; }
INLINE int conv_winograd_np(int m) { return (m + 2) * (m + 2); }
INLINE int conv_winograd_tb(int m) { return m == 4 ? TB4 : TB2; }

int nn_conv_winograd_fits(const nn_conv_geom *g)
{
    return g->KH == 3 && g->KW == 3 && g->SH == 1 && g->SW == 1 && g->DH == 1 && g->DW == 1;
}

int nn_conv_winograd_applies(const nn_conv_geom *g, int F)
{
    /* Below 8 channels the GEMMs are too thin for the transforms to pay. */
    return nn_conv_winograd_fits(g) && g->C >= 8 && F >= 8;
}

int nn_conv_winograd_tile(const nn_conv_geom *g)
{
    /* An output under 3x3 is one F(4x4) tile of 36 multiplies where
     * F(2x2) needs at most 2 x 2 tiles of 16 (less for 1 or 2 pixels). */
    return g->OH >= 3 && g->OW >= 3 ? 4 : 2;
}

size_t nn_conv_winograd_kernel_size(int m, int Cin, int Cout)
{
    return (size_t)conv_winograd_np(m) * Cin * conv_winograd_round_up(Cout, VL);
}

int nn_conv_winograd_slots(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* One thread's slot of the scratch: the block's transformed inputs
 * (P*P, TB, ldi), then its products or transformed dz (P*P, TB, ldo), then
 * a row of ldi zeros for the implicit padding (conv_winograd_src). The row
 * takes the wider of ldi and ldo, so that the slots are the same size for
 * dx, which swaps them in the scratch sized for the forward. */
static size_t conv_winograd_slot_floats(int m, int ldi, int ldo)
{
    return (size_t)conv_winograd_np(m) * conv_winograd_tb(m) * (size_t)(ldi + ldo) +
           (size_t)(ldi > ldo ? ldi : ldo);
}

/* The input the patches are gathered from: x (N, H, W, Cin), the patch of
 * tile (i0, j0) at rows i0 + oy.., columns j0 + ox.., zero outside x.
 * pt, pb, pl, pr: padding the input is seen with (top, bottom, left,
 * right). A patch inside x or that padding loads every pixel, the zeros
 * from `zero` (a row of Cin rounded up to vectors), in the same code as a
 * padded copy of x would run; only a patch reaching beyond it tests each
 * pixel. So reading x with its padding implicit gives the padded copy's
 * results bit for bit (the compiler may fuse multiply-adds differently in
 * the two forms of the transform), without the copy. */
typedef struct {
    const float *x;
    int H, W, oy, ox;
    int pt, pb, pl, pr;
    const float *zero;
} conv_winograd_src;

static float *conv_winograd_thread_slot(int m, float *scratch, int ldi, int ldo)
{
#ifdef _OPENMP
    return scratch + (size_t)omp_get_thread_num() * conv_winograd_slot_floats(m, ldi, ldo);
#else
    (void)m;
    (void)ldi;
    (void)ldo;
    return scratch;
#endif
}

size_t nn_conv_winograd_scratch_size(int m, int slots, int Cin, int Cout)
{
    const int ldi = conv_winograd_round_up(Cin, VL), ldo = conv_winograd_round_up(Cout, VL);
    return (size_t)slots * conv_winograd_slot_floats(m, ldi, ldo);
}

/* Tiles are m x m output blocks, numbered over (N, TH, TW) with TH, TW the
 * output's size in blocks. */
static long conv_winograd_tile_count(int m, int N, int OH, int OW)
{
    return (long)N * ((OH + m - 1) / m) * ((OW + m - 1) / m);
}

/* Tile t: sample *n and top-left output pixel (*i0, *j0). */
INLINE void conv_winograd_tile_origin(int m, long t, int OH, int OW, long *n, int *i0, int *j0)
{
    const long TH = (OH + m - 1) / m, TW = (OW + m - 1) / m, r = t % (TH * TW);
    *n = t / (TH * TW);
    *i0 = (int)(r / TW) * m;
    *j0 = (int)(r % TW) * m;
}

/* ---- the kernel transform: U[xi][ci][co] = (G g G^T)[xi] ---- */

/* t[0..P) = G v[0..3): the rows of G applied to one column or row, a
 * vector of channel pairs at a time. G's sixths and twenty-fourths are
 * multiplications by rounded reciprocals: U only has to be the same on
 * every run, not exact. */
INLINE void conv_winograd_g(const int m, vf *t, const vf *v)
{
    if (m == 2) {
        const vf half = splat(0.5f);
        t[0] = v[0];
        t[1] = half * (v[0] + v[1] + v[2]);
        t[2] = half * (v[0] - v[1] + v[2]);
        t[3] = v[2];
    } else {
        const vf sixth = splat(1.0f / 6.0f), e = v[0] * splat(1.0f / 24.0f) + v[2] * sixth;
        const vf o = v[1] * splat(1.0f / 12.0f);
        t[0] = splat(0.25f) * v[0];
        t[1] = -(v[0] + v[1] + v[2]) * sixth;
        t[2] = -(v[0] - v[1] + v[2]) * sixth;
        t[3] = e + o;
        t[4] = e - o;
        t[5] = v[2];
    }
}

/* U[xi][ci][co..co+VL) for one ci and a vector of co: g gathered from k,
 * zero for co >= Cout. m is a constant at each call. */
INLINE void conv_winograd_kernel_vector(const int m, float *U, const float *k, int C, int F,
                                        int flip, int ci, int co, int Cout, int ld)
{
    const int P = conv_winograd_p(m), NP = P * P, lanes = Cout - co < VL ? Cout - co : VL;
    vf g[9], t[18], u[36];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            const int ka = flip ? 2 - a : a, kb = flip ? 2 - b : b;
            const float *src = k + (size_t)(ka * 3 + kb) * C * F;
            if (!flip) { /* c = ci, f = co + e: contiguous */
                g[a * 3 + b] = lanes == VL ? vload(src + (size_t)ci * F + co)
                                           : vload_part(src + (size_t)ci * F + co, lanes);
            } else { /* c = co + e, f = ci: F apart */
                float lane[VL] = {0};
                for (int e = 0; e < lanes; e++) lane[e] = src[(size_t)(co + e) * F + ci];
                g[a * 3 + b] = vload(lane);
            }
        }
    UNROLL for (int b = 0; b < 3; b++) { /* t = G g, per column */
        vf col[3] = {g[b], g[3 + b], g[6 + b]}, tc[6];
        conv_winograd_g(m, tc, col);
        UNROLL for (int i = 0; i < P; i++) t[i * 3 + b] = tc[i];
    }
    UNROLL for (int i = 0; i < P; i++) /* u = t G^T, per row */
        conv_winograd_g(m, u + i * P, t + i * 3);
    UNROLL36 for (int xi = 0; xi < NP; xi++) vstore(U + ((size_t)xi * (size_t)(flip ? F : C) + ci) * ld + co, u[xi]);
}

void nn_conv_winograd_kernel(int m, float *U, const float *k, int C, int F, int flip)
{
    /* k is (3, 3, C, F). Forward: ci = c, co = f, g[a][b] = k[a][b][c][f].
     * dx (flip): ci = f, co = c, g[a][b] = k[2-a][2-b][c][f]. */
    const int Cin = flip ? F : C, Cout = flip ? C : F, ld = conv_winograd_round_up(Cout, VL);
    /* Serial up to 128x128 channels: the transform is a few dozen vector
     * operations per VL pairs, less than a parallel region is worth. */
    #pragma omp parallel for schedule(static) if ((size_t)Cin * ld > 16384)
    for (int ci = 0; ci < Cin; ci++)
        for (int co = 0; co < ld; co += VL) {
            if (m == 4)
                conv_winograd_kernel_vector(4, U, k, C, F, flip, ci, co, Cout, ld);
            else
                conv_winograd_kernel_vector(2, U, k, C, F, flip, ci, co, Cout, ld);
        }
}

/* ---- the input transform of one tile: V[xi][c] = (B^T d B)[xi] ----
 * p holds the patch's P x P vectors of channels c.., row-major; V rows are
 * `ldv` apart per xi. */

/* r[0..P) = B^T q[0..P), the P values q[i * qs]. */
INLINE void conv_winograd_bt(const int m, vf *r, const vf *q, const int qs)
{
    if (m == 2) {
        r[0] = q[0] - q[2 * qs];
        r[1] = q[qs] + q[2 * qs];
        r[2] = q[2 * qs] - q[qs];
        r[3] = q[qs] - q[3 * qs];
    } else {
        const vf q1 = q[qs], q2 = q[2 * qs], q3 = q[3 * qs], q4 = q[4 * qs];
        const vf four = splat(4.0f), two = splat(2.0f);
        r[0] = four * q[0] - splat(5.0f) * q2 + q4;
        r[1] = (q3 + q4) - four * (q1 + q2);
        r[2] = (q4 - q3) + four * (q1 - q2);
        r[3] = (q4 - q2) + two * (q3 - q1);
        r[4] = (q4 - q2) - two * (q3 - q1);
        r[5] = four * q1 - splat(5.0f) * q3 + q[5 * qs];
    }
}

INLINE void conv_winograd_input_transform(const int m, float *V, size_t ldv, int c, const vf *p)
{
    const int P = conv_winograd_p(m);
    vf r[36], v[6];
    UNROLL for (int j = 0; j < P; j++) { /* r = B^T p, per column */
        vf col[6];
        conv_winograd_bt(m, col, p + j, P);
        UNROLL for (int i = 0; i < P; i++) r[i * P + j] = col[i];
    }
    UNROLL for (int i = 0; i < P; i++) { /* V = r B, per row */
        conv_winograd_bt(m, v, r + i * P, 1);
        UNROLL for (int j = 0; j < P; j++) vstore(V + (size_t)(i * P + j) * ldv + c, v[j]);
    }
}

/* The channels [c0, c1), c0 a multiple of VL and c1 one or Cin: V rows
 * hold Cin rounded up to whole vectors, so the last channels are
 * transformed as one vector zero-padded past Cin. */
INLINE void conv_winograd_input_tile_any(const int m, float *V, size_t ldv, const float *const *d,
                                         int c0, int c1, const int full)
{
    const int NP = conv_winograd_np(m);
    int c = c0;
    for (; c + VL <= c1; c += VL) {
        vf p[36];
        UNROLL36 for (int i = 0; i < NP; i++) p[i] = full || d[i] ? vload(d[i] + c) : (vf){0};
        conv_winograd_input_transform(m, V, ldv, c, p);
    }
    if (c < c1) {
        vf p[36];
        for (int i = 0; i < NP; i++) p[i] = full || d[i] ? vload_part(d[i] + c, c1 - c) : (vf){0};
        conv_winograd_input_transform(m, V, ldv, c, p);
    }
}

/* The P x P patch at rows i0.., columns j0.. of sample n of src's x
 * (those of the tile are i0 - oy, j0 - ox), zero outside x, channels
 * [c0, c1) as above. Inside x and its padding (most tiles) the loads need
 * no test. */
INLINE void conv_winograd_input_patch(const int m, float *V, size_t ldv,
                                      const conv_winograd_src *src, long n, int i0, int j0,
                                      int Cin, int c0, int c1)
{
    const int P = conv_winograd_p(m), H = src->H, W = src->W;
    const float *d[36];
    const int full = i0 >= -src->pt && j0 >= -src->pl && i0 + P <= H + src->pb &&
                     j0 + P <= W + src->pr;
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            const int u = i0 + i, v = j0 + j;
            d[i * P + j] = u >= 0 && u < H && v >= 0 && v < W
                               ? src->x + (((size_t)n * H + u) * W + v) * Cin
                           : full ? src->zero
                                  : NULL;
        }
    if (full)
        conv_winograd_input_tile_any(m, V, ldv, d, c0, c1, 1);
    else
        conv_winograd_input_tile_any(m, V, ldv, d, c0, c1, 0);
}

/* ---- the output transform of one tile: y = A^T M A (+ bias, ReLU) ---- */

/* r[0..m) = A^T q[0..P), the P values q[i * qs]. */
INLINE void conv_winograd_at(const int m, vf *r, const vf *q, const int qs)
{
    if (m == 2) {
        r[0] = q[0] + q[qs] + q[2 * qs];
        r[1] = q[qs] - q[2 * qs] - q[3 * qs];
    } else {
        const vf sp = q[qs] + q[2 * qs], sm = q[qs] - q[2 * qs];
        const vf tp = q[3 * qs] + q[4 * qs], tm = q[3 * qs] - q[4 * qs];
        r[0] = q[0] + sp + tp;
        r[1] = sm + splat(2.0f) * tm;
        r[2] = sp + splat(4.0f) * tp;
        r[3] = sm + splat(8.0f) * tm + q[5 * qs];
    }
}

/* M rows `ldm` apart per xi; o[r * m + s] points at output pixel (r, s) of
 * the block, or is NULL outside the output. */
INLINE void conv_winograd_output_tile(const int m, float *const *o, const float *M, size_t ldm,
                                      int Cout, const float *bias, int relu, int add)
{
    const int P = conv_winograd_p(m), NP = P * P;
    for (int c = 0; c < Cout; c += VL) {
        vf q[36], s[24], y[16];
        UNROLL36 for (int i = 0; i < NP; i++) q[i] = vload(M + (size_t)i * ldm + c);
        UNROLL for (int j = 0; j < P; j++) { /* s = A^T q, per column */
            vf col[4];
            conv_winograd_at(m, col, q + j, P);
            UNROLL for (int i = 0; i < m; i++) s[i * P + j] = col[i];
        }
        UNROLL for (int i = 0; i < m; i++) /* y = s A, per row */
            conv_winograd_at(m, y + i * m, s + i * P, 1);
        const int left = Cout - c;
        UNROLL for (int e = 0; e < m * m; e++) {
            if (!o[e]) continue;
            vf t = y[e];
            if (bias) t += vload(bias + c);
            if (relu) t = (vf)((vi)t & (t > (vf){0}));
            if (left >= VL) {
                if (add) t += vload(o[e] + c);
                vstore(o[e] + c, t);
            } else {
                float part[VL];
                vstore(part, t);
                for (int l = 0; l < left; l++) o[e][c + l] = add ? o[e][c + l] + part[l] : part[l];
            }
        }
    }
}

/* One block of tiles [t0, t1): gathered and transformed into V, the P*P
 * GEMMs into M, transformed back into y. m is a constant at each call, so
 * every loop over the patch unrolls. */
INLINE void conv_winograd_block(const int m, float *V, float *M, long t0, long t1, float *y, int OH,
                                int OW, int Cout, const conv_winograd_src *x, int Cin,
                                const float *U, const float *bias, int relu, int add)
{
    const int NP = conv_winograd_np(m), TB = conv_winograd_tb(m);
    const int ldi = conv_winograd_round_up(Cin, VL), ldo = conv_winograd_round_up(Cout, VL);
    for (long t = t0; t < t1; t++) {
        long n;
        int i0, j0;
        conv_winograd_tile_origin(m, t, OH, OW, &n, &i0, &j0);
        conv_winograd_input_patch(m, V + (size_t)(t - t0) * ldi, (size_t)TB * ldi, x, n, i0 + x->oy,
                                  j0 + x->ox, Cin, 0, Cin);
    }
    for (int xi = 0; xi < NP; xi++)
        nn_conv_gemm(M + (size_t)xi * TB * ldo, (size_t)ldo, (int)(t1 - t0), ldo,
                     V + (size_t)xi * TB * ldi, (size_t)ldi, Cin, U + (size_t)xi * Cin * ldo,
                     (size_t)ldo);
    for (long t = t0; t < t1; t++) {
        long n;
        int i0, j0;
        conv_winograd_tile_origin(m, t, OH, OW, &n, &i0, &j0);
        float *o[16];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
                o[i * m + j] = i0 + i < OH && j0 + j < OW
                                   ? y + (((size_t)n * OH + i0 + i) * OW + j0 + j) * Cout
                                   : NULL;
        conv_winograd_output_tile(m, o, M + (size_t)(t - t0) * ldo, (size_t)TB * ldo, Cout, bias,
                                  relu, add);
    }
}

/* Block bk of nn_conv_winograd, in the calling thread's slot of scratch. */
static void conv_winograd_block_at(int m, long bk, long tiles, float *y, int OH, int OW, int Cout,
                                   const conv_winograd_src *src, int Cin, const float *U,
                                   const float *bias, int relu, int add, float *scratch)
{
    const int NP = conv_winograd_np(m), TB = conv_winograd_tb(m);
    const int ldi = conv_winograd_round_up(Cin, VL), ldo = conv_winograd_round_up(Cout, VL);
    float *V = conv_winograd_thread_slot(m, scratch, ldi, ldo), *M = V + (size_t)NP * TB * ldi;
    float *zero = M + (size_t)NP * TB * ldo;
    conv_winograd_src x = *src;
    if (x.pt || x.pb || x.pl || x.pr) {
        memset(zero, 0, (size_t)ldi * sizeof *zero);
        x.zero = zero;
    }
    const long t0 = bk * TB, t1 = t0 + TB < tiles ? t0 + TB : tiles;
    if (m == 4)
        conv_winograd_block(4, V, M, t0, t1, y, OH, OW, Cout, &x, Cin, U, bias, relu, add);
    else
        conv_winograd_block(2, V, M, t0, t1, y, OH, OW, Cout, &x, Cin, U, bias, relu, add);
}

/* nn_conv_winograd from any conv_winograd_src. */
static void conv_winograd_run(int m, float *y, int OH, int OW, int Cout, const conv_winograd_src *x,
                              int Cin, int N, const float *U, const float *bias, int relu, int add,
                              float *scratch, int slots)
{
    const int TB = conv_winograd_tb(m);
    const long tiles = conv_winograd_tile_count(m, N, OH, OW), blocks = (tiles + TB - 1) / TB;
    /* Small convolutions (a batch-1 prediction) run on the calling thread,
     * in slot 0, with the same blocks: the multiply-adds of the direct
     * convolution, against the threshold conv_gemm.c uses. Outside any
     * parallel region, not in one with a false if clause: libgomp ends
     * every region, even a one-thread one, with a futex system call (about
     * a microsecond, a few percent of a small network's prediction). */
    const double macs = (double)tiles * m * m * 9 * Cin * Cout;
    if (macs < WINOGRAD_PAR_MIN_MACS) {
        for (long bk = 0; bk < blocks; bk++)
            conv_winograd_block_at(m, bk, tiles, y, OH, OW, Cout, x, Cin, U, bias, relu, add, scratch);
        return;
    }
    #pragma omp parallel for schedule(static) num_threads(slots)
    for (long bk = 0; bk < blocks; bk++)
        conv_winograd_block_at(m, bk, tiles, y, OH, OW, Cout, x, Cin, U, bias, relu, add, scratch);
}

void nn_conv_winograd(int m, float *y, int OH, int OW, int Cout, const float *x, int H, int W,
                      int Cin, int oy, int ox, int N, const float *U, const float *bias, int relu,
                      int add, float *scratch, int slots)
{
    const conv_winograd_src src = {x, H, W, oy, ox, 0, 0, 0, 0, NULL};
    conv_winograd_run(m, y, OH, OW, Cout, &src, Cin, N, U, bias, relu, add, scratch, slots);
}

void nn_conv_winograd_same(int m, float *y, const float *x, const nn_conv_geom *g, int N, int F,
                           const float *U, const float *bias, int relu, float *scratch, int slots)
{
    const conv_winograd_src src = {x, g->H, g->W, -g->PT, -g->PL, g->PT, g->Hp - g->H - g->PT,
                                   g->PL, g->Wp - g->W - g->PL, NULL};
    conv_winograd_run(m, y, g->OH, g->OW, F, &src, g->C, N, U, bias, relu, 0, scratch, slots);
}

/* ---- the kernel gradient: F(3x3, m x m) ----
 * Transposing the forward's algorithm, for one tile (an m x m block z of
 * dz and the P x P patch d of x its windows read):
 *     dk (3x3) += G^T [ (A z A^T) (.) (B^T d B) ] G
 * so per xi the sum over tiles and channels is a GEMM again, with the
 * reduction running over tiles: dU[xi] (Cin, Cout) += V[xi]^T Z[xi].
 *
 * Order of the sums: tiles are numbered over the whole batch and cut into
 * blocks of TB; each block's V^T Z is summed in registers and added to the
 * one dU of the batch, block after block. Threads share a round of blocks
 * (one per scratch slot): first they split its tiles' transforms, then the
 * positions xi, so each dU[xi] is written by one thread in block order,
 * whatever the thread count. The channels_first passes bring the batch a
 * chunk of samples at a time (nn_conv_winograd_dk_add): a block cut by the
 * end of a chunk keeps its transformed tiles in a carry slot beside dU
 * until the next chunk completes it, so the sums are those of one call on
 * the whole batch, chunked or not, and dU is transformed back once. */

/* dU, then the carry slot: one slot's transformed tiles (P*P, TB, ldi)
 * and (P*P, TB, ldo). */
static size_t conv_winograd_dU_floats(int m, int C, int F)
{
    return (size_t)conv_winograd_np(m) * C * conv_winograd_round_up(F, VL);
}

size_t nn_conv_winograd_dk_size(int m, const nn_conv_geom *g, int F)
{
    return conv_winograd_dU_floats(m, g->C, F) +
           conv_winograd_slot_floats(m, conv_winograd_round_up(g->C, VL), conv_winograd_round_up(F, VL));
}

/* r[0..P) = A q[0..m), the m values q[i * qs] (A = (A^T)^T). */
INLINE void conv_winograd_a(const int m, vf *r, const vf *q, const int qs)
{
    if (m == 2) {
        r[0] = q[0];
        r[1] = q[0] + q[qs];
        r[2] = q[0] - q[qs];
        r[3] = -q[qs];
    } else {
        const vf e = q[0] + q[2 * qs], o = q[qs] + q[3 * qs];
        const vf e4 = q[0] + splat(4.0f) * q[2 * qs], o4 = splat(2.0f) * q[qs] + splat(8.0f) * q[3 * qs];
        r[0] = q[0];
        r[1] = e + o;
        r[2] = e - o;
        r[3] = e4 + o4;
        r[4] = e4 - o4;
        r[5] = q[3 * qs];
    }
}

/* Z[xi][f] = (A z A^T)[xi] for the m x m block z[r * m + s] (NULL: outside
 * dz), f < F; zero for f in [F, ldz). Rows of Z are `ldm` apart per xi. */
INLINE void conv_winograd_dz_tile(const int m, float *Z, size_t ldm, const float *const *z, int F,
                                  int ldz)
{
    const int P = conv_winograd_p(m);
    for (int f = 0; f < ldz; f += VL) { /* ldz is F rounded up to whole vectors */
        vf q[16], t[24], v[6];
        UNROLL for (int i = 0; i < m * m; i++)
            q[i] = !z[i] ? (vf){0} : F - f >= VL ? vload(z[i] + f) : vload_part(z[i] + f, F - f);
        UNROLL for (int j = 0; j < m; j++) { /* t = A q, per column */
            vf col[6];
            conv_winograd_a(m, col, q + j, m);
            UNROLL for (int i = 0; i < P; i++) t[i * m + j] = col[i];
        }
        UNROLL for (int i = 0; i < P; i++) { /* Z = t A^T, per row */
            conv_winograd_a(m, v, t + i * m, 1);
            UNROLL for (int j = 0; j < P; j++) vstore(Z + (size_t)(i * P + j) * ldm + f, v[j]);
        }
    }
}

/* t[0..3) = G^T v[0..P): the columns of G applied to one column or row. */
INLINE void conv_winograd_gt(const int m, vf *t, const vf *v)
{
    if (m == 2) {
        const vf half = splat(0.5f);
        t[0] = v[0] + half * (v[1] + v[2]);
        t[1] = half * (v[1] - v[2]);
        t[2] = half * (v[1] + v[2]) + v[3];
    } else {
        const vf sixth = splat(1.0f / 6.0f);
        t[0] = splat(0.25f) * v[0] - (v[1] + v[2]) * sixth + (v[3] + v[4]) * splat(1.0f / 24.0f);
        t[1] = (v[2] - v[1]) * sixth + (v[3] - v[4]) * splat(1.0f / 12.0f);
        t[2] = (v[3] + v[4] - v[1] - v[2]) * sixth + v[5];
    }
}

/* dk[a][b][c][f..f+VL) += (G^T dU G)[a][b] for the channels f.. of one c. */
INLINE void conv_winograd_dk_finish(const int m, float *dk, const float *dU, int C, int F, int ldo,
                                    int c, int f)
{
    const int P = conv_winograd_p(m), NP = P * P, lanes = F - f < VL ? F - f : VL;
    vf u[36], t[18], r[3];
    UNROLL36 for (int xi = 0; xi < NP; xi++) u[xi] = vload(dU + ((size_t)xi * C + c) * ldo + f);
    UNROLL for (int j = 0; j < P; j++) { /* t = G^T u, per column */
        vf col[6], tc[3];
        UNROLL for (int i = 0; i < P; i++) col[i] = u[i * P + j];
        conv_winograd_gt(m, tc, col);
        UNROLL for (int a = 0; a < 3; a++) t[a * P + j] = tc[a];
    }
    UNROLL for (int a = 0; a < 3; a++) { /* dk = t G, per row */
        conv_winograd_gt(m, r, t + a * P);
        UNROLL for (int b = 0; b < 3; b++) {
            float *o = dk + ((size_t)(a * 3 + b) * C + c) * F + f;
            if (lanes == VL) {
                vstore(o, vload(o) + r[b]);
            } else {
                float tmp[VL];
                vstore(tmp, r[b]);
                for (int e = 0; e < lanes; e++) o[e] += tmp[e];
            }
        }
    }
}

/* One thread's slice of dU: rows [c0, c1) and columns [f0, f1) of every
 * dU[xi], c0 and f0 multiples of VL, c1 <= C, f1 <= F rounded up. */
typedef struct {
    int c0, c1, f0, f1;
    int carry_v, carry_z; /* writes its part of V, Z into the carry slot */
} conv_winograd_slice;

/* Slice id of nth: the wider of C and F is cut into whole vectors, one run
 * per thread (none for some threads when there are fewer vectors than
 * threads); every thread transforms the other operand whole, and the last
 * thread, whose run is never empty, carries it. */
static conv_winograd_slice conv_winograd_dk_slice(int C, int F, int id, int nth)
{
    const int nc = (C + VL - 1) / VL, nf = (F + VL - 1) / VL;
    conv_winograd_slice s = {0, C, 0, nf * VL, id == nth - 1, id == nth - 1};
    if (nf >= nc) {
        s.f0 = nf * id / nth * VL;
        s.f1 = nf * (id + 1) / nth * VL;
        s.carry_z = 1;
    } else {
        s.c0 = nc * id / nth * VL;
        s.c1 = nc * (id + 1) / nth * VL < C ? nc * (id + 1) / nth * VL : C;
        s.carry_v = 1;
    }
    return s;
}

/* The first n tiles of every xi of one slice, between the slot and the
 * carry slot (to_slot: carry into slot). */
static void conv_winograd_dk_carry(int m, float *carry, float *slot, long n, int ldi, int ldo,
                                   const conv_winograd_slice *s, int to_slot)
{
    const int NP = conv_winograd_np(m), TB = conv_winograd_tb(m);
    for (int part = 0; part < 2; part++) {
        const int ld = part ? ldo : ldi, a = part ? s->f0 : s->c0, b = part ? s->f1 : s->c1;
        const size_t off = part ? (size_t)NP * TB * ldi : 0;
        if (b <= a || !(to_slot || (part ? s->carry_z : s->carry_v))) continue;
        for (int xi = 0; xi < NP; xi++)
            for (long t = 0; t < n; t++) {
                const size_t at = off + ((size_t)xi * TB + (size_t)t) * ld + (size_t)a;
                memcpy(to_slot ? slot + at : carry + at, to_slot ? carry + at : slot + at,
                       (size_t)(b - a) * sizeof *slot);
            }
    }
}

/* One thread's slice of the sum over the tiles [ta, tb) of a batch of
 * `tiles`, in its own scratch slot: each block's tiles transformed (the
 * slice's channels of x and of dz), then dU[xi] += V[xi]^T Z[xi] on the
 * slice, block after block. A block the chunk's end cuts short goes to the
 * carry slot; the one before ta is already in the slot. in->x and dz
 * (nb, OH, OW, F) hold the samples from n0. m is a constant at each call. */
INLINE void conv_winograd_dk_run(const int m, float *dU, float *carry, float *slot, long ta, long tb,
                                 long tiles, const conv_winograd_src *in, const float *dz, long n0,
                                 const nn_conv_geom *g, int F, const conv_winograd_slice *s)
{
    const int C = g->C, OH = g->OH, OW = g->OW, NP = conv_winograd_np(m), TB = conv_winograd_tb(m);
    const int ldi = conv_winograd_round_up(C, VL), ldo = conv_winograd_round_up(F, VL);
    float *V = slot, *Z = slot + (size_t)NP * TB * ldi;
    if (s->c1 <= s->c0 || s->f1 <= s->f0) return;
    const int fend = F < s->f1 ? F : s->f1; /* the slice's columns of dz */
    for (long b0 = ta - ta % TB; b0 < tb; b0 += TB) {
        const long b1 = b0 + TB < tb ? b0 + TB : tb;
        for (long t = b0 > ta ? b0 : ta; t < b1; t++) {
            long n;
            int i0, j0;
            conv_winograd_tile_origin(m, t, OH, OW, &n, &i0, &j0);
            n -= n0;
            const float *z[16];
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++)
                    z[i * m + j] = i0 + i < OH && j0 + j < OW
                                       ? dz + (((size_t)n * OH + i0 + i) * OW + j0 + j) * F + s->f0
                                       : NULL;
            const size_t pos = (size_t)(t - b0);
            conv_winograd_input_patch(m, V + pos * ldi, (size_t)TB * ldi, in, n, i0 + in->oy,
                                      j0 + in->ox, C, s->c0, s->c1);
            conv_winograd_dz_tile(m, Z + pos * ldo + s->f0, (size_t)TB * ldo, z, fend - s->f0,
                                  s->f1 - s->f0);
        }
        if (b1 - b0 < TB && b1 < tiles) {
            conv_winograd_dk_carry(m, carry, slot, b1 - b0, ldi, ldo, s, 0);
            break;
        }
        for (int xi = 0; xi < NP; xi++)
            nn_conv_gemm_tn_add(dU + ((size_t)xi * C + s->c0) * ldo + s->f0, (size_t)ldo,
                                s->c1 - s->c0, s->f1 - s->f0, V + (size_t)xi * TB * ldi + s->c0,
                                (size_t)ldi, (int)(b1 - b0), Z + (size_t)xi * TB * ldo + s->f0,
                                (size_t)ldo);
    }
}

void nn_conv_winograd_dk_begin(int m, float *part, const nn_conv_geom *g, int F)
{
    memset(part, 0, conv_winograd_dU_floats(m, g->C, F) * sizeof *part);
}

/* Slice id of nth threads, in slot id of scratch. */
static void conv_winograd_dk_thread(int m, float *part, const conv_winograd_src *src,
                                    const float *dz, const nn_conv_geom *g, long ta, long tb,
                                    long tiles, long n0, int F, float *scratch, int id, int nth)
{
    const int ldi = conv_winograd_round_up(g->C, VL), ldo = conv_winograd_round_up(F, VL);
    const int TB = conv_winograd_tb(m);
    const conv_winograd_slice s = conv_winograd_dk_slice(g->C, F, id, nth);
    float *carry = part + conv_winograd_dU_floats(m, g->C, F);
    float *slot = scratch + (size_t)id * conv_winograd_slot_floats(m, ldi, ldo);
    float *zero = slot + (size_t)conv_winograd_np(m) * TB * (ldi + ldo);
    conv_winograd_src xs = *src, *x = &xs;
    if (xs.pt || xs.pb || xs.pl || xs.pr) {
        memset(zero, 0, (size_t)ldi * sizeof *zero);
        xs.zero = zero;
    }
    if (ta % TB) {
        /* The block before ta from the carry slot, which this chunk's last
         * block may overwrite: no thread starts before all have read it. */
        if (s.c1 > s.c0 && s.f1 > s.f0) conv_winograd_dk_carry(m, carry, slot, ta % TB, ldi, ldo, &s, 1);
        if (nth > 1) {
            #pragma omp barrier
        }
    }
    if (m == 4)
        conv_winograd_dk_run(4, part, carry, slot, ta, tb, tiles, x, dz, n0, g, F, &s);
    else
        conv_winograd_dk_run(2, part, carry, slot, ta, tb, tiles, x, dz, n0, g, F, &s);
}

/* nn_conv_winograd_dk_add on any conv_winograd_src. */
static void conv_winograd_dk_add_in(int m, float *part, const conv_winograd_src *x,
                                    const float *dz, const nn_conv_geom *g, int N, int n0, int nb,
                                    int F, float *scratch, int slots)
{
    const long per = conv_winograd_tile_count(m, 1, g->OH, g->OW);
    const long ta = per * n0, tb = per * (n0 + nb);
    if (tb <= ta) return;
    /* Small sums run on the calling thread (see nn_conv_winograd). The
     * threads never wait for each other: each owns its slice of dU from the
     * first tile to the last. */
    const double macs = (double)(tb - ta) * m * m * 9 * g->C * F;
    if (slots <= 1 || macs < WINOGRAD_PAR_MIN_MACS) {
        conv_winograd_dk_thread(m, part, x, dz, g, ta, tb, per * N, n0, F, scratch, 0, 1);
        return;
    }
    #pragma omp parallel num_threads(slots)
    {
#ifdef _OPENMP
        const int id = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int id = 0, nth = 1;
#endif
        conv_winograd_dk_thread(m, part, x, dz, g, ta, tb, per * N, n0, F, scratch, id, nth);
    }
}

void nn_conv_winograd_dk_add(int m, float *part, const float *x, const float *dz,
                             const nn_conv_geom *g, int N, int n0, int nb, int F, float *scratch,
                             int slots)
{
    const conv_winograd_src in = {x, g->Hp, g->Wp, 0, 0, 0, 0, 0, 0, NULL};
    conv_winograd_dk_add_in(m, part, &in, dz, g, N, n0, nb, F, scratch, slots);
}

void nn_conv_winograd_dk_end(int m, float *dk, const float *part, const nn_conv_geom *g, int F)
{
    const int C = g->C, ldo = conv_winograd_round_up(F, VL);
    #pragma omp parallel for schedule(static) if ((size_t)C * F > 1024)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f += VL) {
            if (m == 4)
                conv_winograd_dk_finish(4, dk, part, C, F, ldo, c, f);
            else
                conv_winograd_dk_finish(2, dk, part, C, F, ldo, c, f);
        }
}

void nn_conv_winograd_dk(int m, float *dk, const float *x, const float *dz, const nn_conv_geom *g,
                         int N, int F, float *part, float *scratch, int slots)
{
    const conv_winograd_src in = {x, g->H, g->W, -g->PT, -g->PL, g->PT, g->Hp - g->H - g->PT,
                                  g->PL, g->Wp - g->W - g->PL, NULL};
    nn_conv_winograd_dk_begin(m, part, g, F);
    conv_winograd_dk_add_in(m, part, &in, dz, g, N, 0, N, F, scratch, slots);
    nn_conv_winograd_dk_end(m, dk, part, g, F);
}
