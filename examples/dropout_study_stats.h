/* Small statistics for examples/dropout_study.c: mean and sample standard
 * deviation over seeds, the paired t statistic with its 95 % critical value,
 * the formatted paired difference, and the Pearson correlation of
 * horizontally adjacent activations.
 *
 * Everything is summed serially in double in a fixed order, so the numbers
 * are the same on every run and thread count.
 * Deliberately omitted: other tests (Wilcoxon, bootstrap), multiple-comparison
 * corrections; the study reports the raw paired t and says so.
 */
#ifndef NN_EXAMPLES_DROPOUT_STUDY_STATS_H
#define NN_EXAMPLES_DROPOUT_STUDY_STATS_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

static double study_mean(const double *v, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : NAN;
}

/* Sample standard deviation (n - 1 in the denominator); 0 for one value. */
static double study_sd(const double *v, int n)
{
    if (n < 2) return 0.0;
    const double m = study_mean(v, n);
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    return sqrt(s / (n - 1));
}

/* Paired t statistic of the differences d (mean / (sd / sqrt(n))); 0 when
 * every difference is the same value, including all zeros. */
static double study_paired_t(const double *d, int n)
{
    const double sd = study_sd(d, n);
    if (n < 2 || sd == 0.0) return 0.0;
    return study_mean(d, n) / (sd / sqrt((double)n));
}

/* Two-sided 95 % critical value of Student's t with df degrees of freedom
 * (table values; 1.96 beyond 30). */
static double study_t_crit(int df)
{
    static const double t[31] = {0,      12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365,
                                 2.306,  2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
                                 2.120,  2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
                                 2.064,  2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
    if (df < 1) return INFINITY;
    return df <= 30 ? t[df] : 1.96;
}

/* "+0.12 ± 0.30 (t = 0.9)": the mean and sd of the paired differences
 * d[0..seeds) with prec decimals and their t, with " *" when |t| exceeds
 * the 95 % value. Returns buf. */
static const char *study_fmt_diff(char *buf, size_t n, const double *d, int seeds, int prec)
{
    const double t = study_paired_t(d, seeds);
    snprintf(buf, n, "%+.*f ± %.*f (t = %.1f)%s", prec, study_mean(d, seeds), prec,
             study_sd(d, seeds), t, fabs(t) > study_t_crit(seeds - 1) ? " *" : "");
    return buf;
}

/* Sums for the Pearson correlation of pairs (a, b). */
typedef struct study_corr {
    double n, sa, sb, saa, sbb, sab;
} study_corr;

/* Adds the pairs (x[n][h][w][c], x[n][h][w+1][c]) of an NHWC batch
 *   x (N, H, W, C)
 * Each image is summed on its own and then added, which keeps the partial
 * sums small. */
static void study_corr_add_nhwc(study_corr *acc, const float *x, int N, int H, int W, int C)
{
    for (int n = 0; n < N; n++) {
        study_corr p = {0, 0, 0, 0, 0, 0};
        const float *img = x + (size_t)n * H * W * C;
        for (int h = 0; h < H; h++)
            for (int w = 0; w + 1 < W; w++) {
                const float *a = img + ((size_t)h * W + w) * C, *b = a + C;
                for (int c = 0; c < C; c++) {
                    const double u = a[c], v = b[c];
                    p.sa += u;
                    p.sb += v;
                    p.saa += u * u;
                    p.sbb += v * v;
                    p.sab += u * v;
                }
            }
        acc->n += (double)H * (W - 1) * C;
        acc->sa += p.sa;
        acc->sb += p.sb;
        acc->saa += p.saa;
        acc->sbb += p.sbb;
        acc->sab += p.sab;
    }
}

/* The correlation coefficient, or NaN when a side has no variance. */
static double study_corr_value(const study_corr *c)
{
    if (c->n < 2) return NAN;
    const double ma = c->sa / c->n, mb = c->sb / c->n;
    const double va = c->saa / c->n - ma * ma, vb = c->sbb / c->n - mb * mb;
    if (va <= 0.0 || vb <= 0.0) return NAN;
    return (c->sab / c->n - ma * mb) / sqrt(va * vb);
}

#endif
