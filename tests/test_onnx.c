/* ONNX export and import (nn/io/onnx.h), checked by real consumers:
 *  - the protobuf wire layer (nn/io/protobuf.h) against hand-encoded bytes;
 *  - exported files pass the ONNX checker with full checking
 *    (tests/onnx_check.py, Debian's python3-onnx) and ONNX Runtime
 *    (tests/onnx_run.js, npm's onnxruntime-node in NN_ONNXRUNTIME_DIR)
 *    computes the logits nn computes, within 1e-5, on 256 MNIST test images
 *    (.cache/mnist or NN_MNIST_DIR; make test fetches them), for the MNIST
 *    network and the residual network of examples/fashion_resnet.txt, in
 *    both data formats, each trained first on MNIST training images until
 *    it classifies most of those test images correctly (checked), so the
 *    weights, batchnorm statistics and activations are a classifier's;
 *    each tool's absence skips its part with the reason printed;
 *  - import: nn's own exports come back with the same logits; models that
 *    PyTorch 1.13 exported (tests/fixtures/onnx, written by
 *    tests/gen_onnx_fixtures.py) give PyTorch's logits within 1e-5, and
 *    nn's re-export of them passes the checker and the runtime again;
 *    unsupported operators, attributes and dtypes, damaged files and cyclic
 *    graphs are refused with a message and no model.
 */
#include "test_util.h"

#include <math.h>
#include <sys/stat.h>

#include "nn/io/onnx_graph.h"
#include "nn/io/protobuf.h"

#define TOL 1e-5f
#define IMPORT 1

static const char *mnist_dir(void)
{
    const char *d = getenv("NN_MNIST_DIR");
    return d && *d ? d : ".cache/mnist";
}

/* An MNIST file pair (images scaled to [0, 1] later, labels), read once. */
typedef struct {
    uint8_t *px, *lb;
    int count;
} mnist_set;

static mnist_set mnist_test, mnist_train;

/* Reads set `name` ("t10k" or "train") into *s once; 0 when it is there. */
static int mnist_open(mnist_set *s, const char *name)
{
    if (s->px) return 0;
    char path[512], lpath[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", mnist_dir(), name);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte", mnist_dir(), name);
    int rows = 0, cols = 0, nl = 0;
    if (nn_idx_load_images(path, &s->px, &s->count, &rows, &cols) != NN_OK) return -1;
    if (nn_idx_load_labels(lpath, &s->lb, &nl) != NN_OK || nl != s->count || rows != 28 ||
        cols != 28) {
        free(s->px);
        free(s->lb);
        s->px = s->lb = NULL;
        return -1;
    }
    return 0;
}

static void mnist_close(mnist_set *s)
{
    free(s->px);
    free(s->lb);
    s->px = s->lb = NULL;
}

/* n images of s from image `first` on, scaled to [0, 1], as (n, 28, 28, 1)
 * or (n, 1, 28, 28) (the same bytes: one channel); labels too. */
static tensor *mnist_batch(const mnist_set *s, int first, int n, int cf, int *labels)
{
    assert_true(first >= 0 && first + n <= s->count);
    int shape[4] = {n, 28, 28, 1};
    if (cf) shape[1] = 1, shape[2] = 28, shape[3] = 28;
    tensor *x = tensor_create(4, shape);
    assert_non_null(x);
    nn_idx_to_float(x->data, s->px + (size_t)first * 784, (size_t)n * 784, 1.0f / 255.0f);
    for (int i = 0; labels && i < n; i++) labels[i] = s->lb[first + i];
    return x;
}

/* n MNIST test images from image `first` on (labels too); NULL when the
 * files are missing. */
static tensor *mnist_images(int first, int n, int cf, int *labels)
{
    if (mnist_open(&mnist_test, "t10k")) return NULL;
    return mnist_batch(&mnist_test, first, n, cf, labels);
}

#define TRAIN_BATCH 32

/* The text of spec file `path` with " momentum=0.9" on every batchnorm
 * line. The default, 0.99, leaves 55 % of the initial moving statistics
 * (mean 0, variance 1) in place after 60 steps, and a network that
 * normalises with those in eval mode classifies no better than chance; at
 * 0.9 they are the data's after a few dozen steps. The exported graph is
 * the same (momentum is not part of inference). Caller frees. */
static char *spec_fast_batchnorm(const char *path)
{
    size_t len;
    char *text = (char *)test_read_bytes(path, &len);
    char *out = malloc(3 * len + 2), *o = out; /* "batchnorm\n" grows to 24 bytes */
    assert_non_null(out);
    for (char *line = text; line < text + len;) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));
        if (!end) end = text + len;
        memcpy(o, line, (size_t)(end - line));
        o += end - line;
        if (!strncmp(line, "batchnorm", 9)) o += sprintf(o, " momentum=0.9");
        *o++ = '\n';
        line = end + 1;
    }
    *o = '\0';
    free(text);
    return out;
}

