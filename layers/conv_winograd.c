/* conv_winograd: 3x3 stride-1 convolutions by Winograd's minimal filtering
 * algorithm F(2x2, 3x3), NHWC.
 *
 * A 2x2 block of outputs of a 3x3 window reads a 4x4 patch d of the input.
 * With the transforms (Lavin and Gray, 2015)
 *     U = G g G^T   (kernel, 4x4 per input/output channel pair)
 *     V = B^T d B   (patch, 4x4 per input channel)
 *     y = A^T [ sum_c U[c] (.) V[c] ] A
 * the 16 positions xi of the 4x4 domain are independent, so the sum over
 * channels becomes 16 GEMMs, M[xi] (tiles, Cout) = V[xi] (tiles, Cin)
 * U[xi] (Cin, Cout): 16 multiplies per 4 outputs instead of 36, 2.25x fewer.
 * The transforms cost a few additions per value and no extra pass over
 * memory: tiles are processed in blocks of TB whose V and M (16 x TB x C
 * each) stay in the L2 cache, gathered from the image and scattered back
 * to the output by the thread that computes the block.
 *
 * Used for the forward (x with the kernel), for dx (dz with the flipped,
 * transposed kernel, zero outside dz: a "full" correlation) and, with the
 * roles transposed (F(3x3, 2x2), at the end of the file), for the kernel
 * gradient of conv2d layers with 3x3 windows, stride 1 and dilation 1.
 * Rounding differs from the direct sums (conv_reference.c) by a few ulps
 * (the transforms add and subtract neighbours), well inside the PyTorch
 * fixtures' tolerance.
 *
 * Determinism: every output is computed by one tile whose sums run in an
 * order fixed by the shapes, and the kernel gradient's sum over tiles runs
 * in fixed groups combined in order, so the result is the same for any
 * thread count.
 *
 * Omits: larger tiles (F(4x4, 3x3) saves more multiplies but loses about
 * two more digits of precision), other window sizes, strides, dilation.
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
 * enough that V, M and U stay in a 1 MB L2 for 64 channels each way. */
#define TB 48
/* Below this many multiply-adds nn_conv_winograd runs serially (as
 * CONV_GEMM_PAR_MIN_MACS in conv_gemm.c). */
#define WINOGRAD_PAR_MIN_MACS 16777216.0

/* The transforms' 16-value arrays must live in registers: unroll fully. */
#define UNROLL16 _Pragma("GCC unroll 16")

static int conv_winograd_round_up(int n, int m) { return (n + m - 1) / m * m; }

int nn_conv_winograd_fits(const nn_conv_geom *g)
{
    return g->KH == 3 && g->KW == 3 && g->SH == 1 && g->SW == 1 && g->DH == 1 && g->DW == 1;
}

int nn_conv_winograd_applies(const nn_conv_geom *g, int F)
{
    /* Below 8 channels the GEMMs are too thin for the transforms to pay. */
    return nn_conv_winograd_fits(g) && g->C >= 8 && F >= 8;
}

