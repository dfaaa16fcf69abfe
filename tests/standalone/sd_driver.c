/* Driver for tests/test_spatial_dropout_standalone.sh. It is built with
 * nothing but layers/spatial_dropout_kernels.{h,c} copied beside it (no
 * other header of nn, no libnn), with and without OpenMP, and checks that
 * the pair works alone:
 *  - the fast kernels (nn_sd_forward, nn_sd_apply, nn_sd_backward) against
 *    the scalar references, bit for bit, in both layouts, over channel
 *    counts and map sizes around the vector widths, past the 2048-channel
 *    chunk and above the size where OpenMP starts, with Inf, NaN and -0.0
 *    in the data, in place and out of place, with 1 and 2 threads when
 *    built with OpenMP;
 *  - rate 0 (a copy, every map kept) and the drop fraction of a large mask;
 *  - error codes and messages for a bad rate and a bad shape.
 * Exits 1 with a message at the first failure, 0 after a summary line. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spatial_dropout_kernels.h"

static void sd_driver_fail(const char *what, int N, int C, long S, int layout, int threads)
{
    fprintf(stderr, "sd_driver: FAIL: %s (N=%d C=%d spatial=%ld %s, %d thread(s))\n", what, N, C, S,
            layout == NN_SD_CHANNELS_FIRST ? "channels_first" : "channels_last", threads);
    exit(1);
}

/* Values with |v| in [0.5, 1.5), random sign (xorshift64), and every
 * seventh value one of Inf, -Inf, NaN, -0.0, +0.0.
 *   v (n) out */
static void sd_driver_fill(float *v, size_t n, uint64_t seed)
{
    static const float special[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f};
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        const float a = 0.5f + (float)(z >> 40) * (1.0f / 16777216.0f);
        v[i] = i % 7 == 3 ? special[(i / 7) % 5] : (z & 1) ? -a : a;
    }
}

static void *sd_driver_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "sd_driver: out of memory\n");
        exit(1);
    }
    return p;
}

/* One shape, one layout, one thread count: every fast kernel against the
 * references. Returns the number of dropped maps. */
static size_t sd_driver_check(int N, int C, long S, int layout, int threads, float rate,
                              uint64_t call)
{
    const size_t nc = (size_t)N * (size_t)C, total = nc * (size_t)S, bytes = total * sizeof(float);
    float *x = sd_driver_alloc(bytes), *y = sd_driver_alloc(bytes), *want = sd_driver_alloc(bytes);
    float *dy = sd_driver_alloc(bytes), *dx = sd_driver_alloc(bytes), *dx_want = sd_driver_alloc(bytes);
    uint8_t *mask = sd_driver_alloc(nc), *mask_want = sd_driver_alloc(nc);
    sd_driver_fill(x, total, 1 + call);
    sd_driver_fill(dy, total, 2 + call);
    sd_driver_fill(dx_want, total, 3 + call);
    memcpy(dx, dx_want, bytes);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    if (nn_sd_forward_reference(want, mask_want, x, N, C, S, layout, rate, 42, call) != NN_SD_OK)
        sd_driver_fail(nn_sd_last_error(), N, C, S, layout, threads);
    if (nn_sd_forward(y, mask, x, N, C, S, layout, rate, 42, call) != NN_SD_OK)
        sd_driver_fail(nn_sd_last_error(), N, C, S, layout, threads);
    if (memcmp(mask, mask_want, nc)) sd_driver_fail("forward: mask differs", N, C, S, layout, threads);
    if (memcmp(y, want, bytes)) sd_driver_fail("forward: y differs", N, C, S, layout, threads);
    memset(y, 0xff, bytes);
    if (nn_sd_forward(y, NULL, x, N, C, S, layout, rate, 42, call) != NN_SD_OK || memcmp(y, want, bytes))
        sd_driver_fail("forward without a mask: y differs", N, C, S, layout, threads);
    memcpy(y, x, bytes);
    if (nn_sd_forward(y, NULL, y, N, C, S, layout, rate, 42, call) != NN_SD_OK || memcmp(y, want, bytes))
        sd_driver_fail("forward in place: y differs", N, C, S, layout, threads);
    memset(y, 0xff, bytes);
    if (nn_sd_apply(y, mask_want, x, N, C, S, layout, rate) != NN_SD_OK || memcmp(y, want, bytes))
        sd_driver_fail("apply: y differs", N, C, S, layout, threads);
    if (nn_sd_backward_reference(dx_want, mask_want, dy, N, C, S, layout, rate) != NN_SD_OK)
        sd_driver_fail(nn_sd_last_error(), N, C, S, layout, threads);
    if (nn_sd_backward(dx, mask_want, dy, N, C, S, layout, rate) != NN_SD_OK || memcmp(dx, dx_want, bytes))
        sd_driver_fail("backward: dx differs", N, C, S, layout, threads);
    size_t dropped = 0;
    for (size_t m = 0; m < nc; m++) dropped += !mask_want[m];
    free(x);
    free(y);
    free(want);
    free(dy);
    free(dx);
    free(dx_want);
    free(mask);
    free(mask_want);
    return dropped;
}