/* The model of a spec file in format cf, in eval mode, trained for `steps`
 * Adam steps of 32 MNIST training images (the first steps * 32), so that
 * the weights, the batchnorm statistics and the activations the runtime is
 * compared on are those of a working classifier, not of an initialisation
 * (the caller has checked that the files are there: require_mnist). */
static nn_model *trained_model(const char *spec, int cf, int steps)
{
    assert_ok(nn_set_image_data_format(cf ? NN_CHANNELS_FIRST : NN_CHANNELS_LAST));
    nn_model *m = nn_model_create(11);
    assert_non_null(m);
    char *text = spec_fast_batchnorm(spec);
    assert_ok(nn_model_add_spec(m, text));
    free(text);
    const int shape[3] = {cf ? 1 : 28, 28, cf ? 28 : 1};
    assert_ok(nn_model_build(m, 3, shape));
    nn_reset_image_data_format();
    optim *opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_non_null(opt);
    nn_model_set_training(m, 1);
    assert_int_equal(mnist_open(&mnist_train, "train"), 0);
    for (int s = 0; s < steps; s++) {
        int labels[TRAIN_BATCH];
        tensor *x = mnist_batch(&mnist_train, TRAIN_BATCH * s, TRAIN_BATCH, cf, labels);
        assert_ok(nn_model_train_step(m, opt, x, labels, NULL, NULL));
        tensor_free(x);
    }
    optim_free(opt);
    nn_model_set_training(m, 0);
    return m;
}

/* ---- the protobuf wire layer ---- */

static void test_protobuf_round_trip(void **state)
{
    (void)state;
    nn_pb_writer w = {0}, child = {0};
    nn_pb_write_varint_field(&w, 1, 300);
    nn_pb_write_int_field(&w, 2, -2);
    nn_pb_write_float_field(&w, 3, 1.5f);
    nn_pb_write_string_field(&child, 1, "ab");
    nn_pb_write_message_field(&w, 4, &child);
    assert_ok(nn_pb_writer_status(&w, "test"));
    /* Field 1 varint 300: key 0x08, value ac 02; field 2 -2: ten bytes. */
    const uint8_t head[] = {0x08, 0xac, 0x02, 0x10, 0xfe, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0x01, 0x1d, 0x00, 0x00, 0xc0, 0x3f,
                            0x22, 0x04, 0x0a, 0x02, 'a', 'b'};
    assert_int_equal(w.len, sizeof head);
    assert_memory_equal(w.data, head, sizeof head);
    nn_pb_reader r, sub;
    nn_pb_field f;
    nn_pb_reader_init(&r, w.data, w.data, w.len, "t.pb");
    assert_int_equal(nn_pb_next(&r, &f), 1);
    assert_true(f.number == 1 && f.wire == NN_PB_VARINT && f.v == 300);
    assert_int_equal(nn_pb_next(&r, &f), 1);
    assert_true(f.number == 2 && (int64_t)f.v == -2);
    assert_int_equal(nn_pb_next(&r, &f), 1);
    assert_true(f.number == 3 && f.wire == NN_PB_FIXED32 && f.v == 0x3fc00000u);
    assert_int_equal(nn_pb_next(&r, &f), 1);
    assert_true(f.number == 4 && f.wire == NN_PB_LEN && f.len == 4);
    nn_pb_reader_sub(&sub, &r, &f);
    assert_int_equal(nn_pb_next(&sub, &f), 1);
    assert_true(f.len == 2 && !memcmp(f.data, "ab", 2) && f.offset == 21);
    assert_int_equal(nn_pb_next(&sub, &f), 0);
    assert_int_equal(nn_pb_next(&r, &f), 0);
    /* Every truncation of the message is refused with an offset. */
    for (size_t n = 1; n < sizeof head; n++) {
        if (n == 3 || n == 14 || n == 19) continue; /* field boundaries */
        nn_pb_reader_init(&r, w.data, w.data, n, "t.pb");
        int rc;
        while ((rc = nn_pb_next(&r, &f)) == 1) {}
        if (rc != -1) fail_msg("a message cut at %zu bytes was read to its end", n);
        assert_error_contains("t.pb: offset");
    }
    /* A length beyond the end, a group, an 11-byte varint. */
    const uint8_t bad_len[] = {0x22, 0x05, 0x0a};
    nn_pb_reader_init(&r, bad_len, bad_len, sizeof bad_len, "t.pb");
    assert_int_equal(nn_pb_next(&r, &f), -1);
    assert_error_contains("declares 5 bytes");
    const uint8_t group[] = {0x0b};
    nn_pb_reader_init(&r, group, group, 1, "t.pb");
    assert_int_equal(nn_pb_next(&r, &f), -1);
    assert_error_contains("group");
    const uint8_t long_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    nn_pb_reader_init(&r, long_varint, long_varint, sizeof long_varint, "t.pb");
    assert_int_equal(nn_pb_next(&r, &f), -1);
    assert_error_contains("varint");
    nn_pb_writer_free(&w);
    nn_pb_writer_free(&child);
}