size_t nn_conv_winograd_kernel_size(int Cin, int Cout)
{
    return (size_t)16 * Cin * conv_winograd_round_up(Cout, VL);
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
 * (16, TB, ldi) and then its products or transformed dz (16, TB, ldo). */
static size_t conv_winograd_slot_floats(int ldi, int ldo)
{
    return (size_t)16 * TB * (size_t)(ldi + ldo);
}

static float *conv_winograd_thread_slot(float *scratch, int ldi, int ldo)
{
#ifdef _OPENMP
    return scratch + (size_t)omp_get_thread_num() * conv_winograd_slot_floats(ldi, ldo);
#else
    (void)ldi;
    (void)ldo;
    return scratch;
#endif
}

size_t nn_conv_winograd_scratch_size(int slots, int Cin, int Cout)
{
    const int ldi = conv_winograd_round_up(Cin, VL), ldo = conv_winograd_round_up(Cout, VL);
    return (size_t)slots * conv_winograd_slot_floats(ldi, ldo);
}

/* Tiles are 2x2 output blocks, numbered over (N, TH, TW) with TH, TW the
 * output's size in blocks. */
static long conv_winograd_tile_count(int N, int OH, int OW)
{
    return (long)N * ((OH + 1) / 2) * ((OW + 1) / 2);
}

/* Tile t: sample *n and top-left output pixel (*i0, *j0). */
INLINE void conv_winograd_tile_origin(long t, int OH, int OW, long *n, int *i0, int *j0)
{
    const long TH = (OH + 1) / 2, TW = (OW + 1) / 2, r = t % (TH * TW);
    *n = t / (TH * TW);
    *i0 = (int)(r / TW) * 2;
    *j0 = (int)(r % TW) * 2;
}

/* ---- the kernel transform: U[xi][ci][co] = (G g G^T)[xi] ---- */

void nn_conv_winograd_kernel(float *U, const float *k, int C, int F, int flip)
{
    /* k is (3, 3, C, F). Forward: ci = c, co = f, g[a][b] = k[a][b][c][f].
     * dx (flip): ci = f, co = c, g[a][b] = k[2-a][2-b][c][f]. */
    const int Cin = flip ? F : C, Cout = flip ? C : F, ld = conv_winograd_round_up(Cout, VL);
    /* Serial up to 128x128 channels: the transform is about 100 flops per
     * pair, less than a parallel region is worth. */
    #pragma omp parallel for schedule(static) if ((size_t)Cin * ld > 16384)
    for (int ci = 0; ci < Cin; ci++)
        for (int co = 0; co < ld; co++) {
            float u[16] = {0};
            if (co < Cout) {
                const int c = flip ? co : ci, f = flip ? ci : co;
                float g[3][3], t[4][3];
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++) {
                        const int ka = flip ? 2 - a : a, kb = flip ? 2 - b : b;
                        g[a][b] = k[((size_t)(ka * 3 + kb) * C + c) * F + f];
                    }
                for (int b = 0; b < 3; b++) { /* t = G g */
                    t[0][b] = g[0][b];
                    t[1][b] = 0.5f * (g[0][b] + g[1][b] + g[2][b]);
                    t[2][b] = 0.5f * (g[0][b] - g[1][b] + g[2][b]);
                    t[3][b] = g[2][b];
                }
                for (int a = 0; a < 4; a++) { /* u = t G^T */
                    u[a * 4 + 0] = t[a][0];
                    u[a * 4 + 1] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
                    u[a * 4 + 2] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
                    u[a * 4 + 3] = t[a][2];
                }
            }
            for (int xi = 0; xi < 16; xi++) U[((size_t)xi * Cin + ci) * ld + co] = u[xi];
        }
}

/* ---- the input transform of one tile: V[xi][c] = (B^T d B)[xi] ----
 * d[i][j] is the patch row i, column j: a pointer to its channels, or NULL
 * outside the image (zero). V rows are `ldv` apart per xi. */
INLINE void conv_winograd_input_transform(float *V, size_t ldv, int c, const vf p[16])
{
    vf r[16];
    UNROLL for (int j = 0; j < 4; j++) { /* r = B^T p, per column */
        r[0 * 4 + j] = p[0 * 4 + j] - p[2 * 4 + j];
        r[1 * 4 + j] = p[1 * 4 + j] + p[2 * 4 + j];
        r[2 * 4 + j] = p[2 * 4 + j] - p[1 * 4 + j];
        r[3 * 4 + j] = p[1 * 4 + j] - p[3 * 4 + j];
    }
    UNROLL for (int i = 0; i < 4; i++) { /* V = r B, per row */
        vstore(V + (size_t)(i * 4 + 0) * ldv + c, r[i * 4 + 0] - r[i * 4 + 2]);
        vstore(V + (size_t)(i * 4 + 1) * ldv + c, r[i * 4 + 1] + r[i * 4 + 2]);
        vstore(V + (size_t)(i * 4 + 2) * ldv + c, r[i * 4 + 2] - r[i * 4 + 1]);
        vstore(V + (size_t)(i * 4 + 3) * ldv + c, r[i * 4 + 1] - r[i * 4 + 3]);
    }
}

/* V rows hold Cin rounded up to whole vectors, so the last channels are
 * transformed as one vector zero-padded past Cin. */