int main(void)
{
    static const struct {
        int N, C;
        long S;
    } shapes[] = {{3, 1, 17}, {3, 5, 16}, {2, 17, 49}, {4, 33, 3}, {3, 64, 196},
                  {2, 2049, 3}, {4, 32, 784}, {5, 37, 29 * 31}, {64, 200, 3}};
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
#ifdef _OPENMP
    const int max_threads = 2;
#else
    const int max_threads = 1;
#endif
    int cases = 0;
    size_t dropped = 0, maps = 0;
    for (int i = 0; i < n_shapes; i++)
        for (int layout = 0; layout < 2; layout++)
            for (int t = 1; t <= max_threads; t++) {
                const int N = shapes[i].N, C = shapes[i].C;
                dropped += sd_driver_check(N, C, shapes[i].S, layout, t, 0.3f, (uint64_t)cases);
                maps += (size_t)N * (size_t)C;
                /* rate 0 copies and keeps every map */
                if (sd_driver_check(N, C, shapes[i].S, layout, t, 0.0f, (uint64_t)cases))
                    sd_driver_fail("rate 0 dropped a map", N, C, shapes[i].S, layout, t);
                cases += 2;
            }
    /* About 30% of the maps dropped: 4.5 standard deviations of a binomial. */
    const double frac = (double)dropped / (double)maps, sd = sqrt(0.3 * 0.7 / (double)maps);
    if (fabs(frac - 0.3) > 4.5 * sd) {
        fprintf(stderr, "sd_driver: FAIL: dropped fraction %g of %zu maps at rate 0.3\n", frac, maps);
        return 1;
    }

    /* Errors: a code, a message naming the function and the value, nothing
     * written. */
    float v[4] = {1, 2, 3, 4};
    uint8_t m[2] = {7, 7};
    if (nn_sd_forward(v, m, v, 1, 2, 2, NN_SD_CHANNELS_LAST, 1.5f, 0, 0) != NN_SD_ERR_ARG ||
        strcmp(nn_sd_last_error(), "nn_sd_forward: rate must be between 0 and 1, but got 1.5") ||
        v[0] != 1 || m[0] != 7) {
        fprintf(stderr, "sd_driver: FAIL: bad rate gave '%s'\n", nn_sd_last_error());
        return 1;
    }
    if (nn_sd_backward(v, m, v, 1, -2, 2, NN_SD_CHANNELS_FIRST, 0.5f) != NN_SD_ERR_SHAPE ||
        strcmp(nn_sd_last_error(), "nn_sd_backward: N, C and spatial must be >= 0, but got N=1, "
                                   "C=-2, spatial=2")) {
        fprintf(stderr, "sd_driver: FAIL: bad shape gave '%s'\n", nn_sd_last_error());
        return 1;
    }
    printf("sd_driver: %d cases agree with the references, %.3f of %zu maps dropped at rate 0.3, "
           "errors reported (%s)\n", cases, frac, maps, max_threads > 1 ? "OpenMP, 1 and 2 threads"
                                                                    : "without OpenMP");
    return 0;
}