/* ---- export, checked by the ONNX checker and ONNX Runtime ---- */

static const char *python(void)
{
    const char *p = getenv("NN_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

/* 0 accepted, 1 refused, 2 checker missing. */
static int run_checker(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/onnx_check.py '%s'", python(), path);
    const int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) == 127) return 2;
    return WEXITSTATUS(rc);
}

/* Runs model on xs[0..n_in) (the graph's inputs in order) with ONNX
 * Runtime into y (same size as expected); 0 ran, 2 runtime missing, 1
 * failed. */
static int run_runtime_inputs(const char *model, int n_in, tensor *const *xs, float *y, size_t n)
{
    if (system("node --version >/dev/null 2>&1") != 0) return 2;
    const char *out = test_path("y.f32");
    char args[2][1024] = {"", ""}, cmd[4096];
    for (int k = 0; k < n_in; k++) {
        char file[32], dims[128] = "";
        snprintf(file, sizeof file, "x%d.f32", k);
        const char *in = test_path(file);
        test_write_bytes(in, xs[k]->data, xs[k]->size * sizeof(float));
        for (int i = 0; i < xs[k]->rank; i++)
            snprintf(dims + strlen(dims), sizeof dims - strlen(dims), i ? ",%d" : "%d",
                     xs[k]->shape[i]);
        snprintf(args[k ? 1 : 0] + strlen(args[k ? 1 : 0]), 1000 - strlen(args[k ? 1 : 0]),
                 " '%s' %s", in, dims);
    }
    snprintf(cmd, sizeof cmd, "node tests/onnx_run.js '%s'%s '%s'%s", model, args[0], out, args[1]);
    const int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return 1;
    if (WEXITSTATUS(rc)) return WEXITSTATUS(rc) == 2 ? 2 : 1;
    size_t len = 0;
    uint8_t *b = test_read_bytes(out, &len);
    if (len != n * sizeof(float)) {
        free(b);
        fail_msg("the runtime gave %zu floats, nn %zu", len / 4, n);
    }
    memcpy(y, b, len);
    free(b);
    return 0;
}

static int run_runtime(const char *model, tensor *x, float *y, size_t n)
{
    return run_runtime_inputs(model, 1, &x, y, n);
}

static float max_diff(const float *a, const float *b, size_t n)
{
    float d = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float e = fabsf(a[i] - b[i]);
        if (!(e <= d)) d = e; /* NaN wins */
    }
    return d;
}

static int skipped_checker, skipped_runtime;

/* The test images the trained networks are compared on, and the share of
 * them a trained network must classify correctly: far above chance (10 %),
 * so a network that did not learn (or images read wrongly) fails. */
#define EVAL_IMAGES 256
#define MIN_ACCURACY 0.75

/* Exports the model to NAME.onnx in the scratch directory, checks it with
 * the checker, runs it with the runtime on the first EVAL_IMAGES test
 * images and compares the logits; then imports it and compares nn's logits
 * again. */
static void export_and_check(nn_model *m, const char *name, int cf)
{
    char file[64];
    snprintf(file, sizeof file, "%s.onnx", name);
    const char *path = test_path(file);
    assert_ok(nn_onnx_save(m, path));
    int labels[EVAL_IMAGES], correct = 0;
    tensor *x = mnist_images(0, EVAL_IMAGES, cf, labels);
    assert_non_null(x);
    tensor *y;
    assert_ok(nn_model_predict(m, x, labels, &y, NULL, &correct));
    const size_t n = y->size;
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    memcpy(ref, y->data, n * sizeof *ref);
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(ref[i]));
    print_message("%s: nn classifies %d of %d test images correctly\n", name, correct,
                  EVAL_IMAGES);
    if (correct < MIN_ACCURACY * EVAL_IMAGES)
        fail_msg("%s: %d of %d correct; the network did not learn", name, correct, EVAL_IMAGES);

    const int ck = run_checker(path);
    if (ck == 2) skipped_checker = 1;
    else assert_int_equal(ck, 0);

    const int rt = run_runtime(path, x, got, n);
    if (rt == 2) skipped_runtime = 1;
    else {
        assert_int_equal(rt, 0);
        const float d = max_diff(ref, got, n);
        print_message("%s: ONNX Runtime vs nn: largest logit difference %.3g over %d test images "
                      "(logits up to %.3g)\n", name, d, EVAL_IMAGES, amax);
        if (!(d <= TOL)) fail_msg("%s: runtime logits differ from nn's by %g", name, d);
    }

    /* Back into nn: the same logits. */
    if (!IMPORT) goto done;
    nn_model *back = NULL;
    assert_ok(nn_onnx_load(path, &back));
    assert_ok(nn_model_predict(back, x, NULL, &y, NULL, NULL));
    assert_int_equal(y->size, n);
    const float d = max_diff(ref, y->data, n);
    print_message("%s: imported into nn vs nn: largest logit difference %.3g\n", name, d);
    if (!(d <= TOL)) fail_msg("%s: the imported model's logits differ by %g", name, d);
    nn_model_free(back);