INLINE void conv_winograd_input_tile_any(float *V, size_t ldv, const float *const d[16], int Cin,
                                         const int full)
{
    int c = 0;
    for (; c + VL <= Cin; c += VL) {
        vf p[16];
        UNROLL16 for (int i = 0; i < 16; i++) p[i] = full || d[i] ? vload(d[i] + c) : (vf){0};
        conv_winograd_input_transform(V, ldv, c, p);
    }
    if (c < Cin) {
        vf p[16];
        for (int i = 0; i < 16; i++) p[i] = full || d[i] ? vload_part(d[i] + c, Cin - c) : (vf){0};
        conv_winograd_input_transform(V, ldv, c, p);
    }
}

/* The 4x4 patch at rows i0.., columns j0.. of sample n of x (N, H, W, Cin),
 * zero outside x. Inside x (most tiles) the loads need no test. */
INLINE void conv_winograd_input_patch(float *V, size_t ldv, const float *x, long n, int i0, int j0,
                                      int H, int W, int Cin)
{
    const float *d[16];
    const int full = i0 >= 0 && j0 >= 0 && i0 + 4 <= H && j0 + 4 <= W;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            const int u = i0 + i, v = j0 + j;
            d[i * 4 + j] = full || (u >= 0 && u < H && v >= 0 && v < W)
                               ? x + (((size_t)n * H + u) * W + v) * Cin
                               : NULL;
        }
    if (full)
        conv_winograd_input_tile_any(V, ldv, d, Cin, 1);
    else
        conv_winograd_input_tile_any(V, ldv, d, Cin, 0);
}

/* ---- the output transform of one tile: y = A^T m A (+ bias, ReLU) ----
 * M rows `ldm` apart per xi; o[r][s] points at output pixel (r, s) of the
 * 2x2 block, or is NULL outside the output. */
INLINE void conv_winograd_output_tile(float *const o[4], const float *M, size_t ldm, int Cout,
                                      const float *bias, int relu, int add)
{
    for (int c = 0; c < Cout; c += VL) {
        vf m[16], s[8], y[4];
        UNROLL16 for (int i = 0; i < 16; i++) m[i] = vload(M + (size_t)i * ldm + c);
        UNROLL for (int j = 0; j < 4; j++) { /* s = A^T m, per column */
            s[0 * 4 + j] = m[0 * 4 + j] + m[1 * 4 + j] + m[2 * 4 + j];
            s[1 * 4 + j] = m[1 * 4 + j] - m[2 * 4 + j] - m[3 * 4 + j];
        }
        UNROLL for (int i = 0; i < 2; i++) { /* y = s A, per row */
            y[i * 2 + 0] = s[i * 4 + 0] + s[i * 4 + 1] + s[i * 4 + 2];
            y[i * 2 + 1] = s[i * 4 + 1] - s[i * 4 + 2] - s[i * 4 + 3];
        }
        const int left = Cout - c;
        UNROLL for (int q = 0; q < 4; q++) {
            if (!o[q]) continue;
            vf t = y[q];
            if (bias) t += vload(bias + c);
            if (relu) t = (vf)((vi)t & (t > (vf){0}));
            if (left >= VL) {
                if (add) t += vload(o[q] + c);
                vstore(o[q] + c, t);
            } else {
                float part[VL];
                vstore(part, t);
                for (int e = 0; e < left; e++) o[q][c + e] = add ? o[q][c + e] + part[e] : part[e];
            }
        }
    }
}

