/* conv_gemm: the convolution's arithmetic as register-blocked GEMM tiles
 * that read their operands straight from NHWC tensors (an implicit GEMM:
 * no column matrix is built). See conv_gemm.h for the shapes.
 *
 * Every product here has the form
 *     out[r][f] (+)= sum_t a[r][t] * b[t][f]
 * where row r is a pixel (forward, dx) or a kernel row (dkernel), f runs
 * over whole vectors, and a[r][t] is read as a broadcast from the tensor
 * itself. A tile keeps R rows x V vectors of accumulators in registers
 * (6 x 4 x 16 floats with AVX-512: 24 of the 32 registers) while t runs
 * over the whole reduction, so every loaded vector of b feeds R FMAs and
 * every broadcast V. The reduction is walked in "segments" (one per kernel
 * row, or per kernel element with dilation): inside a segment both operands
 * are contiguous.
 *
 * Why not im2col + cblas_sgemm: the column matrix costs a write and a read
 * of KH*KW times the input, and OpenBLAS splits long reductions (dkernel's
 * sum over all pixels) into blocks whose size depends on the thread count,
 * so its results change with OMP_NUM_THREADS. Here each output element is
 * summed by one thread in an order fixed by the shapes alone; dkernel's sum
 * over pixels runs in fixed groups of rows combined in group order.
 * The direct loops these tiles must agree with are in conv_reference.c.
 *
 * Vector width: see conv_simd.h.
 */
#include "layers/conv_gemm.h"

#include <string.h>

#include "layers/conv_simd.h"

#if VL == 16
#define VMAX 4 /* vectors per tile; rows per tile from conv_gemm_tile_rows() */
#else
#define VMAX 2
#endif
#define RMAX 8
/* Below this many multiply-adds a forward or dx convolution runs on the
 * calling thread (a batch-1 prediction's layers are all below, a training
 * batch's are far above): about 1 ms on one core, where a parallel region
 * would cost more than it saves, and with another busy process on the
 * machine its second thread may wait a whole time slice. Every output
 * element is summed the same way on any number of threads. */
#define CONV_GEMM_PAR_MIN_MACS 16777216.0

/* The samples whose multiply-adds are weighed against it: a chunk of a
 * batch (channels_first) runs in parallel when the batch would. */
static int conv_gemm_par_n(const nn_conv_geom *g, int N) { return g->par_n > N ? g->par_n : N; }

/* Rows per tile for V vectors: as many accumulators as the registers hold
 * next to V loaded vectors and one broadcast. */
INLINE int conv_gemm_tile_rows(int V)
{
#if VL == 16
    return V == 4 ? 6 : 8;
#else
    return V == 2 ? 6 : 8;
#endif
}

int nn_conv_vector_width(void) { return VL; }

/* Rows per block of the bias-gradient sums (fixed: the blocking decides the
 * summation order). */
#define DB_ROWS 256

size_t nn_conv_db_scratch(size_t rows, int F)
{
    const size_t blocks = (rows + DB_ROWS - 1) / DB_ROWS;
    return (blocks ? blocks : 1) * (size_t)((F + VL - 1) / VL * VL);
}

void nn_conv_dz_pass(float *dz, const float *y, float *db, float *part, size_t rows, int F)
{
    if (!y && !db) return;
    const int Fp = (F + VL - 1) / VL * VL, nv = F / VL;
    const size_t blocks = (rows + DB_ROWS - 1) / DB_ROWS;
    #pragma omp parallel for schedule(static) if (rows * (size_t)F > 65536)
    for (size_t bk = 0; bk < blocks; bk++) {
        float *p = db ? part + bk * Fp : NULL;
        if (p) memset(p, 0, (size_t)Fp * sizeof *p);
        const size_t r1 = (bk + 1) * DB_ROWS < rows ? (bk + 1) * DB_ROWS : rows;
        for (size_t r = bk * DB_ROWS; r < r1; r++) {
            float *d = dz + r * F;
            const float *yr = y ? y + r * F : NULL;
            for (int v = 0; v < nv; v++) {
                vf x = vload(d + v * VL);
                if (yr) {
                    x = (vf)((vi)x & (vload(yr + v * VL) > (vf){0}));
                    vstore(d + v * VL, x);
                }
                if (p) vstore(p + v * VL, vload(p + v * VL) + x);
            }
            for (int f = nv * VL; f < F; f++) {
                float x = d[f];
                if (yr) d[f] = x = yr[f] > 0.0f ? x : 0.0f;
                if (p) p[f] += x;
            }
        }
    }
    if (!db) return;
    /* Blocks combine in order, in double. */
    for (int f = 0; f < F; f++) {
        double sum = 0.0;
        for (size_t bk = 0; bk < blocks; bk++) sum += part[bk * Fp + f];
        db[f] += (float)sum;
    }
}