done:
    free(ref);
    free(got);
    tensor_free(x);
}

/* Skips the calling test, saying why, when the MNIST files are missing. */
static void require_mnist(void)
{
    if (!mnist_open(&mnist_test, "t10k") && !mnist_open(&mnist_train, "train")) return;
    print_message("skipped: MNIST not found in %s (make mnist-data; make test fetches it)\n",
                  mnist_dir());
    skip();
}

/* Training steps per network: enough for well over MIN_ACCURACY on the
 * test images, few enough for the suite to stay quick on two cores. */
#define MNIST_STEPS 100
#define RESNET_STEPS 60

static void test_export_mnist(void **state)
{
    (void)state;
    require_mnist();
    for (int cf = 0; cf < 2; cf++) {
        nn_model *m = trained_model("examples/mnist_cnn.txt", cf, MNIST_STEPS);
        export_and_check(m, cf ? "mnist_channels_first" : "mnist_channels_last", cf);
        nn_model_free(m);
    }
}

static void test_export_resnet(void **state)
{
    (void)state;
    require_mnist();
    for (int cf = 0; cf < 2; cf++) {
        nn_model *m = trained_model("examples/fashion_resnet.txt", cf, RESNET_STEPS);
        export_and_check(m, cf ? "resnet_channels_first" : "resnet_channels_last", cf);
        nn_model_free(m);
    }
}

/* Every exportable layer and fused activation, in a small network with a
 * concatenation, on random input. */
static void test_export_every_layer(void **state)
{
    (void)state;
    static const char *spec =
        "conv2d filters=4 kernel_size=3 padding=same activation=elu alpha=0.7\n"
        "batchnorm activation=leaky_relu alpha=0.2 name=bn\n"
        "avgpool2d pool_size=3 strides=2 padding=same\n"
        "conv2d filters=4 kernel_size=1 activation=gelu name=a\n"
        "conv2d inputs=bn filters=4 kernel_size=2 strides=2 padding=same activation=sigmoid\n"
        "maxpool2d pool_size=1 padding=same\n"
        "tanh\n"
        "concatenate inputs=a,tanh_1 name=cat\n"
        "conv2d filters=8 kernel_size=3 padding=same dilation_rate=2 activation=softmax\n"
        "add inputs=cat,conv2d_4 activation=tanh\n"
        "spatial_dropout2d rate=0.3\n"
        "softmax\n"
        "flatten\n"
        "dense units=6 activation=gelu\n"
        "dropout rate=0.5\n"
        "batchnorm epsilon=0.01 center=false\n"
        "leaky_relu alpha=0.1\n"
        "elu\n"
        "sigmoid\n"
        "relu\n"
        "dense units=5 activation=softmax use_bias=false\n";
    for (int cf = 0; cf < 2; cf++) {
        assert_ok(nn_set_image_data_format(cf ? NN_CHANNELS_FIRST : NN_CHANNELS_LAST));
        nn_model *m = nn_model_create(3);
        assert_ok(nn_model_add_spec(m, spec));
        const int shape[3] = {cf ? 3 : 9, 9, cf ? 9 : 3};
        assert_ok(nn_model_build(m, 3, shape));
        nn_reset_image_data_format();
        for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] += 0.05f * (float)(i % 7);
        const char *path = test_path("every.onnx");
        assert_ok(nn_onnx_save(m, path));
        const int xs[4] = {5, shape[0], shape[1], shape[2]};
        tensor *x = tensor_create(4, xs);
        for (size_t i = 0; i < x->size; i++) x->data[i] = sinf((float)i * 0.37f) * 2.0f;
        tensor *y;
        assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
        float ref[25], got[25];
        assert_int_equal(y->size, 25);
        memcpy(ref, y->data, sizeof ref);
        const int ck = run_checker(path);
        if (ck == 2) skipped_checker = 1;
        else assert_int_equal(ck, 0);
        const int rt = run_runtime(path, x, got, 25);
        if (rt == 2) skipped_runtime = 1;
        else {
            assert_int_equal(rt, 0);
            const float d = max_diff(ref, got, 25);
            print_message("every layer (%s): ONNX Runtime vs nn: largest difference %.3g\n",
                          cf ? "channels_first" : "channels_last", d);
            if (!(d <= TOL)) fail_msg("runtime outputs differ from nn's by %g", d);
        }
        if (IMPORT) {
            nn_model *back = NULL;
            assert_ok(nn_onnx_load(path, &back));
            assert_ok(nn_model_predict(back, x, NULL, &y, NULL, NULL));
            const float d = max_diff(ref, y->data, 25);
            if (!(d <= TOL)) fail_msg("the imported model's outputs differ by %g", d);
            nn_model_free(back);
        }
        tensor_free(x);
        nn_model_free(m);
    }
}

