/* dense_gemv: y (N, U) = act(b + x (N, In) W (In, U)) for the few rows of a
 * prediction; the order of the sums is defined in layers/dense_gemv.h.
 *
 * Why not OpenBLAS at batch 1: sgemm packs W into its own blocks before
 * multiplying, which for one row costs as much as the product (W is read
 * once either way, and for MNIST's 9216 x 128 layer that read is the whole
 * cost). Here each pass over W reads R rows' worth of sums' inputs and
 * keeps R x V vectors of sums in registers, R <= 4 rows and V column
 * vectors, so W streams through once per 4 rows.
 *
 * Omits: FMA. A product rounded before the add is what the plain loop
 * computes on every machine (SSE has no FMA), so the two are the same bit
 * for bit; the layer's cost at these sizes is reading W, not arithmetic.
 */
#include "layers/dense_gemv.h"

#include <stddef.h>

/* The plain loop adds each rounded product (ISO C's default, -std=c11);
 * keep the vector code the same even where a build allows contraction. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "layers/simd.h"

/* Above this many multiply-adds the column blocks are shared between
 * threads (as dense.c's DENSE_PAR_MIN_MACS): a parallel region costs more
 * than it saves below, and every batch-1 layer of the examples is below. */
#define DENSE_GEMV_PAR_MIN_MACS 4194304.0

void nn_dense_gemv_reference(float *y, const float *x, const float *W, const float *b, int N,
                             int In, int U, int relu)
{
    for (int n = 0; n < N; n++)
        for (int u = 0; u < U; u++) {
            float s = b ? b[u] : 0.0f;
            for (int i = 0; i < In; i++) s += x[(size_t)n * In + i] * W[(size_t)i * U + u];
            y[(size_t)n * U + u] = relu && !(s > 0.0f) ? 0.0f : s;
        }
}

/* Rows [0, R) of x and y, the V column vectors from u0; the last vector has
 * `lanes` columns (VL: all). R, V and whole (lanes == VL) are constants at
 * each call. A last vector of fewer lanes is loaded whole while that stays
 * inside W (its extra lanes read the next row, and their sums are never
 * stored), and part by part in the last rows. */
INLINE void dense_gemv_tile(const int R, const int V, const int whole, float *y, const float *x,
                            const float *W, const float *b, int In, int U, int u0, int lanes,
                            int relu)
{
    vf acc[4][4] = {{{0}}}; /* zeroed only to quiet -Wmaybe-uninitialized: [R][V] is used */
    UNROLL for (int v = 0; v < V; v++) {
        const int part = !whole && v == V - 1;
        const vf bv = !b ? (vf){0} : part ? vload_part(b + u0 + v * VL, lanes) : vload(b + u0 + v * VL);
        UNROLL for (int r = 0; r < R; r++) acc[r][v] = bv;
    }
    /* Rows i whose whole-vector load at u0 + (V-1) VL stays inside W. */
    long safe = In;
    if (!whole) {
        const long end = (long)In * U, first = u0 + (long)(V - 1) * VL;
        safe = end - first >= VL ? (end - first - VL) / U + 1 : 0;
        if (safe > In) safe = In;
    }
    for (long i = 0; i < In; i++) {
        const float *w = W + (size_t)i * U + u0;
        vf wv[4] = {{0}};
        UNROLL for (int v = 0; v < V; v++)
            wv[v] = whole || v < V - 1 || i < safe ? vload(w + v * VL) : vload_part(w + v * VL, lanes);
        UNROLL for (int r = 0; r < R; r++) {
            const vf xs = splat(x[(size_t)r * In + i]);
            UNROLL for (int v = 0; v < V; v++) acc[r][v] = acc[r][v] + xs * wv[v];
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int v = 0; v < V; v++) {
            vf t = acc[r][v];
            if (relu) t = (vf)((vi)t & (t > (vf){0}));
            float *o = y + (size_t)r * U + u0 + v * VL;
            if (whole || v < V - 1) {
                vstore(o, t);
            } else {
                float tmp[VL];
                vstore(tmp, t);
                memcpy(o, tmp, (size_t)lanes * sizeof *o);
            }
        }
}

/* R rows, the column block of V vectors from u0 (narrower at the end of the
 * row: whole vectors one by one, then the rest). */
INLINE void dense_gemv_block(const int R, const int V, float *y, const float *x, const float *W,
                             const float *b, int In, int U, int u0, int relu)
{
    const int cb = V * VL;
    if (U - u0 >= cb) {
        dense_gemv_tile(R, V, 1, y, x, W, b, In, U, u0, VL, relu);
        return;
    }
    int u = u0;
    for (; u + VL <= U; u += VL) dense_gemv_tile(R, 1, 1, y, x, W, b, In, U, u, VL, relu);
    if (u < U) dense_gemv_tile(R, 1, 0, y, x, W, b, In, U, u, U - u, relu);
}

/* R rows: column blocks of V vectors, one block per iteration. R and V are
 * constants at each call. */
INLINE void dense_gemv_rows(const int R, const int V, float *y, const float *x, const float *W,
                            const float *b, int In, int U, int relu, int parallel)
{
    const int cb = V * VL, blocks = (U + cb - 1) / cb;
    /* Serial work runs outside any parallel region, not in one with a
     * false if clause: libgomp ends every region, even a one-thread one,
     * with a futex system call (about a microsecond). */
    if (!parallel) {
        for (int j = 0; j < blocks; j++) dense_gemv_block(R, V, y, x, W, b, In, U, j * cb, relu);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int j = 0; j < blocks; j++) dense_gemv_block(R, V, y, x, W, b, In, U, j * cb, relu);
}

void nn_dense_gemv(float *y, const float *x, const float *W, const float *b, int N, int In, int U,
                   int relu)
{
    if (U <= 0) return;
    const int parallel = (double)N * In * U >= DENSE_GEMV_PAR_MIN_MACS;
    /* At most 8 vectors of sums, which leaves registers for W's vectors
     * even with AVX2's sixteen. */
    for (int n0 = 0; n0 < N; n0 += 4) {
        float *yr = y + (size_t)n0 * U;
        const float *xr = x + (size_t)n0 * In;
        switch (N - n0 < 4 ? N - n0 : 4) {
        case 1: dense_gemv_rows(1, 4, yr, xr, W, b, In, U, relu, parallel); break;
        case 2: dense_gemv_rows(2, 4, yr, xr, W, b, In, U, relu, parallel); break;
        case 3: dense_gemv_rows(3, 2, yr, xr, W, b, In, U, relu, parallel); break;
        default: dense_gemv_rows(4, 2, yr, xr, W, b, In, U, relu, parallel); break;
        }
    }
}