/* The accumulators of an R x V tile (R rows of V vectors), and the steps
 * every GEMM-shaped kernel here takes on them. */
INLINE void conv_gemm_tile_zero(vf acc[RMAX][VMAX], const int R, const int V)
{
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int v = 0; v < V; v++) acc[r][v] = (vf){0};
}

/* acc[r] += a[r * as] * (the V vectors at b), for r < rr: one rank-1
 * update, the broadcast operand a column of the left-hand side. */
INLINE void conv_gemm_tile_fma(vf acc[RMAX][VMAX], const float *restrict a, size_t as,
                               const float *restrict b, int rr, const int R, const int V)
{
    vf bv[VMAX];
    UNROLL for (int v = 0; v < V; v++) bv[v] = vload(b + v * VL);
    UNROLL for (int r = 0; r < R; r++) {
        if (r < rr) {
            const vf x = splat(a[r * as]);
            UNROLL for (int v = 0; v < V; v++) acc[r][v] = vfma(x, bv[v], acc[r][v]);
        }
    }
}

/* out[r] += acc[r] for r < rr, rows ldo apart. */
INLINE void conv_gemm_tile_add_to(float *restrict out, size_t ldo, vf acc[RMAX][VMAX], int rr,
                                  const int R, const int V)
{
    UNROLL for (int r = 0; r < R; r++) {
        if (r >= rr) break;
        UNROLL for (int v = 0; v < V; v++) {
            float *o = out + r * ldo + v * VL;
            vstore(o, vload(o) + acc[r][v]);
        }
    }
}

/* Runs CALL(rows, V) for a tile of V vectors and rr rows, R =
 * conv_gemm_tile_rows(V) rows when full: each (rows, V) pair is its own
 * unrolled kernel, and full tiles get the constant row count, so their row
 * test folds away. */
#define TILE_RUN(CALL, rr, V)                                                      \
    if ((rr) == conv_gemm_tile_rows(V)) CALL(conv_gemm_tile_rows(V), V);          \
    else CALL(rr, V)
#if VMAX >= 4
#define TILE_CASES_WIDE(CALL, rr)                                                  \
    case 4: TILE_RUN(CALL, rr, 4); break;                                          \
    case 3: TILE_RUN(CALL, rr, 3); break;
#else
#define TILE_CASES_WIDE(CALL, rr)
#endif
#define TILE_DISPATCH(CALL, V, rr)                                                 \
    switch (V) {                                                                   \
    TILE_CASES_WIDE(CALL, rr)                                                      \
    case 2: TILE_RUN(CALL, rr, 2); break;                                          \
    default: TILE_RUN(CALL, rr, 1); break;                                         \
    }

/* The reduction of one tile: nkh x nkw segments of `run` elements; segment
 * (i, j) starts at a + i*ah + j*aw in a and at row i*bh + j*bw of b. */
typedef struct {
    int nkh, nkw, run;
    size_t ah, aw, bh, bw;
} segs;

/* Eight floats: one register with AVX, two with SSE, half of one with
 * AVX-512 (the compiler splits or narrows the shuffles). */
typedef float conv_gemm_v8 __attribute__((vector_size(8 * sizeof(float))));
#define CONV_GEMM_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)

/* d[j*ldd + i] (+)= s[i*lds + j] for i, j < 8: eight rows loaded, swapped
 * in registers in three rounds of shuffles (pairs of lanes, pairs of pairs,
 * halves), eight rows stored. Named variables rather than arrays, which GCC
 * would keep on the stack. */