/* A model with three inputs (an image, a second image added to a
 * convolution's output, a feature vector joined after pooling), in both
 * data formats: the checker, ONNX Runtime fed all three, and the import
 * back (the same inputs, names and outputs). */
static void test_export_inputs(void **state)
{
    (void)state;
    for (int cf = 0; cf < 2; cf++) {
        char spec[512];
        snprintf(spec, sizeof spec,
                 "input name=skip shape=%s\n"
                 "conv2d filters=4 kernel_size=3 padding=same activation=relu\n"
                 "add inputs=conv2d_1,skip\n"
                 "input name=side shape=3\n"
                 "global_avgpool2d\n"
                 "concatenate inputs=global_avgpool2d_1,side\n"
                 "dense units=5\n", cf ? "4,7,7" : "7,7,4");
        assert_ok(nn_set_image_data_format(cf ? NN_CHANNELS_FIRST : NN_CHANNELS_LAST));
        nn_model *m = nn_model_create(5);
        assert_ok(nn_model_add_spec(m, spec));
        const int shape[3] = {cf ? 2 : 7, 7, cf ? 7 : 2};
        assert_ok(nn_model_build(m, 3, shape));
        nn_reset_image_data_format();
        const char *path = test_path("inputs.onnx");
        assert_ok(nn_onnx_save(m, path));
        const int s0[4] = {3, shape[0], shape[1], shape[2]};
        const int s1[4] = {3, cf ? 4 : 7, 7, cf ? 7 : 4}, s2[2] = {3, 3};
        tensor *xs[3] = {tensor_create(4, s0), tensor_create(4, s1), tensor_create(2, s2)};
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < xs[k]->size; i++)
                xs[k]->data[i] = sinf((float)i * 0.37f + (float)k);
        tensor *y;
        assert_ok(nn_model_forward_inputs(m, 3, xs, &y, NN_MODE_EVAL));
        float ref[15], got[15];
        assert_int_equal(y->size, 15);
        memcpy(ref, y->data, sizeof ref);
        const int ck = run_checker(path);
        if (ck == 2) skipped_checker = 1;
        else assert_int_equal(ck, 0);
        const int rt = run_runtime_inputs(path, 3, xs, got, 15);
        if (rt == 2) skipped_runtime = 1;
        else {
            assert_int_equal(rt, 0);
            const float d = max_diff(ref, got, 15);
            print_message("three inputs (%s): ONNX Runtime vs nn: largest difference %.3g\n",
                          cf ? "channels_first" : "channels_last", d);
            if (!(d <= TOL)) fail_msg("runtime outputs differ from nn's by %g", d);
        }
        nn_model *back = NULL;
        assert_ok(nn_onnx_load(path, &back));
        assert_int_equal(nn_model_input_count(back), 3);
        assert_string_equal(nn_model_input_name(back, 1), "skip");
        assert_string_equal(nn_model_input_name(back, 2), "side");
        assert_ok(nn_model_forward_inputs(back, 3, xs, &y, NN_MODE_EVAL));
        const float d = max_diff(ref, y->data, 15);
        print_message("three inputs (%s): imported into nn vs nn: largest difference %.3g\n",
                      cf ? "channels_first" : "channels_last", d);
        if (!(d <= TOL)) fail_msg("the imported model's outputs differ by %g", d);
        nn_model_free(back);
        for (int k = 0; k < 3; k++) tensor_free(xs[k]);
        nn_model_free(m);
    }
}

/* ---- import of models PyTorch 1.13 exported ---- */

#define FX "tests/fixtures/onnx/"

/* Loads FX NAME.onnx, runs it on NAME.input.f32 and compares with
 * PyTorch's NAME.logits.f32. */
