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

/* The suite's scratch directory, for suites that write files.
 * test_dir_setup, a cmocka setup (of the group or of each test), makes it,
 * named after the suite's source file (tests/test_npy.c gives
 * /tmp/nn_test_npy_XXXXXX: __BASE_FILE__ is the .c file, even here in its
 * header); test_dir_teardown removes it with the files in it; test_path(name)
 * is name inside it, as test_path_in gives it. */
#define TEST_DIR_SIZE 64
static inline char *test_dir(void)
{
    static char dir[TEST_DIR_SIZE];
    return dir;
}

static inline const char *test_path(const char *name) { return test_path_in(test_dir(), name); }

static inline int test_dir_setup(void **state)
{
    (void)state;
    const char *base = strrchr(__BASE_FILE__, '/');
    base = base ? base + 1 : __BASE_FILE__;
    if (!strncmp(base, "test_", 5)) base += 5;
    char tag[40];
    snprintf(tag, sizeof tag, "%.*s", (int)strcspn(base, "."), base);
    return test_tmpdir_make(test_dir(), TEST_DIR_SIZE, tag);
}

static inline int test_dir_teardown(void **state)
{
    (void)state;
    test_tmpdir_remove(test_dir());
    return 0;
}

/* Entries in the scratch directory, "." and ".." aside. */
static inline int test_dir_entries(void)
{
    DIR *d = opendir(test_dir());
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Writes b[0..n) to path, replacing it. */
static inline void test_write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The whole of path, malloc'ed, with a '\0' after its *n bytes (so a text
 * file is also a string). */
static inline uint8_t *test_read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    b[len] = 0;
    *n = (size_t)len;
    return b;
}

/* A model from spec, built for one sample of the given shape. */
static inline nn_model *test_make_model(const char *spec, int rank, const int *shape, uint64_t seed)
{
    nn_model *m = nn_model_create(seed);
    assert_non_null(m);
    assert_ok(nn_model_add_spec(m, spec));
    assert_ok(nn_model_build(m, rank, shape));
    return m;
}

/* Builds an npy file in out: version major.minor, the given header text
 * (padded with spaces + '\n' to `align` unless align is 0), then nbytes of
 * data (zeros when data is NULL). Returns the file's length. */
static inline size_t test_npy_bytes(unsigned char *out, int major, int minor, const char *header,
                                    size_t align, const float *data, size_t nbytes)
{
    size_t width = major == 1 ? 2 : 4, pre = 8 + width, hl = strlen(header);
    size_t total = align ? (pre + hl + 1 + align - 1) / align * align : pre + hl;
    size_t hlen = total - pre;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = (unsigned char)minor;
    for (size_t k = 0; k < width; k++) out[8 + k] = (unsigned char)(hlen >> (8 * k));
    memcpy(out + pre, header, hl);
    if (align) {
        memset(out + pre + hl, ' ', hlen - hl - 1);
        out[total - 1] = '\n';
    }
    if (data)
        memcpy(out + total, data, nbytes);
    else
        memset(out + total, 0, nbytes);
    return total + nbytes;
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

/* A toy classification set of n 6x6 one-channel images: class c in 0..3
 * (drawn with the seed) lights the 3x3 quadrant c (row c / 2, column c % 2)
 * at about 150..250 over noise of 0..99 elsewhere; images[n * 36],
 * labels[n]. Small enough that a tiny CNN learns it in a few epochs. */
#define TEST_TOY_SIDE 6
#define TEST_TOY_CLASSES 4
static inline void test_toy_quadrants(uint8_t *images, uint8_t *labels, int n, uint64_t seed)
{
    const int side = TEST_TOY_SIDE;
    tensor_rng r;
    tensor_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        const int c = (int)tensor_rng_below(&r, TEST_TOY_CLASSES);
        const int r0 = (c / 2) * 3, c0 = (c % 2) * 3;
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++) {
                const int in = y >= r0 && y < r0 + 3 && x >= c0 && x < c0 + 3;
                images[(size_t)i * side * side + y * side + x] =
                    (uint8_t)((in ? 150 : 0) + tensor_rng_below(&r, 100));
            }
        labels[i] = (uint8_t)c;
    }
}

#endif