INLINE void conv_gemm_t8x8(float *restrict d, size_t ldd, const float *restrict s, size_t lds, int add)
{
    conv_gemm_v8 r0, r1, r2, r3, r4, r5, r6, r7;
    memcpy(&r0, s, sizeof r0);
    memcpy(&r1, s + lds, sizeof r1);
    memcpy(&r2, s + 2 * lds, sizeof r2);
    memcpy(&r3, s + 3 * lds, sizeof r3);
    memcpy(&r4, s + 4 * lds, sizeof r4);
    memcpy(&r5, s + 5 * lds, sizeof r5);
    memcpy(&r6, s + 6 * lds, sizeof r6);
    memcpy(&r7, s + 7 * lds, sizeof r7);
#define LO(a, b) CONV_GEMM_SHUF(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#define HI(a, b) CONV_GEMM_SHUF(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#define LO2(a, b) CONV_GEMM_SHUF(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define HI2(a, b) CONV_GEMM_SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
#define LO4(a, b) CONV_GEMM_SHUF(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
#define HI4(a, b) CONV_GEMM_SHUF(a, b, 4, 5, 6, 7, 12, 13, 14, 15)
    const conv_gemm_v8 t0 = LO(r0, r1), t1 = HI(r0, r1), t2 = LO(r2, r3), t3 = HI(r2, r3);
    const conv_gemm_v8 t4 = LO(r4, r5), t5 = HI(r4, r5), t6 = LO(r6, r7), t7 = HI(r6, r7);
    const conv_gemm_v8 u0 = LO2(t0, t2), u1 = HI2(t0, t2), u2 = LO2(t1, t3), u3 = HI2(t1, t3);
    const conv_gemm_v8 u4 = LO2(t4, t6), u5 = HI2(t4, t6), u6 = LO2(t5, t7), u7 = HI2(t5, t7);
    conv_gemm_v8 o[8] = {LO4(u0, u4), LO4(u1, u5), LO4(u2, u6), LO4(u3, u7),
                         HI4(u0, u4), HI4(u1, u5), HI4(u2, u6), HI4(u3, u7)};
#undef LO
#undef HI
#undef LO2
#undef HI2
#undef LO4
#undef HI4
    UNROLL for (int j = 0; j < 8; j++) {
        float *dj = d + (size_t)j * ldd;
        if (add) {
            conv_gemm_v8 old;
            memcpy(&old, dj, sizeof old);
            o[j] = old + o[j];
        }
        memcpy(dj, &o[j], sizeof o[j]);
    }
}

/* out[r][f] for r < rr, f < nvalid of a tile of R rows x V vectors:
 *   t = sum over segments and j of a[r*pstride + off + j] * b[(row + j)*ldb]
 *   then + bias, ReLU, or + out (add), and stored (ld ldo). */
INLINE void conv_gemm_tile(float *restrict out, size_t ldo, int rr, int nvalid,
                           const float *restrict a, size_t pstride, const segs *s,
                           const float *restrict b, size_t ldb, const float *restrict bias,
                           int relu, int add, const int R, const int V)
{
    vf acc[RMAX][VMAX];
    conv_gemm_tile_zero(acc, R, V);
    for (int i = 0; i < s->nkh; i++)
        for (int k = 0; k < s->nkw; k++) {
            const float *restrict as = a + i * s->ah + k * s->aw;
            const float *restrict bs = b + (i * s->bh + k * s->bw) * ldb;
            for (int j = 0; j < s->run; j++)
                conv_gemm_tile_fma(acc, as + j, pstride, bs + (size_t)j * ldb, rr, R, V);
        }
    UNROLL for (int r = 0; r < R; r++) {
        if (r >= rr) break;
        float *o = out + r * ldo;
        UNROLL for (int v = 0; v < V; v++) {
            vf t = acc[r][v];
            if (bias) t += vload(bias + v * VL);
            if (relu) t = (vf)((vi)t & (t > (vf){0}));
            const int left = nvalid - v * VL;
            if (left >= VL) {
                if (add) t += vload(o + v * VL);
                vstore(o + v * VL, t);
            } else {
                /* The last vector of a width that is not a multiple of VL. */
                float part[VL];
                vstore(part, t);
                for (int e = 0; e < left; e++) o[v * VL + e] = add ? o[v * VL + e] + part[e] : part[e];
            }
        }
    }
}

/* Runs a row of `rows` tiles of one column group: rows spaced pstride in a
 * and ldo in out; V vectors wide (nvalid columns valid). */
