/* Driver of tests/test_conv_widths.sh: the convolution's GEMM tiles
 * (layers/conv_gemm.c, dispatched by layers/conv_core.c), built at one
 * vector width, channels_first and channels_last, against the plain loops
 * of layers/conv_reference.c. The shapes reach the NCHW stores of the
 * tiles (y, stride-1 dx; planes whose pixel count is not a multiple of 8,
 * outputs narrower than 8, filter and channel counts that are not whole
 * vectors), the whole-batch NCHW backward and the chunked one of a first
 * layer, strided and dilated windows.
 *
 * Checks, each a failure on its own:
 *   - y, dx, dkernel, dbias within 16 eps S of the reference, S the sum of
 *     the absolute values of the terms (tests/test_conv.c explains the bound);
 *   - NCHW's y and stride-1 dx equal NHWC's bit for bit, and dkernel and
 *     dbias too where NCHW runs the backward on the whole batch;
 *   - 1 and 2 threads give the same bits.
 * Exit status 1 on any failure. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/conv_core.h"
#include "layers/conv_reference.h"
#include "layers/simd.h"

static unsigned long long driver_state = 88172645463325252ULL;

/* Uniform in [-1, 1), xorshift64. */
static float driver_rand(void)
{
    driver_state ^= driver_state << 13;
    driver_state ^= driver_state >> 7;
    driver_state ^= driver_state << 17;
    return (float)(driver_state >> 40) / (float)(1 << 23) - 1.0f;
}

static float *driver_alloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

typedef struct {
    float *y, *dx, *dk, *db;
} driver_result;

static void driver_result_free(driver_result *r)
{
    free(r->y);
    free(r->dx);
    free(r->dk);
    free(r->db);
}

/* dst (N, B, A) = src (N, A, B). */
static void driver_transpose(float *dst, const float *src, int N, int A, int B)
{
    for (int n = 0; n < N; n++)
        for (int a = 0; a < A; a++)
            for (int b = 0; b < B; b++)
                dst[((size_t)n * B + b) * A + a] = src[((size_t)n * A + a) * B + b];
}

/* Forward and backward on the GEMM tiles, NHWC or NCHW; inputs and results
 * NHWC (NCHW runs on transposed copies), gradients added to pre's. */
static driver_result driver_run(int nchw, nn_conv_geom g, int N, int F, const float *x,
                                const float *k, const float *b, const float *dy,
                                const driver_result *pre)
{
    g.path = NN_CONV_PATH_GEMM;
    const int HW = g.H * g.W, P = g.OH * g.OW;
    const size_t ny = (size_t)N * P * F, nx = (size_t)N * HW * g.C;
    const size_t nk = (size_t)g.KH * g.KW * g.C * F;
    nn_conv_sizes z;
    if (nchw)
        nn_conv_work_sizes_nchw(&z, &g, N, F, 1, 1, 1);
    else
        nn_conv_work_sizes(&z, &g, N, F, 1, 1, 1);
    nn_conv_work w = {
        .xp = driver_alloc(z.xp), .kp = driver_alloc(z.kp), .bp = driver_alloc(z.bp),
        .dzp = driver_alloc(z.dzp), .part = driver_alloc(z.part), .dzs = driver_alloc(z.dzs),
        .kt = driver_alloc(z.kt), .dcol = driver_alloc(z.dcol), .db = driver_alloc(z.db),
        .wk = driver_alloc(z.wk), .wkt = driver_alloc(z.wkt), .ws = driver_alloc(z.ws),
        .yn = driver_alloc(z.yn), .dxn = driver_alloc(z.dxn), .ws_slots = z.ws_slots,
        .xp_whole = z.xp_whole,
    };
    driver_result r = {driver_alloc(ny), driver_alloc(nx), driver_alloc(nk), driver_alloc((size_t)F)};
    memcpy(r.dx, pre->dx, nx * sizeof(float));
    memcpy(r.dk, pre->dk, nk * sizeof(float));
    memcpy(r.db, pre->db, (size_t)F * sizeof(float));
    float *dz = driver_alloc(ny);
    if (nchw) {
        float *xc = driver_alloc(nx), *yc = driver_alloc(ny), *dxc = driver_alloc(nx);
        driver_transpose(xc, x, N, HW, g.C);
        driver_transpose(dxc, pre->dx, N, HW, g.C);
        driver_transpose(dz, dy, N, P, F);
        nn_conv_forward_nchw(yc, xc, k, b, 1, &g, N, F, &w);
        nn_conv_backward_nchw(dxc, r.dk, r.db, dz, yc, xc, k, &g, N, F, &w);
        driver_transpose(r.y, yc, N, F, P);
        driver_transpose(r.dx, dxc, N, g.C, HW);
        free(xc);
        free(yc);
        free(dxc);
    } else {
        memcpy(dz, dy, ny * sizeof(float));
        nn_conv_forward(r.y, x, k, b, 1, &g, N, F, &w);
        nn_conv_backward(r.dx, r.dk, r.db, dz, r.y, k, &g, N, F, &w);
    }
    free(dz);
    float *bufs[] = {w.xp, w.kp, w.bp, w.dzp, w.part, w.dzs, w.kt, w.dcol, w.db, w.wk, w.wkt, w.ws,
                     w.yn, w.dxn};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    return r;
}

