/* .npy save and load: round trips, header forms numpy and people write, and
 * every malformed-file error (each checked through the file loader and the
 * in-memory parser, which must agree). Needs no Python: the files that
 * numpy would write are built byte by byte here. numpy itself reads our
 * files in tests/torch_roundtrip.py when it is installed. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

/* Loads through both entry points; both must give status `want`. */
static tensor *load_both(const char *name, const unsigned char *b, size_t n, nn_status want)
{
    const char *p = test_path(name);
    test_write_bytes(p, b, n);
    tensor *t1 = NULL, *t2 = NULL;
    nn_status s1 = nn_npy_load(p, &t1);
    char msg1[512];
    snprintf(msg1, sizeof msg1, "%s", nn_last_error());
    nn_status s2 = nn_npy_parse(b, n, p, &t2);
    if (s1 != want || s2 != want)
        fail_msg("%s: load gave %s (%s), parse gave %s (%s), wanted %s", name, nn_status_str(s1),
                 msg1, nn_status_str(s2), nn_last_error(), nn_status_str(want));
    if (want != NN_OK) {
        assert_null(t1);
        assert_null(t2);
        /* Same message from both paths, and it names the file. */
        assert_string_equal(msg1, nn_last_error());
        assert_error_contains(name);
        return NULL;
    }
    assert_int_equal(t1->rank, t2->rank);
    assert_memory_equal(t1->shape, t2->shape, sizeof t1->shape);
    if (t1->size) assert_memory_equal(t1->data, t2->data, t1->size * sizeof(float));
    tensor_free(t2);
    return t1;
}

static void test_round_trip(void **state)
{
    (void)state;
    const int shapes[][4] = {{7}, {2, 3}, {4, 1, 3}, {2, 3, 5, 1}, {3, 0, 2}};
    const int ranks[] = {1, 2, 3, 4, 3};
    tensor_rng rng;
    tensor_rng_seed(&rng, 5);
    for (int k = 0; k < 5; k++) {
        tensor *t = tensor_create(ranks[k], shapes[k]);
        tensor_init_normal(t, &rng, 0.0f, 3.0f);
        if (t->size) t->data[0] = -0.0f;
        if (t->size > 1) t->data[1] = 1e-42f; /* a denormal survives bit-exactly */
        const char *p = test_path("rt.npy");
        assert_ok(nn_npy_save(p, t));
        size_t n;
        unsigned char *b = test_read_bytes(p, &n);
        /* numpy's own layout: version 1.0, data 64-byte aligned, header ends in '\n'. */
        assert_memory_equal(b, "\x93NUMPY\x01\x00", 8);
        size_t off = 10 + (size_t)(b[8] | b[9] << 8);
        assert_int_equal(off % 64, 0);
        assert_int_equal(b[off - 1], '\n');
        assert_int_equal(n, off + t->size * 4);
        tensor *u = load_both("rt_copy.npy", b, n, NN_OK);
        assert_int_equal(u->rank, t->rank);
        assert_memory_equal(u->shape, t->shape, sizeof t->shape);
        if (t->size) assert_memory_equal(u->data, t->data, t->size * sizeof(float));
        free(b);
        tensor_free(u);
        tensor_free(t);
    }
}