static void conv_gemm_tile_row(float *out, size_t ldo, int rows, int nvalid, const float *a,
                               size_t pstride, const segs *s, const float *b, size_t ldb,
                               const float *bias, int relu, int add)
{
    const int V = (nvalid + VL - 1) / VL;
    const int R = conv_gemm_tile_rows(V);
    for (int r0 = 0; r0 < rows; r0 += R) {
        const int rr = rows - r0 < R ? rows - r0 : R;
        float *o = out + (size_t)r0 * ldo;
        const float *ar = a + (size_t)r0 * pstride;
#define TILE(RR, VV)                                                                  \
    conv_gemm_tile(o, ldo, RR, nvalid, ar, pstride, s, b, ldb, bias, relu, add,       \
                   conv_gemm_tile_rows(VV), VV)
        TILE_DISPATCH(TILE, V, rr)
#undef TILE
    }
}

/* Pixels per block of the NCHW stores: a multiple of the 8 x 8 blocks. */
#define TR_PIXELS 64

/* The tile rows of pixels [p0, p0 + np) of one image, np <= TR_PIXELS, one
 * column group, stored transposed: out[f*ldo + p] (+)= t[p][f], an NCHW
 * plane per column. Image rows are ow_n pixels long; row o, pixel c reads
 * a + o*ah + c*pstride. The row-major tiles store into a buffer on the
 * stack, which is swapped into out in 8 x 8 register blocks (one float at a
 * time at the edges): out receives the same value as the NHWC store (or old
 * + t, as commutative as t + old), so both layouts hold the same bits, and
 * a block spans image rows, so the planes are written in runs of np. */
static void conv_gemm_block_tr(float *out, size_t ldo, int p0, int np, int ow_n, int nvalid,
                               const float *a, size_t ah, size_t pstride, const segs *s,
                               const float *b, size_t ldb, const float *bias, int relu, int add)
{
    float buf[TR_PIXELS * VMAX * VL];
    const int ldt = (nvalid + VL - 1) / VL * VL;
    for (int p = p0; p < p0 + np;) {
        const int o = p / ow_n, c = p % ow_n;
        const int len = ow_n - c < p0 + np - p ? ow_n - c : p0 + np - p;
        conv_gemm_tile_row(buf + (size_t)(p - p0) * ldt, (size_t)ldt, len, nvalid,
                           a + (size_t)o * ah + (size_t)c * pstride, pstride, s, b, ldb, bias, relu, 0);
        p += len;
    }
    float *op = out + p0;
    const int n8 = np & ~7, f8 = nvalid & ~7;
    for (int r = 0; r < n8; r += 8)
        for (int f = 0; f < f8; f += 8)
            conv_gemm_t8x8(op + (size_t)f * ldo + r, ldo, buf + (size_t)r * ldt + f, (size_t)ldt, add);
    for (int f = 0; f < nvalid; f++)
        for (int r = f < f8 ? n8 : 0; r < np; r++) {
            float *d = op + (size_t)f * ldo + r;
            *d = add ? *d + buf[(size_t)r * ldt + f] : buf[(size_t)r * ldt + f];
        }
}

/* Column groups of at most VMAX vectors over `cols` columns. */
static int conv_gemm_col_groups(int cols) { return (cols + VMAX * VL - 1) / (VMAX * VL); }

static segs conv_gemm_window_segs(const nn_conv_geom *g, int rowlen, int ch)
{
    /* Over an (.., rowlen, ch) NHWC image: with dilation 1 along W a kernel
     * row's KW*ch elements are contiguous. */
    segs s;
    s.nkh = g->KH;
    s.ah = (size_t)g->DH * rowlen * ch;
    s.bh = (size_t)g->KW * ch;
    if (g->DW == 1) {
        s.nkw = 1;
        s.run = g->KW * ch;
        s.aw = s.bw = 0;
    } else {
        s.nkw = g->KW;
        s.run = ch;
        s.aw = (size_t)g->DW * ch;
        s.bw = (size_t)ch;
    }
    return s;
}