void nn_conv_winograd(float *y, int OH, int OW, int Cout, const float *x, int H, int W, int Cin,
                      int oy, int ox, int N, const float *U, const float *bias, int relu, int add,
                      float *scratch, int slots)
{
    const long tiles = conv_winograd_tile_count(N, OH, OW), blocks = (tiles + TB - 1) / TB;
    const int ldi = conv_winograd_round_up(Cin, VL), ldo = conv_winograd_round_up(Cout, VL);
    /* Small convolutions (a batch-1 prediction) run on the calling thread,
     * in slot 0, with the same blocks: the multiply-adds of the direct
     * convolution, against the threshold conv_gemm.c uses. */
    const double macs = (double)tiles * 4 * 9 * Cin * Cout;
    #pragma omp parallel for schedule(static) num_threads(slots) if (macs >= WINOGRAD_PAR_MIN_MACS)
    for (long bk = 0; bk < blocks; bk++) {
        float *V = conv_winograd_thread_slot(scratch, ldi, ldo), *M = V + (size_t)16 * TB * ldi;
        const long t0 = bk * TB, t1 = t0 + TB < tiles ? t0 + TB : tiles;
        const int nt = (int)(t1 - t0);
        for (long t = t0; t < t1; t++) {
            long n;
            int i0, j0;
            conv_winograd_tile_origin(t, OH, OW, &n, &i0, &j0);
            conv_winograd_input_patch(V + (size_t)(t - t0) * ldi, (size_t)TB * ldi, x, n, i0 + oy,
                                      j0 + ox, H, W, Cin);
        }
        for (int xi = 0; xi < 16; xi++)
            nn_conv_gemm(M + (size_t)xi * TB * ldo, (size_t)ldo, nt, ldo, V + (size_t)xi * TB * ldi,
                         (size_t)ldi, Cin, U + (size_t)xi * Cin * ldo, (size_t)ldo);
        for (long t = t0; t < t1; t++) {
            long n;
            int i0, j0;
            conv_winograd_tile_origin(t, OH, OW, &n, &i0, &j0);
            float *o[4];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    o[i * 2 + j] = i0 + i < OH && j0 + j < OW
                                       ? y + (((size_t)n * OH + i0 + i) * OW + j0 + j) * Cout
                                       : NULL;
            conv_winograd_output_tile(o, M + (size_t)(t - t0) * ldo, (size_t)TB * ldo, Cout, bias,
                                      relu, add);
        }
    }
}

/* ---- the kernel gradient: F(3x3, 2x2) ----
 * Transposing the forward's algorithm, for one tile (a 2x2 block z of dz
 * and the 4x4 patch d of x its windows read):
 *     dk (3x3) += G^T [ (A z A^T) (.) (B^T d B) ] G
 * so per xi the sum over tiles and channels is a GEMM again, with the
 * reduction running over tiles: dU[xi] (Cin, Cout) += V[xi]^T Z[xi]. */

/* Groups of tile blocks whose partial sums are combined in group order:
 * fixed by the shapes alone, never by the thread count. */
static long conv_winograd_dk_groups(long blocks)
{
    return blocks < 16 ? (blocks ? blocks : 1) : 16;
}

static long conv_winograd_tile_blocks(const nn_conv_geom *g, int N)
{
    return (conv_winograd_tile_count(N, g->OH, g->OW) + TB - 1) / TB;
}

size_t nn_conv_winograd_dk_size(const nn_conv_geom *g, int N, int F)
{
    const long G = conv_winograd_dk_groups(conv_winograd_tile_blocks(g, N));
    return (size_t)G * 16 * g->C * conv_winograd_round_up(F, VL);
}

/* Z[xi][f] = (A z A^T)[xi] for the 2x2 block z[r][s] (NULL: outside dz),
 * f < F; zero for f in [F, ldz). Rows of Z are `ldm` apart per xi. */
INLINE void conv_winograd_dz_tile(float *Z, size_t ldm, const float *const z[4], int F, int ldz)
{
    for (int f = 0; f < ldz; f += VL) { /* ldz is F rounded up to whole vectors */
        vf q[4], t[8];
        UNROLL for (int i = 0; i < 4; i++)
            q[i] = !z[i] ? (vf){0} : F - f >= VL ? vload(z[i] + f) : vload_part(z[i] + f, F - f);
        UNROLL for (int j = 0; j < 2; j++) { /* t = A q, per column */
            t[0 * 2 + j] = q[0 * 2 + j];
            t[1 * 2 + j] = q[0 * 2 + j] + q[1 * 2 + j];
            t[2 * 2 + j] = q[0 * 2 + j] - q[1 * 2 + j];
            t[3 * 2 + j] = -q[1 * 2 + j];
        }
        UNROLL for (int i = 0; i < 4; i++) { /* Z = t A^T, per row */
            vstore(Z + (size_t)(i * 4 + 0) * ldm + f, t[i * 2 + 0]);
            vstore(Z + (size_t)(i * 4 + 1) * ldm + f, t[i * 2 + 0] + t[i * 2 + 1]);
            vstore(Z + (size_t)(i * 4 + 2) * ldm + f, t[i * 2 + 0] - t[i * 2 + 1]);
            vstore(Z + (size_t)(i * 4 + 3) * ldm + f, -t[i * 2 + 1]);
        }
    }
}