static void check_fixture(const char *name, const char *origin)
{
    char path[256];
    snprintf(path, sizeof path, FX "%s.shape", name);
    size_t len;
    char *text = (char *)test_read_bytes(path, &len);
    int shape[TENSOR_MAX_RANK], rank = 0;
    for (char *p = text; rank < TENSOR_MAX_RANK && *p && *p != '\n'; rank++) {
        shape[rank] = (int)strtol(p, &p, 10);
        if (*p == ',') p++;
    }
    free(text);
    tensor *x = tensor_create(rank, shape);
    snprintf(path, sizeof path, FX "%s.input.f32", name);
    uint8_t *in = test_read_bytes(path, &len);
    assert_int_equal(len, x->size * sizeof(float));
    memcpy(x->data, in, len);
    free(in);
    snprintf(path, sizeof path, FX "%s.logits.f32", name);
    float *want = (float *)test_read_bytes(path, &len);
    snprintf(path, sizeof path, FX "%s.onnx", name);
    nn_model *m = NULL;
    assert_ok(nn_onnx_load(path, &m));
    tensor *y;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    assert_int_equal(y->size * sizeof(float), len);
    const float d = max_diff(want, y->data, y->size);
    print_message("%s (%s): nn vs reference: largest logit difference %.3g\n", name, origin, d);
    if (!(d <= TOL)) fail_msg("%s: nn's logits differ from the reference by %g", name, d);
    /* And out again: the runtime agrees with nn on nn's export of it. */
    const char *again = test_path("again.onnx");
    assert_ok(nn_onnx_save(m, again));
    float *got = malloc(y->size * sizeof *got);
    const size_t n = y->size;
    float *ref = malloc(n * sizeof *ref);
    memcpy(ref, y->data, n * sizeof *ref);
    const int ck = run_checker(again);
    if (ck == 2) skipped_checker = 1;
    else assert_int_equal(ck, 0);
    const int rt = run_runtime(again, x, got, n);
    if (rt == 2) skipped_runtime = 1;
    else {
        assert_int_equal(rt, 0);
        const float e = max_diff(ref, got, n);
        print_message("%s: re-exported by nn, ONNX Runtime vs nn: largest difference %.3g\n", name, e);
        if (!(e <= TOL)) fail_msg("%s: runtime differs by %g on nn's re-export", name, e);
    }
    free(got);
    free(ref);
    free(want);
    nn_model_free(m);
    tensor_free(x);
}

static void test_import_pytorch(void **state)
{
    (void)state;
    check_fixture("cnn", "PyTorch 1.13 export");
    check_fixture("cnn_folded", "PyTorch 1.13 export");
    check_fixture("resnet", "PyTorch 1.13 export");
    check_fixture("mlp", "PyTorch 1.13 export");
    check_fixture("view_flatten", "PyTorch 1.13 export, x.view(x.size(0), -1)");
    check_fixture("reshape_fixed", "PyTorch 1.13 export, x.reshape(x.size(0), -1), fixed batch");
    check_fixture("view_k", "PyTorch 1.13 export, x.view(-1, 6)");
    check_fixture("matmul_add", "onnx.helper graph, numpy reference");
    check_fixture("add_input", "onnx.helper graph, Add and Concat of the input, numpy reference");
}

/* A refused file: an error whose message holds every needle, no model. */
static void check_refused(const char *path, const char *const *needles)
{
    nn_model *m = (nn_model *)&m; /* must be set to NULL */
    nn_clear_error();
    assert_int_not_equal(nn_onnx_load(path, &m), NN_OK);
    assert_null(m);
    for (int i = 0; needles[i]; i++) assert_error_contains(needles[i]);
}

static void test_import_refused(void **state)
{
    (void)state;
    check_refused(FX "bad_op.onnx", (const char *const[]){"node 'minus'", "(Sub",
                                                         "operator Sub is not supported", NULL});
    check_refused(FX "bad_reshape.onnx", (const char *const[]){"node '/Reshape' (Reshape",
                                                              "reshapes to (-1, 16)",
                                                              "second size here is 32", NULL});
    check_refused(FX "bad_reshape3.onnx", (const char *const[]){"node '/Concat' (Concat",
                                                               "target shape of 3 parts",
                                                               "flatten, to (N, -1)", NULL});
    check_refused(FX "bad_group.onnx", (const char *const[]){"node 'grouped' (Conv", "group = 2",
                                                            NULL});
    check_refused(FX "bad_dtype.onnx", (const char *const[]){"node 'fc' (Gemm", "data type 11",
                                                            NULL});
    check_refused(FX "bad_pads.onnx", (const char *const[]){"node '/c/Conv' (Conv",
                                                           "pads (1, 1, 1, 1)", "same", NULL});
    /* reshape_fixed's Reshape to (2, -1) flattens only while the batch is
     * the input's fixed 2: with a symbolic batch it is refused. */
    size_t len;
    uint8_t *b = test_read_bytes(FX "reshape_fixed.onnx", &len);
    nn_onnx_graph g;
    assert_ok(nn_onnx_graph_parse(b, len, "reshape_fixed.onnx", &g));
    free(b);
    assert_int_equal(g.inputs[0].dims[0], 2);
    g.inputs[0].dims[0] = -1;
    nn_model *m = (nn_model *)&m;
    assert_int_not_equal(nn_onnx_graph_load(&g, &m), NN_OK);
    assert_null(m);
    assert_error_contains("node '/Reshape' (Reshape");
    assert_error_contains("the batch size 2 is fixed in the graph, but the graph input's batch size "
                          "is symbolic");
    nn_onnx_graph_free(&g);
    check_refused(FX "bad_cycle.onnx", (const char *const[]){"node 'a' (Relu", "cycle", NULL});
    check_refused(FX "bad_huge.onnx", (const char *const[]){"tensor 'w' declares more than",
                                                           NULL});
}

/* Every truncation of an exported file, and damaged bytes, are refused
 * with a message naming the file; none crashes or leaks (make asan). */