static void test_header_text(void **state)
{
    (void)state;
    tensor *t = tensor_create(2, (int[]){2, 3});
    for (int i = 0; i < 6; i++) t->data[i] = (float)i;
    assert_ok(nn_npy_save(test_path("h.npy"), t));
    size_t n;
    unsigned char *b = test_read_bytes(test_path("h.npy"), &n);
    const char want[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_memory_equal(b + 10, want, sizeof want - 1);
    free(b);
    tensor_free(t);

    t = tensor_zeros(1, (int[]){3}); /* tensor_create leaves the data unset */
    assert_ok(nn_npy_save(test_path("h1.npy"), t));
    b = test_read_bytes(test_path("h1.npy"), &n);
    const char want1[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
    assert_memory_equal(b + 10, want1, sizeof want1 - 1);
    free(b);
    tensor_free(t);
}

static void test_header_variants(void **state)
{
    (void)state;
    const float data[6] = {1, 2, 3, 4, 5, 6};
    static const struct {
        const char *header;
        int major;
        size_t align;
    } ok[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 64},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 16}, /* old numpy */
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 2, 64},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 3, 64},
        {"{\"shape\":(2,3),\"descr\":\"<f4\",\"fortran_order\":False}", 1, 0},
        {"  {  'fortran_order' :False ,'shape':( 2 , 3 ) , 'descr':'<f4' ,  }  ", 1, 64},
        {"{'descr': '<f4',\n 'fortran_order': False,\n 'shape': (2L, 3L)}", 1, 64},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3,), }", 1, 64},
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        unsigned char buf[512];
        size_t n = test_npy_bytes(buf, ok[k].major, 0, ok[k].header, ok[k].align, data, sizeof data);
        char name[32];
        snprintf(name, sizeof name, "variant%zu.npy", k);
        tensor *t = load_both(name, buf, n, NN_OK);
        assert_int_equal(t->rank, 2);
        assert_int_equal(t->shape[0], 2);
        assert_int_equal(t->shape[1], 3);
        assert_memory_equal(t->data, data, sizeof data);
        tensor_free(t);
    }
    /* (6,) and a 1-d shape with a space before the comma. */
    unsigned char buf[512];
    size_t n = test_npy_bytes(buf, 1, 0, "{'descr':'<f4','fortran_order':False,'shape':(6 ,)}", 64, data,
                        sizeof data);
    tensor *t = load_both("one_d.npy", buf, n, NN_OK);
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->shape[0], 6);
    tensor_free(t);
}

typedef struct {
    const char *name, *header;
    int major, minor;
    long data_bytes; /* -1: the shape's size */
    const char *needle;
} bad_case;