void nn_conv_forward_nhwc(float *y, const float *xp, int Hp, int Wp, const float *kp, int ldk,
                          const float *bp, int relu, const nn_conv_geom *g, int N, int F, int y_nchw)
{
    const int C = g->C, OH = g->OH, OW = g->OW, groups = conv_gemm_col_groups(F);
    const segs s = conv_gemm_window_segs(g, Wp, C);
    const double macs = (double)conv_gemm_par_n(g, N) * OH * OW * F * g->KH * g->KW * C;
    if (y_nchw) {
        /* Blocks of TR_PIXELS output pixels, each stored into its planes. */
        const int P = OH * OW, nblk = (P + TR_PIXELS - 1) / TR_PIXELS;
        const long items = (long)N * nblk;
        #pragma omp parallel for collapse(2) schedule(static) if (macs >= CONV_GEMM_PAR_MIN_MACS)
        for (long q = 0; q < items; q++)
            for (int cg = 0; cg < groups; cg++) {
                const long n = q / nblk;
                const int p0 = (int)(q % nblk) * TR_PIXELS, np = P - p0 < TR_PIXELS ? P - p0 : TR_PIXELS;
                const int fo = cg * VMAX * VL, nvalid = F - fo < VMAX * VL ? F - fo : VMAX * VL;
                conv_gemm_block_tr(y + ((size_t)n * F + fo) * P, (size_t)P, p0, np, OW, nvalid,
                                   xp + (size_t)n * Hp * Wp * C, (size_t)g->SH * Wp * C,
                                   (size_t)g->SW * C, &s, kp + fo, (size_t)ldk, bp ? bp + fo : NULL,
                                   relu, 0);
            }
        return;
    }
    const long rows = (long)N * OH;
    #pragma omp parallel for collapse(2) schedule(static) if (macs >= CONV_GEMM_PAR_MIN_MACS)
    for (long q = 0; q < rows; q++)
        for (int cg = 0; cg < groups; cg++) {
            const long n = q / OH, oh = q % OH;
            const int fo = cg * VMAX * VL, nvalid = F - fo < VMAX * VL ? F - fo : VMAX * VL;
            const float *xr = xp + ((size_t)n * Hp + (size_t)oh * g->SH) * Wp * C;
            conv_gemm_tile_row(y + (size_t)q * OW * F + fo, (size_t)F, OW, nvalid, xr,
                               (size_t)g->SW * C, &s, kp + fo, (size_t)ldk, bp ? bp + fo : NULL,
                               relu, 0);
        }
}

void nn_conv_backward_input_direct(float *dx, const float *dzs, const float *kt, int ldk,
                                   const nn_conv_geom *g, int N, int F, int dx_nchw)
{
    /* dx is a stride-1 convolution of the spatially padded dz with the
     * flipped, transposed kernel: the forward's tiles with C and F swapped. */
    const int H = g->H, W = g->W, C = g->C, groups = conv_gemm_col_groups(C);
    const int Hs = H + (g->KH - 1) * g->DH, Ws = W + (g->KW - 1) * g->DW;
    const segs s = conv_gemm_window_segs(g, Ws, F);
    const double macs = (double)conv_gemm_par_n(g, N) * H * W * C * g->KH * g->KW * F;
    if (dx_nchw) {
        const int HW = H * W, nblk = (HW + TR_PIXELS - 1) / TR_PIXELS;
        const long items = (long)N * nblk;
        #pragma omp parallel for collapse(2) schedule(static) if (macs >= CONV_GEMM_PAR_MIN_MACS)
        for (long q = 0; q < items; q++)
            for (int cg = 0; cg < groups; cg++) {
                const long n = q / nblk;
                const int p0 = (int)(q % nblk) * TR_PIXELS, np = HW - p0 < TR_PIXELS ? HW - p0 : TR_PIXELS;
                const int co = cg * VMAX * VL, nvalid = C - co < VMAX * VL ? C - co : VMAX * VL;
                conv_gemm_block_tr(dx + ((size_t)n * C + co) * HW, (size_t)HW, p0, np, W, nvalid,
                                   dzs + (size_t)n * Hs * Ws * F, (size_t)Ws * F, (size_t)F, &s,
                                   kt + co, (size_t)ldk, NULL, 0, 1);
            }
        return;
    }
    const long rows = (long)N * H;
    #pragma omp parallel for collapse(2) schedule(static) if (macs >= CONV_GEMM_PAR_MIN_MACS)
    for (long q = 0; q < rows; q++)
        for (int cg = 0; cg < groups; cg++) {
            const long n = q / H, ih = q % H;
            const int co = cg * VMAX * VL, nvalid = C - co < VMAX * VL ? C - co : VMAX * VL;
            const float *ar = dzs + ((size_t)n * Hs + ih) * Ws * F;
            conv_gemm_tile_row(dx + (size_t)q * W * C + co, (size_t)C, W, nvalid, ar, (size_t)F, &s,
                               kt + co, (size_t)ldk, NULL, 0, 1);
        }
}