void nn_conv_winograd_dk(float *dk, const float *x, const float *dz, const nn_conv_geom *g, int N,
                         int F, float *part, float *scratch, int slots)
{
    const int C = g->C, Hp = g->Hp, Wp = g->Wp, OH = g->OH, OW = g->OW;
    const int ldi = conv_winograd_round_up(C, VL), ldo = conv_winograd_round_up(F, VL);
    const long tiles = conv_winograd_tile_count(N, OH, OW);
    const long blocks = conv_winograd_tile_blocks(g, N), G = conv_winograd_dk_groups(blocks);
    const size_t per_group = (size_t)16 * C * ldo;
    #pragma omp parallel for schedule(static) num_threads(slots)
    for (long gi = 0; gi < G; gi++) {
        float *V = conv_winograd_thread_slot(scratch, ldi, ldo), *Z = V + (size_t)16 * TB * ldi;
        float *dU = part + (size_t)gi * per_group;
        memset(dU, 0, per_group * sizeof *dU);
        for (long bk = blocks * gi / G; bk < blocks * (gi + 1) / G; bk++) {
            const long t0 = bk * TB, t1 = t0 + TB < tiles ? t0 + TB : tiles;
            for (long t = t0; t < t1; t++) {
                long n;
                int i0, j0;
                conv_winograd_tile_origin(t, OH, OW, &n, &i0, &j0);
                const float *z[4];
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        z[i * 2 + j] = i0 + i < OH && j0 + j < OW
                                           ? dz + (((size_t)n * OH + i0 + i) * OW + j0 + j) * F
                                           : NULL;
                conv_winograd_input_patch(V + (size_t)(t - t0) * ldi, (size_t)TB * ldi, x, n, i0,
                                          j0, Hp, Wp, C);
                conv_winograd_dz_tile(Z + (size_t)(t - t0) * ldo, (size_t)TB * ldo, z, F, ldo);
            }
            for (int xi = 0; xi < 16; xi++)
                nn_conv_gemm_tn_add(dU + (size_t)xi * C * ldo, (size_t)ldo, C, ldo,
                                    V + (size_t)xi * TB * ldi, (size_t)ldi, (int)(t1 - t0),
                                    Z + (size_t)xi * TB * ldo, (size_t)ldo);
        }
    }
    /* Groups combine in order; then dk += G^T dU G per channel pair. */
    #pragma omp parallel for schedule(static) if ((size_t)C * F > 1024)
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++) {
            float u[16], t[3][4];
            for (int xi = 0; xi < 16; xi++) {
                const size_t at = ((size_t)xi * C + c) * ldo + f;
                float s = part[at];
                for (long gi = 1; gi < G; gi++) s += part[(size_t)gi * per_group + at];
                u[xi] = s;
            }
            for (int j = 0; j < 4; j++) { /* t = G^T u, per column */
                t[0][j] = u[0 * 4 + j] + 0.5f * (u[1 * 4 + j] + u[2 * 4 + j]);
                t[1][j] = 0.5f * (u[1 * 4 + j] - u[2 * 4 + j]);
                t[2][j] = 0.5f * (u[1 * 4 + j] + u[2 * 4 + j]) + u[3 * 4 + j];
            }
            for (int a = 0; a < 3; a++) { /* dk = t G, per row */
                float *o = dk + ((size_t)a * 3 * C + c) * F + f;
                o[0] += t[a][0] + 0.5f * (t[a][1] + t[a][2]);
                o[(size_t)C * F] += 0.5f * (t[a][1] - t[a][2]);
                o[(size_t)2 * C * F] += 0.5f * (t[a][1] + t[a][2]) + t[a][3];
            }
        }
}
