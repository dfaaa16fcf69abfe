/* IDX reader: a committed fixture written by Python, gzip files equal to
 * plain ones, and every error (missing file, wrong magic, bad dimensions,
 * truncation, trailing bytes, count mismatch, bad labels), each with the file
 * and offset in its message and the outputs left untouched. Files other than
 * the committed fixture are written on the fly in a temporary directory,
 * gzip ones with zlib's gzwrite. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "test_util.h"

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* Writes bytes to test_path(name), gzip-compressed when gz. */
static void write_file(const char *name, const uint8_t *bytes, size_t n, int gz)
{
    const char *p = test_path(name);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        assert_non_null(f);
        if (n) assert_int_equal(gzwrite(f, bytes, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        test_write_bytes(p, bytes, n);
    }
}

/* An image file: header (magic, n, rows, cols) and `data_bytes` pixels with
 * value (i * 7) & 255, optionally followed by `extra` bytes. */
static void write_images(const char *name, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                         size_t data_bytes, size_t extra, int gz)
{
    size_t total = 16 + data_bytes + extra;
    uint8_t *b = malloc(total);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < data_bytes + extra; i++) b[16 + i] = (uint8_t)(i * 7);
    write_file(name, b, total, gz);
    free(b);
}

static void write_labels(const char *name, uint32_t n, size_t data_bytes, uint8_t modulo, int gz)
{
    uint8_t *b = malloc(8 + data_bytes);
    put_be32(b, NN_IDX_MAGIC_LABELS);
    put_be32(b + 4, n);
    for (size_t i = 0; i < data_bytes; i++) b[8 + i] = (uint8_t)(i % modulo);
    write_file(name, b, 8 + data_bytes, gz);
    free(b);
}

/* Loads an image file expecting failure; checks status, message parts and
 * that the outputs were not written. */
static void expect_image_error(const char *path, nn_status want, const char *part1, const char *part2)
{
    uint8_t sentinel = 0, *px = &sentinel;
    int n = -5, rows = -5, cols = -5;
    nn_status s = nn_idx_load_images(path, &px, &n, &rows, &cols);
    if (s != want)
        fail_msg("%s: status %s, expected %s (%s)", path, nn_status_str(s), nn_status_str(want),
                 nn_last_error());
    assert_error_contains(path);
    assert_error_contains(part1);
    if (part2) assert_error_contains(part2);
    assert_ptr_equal(px, &sentinel);
    assert_int_equal(n, -5);
    assert_int_equal(rows, -5);
    assert_int_equal(cols, -5);
}

static void test_committed_fixture(void **state)
{
    (void)state;
    uint8_t *px, *lab;
    int n, rows, cols, nl;
    assert_ok(nn_idx_load_images("tests/fixtures/idx/tiny-images-idx3-ubyte", &px, &n, &rows, &cols));
    assert_int_equal(n, 3);
    assert_int_equal(rows, 2);
    assert_int_equal(cols, 4);
    for (int i = 0; i < 3; i++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 4; c++) assert_int_equal(px[(i * 2 + r) * 4 + c], 10 * i + 4 * r + c);
    assert_ok(nn_idx_load_labels("tests/fixtures/idx/tiny-labels-idx1-ubyte", &lab, &nl));
    assert_int_equal(nl, 3);
    assert_int_equal(lab[0], 7);
    assert_int_equal(lab[1], 0);
    assert_int_equal(lab[2], 9);
    float f[24];
    nn_idx_to_float(f, px, 24, 1.0f / 255.0f);
    assert_true(f[23] == 27.0f * (1.0f / 255.0f));
    free(px);
    free(lab);
}

static void test_gzip_equals_plain(void **state)
{
    (void)state;
    write_images("img", NN_IDX_MAGIC_IMAGES, 5, 6, 7, 5 * 6 * 7, 0, 0);
    write_images("img.gz", NN_IDX_MAGIC_IMAGES, 5, 6, 7, 5 * 6 * 7, 0, 1);
    write_labels("lab", 5, 5, 10, 0);
    write_labels("lab.gz", 5, 5, 10, 1);
    uint8_t *a, *b, *la, *lb;
    int na, ra, ca, nb, rb, cb, nla, nlb;
    assert_ok(nn_idx_load_images(test_path("img"), &a, &na, &ra, &ca));
    assert_ok(nn_idx_load_images(test_path("img.gz"), &b, &nb, &rb, &cb));
    assert_int_equal(na, nb);
    assert_int_equal(ra, rb);
    assert_int_equal(ca, cb);
    assert_memory_equal(a, b, 5 * 6 * 7);
    for (int i = 0; i < 5 * 6 * 7; i++) assert_int_equal(a[i], (uint8_t)(i * 7));
    assert_ok(nn_idx_load_labels(test_path("lab"), &la, &nla));
    assert_ok(nn_idx_load_labels(test_path("lab.gz"), &lb, &nlb));
    assert_int_equal(nla, 5);
    assert_int_equal(nlb, 5);
    assert_memory_equal(la, lb, 5);
    /* The .gz file really is compressed: its first bytes are gzip's magic. */
    FILE *f = fopen(test_path("img.gz"), "rb");
    uint8_t head[2];
    assert_int_equal(fread(head, 1, 2, f), 2);
    fclose(f);
    assert_int_equal(head[0], 0x1f);
    assert_int_equal(head[1], 0x8b);
    free(a);
    free(b);
    free(la);
    free(lb);
}

