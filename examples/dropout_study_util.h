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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

#endif