static void test_import_damaged(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "conv2d filters=2 kernel_size=3 activation=relu\n"
                                   "flatten\ndense units=3\n"));
    const int shape[3] = {5, 5, 1};
    assert_ok(nn_model_build(m, 3, shape));
    unsigned char *buf;
    size_t len;
    assert_ok(nn_onnx_encode(m, &buf, &len));
    nn_model *out = NULL;
    assert_ok(nn_onnx_parse(buf, len, "small.onnx", &out));
    nn_model_free(out);
    for (size_t n = 0; n < len; n++) {
        if (nn_onnx_parse(buf, n, "small.onnx", &out) == NN_OK)
            fail_msg("the file cut to %zu of %zu bytes was accepted", n, len);
        assert_null(out);
        assert_error_contains("small.onnx");
    }
    /* Field 1 (ir_version) with wire type 5 instead of 0. */
    unsigned char *bad = malloc(len);
    memcpy(bad, buf, len);
    assert_int_equal(bad[0], 0x08);
    bad[0] = 0x0d;
    assert_int_not_equal(nn_onnx_parse(bad, len, "small.onnx", &out), NN_OK);
    assert_error_contains("wire type 5");
    /* A length of 2^62 declared for the graph. */
    const unsigned char huge[] = {0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40};
    assert_int_not_equal(nn_onnx_parse(huge, sizeof huge, "small.onnx", &out), NN_OK);
    assert_error_contains("declares 4611686018427387904 bytes");
    /* Every single byte changed: refused with a message, or accepted as a
     * working model. */
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, buf, len);
        bad[i] ^= 0x5a;
        nn_clear_error();
        if (nn_onnx_parse(bad, len, "small.onnx", &out) == NN_OK) {
            nn_model_free(out);
            out = NULL;
        } else {
            assert_null(out);
            assert_true(nn_last_error()[0] != '\0');
        }
    }
    free(bad);
    free(buf);
    nn_model_free(m);
}

/* ---- conformance: ONNX's own node tests (Debian's libonnx-testdata) ----
 * Each test is a one-operator model with inputs and expected outputs. For
 * most operators only input 0 is an activation: the others (weights,
 * biases, batchnorm statistics) are bound to their test values as
 * initializers. Add and Concat read activations only: every input is a
 * model input, fed through nn_model_forward_inputs.
 * Not run: the cases nn refuses on purpose: Add with broadcasting (nn adds
 * equal shapes), Concat along the batch axis or of inputs without one (the
 * *_axis_0 and 1d tests), padding other than none or TensorFlow's "same" (the *_pads
 * pooling tests pad 2 around a 3x3 window), auto_pad SAME_LOWER with odd
 * padding, ceil_mode, dilated pools, count_include_pad, a one-element bias
 * broadcast over the units, Softmax over other axes, inputs without a batch
 * axis (the *_example activation tests), 1-D and 3-D windows. */

static const char *testdata_dir(void)
{
    const char *d = getenv("NN_ONNX_TESTDATA");
    return d && *d ? d : "/usr/share/libonnx-testdata/data/node";
}

static int load_pb(const char *path, nn_onnx_tensor *t)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fclose(f);
    size_t len;
    uint8_t *b = test_read_bytes(path, &len);
    assert_ok(nn_onnx_tensor_parse(b, len, path, t));
    free(b);
    return 0;
}

/* n_act: how many of the test's inputs are activations (model inputs). */
static float conformance_case(const char *name, int n_act)
{
    char dir[512], path[640];
    snprintf(dir, sizeof dir, "%s/%s", testdata_dir(), name);
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    size_t len;
    uint8_t *b = test_read_bytes(path, &len);
    nn_onnx_graph g;
    assert_ok(nn_onnx_graph_parse(b, len, name, &g));
    free(b);
    nn_onnx_tensor xs[NN_MODEL_MAX_INPUTS] = {{0}}, want = {0};
    for (int k = 0; k < n_act; k++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, k);
        assert_int_equal(load_pb(path, &xs[k]), 0);
    }
    for (int k = n_act;; k++) { /* the other inputs become initializers */
        nn_onnx_tensor t = {0};
        snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, k);
        if (load_pb(path, &t)) break;
        g.inits = realloc(g.inits, (size_t)(g.n_inits + 1) * sizeof *g.inits);
        g.cap_inits = g.n_inits + 1;
        free(t.name);
        t.name = strdup(g.inputs[k].name);
        g.inits[g.n_inits++] = t;
    }
    snprintf(path, sizeof path, "%s/test_data_set_0/output_0.pb", dir);
    assert_int_equal(load_pb(path, &want), 0);
    nn_model *m = NULL;
    if (nn_onnx_graph_load(&g, &m) != NN_OK) {
        print_message("FAILED %s: %s\n", name, nn_last_error());
        return 1e30f;
    }
    tensor *xt[NN_MODEL_MAX_INPUTS];
    for (int k = 0; k < n_act; k++) {
        int shape[NN_ONNX_MAX_RANK];
        for (int i = 0; i < xs[k].rank; i++) shape[i] = (int)xs[k].dims[i];
        xt[k] = tensor_create(xs[k].rank, shape);
        memcpy(xt[k]->data, xs[k].f, xs[k].count * sizeof(float));
    }
    tensor *y;
    if (n_act == 1) assert_ok(nn_model_predict(m, xt[0], NULL, &y, NULL, NULL));
    else assert_ok(nn_model_forward_inputs(m, n_act, xt, &y, NN_MODE_EVAL));
    assert_int_equal(y->size, want.count);
    const float d = max_diff(want.f, y->data, want.count);
    for (int k = 0; k < n_act; k++) {
        tensor_free(xt[k]);
        nn_onnx_tensor_free(&xs[k]);
    }
    nn_model_free(m);
    nn_onnx_tensor_free(&want);
    nn_onnx_graph_free(&g);
    return d;
}