static int driver_close(const char *label, const char *what, const float *got, const float *want,
                        const float *S, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - want[i]), tol = 16.0 * FLT_EPSILON * S[i];
        if (!(diff <= tol)) {
            fprintf(stderr, "VL=%d %s: %s[%zu] = %.9g, the reference %.9g (|diff| %.3g > 16 eps S)\n",
                    VL, label, what, i, (double)got[i], (double)want[i], diff);
            return 1;
        }
    }
    return 0;
}

static int driver_same(const char *label, const char *what, const float *a, const float *b, size_t n)
{
    if (!memcmp(a, b, n * sizeof(float))) return 0;
    fprintf(stderr, "VL=%d %s: %s differs\n", VL, label, what);
    return 1;
}

static int driver_check(int N, int H, int W, int C, int F, int K, int S, int D, int same)
{
    nn_conv_geom g = {.H = H, .W = W, .C = C, .KH = K, .KW = K, .SH = S, .SW = S, .DH = D, .DW = D};
    if (nn_conv_geom_init(&g, same, "driver")) return 1;
    const int P = g.OH * g.OW;
    const size_t ny = (size_t)N * P * F, nx = (size_t)N * H * W * C, nk = (size_t)K * K * C * F;
    float *x = driver_alloc(nx), *k = driver_alloc(nk), *b = driver_alloc((size_t)F);
    float *dy = driver_alloc(ny);
    driver_result pre = {NULL, driver_alloc(nx), driver_alloc(nk), driver_alloc((size_t)F)};
    for (size_t i = 0; i < nx; i++) x[i] = driver_rand();
    for (size_t i = 0; i < nk; i++) k[i] = driver_rand();
    for (int i = 0; i < F; i++) b[i] = driver_rand();
    for (size_t i = 0; i < ny; i++) dy[i] = driver_rand();
    for (size_t i = 0; i < nx; i++) pre.dx[i] = driver_rand();
    for (size_t i = 0; i < nk; i++) pre.dk[i] = driver_rand();
    for (int i = 0; i < F; i++) pre.db[i] = driver_rand();
    char label[160];
    snprintf(label, sizeof label, "x (%d, %d, %d, %d), F %d, %dx%d stride %d dilation %d %s", N, H,
             W, C, F, K, K, S, D, same ? "same" : "valid");

    omp_set_num_threads(1);
    driver_result last = driver_run(0, g, N, F, x, k, b, dy, &pre);
    driver_result first = driver_run(1, g, N, F, x, k, b, dy, &pre);
    omp_set_num_threads(2);
    driver_result first2 = driver_run(1, g, N, F, x, k, b, dy, &pre);

    /* The reference with the ReLU the kernels fuse: y = max(y, 0), dz masked
     * by y > 0; S from the same loops on absolute values. */
    driver_result ref = {driver_alloc(ny), driver_alloc(nx), driver_alloc(nk), driver_alloc((size_t)F)};
    driver_result sum = {driver_alloc(ny), driver_alloc(nx), driver_alloc(nk), driver_alloc((size_t)F)};
    float *dz = driver_alloc(ny), *adz = driver_alloc(ny), *ax = driver_alloc(nx);
    float *ak = driver_alloc(nk), *ab = driver_alloc((size_t)F);
    nn_conv_forward_reference(ref.y, x, k, b, &g, N, F);
    for (size_t i = 0; i < ny; i++) {
        const int on = ref.y[i] > 0.0f;
        ref.y[i] = on ? ref.y[i] : 0.0f;
        dz[i] = on ? dy[i] : 0.0f;
        adz[i] = fabsf(dz[i]);
    }
    for (size_t i = 0; i < nx; i++) ax[i] = fabsf(x[i]);
    for (size_t i = 0; i < nk; i++) ak[i] = fabsf(k[i]);
    for (int i = 0; i < F; i++) ab[i] = fabsf(b[i]);
    memcpy(ref.dx, pre.dx, nx * sizeof(float));
    memcpy(ref.dk, pre.dk, nk * sizeof(float));
    memcpy(ref.db, pre.db, (size_t)F * sizeof(float));
    nn_conv_backward_reference(ref.dx, ref.dk, ref.db, dz, x, k, &g, N, F);
    nn_conv_forward_reference(sum.y, ax, ak, ab, &g, N, F);
    for (size_t i = 0; i < nx; i++) sum.dx[i] = fabsf(pre.dx[i]);
    for (size_t i = 0; i < nk; i++) sum.dk[i] = fabsf(pre.dk[i]);
    for (int i = 0; i < F; i++) sum.db[i] = fabsf(pre.db[i]);
    nn_conv_backward_reference(sum.dx, sum.dk, sum.db, adz, ax, ak, &g, N, F);

    int bad = 0;
    const driver_result *runs[2] = {&last, &first};
    for (int f = 0; f < 2; f++) {
        char l2[200];
        snprintf(l2, sizeof l2, "%s, %s", label, f ? "NCHW" : "NHWC");
        bad |= driver_close(l2, "y", runs[f]->y, ref.y, sum.y, ny);
        bad |= driver_close(l2, "dx", runs[f]->dx, ref.dx, sum.dx, nx);
        bad |= driver_close(l2, "dkernel", runs[f]->dk, ref.dk, sum.dk, nk);
        bad |= driver_close(l2, "dbias", runs[f]->db, ref.db, sum.db, (size_t)F);
    }
    bad |= driver_same(label, "y (NCHW vs NHWC)", first.y, last.y, ny);
    /* Strided dx: NHWC gathers the columns into dx itself, NCHW into a
     * zeroed chunk that is then added, so they round alike only when dx
     * starts at 0 (as tests/test_conv.c's formats check has it). */
    if (S == 1) bad |= driver_same(label, "dx (NCHW vs NHWC)", first.dx, last.dx, nx);
    /* Whole-batch backward where the padded input outgrows the output
     * (layers/conv_core.c), or a batch that is one chunk either way. */
    if ((size_t)g.Hp * g.Wp * C > (size_t)P * F) {
        bad |= driver_same(label, "dkernel (NCHW vs NHWC)", first.dk, last.dk, nk);
        bad |= driver_same(label, "dbias (NCHW vs NHWC)", first.db, last.db, (size_t)F);
    }
    bad |= driver_same(label, "y (1 vs 2 threads)", first.y, first2.y, ny);
    bad |= driver_same(label, "dx (1 vs 2 threads)", first.dx, first2.dx, nx);
    bad |= driver_same(label, "dkernel (1 vs 2 threads)", first.dk, first2.dk, nk);
    bad |= driver_same(label, "dbias (1 vs 2 threads)", first.db, first2.db, (size_t)F);

    driver_result *all[] = {&last, &first, &first2, &ref, &sum};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) driver_result_free(all[i]);
    driver_result_free(&pre);
    free(x);
    free(k);
    free(b);
    free(dy);
    free(dz);
    free(adz);
    free(ax);
    free(ak);
    free(ab);
    return bad;
}