static void test_missing_file(void **state)
{
    (void)state;
    expect_image_error(test_path("nope"), NN_ERR_IO, "cannot open", "No such file");
    uint8_t *lab = NULL;
    int n = -5;
    assert_int_equal(nn_idx_load_labels(test_path("nope"), &lab, &n), NN_ERR_IO);
    assert_error_contains("nope");
    assert_null(lab);
    assert_int_equal(n, -5);
}

static void test_wrong_magic(void **state)
{
    (void)state;
    /* A label file given as images, and images given as labels. */
    write_labels("lab", 4, 4, 10, 0);
    expect_image_error(test_path("lab"), NN_ERR_FORMAT, "wrong magic 0x00000801 at offset 0",
                       "expected 0x00000803");
    write_images("img", NN_IDX_MAGIC_IMAGES, 2, 2, 2, 8, 0, 0);
    uint8_t *lab = NULL;
    int n = -5;
    assert_int_equal(nn_idx_load_labels(test_path("img"), &lab, &n), NN_ERR_FORMAT);
    assert_error_contains("wrong magic 0x00000803 at offset 0, expected 0x00000801");
    assert_null(lab);
    /* Float elements (type 0x0d) are not read. */
    write_images("float", 0x00000d03u, 2, 2, 2, 32, 0, 0);
    expect_image_error(test_path("float"), NN_ERR_FORMAT, "wrong magic 0x00000d03", NULL);
    /* Not an IDX file at all, and too short for a magic. */
    write_file("text", (const uint8_t *)"hello world, this is text", 25, 0);
    expect_image_error(test_path("text"), NN_ERR_FORMAT, "wrong magic", NULL);
    write_file("short", (const uint8_t *)"\0\0", 2, 0);
    expect_image_error(test_path("short"), NN_ERR_FORMAT, "expected 4 bytes of magic at offset 0",
                       "got 2");
}

static void test_wrong_dimensions(void **state)
{
    (void)state;
    write_images("rows0", NN_IDX_MAGIC_IMAGES, 2, 0, 5, 0, 0, 0);
    expect_image_error(test_path("rows0"), NN_ERR_FORMAT, "bad image rows 0 at offset 8", NULL);
    write_images("cols0", NN_IDX_MAGIC_IMAGES, 2, 5, 0, 0, 0, 0);
    expect_image_error(test_path("cols0"), NN_ERR_FORMAT, "bad image cols 0 at offset 12", NULL);
    write_images("n0", NN_IDX_MAGIC_IMAGES, 0, 28, 28, 0, 0, 0);
    expect_image_error(test_path("n0"), NN_ERR_FORMAT, "bad image count 0 at offset 4", NULL);
    write_images("wide", NN_IDX_MAGIC_IMAGES, 1, 28, 100000, 0, 0, 0);
    expect_image_error(test_path("wide"), NN_ERR_FORMAT, "bad image cols 100000 at offset 12", NULL);
    /* Each extent allowed, the product absurd: refused before allocating. */
    write_images("huge", NN_IDX_MAGIC_IMAGES, 2000000000u, 16384, 16384, 0, 0, 0);
    expect_image_error(test_path("huge"), NN_ERR_FORMAT, "promises 2000000000 images", "more than");
    write_images("neg", NN_IDX_MAGIC_IMAGES, 0x80000000u, 1, 1, 0, 0, 0);
    expect_image_error(test_path("neg"), NN_ERR_FORMAT, "bad image count 2147483648", NULL);
    /* The header itself cut inside the extents. */
    uint8_t b[10] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0};
    write_file("cuthdr", b, sizeof b, 0);
    expect_image_error(test_path("cuthdr"), NN_ERR_FORMAT, "expected 12 bytes of dimensions at offset 4",
                       "got 6");
}