static void test_conformance(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "test_relu", "test_sigmoid", "test_tanh",
        "test_leakyrelu", "test_leakyrelu_default", "test_elu",
        "test_elu_default", "test_softmax_axis_2", "test_softmax_default_axis",
        "test_softmax_negative_axis", "test_softmax_example", "test_softmax_large_number",
        "test_basic_conv_with_padding", "test_basic_conv_without_padding",
        "test_conv_with_strides_no_padding", "test_conv_with_strides_padding",
        "test_maxpool_2d_default", "test_maxpool_2d_strides", "test_maxpool_2d_same_upper",
        "test_maxpool_2d_precomputed_same_upper",
        "test_maxpool_2d_precomputed_strides", "test_averagepool_2d_default",
        "test_averagepool_2d_strides", "test_averagepool_2d_same_upper",
        "test_averagepool_2d_precomputed_same_upper",
        "test_averagepool_2d_precomputed_strides", "test_globalaveragepool",
        "test_globalaveragepool_precomputed", "test_batchnorm_example", "test_batchnorm_epsilon",
        "test_flatten_axis1", "test_flatten_default_axis", "test_gemm_default_no_bias",
        "test_gemm_default_vector_bias",
        "test_gemm_transposeB", "test_matmul_2d", NULL};
    /* Two activations: Add of equal shapes, Concat along the channel axis
     * ((N, C) and (N, C, L) inputs, axis 1 or the last, either sign). */
    static const char *const two_inputs[] = {
        "test_add", "test_concat_2d_axis_1", "test_concat_2d_axis_negative_1",
        "test_concat_3d_axis_1", "test_concat_3d_axis_2", "test_concat_3d_axis_negative_1",
        "test_concat_3d_axis_negative_2", NULL};
    char probe[600];
    snprintf(probe, sizeof probe, "%s/test_relu/model.onnx", testdata_dir());
    if (access(probe, R_OK) != 0) {
        print_message("skipped the ONNX node tests: %s not found (Debian: libonnx-testdata; make "
                      "test installs it)\n", testdata_dir());
        skip();
    }
    float worst = 0.0f, worst_two = 0.0f;
    int n = 0, bad = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass ? two_inputs : cases;
        for (int i = 0; list[i]; i++, n++) {
            const float d = conformance_case(list[i], pass ? 2 : 1);
            if (!(d <= TOL)) {
                print_message("FAILED %s: nn differs from the expected output by %g\n", list[i], d);
                bad++;
            } else {
                if (d > worst) worst = d;
                if (pass && d > worst_two) worst_two = d;
            }
        }
    }
    print_message("ONNX node tests: %d of %d passed, largest difference %.3g (%.3g in the two-input "
                  "tests)\n", n - bad, n, worst, worst_two);
    assert_int_equal(bad, 0);
}

static void test_skips_reported(void **state)
{
    (void)state;
    if (skipped_checker)
        print_message("skipped the ONNX checker: %s cannot import onnx (Debian: python3-onnx; "
                      "make test installs it)\n", python());
    if (skipped_runtime)
        print_message("skipped ONNX Runtime: node or onnxruntime-node in %s/node_modules is "
                      "missing (make test installs it with npm)\n",
                      getenv("NN_ONNXRUNTIME_DIR") ? getenv("NN_ONNXRUNTIME_DIR")
                                                   : ".cache/onnxruntime");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protobuf_round_trip),
        cmocka_unit_test(test_export_every_layer),
        cmocka_unit_test(test_export_inputs),
        cmocka_unit_test(test_export_mnist),
        cmocka_unit_test(test_export_resnet),
        cmocka_unit_test(test_import_pytorch),
        cmocka_unit_test(test_import_refused),
        cmocka_unit_test(test_import_damaged),
        cmocka_unit_test(test_conformance),
        cmocka_unit_test(test_skips_reported),
    };
    const int rc = cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
    mnist_close(&mnist_test);
    mnist_close(&mnist_train);
    return rc;
}
