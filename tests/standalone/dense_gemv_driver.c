/* Driver of tests/test_dense_gemv_widths.sh: layers/dense_gemv.c, built at
 * one vector width, against its plain loops on row counts 1..9, column
 * counts around every width and reduction lengths up to 1100 (the last
 * shape above the size where threads share the column blocks), with and
 * without bias and ReLU. Bit for bit; exit status 1 on a difference. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/dense_gemv.h"
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

static int driver_check(int N, int In, int U, int bias, int relu)
{
    const size_t nx = (size_t)N * In, nw = (size_t)In * U, ny = (size_t)N * U;
    float *x = malloc((nx + 1) * sizeof *x), *W = malloc((nw + 1) * sizeof *W);
    float *b = malloc((size_t)U * sizeof *b), *got = malloc((ny + 1) * sizeof *got);
    float *want = malloc((ny + 1) * sizeof *want);
    int bad = !x || !W || !b || !got || !want;
    if (!bad) {
        for (size_t i = 0; i < nx; i++) x[i] = driver_rand();
        for (size_t i = 0; i < nw; i++) W[i] = driver_rand();
        for (int i = 0; i < U; i++) b[i] = driver_rand();
        nn_dense_gemv(got, x, W, bias ? b : NULL, N, In, U, relu);
        nn_dense_gemv_reference(want, x, W, bias ? b : NULL, N, In, U, relu);
        bad = memcmp(got, want, ny * sizeof *got) != 0;
        if (bad)
            fprintf(stderr, "VL=%d N=%d In=%d U=%d bias=%d relu=%d: differs from the reference\n", VL,
                    N, In, U, bias, relu);
    }
    free(x);
    free(W);
    free(b);
    free(got);
    free(want);
    return bad;
}

int main(void)
{
    static const int Us[] = {1, 3, 4, 5, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 130};
    static const int Ins[] = {0, 1, 9, 128};
    int bad = 0;
    for (int N = 1; N <= 9; N++)
        for (size_t u = 0; u < sizeof Us / sizeof Us[0]; u++)
            for (size_t i = 0; i < sizeof Ins / sizeof Ins[0]; i++)
                for (int opt = 0; opt < 4; opt++) bad |= driver_check(N, Ins[i], Us[u], opt & 1, opt >> 1);
    bad |= driver_check(4, 1100, 1000, 1, 1);
    printf("dense_gemv at %d floats per vector: %s\n", VL, bad ? "DIFFERS" : "matches the reference");
    return bad;
}
