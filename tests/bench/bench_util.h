/* Shared helpers for the benchmarks in tests/bench/: a monotonic clock, the
 * median of a set of timings, and OpenBLAS's sgemm rate, the reference the
 * benchmarks print next to their own. Timing only: what is timed, and how
 * the results are printed, stay with each benchmark. */
#ifndef NN_BENCH_UTIL_H
#define NN_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "nn/nn.h"

/* The machine a benchmark ran on, as a JSON object on stdout: the CPU's
 * model name (from /proc/cpuinfo, "unknown" elsewhere) and the widest
 * vector instructions this build was compiled for (the Makefile builds with
 * -march=native), since timings from an AVX-512 and an AVX2 machine differ. */
static inline void bench_print_machine(void)
{
    char line[512], cpu[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && colon) {
            snprintf(cpu, sizeof cpu, "%s", colon + 2);
            cpu[strcspn(cpu, "\"\n")] = 0;
            break;
        }
    }
    if (f) fclose(f);
#if defined(__AVX512F__)
    const char *simd = "avx512";
#elif defined(__AVX2__)
    const char *simd = "avx2";
#elif defined(__SSE2__)
    const char *simd = "sse2";
#else
    const char *simd = "scalar";
#endif
    printf("{\"cpu\":\"%s\",\"simd\":\"%s\"}\n", cpu, simd);
    fflush(stdout);
}

/* Milliseconds on CLOCK_MONOTONIC, from an arbitrary origin. */
static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n), n >= 1; sorts v. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median milliseconds of one cblas_sgemm C = A B of n x n row-major
 * matrices over reps runs (at most 64) after one warm-up run, on the threads
 * OpenBLAS has; -1 when the three matrices cannot be allocated.
 * 2 n^3 / (ms * 1e6) is its GFLOP/s. */
static inline double bench_sgemm_ms(int n, int reps)
{
    const size_t nn = (size_t)n * n;
    float *a = tensor_aligned_alloc(nn * sizeof(float));
    float *b = tensor_aligned_alloc(nn * sizeof(float));
    float *c = tensor_aligned_alloc(nn * sizeof(float));
    double t[64], ms = -1.0;
    if (a && b && c) {
        for (size_t i = 0; i < nn; i++) {
            a[i] = (float)(i % 13) * 0.01f;
            b[i] = (float)(i % 7) * 0.02f;
        }
        if (reps > 64) reps = 64;
        if (reps < 1) reps = 1;
        for (int r = -1; r < reps; r++) {
            const double t0 = bench_now_ms();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            if (r >= 0) t[r] = bench_now_ms() - t0;
        }
        ms = bench_median(t, reps);
    }
    tensor_aligned_free(a);
    tensor_aligned_free(b);
    tensor_aligned_free(c);
    return ms;
}

#endif
