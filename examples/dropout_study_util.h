/* Small helpers the dropout studies share (examples/dropout_study.c,
 * examples/dropout_study2.c): a monotonic clock, directories, the rename
 * that puts a finished file in place, JSON numbers, integer options.
 * Deliberately omitted: anything about networks or statistics (see
 * dropout_study_stats.h).
 */
#ifndef NN_EXAMPLES_DROPOUT_STUDY_UTIL_H
#define NN_EXAMPLES_DROPOUT_STUDY_UTIL_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tensor/random.h"
#include "tensor/status.h"

static double study_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* mkdir -p path. */
static nn_status study_mkdirs(const char *path)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
        return nn_error(NN_ERR_ARG, "--out: path too long");
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == '\0') {
            const char keep = *c;
            *c = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                return nn_error(NN_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            *c = keep;
            if (!keep) break;
        }
    }
    return NN_OK;
}

static nn_status study_rename(const char *tmp, const char *path)
{
    if (rename(tmp, path) != 0)
        return nn_error(NN_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    return NN_OK;
}

/* A number, or null for NaN and infinities (JSON has neither). */
static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else
        fputs("null", f);
}

/* *out = s as a decimal integer in [lo, hi]; 0 when s is not one. */
static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

/* The first n of a seeded permutation of 0..total-1, drawn from (seed, n)
 * (malloc'ed; NULL when out of memory): both studies' training subsets. */
static int *study_subset(int total, int n, uint64_t seed)
{
    int *all = malloc((size_t)total * sizeof *all);
    if (!all) return NULL;
    for (int i = 0; i < total; i++) all[i] = i;
    tensor_rng r;
    tensor_rng_seed(&r, tensor_hash3(seed, 0x737562736574ull /* "subset" */, (uint64_t)n));
    for (int i = 0; i < n; i++) {
        const int j = i + (int)tensor_rng_below(&r, (uint32_t)(total - i));
        const int t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    return all;
}

#endif