void nn_conv_gemm(float *out, size_t ldo, int rows, int cols, const float *a, size_t lda, int K,
                  const float *b, size_t ldb)
{
    const segs s = {1, 1, K, 0, 0, 0, 0};
    for (int cg = 0; cg < conv_gemm_col_groups(cols); cg++) {
        const int fo = cg * VMAX * VL, nvalid = cols - fo < VMAX * VL ? cols - fo : VMAX * VL;
        conv_gemm_tile_row(out + fo, ldo, rows, nvalid, a, lda, &s, b + fo, ldb, NULL, 0, 0);
    }
}

/* out[r][f] += sum_t a[t][r] * b[t][f] for a tile of R rows x V vectors. */
INLINE void conv_gemm_tn_tile(float *restrict out, size_t ldo, int rr, const float *restrict a,
                              size_t lda, int K, const float *restrict b, size_t ldb, const int R,
                              const int V)
{
    vf acc[RMAX][VMAX];
    conv_gemm_tile_zero(acc, R, V);
    for (int t = 0; t < K; t++)
        conv_gemm_tile_fma(acc, a + (size_t)t * lda, 1, b + (size_t)t * ldb, rr, R, V);
    conv_gemm_tile_add_to(out, ldo, acc, rr, R, V);
}

void nn_conv_gemm_tn_add(float *out, size_t ldo, int rows, int cols, const float *a, size_t lda,
                         int K, const float *b, size_t ldb)
{
    for (int fo = 0; fo < cols; fo += VMAX * VL) {
        const int V = ((cols - fo < VMAX * VL ? cols - fo : VMAX * VL) + VL - 1) / VL;
        const int R = conv_gemm_tile_rows(V);
        for (int r0 = 0; r0 < rows; r0 += R) {
            const int rr = rows - r0 < R ? rows - r0 : R;
            float *o = out + (size_t)r0 * ldo + fo;
            const float *ar = a + r0;
#define TN(RR, VV) \
    conv_gemm_tn_tile(o, ldo, RR, ar, lda, K, b + fo, ldb, conv_gemm_tile_rows(VV), VV)
            TILE_DISPATCH(TN, V, rr)
#undef TN
        }
    }
}

void nn_conv_backward_cols(float *dcol, const float *dz, const float *kt2, int ldk, size_t M, int F,
                           int T)
{
    /* dcol (M, T) = dz (M, F) kernel^T: one segment, the F channels. */
    const segs s = {1, 1, F, 0, 0, 0, 0};
    const int groups = conv_gemm_col_groups(T);
    const long blocks = (long)((M + 63) / 64);
    #pragma omp parallel for collapse(2) schedule(static)
    for (long bk = 0; bk < blocks; bk++)
        for (int cg = 0; cg < groups; cg++) {
            const size_t p0 = (size_t)bk * 64;
            const int rows = M - p0 < 64 ? (int)(M - p0) : 64;
            const int to = cg * VMAX * VL, nvalid = T - to < VMAX * VL ? T - to : VMAX * VL;
            conv_gemm_tile_row(dcol + p0 * T + to, (size_t)T, rows, nvalid, dz + p0 * F,
                               (size_t)F, &s, kt2 + to, (size_t)ldk, NULL, 0, 0);
        }
}

/* ---- dkernel ---- */

/* part[r][f] += sum over pixels of x[pixel][r] * dz[pixel][f] for rows
 * q in [q0, q1): the R x V tile of kernel rows j0.. and columns fo... */