static void test_truncated(void **state)
{
    (void)state;
    /* 3 images of 4x5 promised, 2.5 present. */
    write_images("cut", NN_IDX_MAGIC_IMAGES, 3, 4, 5, 50, 0, 0);
    expect_image_error(test_path("cut"), NN_ERR_FORMAT, "truncated data: expected 60 bytes from offset 16",
                       "got 50");
    write_images("cut.gz", NN_IDX_MAGIC_IMAGES, 3, 4, 5, 50, 0, 1);
    expect_image_error(test_path("cut.gz"), NN_ERR_FORMAT, "expected 60 bytes from offset 16", "got 50");
    write_labels("labcut", 10, 7, 10, 0);
    uint8_t *lab = NULL;
    int n = -5;
    assert_int_equal(nn_idx_load_labels(test_path("labcut"), &lab, &n), NN_ERR_FORMAT);
    assert_error_contains("expected 10 bytes from offset 8, got 7");
    assert_null(lab);
    /* A gzip stream cut short (the compressed file itself truncated). */
    write_images("full.gz", NN_IDX_MAGIC_IMAGES, 40, 20, 20, 16000, 0, 1);
    FILE *f = fopen(test_path("full.gz"), "rb");
    uint8_t buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(len > 40);
    write_file("half.gz", buf, len / 2, 0);
    uint8_t sentinel = 0, *px = &sentinel;
    int rows, cols;
    nn_status s = nn_idx_load_images(test_path("half.gz"), &px, &n, &rows, &cols);
    assert_int_equal(s, NN_ERR_FORMAT);
    assert_error_contains("half.gz");
    assert_ptr_equal(px, &sentinel);
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    write_images("long", NN_IDX_MAGIC_IMAGES, 2, 3, 3, 18, 5, 0);
    expect_image_error(test_path("long"), NN_ERR_FORMAT, "unexpected bytes after the data at offset 34",
                       NULL);
}

/* A directory holding the four MNIST names; `gz` picks which are .gz. */
static void write_mnist(int n_train, int n_train_labels, int n_test, int gz_mask, uint8_t label_mod)
{
    const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char name[64];
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s%s", names[k], gz_mask >> k & 1 ? ".gz" : "");
        if (k == 0) write_images(name, NN_IDX_MAGIC_IMAGES, (uint32_t)n_train, 4, 4, (size_t)n_train * 16, 0, gz_mask & 1);
        if (k == 1) write_labels(name, (uint32_t)n_train_labels, (size_t)n_train_labels, label_mod, gz_mask >> 1 & 1);
        if (k == 2) write_images(name, NN_IDX_MAGIC_IMAGES, (uint32_t)n_test, 4, 4, (size_t)n_test * 16, 0, gz_mask >> 2 & 1);
        if (k == 3) write_labels(name, (uint32_t)n_test, (size_t)n_test, label_mod, gz_mask >> 3 & 1);
    }
}

static void test_mnist_load(void **state)
{
    (void)state;
    write_mnist(12, 12, 5, 0x5, 10); /* train images and test images gzipped */
    nn_mnist m;
    assert_ok(nn_mnist_load(test_dir(), &m));
    assert_int_equal(m.n_train, 12);
    assert_int_equal(m.n_test, 5);
    assert_int_equal(m.rows, 4);
    assert_int_equal(m.cols, 4);
    assert_int_equal(m.train_images[17], (uint8_t)(17 * 7));
    assert_int_equal(m.train_labels[11], 1);
    assert_int_equal(m.test_labels[4], 4);
    nn_mnist_free(&m);
    assert_null(m.train_images);
    nn_mnist_free(NULL);
}

static void test_mnist_errors(void **state)
{
    (void)state;
    nn_mnist m;
    /* Empty directory: names the missing file in both forms. */
    assert_int_equal(nn_mnist_load(test_dir(), &m), NN_ERR_IO);
    assert_error_contains("neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz");
    assert_null(m.train_images);
    /* Counts that differ. */
    write_mnist(12, 11, 5, 0, 10);
    assert_int_equal(nn_mnist_load(test_dir(), &m), NN_ERR_FORMAT);
    assert_error_contains("has 12 images but");
    assert_error_contains("has 11 labels");
    assert_null(m.train_images);
    assert_null(m.train_labels);
    test_dir_teardown(NULL);
    test_dir_setup(NULL);
    /* A label outside 0..9. */
    write_mnist(12, 12, 5, 0, 12);
    assert_int_equal(nn_mnist_load(test_dir(), &m), NN_ERR_FORMAT);
    assert_error_contains("label 10 at offset 18 is outside 0..9");
    test_dir_teardown(NULL);
    test_dir_setup(NULL);
    /* Test images missing while training ones exist. */
    write_mnist(12, 12, 5, 0, 10);
    unlink(test_path("t10k-images-idx3-ubyte"));
    assert_int_equal(nn_mnist_load(test_dir(), &m), NN_ERR_IO);
    assert_error_contains("t10k-images-idx3-ubyte.gz");
    assert_null(m.train_images);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_committed_fixture),
        cmocka_unit_test_setup_teardown(test_gzip_equals_plain, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_magic, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_dimensions, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_truncated, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_trailing_bytes, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_mnist_load, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_mnist_errors, test_dir_setup, test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