int main(void)
{
    int bad = 0;
    bad |= driver_check(3, 9, 11, 5, 7, 3, 1, 1, 1);    /* 99-pixel planes, F under a vector */
    bad |= driver_check(2, 14, 14, 20, 36, 5, 1, 1, 1); /* 5x5; 196 pixels: a partial block */
    bad |= driver_check(4, 28, 28, 16, 24, 3, 2, 1, 1); /* strided: dx through NHWC chunks */
    bad |= driver_check(2, 13, 17, 12, 40, 3, 1, 2, 1); /* dilation */
    bad |= driver_check(3, 10, 10, 33, 17, 1, 1, 1, 0); /* 1x1: dx reads dz unpadded */
    bad |= driver_check(2, 6, 5, 9, 70, 3, 1, 1, 0);    /* 4x3 output, F = 64 + 6 */
    bad |= driver_check(2, 8, 8, 40, 8, 3, 1, 1, 1);    /* 64-pixel planes: whole blocks */
    bad |= driver_check(20, 24, 24, 3, 16, 7, 2, 1, 1); /* an RGB stem: the chunked backward */
    printf("conv GEMM tiles, NHWC and NCHW, at %d floats per vector: %s\n", VL,
           bad ? "DIFFER" : "match the reference");
    return bad;
}