INLINE void conv_gemm_dk_tile(float *restrict part, size_t ldp, int rr, const float *restrict xseg,
                              const float *restrict dz, size_t ldz, const nn_conv_geom *g, int Hp,
                              int Wp, long q0, long q1, const int R, const int V)
{
    const int OH = g->OH, OW = g->OW, C = g->C;
    const size_t px = (size_t)g->SW * C;
    vf acc[RMAX][VMAX];
    conv_gemm_tile_zero(acc, R, V);
    for (long q = q0; q < q1; q++) {
        const long n = q / OH, oh = q % OH;
        const float *restrict xr = xseg + ((size_t)n * Hp + (size_t)oh * g->SH) * Wp * C;
        const float *restrict dr = dz + (size_t)q * OW * ldz;
        for (int ow = 0; ow < OW; ow++)
            conv_gemm_tile_fma(acc, xr + ow * px, 1, dr + (size_t)ow * ldz, rr, R, V);
    }
    conv_gemm_tile_add_to(part, ldp, acc, rr, R, V);
}

/* Output rows per pass over a group, so a group's dz and x rows stay in L1
 * and L2 while every tile of a segment sweeps them. */
#define DK_ROWS 4

int nn_conv_dk_groups(const nn_conv_geom *g, int N, int F)
{
    /* Fixed by the shapes alone: up to 16 groups of output rows, fewer when
     * their partial sums (T x Fp each) would pass 16 MB. */
    const size_t t = (size_t)g->KH * g->KW * g->C * (size_t)((F + VL - 1) / VL * VL);
    const long rows = (long)N * g->OH;
    long G = t ? (long)(((size_t)4 << 20) / t) : 1;
    if (G > 16) G = 16;
    if (G > rows) G = rows;
    return G < 1 ? 1 : (int)G;
}

void nn_conv_backward_kernel(float *dk, const float *xp, int Hp, int Wp, const float *dz, int ldz,
                             const nn_conv_geom *g, int N, int F, float *part, int G)
{
    const int C = g->C, KW = g->KW, Fp = (F + VL - 1) / VL * VL;
    const size_t T = (size_t)g->KH * KW * C;
    const long rows = (long)N * g->OH;
    /* Segments: a kernel row (dilation 1 along W) or one kernel element. */
    const int nkw = g->DW == 1 ? 1 : KW, run = g->DW == 1 ? KW * C : C;
    const int nseg = g->KH * nkw, items = G * nseg, groups = conv_gemm_col_groups(F);
    #pragma omp parallel for schedule(static)
    for (int it = 0; it < items; it++) {
        const int gi = it / nseg, sg = it % nseg, kh = sg / nkw, kw = sg % nkw;
        const long q0 = rows * gi / G, q1 = rows * (gi + 1) / G;
        const size_t t0 = (size_t)kh * KW * C + (size_t)kw * C;
        float *pg = part + (size_t)gi * T * Fp + t0 * Fp;
        memset(pg, 0, (size_t)run * Fp * sizeof *pg);
        const float *xseg = xp + (size_t)kh * g->DH * Wp * C + (size_t)kw * g->DW * C;
        for (long qb = q0; qb < q1; qb += DK_ROWS) {
            const long qe = qb + DK_ROWS < q1 ? qb + DK_ROWS : q1;
            for (int cg = 0; cg < groups; cg++) {
                const int fo = cg * VMAX * VL;
                const int V = ((F - fo < VMAX * VL ? F - fo : VMAX * VL) + VL - 1) / VL;
                const int R = conv_gemm_tile_rows(V);
                for (int j0 = 0; j0 < run; j0 += R) {
                    const int rr = run - j0 < R ? run - j0 : R;
                    float *p = pg + (size_t)j0 * Fp + fo;
#define DK(RR, VV)                                                                        \
    conv_gemm_dk_tile(p, (size_t)Fp, RR, xseg + j0, dz + fo, (size_t)ldz, g, Hp, Wp, qb, qe, \
                      conv_gemm_tile_rows(VV), VV)
                    TILE_DISPATCH(DK, V, rr)
#undef DK
                }
            }
        }
    }
    /* Groups combine in order, so the sum is the same for any thread count. */
    #pragma omp parallel for schedule(static) if (T * (size_t)F * G > 32768)
    for (size_t t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            float s = part[t * Fp + f];
            for (int gi = 1; gi < G; gi++) s += part[((size_t)gi * T + t) * Fp + f];
            dk[t * F + f] += s;
        }
}
