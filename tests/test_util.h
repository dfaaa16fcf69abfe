/* Shared helpers for the cmocka suites. */
#ifndef NN_TEST_UTIL_H
#define NN_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "nn/nn.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Makes t a leaf that requires a gradient, with a zeroed grad buffer of
 * its own (tensor_free releases it). Returns t. */
static inline tensor *test_require_grad(tensor *t)
{
    assert_non_null(t);
    t->grad = tensor_aligned_alloc((t->size ? t->size : 1) * sizeof(float));
    assert_non_null(t->grad);
    memset(t->grad, 0, t->size * sizeof(float));
    t->flags |= TENSOR_OWNS_GRAD | TENSOR_REQUIRES_GRAD;
    return t;
}

/* Scratch directories for suites that write files.
 * test_tmpdir_make fills dir (64 bytes or more) with a new /tmp/nn_test_<tag>_XXXXXX;
 * test_tmpdir_remove deletes the files in it, then the directory;
 * test_path_in joins dir and name in one of eight rotating buffers, so up to
 * eight returned paths stay valid at once. */
static inline int test_tmpdir_make(char *dir, size_t n, const char *tag)
{
    snprintf(dir, n, "/tmp/nn_test_%s_XXXXXX", tag);
    return mkdtemp(dir) ? 0 : -1;
}

static inline void test_tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

static inline const char *test_path_in(const char *dir, const char *name)
{
    static char p[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* Resident set size in KiB, from /proc/self/statm (pages); -1 if unread. */
static inline long test_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 1 when resident-memory figures say nothing about the library's own use:
 * ASan keeps freed blocks in quarantine (libgomp allocates and frees a
 * small team record for every serial `omp parallel if(0)` region, OpenBLAS's
 * small-matrix GEMM a work buffer), and under valgrind /proc/self/statm
 * describes valgrind's own process. Both tools report leaks themselves. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif
static inline int test_rss_unreliable(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return TEST_ASAN || (preload && strstr(preload, "vgpreload"));
}

/* Asserts that the last error message contains `needle`. */
#define assert_error_contains(needle)                                                     \
    do {                                                                                  \
        if (!strstr(nn_last_error(), (needle)))                                           \
            fail_msg("error message '%s' does not contain '%s'", nn_last_error(), (needle)); \
    } while (0)

#define assert_ok(expr)                                                                   \
    do {                                                                                  \
        nn_status s_ = (expr);                                                            \
        if (s_ != NN_OK) fail_msg("%s failed: %s", #expr, nn_last_error());               \
    } while (0)

#endif