static void test_errors(void **state)
{
    (void)state;
    float data[16] = {0};
    const bad_case cases[] = {
        {"dtype_f8.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 1, 0, 16,
         "dtype '<f8' is not supported"},
        {"dtype_be.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 1, 0, -1,
         "big-endian"},
        {"dtype_i4.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 1, 0, -1,
         "'<i4'"},
        {"structured.npy", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 1,
         0, -1, "structured dtype"},
        {"fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 1, 0, -1,
         "fortran_order is True"},
        {"short.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 0, 20,
         "truncated"},
        {"long.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 0, 28,
         "trailing bytes"},
        {"empty_data.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 1, 0, 0,
         "has 0"},
        {"version.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4, 0, -1,
         "version 4.0 at offset 6"},
        {"minor.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, 1, -1,
         "version 1.1"},
        {"unknown_key.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 1, 0,
         -1, "unknown key 'x'"},
        {"dup_key.npy", "{'descr': '<f4', 'descr': '<f4', 'shape': (2,), }", 1, 0, -1,
         "key 'descr' appears twice"},
        {"missing.npy", "{'descr': '<f4', 'shape': (2,)}", 1, 0, -1, "'fortran_order' is missing"},
        {"int_shape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", 1, 0, -1,
         "is an int, not a tuple"},
        {"list_shape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", 1, 0, -1,
         "expected '(' starting the 'shape' tuple"},
        {"neg.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", 1, 0, -1,
         "non-negative integer"},
        {"huge.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,)}", 1, 0, -1,
         "larger than"},
        {"rank7.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1)}", 1, 0,
         -1, "more than 6 dimensions"},
        {"scalar.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 1, 0, 4, "0-d array"},
        {"bool.npy", "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}", 1, 0, -1,
         "True or False"},
        {"unterminated.npy", "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", 1, 0, -1,
         "expected ',' or '}' after a value, found 'f'"},
        {"no_close.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 1, 0, -1,
         "expected ',' or '}'"},
        {"garbage.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 1, 0, -1,
         "'x' after the closing '}'"},
        {"not_dict.npy", "['descr', '<f4']", 1, 0, -1, "expected '{'"},
        {"escape.npy", "{'des\\cr': '<f4', 'fortran_order': False, 'shape': (2,)}", 1, 0, -1,
         "escape sequences"},
        {"nul.npy", "{'descr': '<f4',\x01 'fortran_order': False, 'shape': (2,)}", 1, 0, -1,
         "byte 0x01"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bad_case *c = &cases[k];
        unsigned char buf[512];
        long nb = c->data_bytes >= 0 ? c->data_bytes : 8;
        if (!strcmp(c->name, "fortran.npy")) nb = 16;
        size_t n = test_npy_bytes(buf, c->major, c->minor, c->header, 64, data, (size_t)nb);
        load_both(c->name, buf, n, NN_ERR_FORMAT);
        if (!strstr(nn_last_error(), c->needle))
            fail_msg("%s: message '%s' lacks '%s'", c->name, nn_last_error(), c->needle);
    }
}

static void test_offsets_in_messages(void **state)
{
    (void)state;
    float data[2] = {0};
    unsigned char buf[256];
    /* The ':' is missing after 'shape': the key ends at byte 10 + 50 + 7. */
    const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape' (2,)}";
    size_t n = test_npy_bytes(buf, 1, 0, h, 64, data, sizeof data);
    load_both("offset.npy", buf, n, NN_ERR_FORMAT);
    char want[64];
    snprintf(want, sizeof want, "at offset %zu", (size_t)10 + (size_t)(strstr(h, " (2") - h) + 1);
    assert_error_contains(want);
    assert_error_contains("expected ':' after the key, found '('");
}

static void test_truncated_and_magic(void **state)
{
    (void)state;
    float data[2] = {1, 2};
    unsigned char buf[256];
    size_t n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 64,
                        data, sizeof data);
    /* Cut at every length inside the preamble and header. */
    for (size_t cut = 0; cut < 64; cut++) {
        load_both("cut.npy", buf, cut, NN_ERR_FORMAT);
        assert_error_contains("truncated");
    }
    unsigned char bad[sizeof buf];
    memcpy(bad, buf, n);
    bad[3] = 'X';
    load_both("magic.npy", bad, n, NN_ERR_FORMAT);
    assert_error_contains("bad magic at offset 3");
    load_both("text.npy", (const unsigned char *)"hello world", 11, NN_ERR_FORMAT);
    assert_error_contains("bad magic at offset 0");
    /* A header length far past the end of the file. */
    memcpy(bad, buf, n);
    bad[8] = 0xff;
    bad[9] = 0xff;
    load_both("hlen.npy", bad, n, NN_ERR_FORMAT);
    assert_error_contains("truncated");
    /* Version 2.0 header length over the limit. */
    memcpy(bad, buf, 12);
    bad[6] = 2;
    bad[8] = 0;
    bad[9] = 0;
    bad[10] = 0;
    bad[11] = 0x40;
    load_both("hlen2.npy", bad, 12, NN_ERR_FORMAT);
    assert_error_contains("over the");
}

static void test_save_atomic_and_errors(void **state)
{
    (void)state;
    test_dir_teardown(NULL);
    test_dir_setup(NULL);
    tensor *a = tensor_zeros(1, (int[]){4}), *b = tensor_create(2, (int[]){2, 2});
    for (int i = 0; i < 4; i++) b->data[i] = (float)i + 0.5f;
    const char *p = test_path("over.npy");
    assert_ok(nn_npy_save(p, a));
    assert_ok(nn_npy_save(p, b)); /* replaces the file */
    assert_int_equal(test_dir_entries(), 1); /* no temporary left behind */
    tensor *c;
    assert_ok(nn_npy_load(p, &c));
    assert_int_equal(c->rank, 2);
    assert_memory_equal(c->data, b->data, 4 * sizeof(float));
    tensor_free(c);

    assert_int_equal(nn_npy_save("/nonexistent-dir/x.npy", a), NN_ERR_IO);
    assert_error_contains("/nonexistent-dir/x.npy");
    assert_int_equal(nn_npy_load(test_path("missing.npy"), &c), NN_ERR_IO);
    assert_error_contains("missing.npy: cannot open");
    assert_null(c);
    assert_int_equal(nn_npy_save(NULL, a), NN_ERR_ARG);
    assert_int_equal(nn_npy_save(p, NULL), NN_ERR_ARG);
    assert_int_equal(nn_npy_load(p, NULL), NN_ERR_ARG);
    assert_int_equal(nn_npy_parse(NULL, 4, "x", &c), NN_ERR_ARG);
    assert_int_equal(test_dir_entries(), 1);
    tensor_free(a);
    tensor_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_header_text),
        cmocka_unit_test(test_header_variants),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_offsets_in_messages),
        cmocka_unit_test(test_truncated_and_magic),
        cmocka_unit_test(test_save_atomic_and_errors),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
