/* Bad input, one place: for every public entry point of the headers nn.h
 * includes (tensor/, nn/, optim/optim.h, layers/spatial_dropout.h), at
 * least one bad call, checking the status and that the message names the
 * argument and the value (or the file and offset). Other suites test many of
 * these in depth; this one is the list, so a new function without a checked
 * error path stands out. At the end it prints how many bad inputs were
 * tried per entry point.
 *
 * Entry points with no error path are listed at the end of this comment
 * with the reason (nothing the caller passes can be invalid, or a
 * documented precondition on a pointer the caller owns):
 *   nn_error, nn_last_error, nn_clear_error, nn_version, tensor_free(NULL),
 *   tensor_fill, tensor_same_shape, tensor_shape_str, tensor_aligned_free,
 *   tensor_rng_seed/next/uniform/normal, tensor_init_* (void; shapes were
 *   checked when the tensor was made), nn_graph_free(NULL), nn_graph_reset,
 *   nn_graph_set_grad_enabled, nn_graph_grad_enabled, nn_graph_node_count,
 *   nn_graph_arena_bytes, nn_graph_grad_pool_bytes, nn_graph_arena_used,
 *   nn_graph_holds, nn_graph_generation, nn_graph_backward_ran,
 *   nn_config_write(_float) (a full buffer is reported by the caller: nn_layer_config_string),
 *   nn_reset_image_data_format,
 *   nn_layer_free(NULL), nn_param_init, nn_layer_param_count,
 *   nn_registry_count, nn_model_free(NULL), nn_model_set_training,
 *   nn_model_is_training, nn_model_zero_grad, nn_model_graph, optim_free(NULL),
 *   optim_get_lr, optim_state_count, nn_get_threads, nn_idx_to_float,
 *   nn_mnist_free(NULL), nn_spatial_dropout_scale (rate 1 gives 0 by
 *   definition), nn_spatial_dropout_layer_write. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "test_util.h"

/* ---- the tally ------------------------------------------------------------ */

#define MAX_FNS 160
static struct {
    const char *fn;
    int n;
} tally[MAX_FNS];
static int n_fns;

static void count(const char *fn)
{
    for (int i = 0; i < n_fns; i++)
        if (!strcmp(tally[i].fn, fn)) {
            tally[i].n++;
            return;
        }
    if (n_fns < MAX_FNS) {
        tally[n_fns].fn = fn;
        tally[n_fns++].n = 1;
    }
}

/* A call that must fail with `status` and a message containing `needle`. */
#define BAD(fn, call, status, needle)                                                      \
    do {                                                                                   \
        nn_clear_error();                                                                  \
        nn_status bad_s_ = (call);                                                         \
        if (bad_s_ != (status))                                                            \
            fail_msg("%s: %s gave status %d (%s), expected %d; message '%s'", fn, #call,   \
                     (int)bad_s_, nn_status_str(bad_s_), (int)(status), nn_last_error());  \
        assert_error_contains(needle);                                                     \
        count(fn);                                                                         \
    } while (0)

/* A constructor call that must return NULL with a message containing needle. */
#define BAD_NULL(fn, call, needle)                                                         \
    do {                                                                                   \
        nn_clear_error();                                                                  \
        if ((call) != NULL) fail_msg("%s: %s did not fail", fn, #call);                    \
        assert_error_contains(needle);                                                     \
        count(fn);                                                                         \
    } while (0)

#define MLP "dense units=4 activation=relu\ndense units=3\n"
static const int mlp_in[1] = {5};

/* ---- tensor/status.h, tensor/tensor.h, tensor/random.h ----------------------- */

static void test_status_and_tensor(void **state)
{
    (void)state;
    assert_string_equal(nn_status_str((nn_status)99), "unknown status");
    count("nn_status_str");

    const int neg[2] = {3, -1}, big[3] = {INT_MAX, INT_MAX, INT_MAX}, ok[2] = {2, 3};
    const int seven[7] = {1, 1, 1, 1, 1, 1, 1}, odd[1] = {7};
    BAD_NULL("tensor_create", tensor_create(0, ok), "tensor_create: rank 0 is outside 1..6");
    BAD_NULL("tensor_create", tensor_create(7, seven), "tensor_create: rank 7 is outside 1..6");
    BAD_NULL("tensor_create", tensor_create(2, neg), "tensor_create: negative extent in shape (3, -1)");
    BAD_NULL("tensor_create", tensor_create(2, NULL), "tensor_create: shape is NULL");
    BAD_NULL("tensor_create", tensor_create(3, big), "tensor_create: shape too large");
    BAD_NULL("tensor_zeros", tensor_zeros(2, neg), "negative extent in shape (3, -1)");

    tensor *t = tensor_create(2, ok);
    assert_non_null(t);
    BAD_NULL("tensor_view", tensor_view(NULL, 2, ok), "tensor_view: src is NULL");
    BAD_NULL("tensor_view", tensor_view(t, 1, odd),
             "tensor_view: cannot view (2, 3) (6 elements) as (7,) (7 elements)");
    float buf[6];
    BAD_NULL("tensor_wrap", tensor_wrap(NULL, 2, ok), "tensor_wrap: data is NULL");
    BAD_NULL("tensor_wrap", tensor_wrap(buf, 2, neg), "tensor_wrap: negative extent");

    tensor header = {0};
    BAD("tensor_set_shape", tensor_set_shape(&header, 9, ok), NN_ERR_SHAPE,
        "tensor_set_shape: rank 9 is outside 1..6");
    size_t n = 0;
    BAD("tensor_shape_size", tensor_shape_size(2, neg, &n, "my_op input"), NN_ERR_SHAPE,
        "my_op input: negative extent in shape (3, -1)");

    tensor *u = tensor_create(1, odd);
    BAD("tensor_copy", tensor_copy(t, u), NN_ERR_SHAPE,
        "tensor_copy: destination (2, 3) and source (7,) differ in size");
    BAD("tensor_copy", tensor_copy(NULL, u), NN_ERR_ARG, "tensor_copy: NULL tensor");

    BAD_NULL("tensor_aligned_alloc", tensor_aligned_alloc(SIZE_MAX),
             "out of memory allocating 18446744073709551615 bytes");

    /* n = 0 has no valid answer; it must not divide by zero. */
    tensor_rng rng;
    tensor_rng_seed(&rng, 1);
    assert_int_equal(tensor_rng_below(&rng, 0), 0);
    count("tensor_rng_below");
    tensor_free(t);
    tensor_free(u);
}

/* ---- tensor/graph.h, tensor/ops.h ------------------------------------------------ */

static void dummy_backward(nn_node *node) { (void)node; }

static void test_graph_and_ops(void **state)
{
    (void)state;
    BAD_NULL("nn_graph_create", nn_graph_create(SIZE_MAX), "nn_graph_create: out of memory");
    nn_graph *g = nn_graph_create(0);
    assert_non_null(g);
    BAD_NULL("nn_graph_alloc", nn_graph_alloc(g, SIZE_MAX - 8),
             "nn_graph_alloc: arena out of memory for 18446744073709551607 bytes");
    const int s23[2] = {2, 3}, s32[2] = {3, 2}, s5[1] = {5}, zero[2] = {0, 3};
    BAD_NULL("nn_graph_tensor", nn_graph_tensor(g, 0, s23), "nn_graph_tensor: rank 0");
    tensor *a = nn_graph_tensor(g, 2, s23);
    BAD_NULL("nn_graph_view", nn_graph_view(g, a, 1, s5), "cannot view (2, 3) as (5,)");
    BAD_NULL("nn_graph_view", nn_graph_view(g, NULL, 1, s5), "nn_graph_view: src is NULL");

    /* A leaf that requires a gradient, so that ops record nodes. */
    tensor *p = test_require_grad(tensor_zeros(2, s23));
    tensor *b = nn_graph_tensor(g, 2, s32), *out = NULL;
    BAD("nn_op_add", nn_op_add(g, p, b, &out), NN_ERR_SHAPE, "add: shapes (2, 3) and (3, 2) differ");
    BAD("nn_op_mul", nn_op_mul(g, p, b, &out), NN_ERR_SHAPE, "mul: shapes (2, 3) and (3, 2) differ");
    BAD("nn_op_mul", nn_op_mul(g, NULL, b, &out), NN_ERR_ARG, "mul: NULL tensor");
    BAD("nn_op_weighted_sum", nn_op_weighted_sum(g, p, b, &out), NN_ERR_SHAPE,
        "shapes (2, 3) and (3, 2) differ");
    const int labels_bad[2] = {0, 3}, labels_ok[2] = {0, 2};
    tensor *l3 = nn_graph_tensor(g, 3, (int[]){2, 3, 1});
    BAD("nn_op_softmax_cross_entropy", nn_op_softmax_cross_entropy(g, l3, labels_ok, &out, NULL),
        NN_ERR_SHAPE, "softmax_cross_entropy: logits must be (batch, classes), got (2, 3, 1)");
    BAD("nn_op_softmax_cross_entropy", nn_op_softmax_cross_entropy(g, p, labels_bad, &out, NULL),
        NN_ERR_ARG, "softmax_cross_entropy: label 3 of row 1 is outside [0, 3)");
    BAD("nn_op_softmax_cross_entropy",
        nn_op_softmax_cross_entropy(g, nn_graph_tensor(g, 2, zero), labels_ok, &out, NULL),
        NN_ERR_SHAPE, "empty logits (0, 3)");
    p->data[4] = NAN;
    BAD("nn_op_softmax_cross_entropy", nn_op_softmax_cross_entropy(g, p, labels_ok, &out, NULL),
        NN_ERR_NUMERIC, "softmax_cross_entropy: loss is nan");
    p->data[4] = 0.0f;

    /* Backward: a loss that is not a scalar, NULL, one that needs no
     * gradient, a second run, and a node recorded with a bad input count. */
    tensor *y = NULL;
    assert_ok(nn_op_add(g, p, p, &y));
    BAD("nn_graph_backward", nn_graph_backward(g, y), NN_ERR_SHAPE,
        "nn_graph_backward: loss must hold one element, got shape (2, 3)");
    BAD("nn_graph_backward", nn_graph_backward(g, NULL), NN_ERR_ARG,
        "nn_graph_backward: NULL argument");
    tensor *c = nn_graph_tensor(g, 1, (int[]){1});
    c->data[0] = 1.0f;
    BAD("nn_graph_backward", nn_graph_backward(g, c), NN_ERR_STATE,
        "loss does not depend on anything that requires a gradient");
    tensor *w = nn_graph_tensor(g, 2, s23), *loss = NULL;
    for (int i = 0; i < 6; i++) w->data[i] = 1.0f;
    assert_ok(nn_op_weighted_sum(g, y, w, &loss));
    assert_ok(nn_graph_backward(g, loss));
    BAD("nn_graph_backward", nn_graph_backward(g, loss), NN_ERR_STATE, "backward already ran");
    BAD("nn_graph_retain_grad", nn_graph_retain_grad(g, y), NN_ERR_STATE,
        "nn_graph_retain_grad: backward already ran on this graph");
    BAD("nn_graph_retain_grad", nn_graph_retain_grad(g, NULL), NN_ERR_ARG,
        "nn_graph_retain_grad: NULL argument");

    nn_graph_reset(g);
    tensor *o = nn_graph_tensor(g, 2, s23);
    tensor *ins[1] = {p};
    nn_clear_error();
    assert_null(nn_graph_record(g, "my_op", o, ins, 9, dummy_backward, NULL));
    assert_error_contains("nn_graph_record: 'my_op' has 9 inputs, at most 4");
    count("nn_graph_record");
    tensor *one = nn_graph_tensor(g, 1, (int[]){1});
    one->flags |= TENSOR_REQUIRES_GRAD;
    BAD("nn_graph_backward", nn_graph_backward(g, one), NN_ERR_ARG,
        "nn_graph_record: 'my_op' has 9 inputs, at most 4");
    assert_int_equal(nn_graph_needs_grad(g, ins, -3), 0);
    count("nn_graph_needs_grad");

    tensor_free(p);
    nn_graph_free(g);
}

/* ---- layers/config.h, layers/format.h -------------------------------------------- */

static void test_config_and_format(void **state)
{
    (void)state;
    nn_config c;
    BAD("nn_config_parse", nn_config_parse(&c, "dense", "units"), NN_ERR_CONFIG,
        "dense: config token 'units' is not key=value");
    BAD("nn_config_parse", nn_config_parse(&c, "dense", "units=1 units=2"), NN_ERR_CONFIG,
        "dense: config key 'units' is given twice");
    BAD("nn_config_parse", nn_config_parse(&c, "dense", "=3"), NN_ERR_CONFIG,
        "config token '=3' has an empty key");
    BAD("nn_config_parse", nn_config_parse(&c, "dense", "units="), NN_ERR_CONFIG,
        "config token 'units=' has an empty value");
    char many[600] = "";
    for (int i = 0; i < 25; i++) sprintf(many + strlen(many), "k%d=1 ", i);
    BAD("nn_config_parse", nn_config_parse(&c, "dense", many), NN_ERR_CONFIG,
        "dense: more than 24 config keys");
    char long_value[120] = "units=";
    memset(long_value + 6, '7', 100);
    BAD("nn_config_parse", nn_config_parse(&c, "dense", long_value), NN_ERR_CONFIG, "is too long");

    int i;
    float f;
    unsigned long long u;
    int present, ints[2];
    assert_ok(nn_config_parse(&c, "L", "units=abc big=99 rate=nan r2=1.5 b=maybe seed=-1 "
                                       "pad=full ks=3,3,3 ks2=3,,3 ks3=3,0 ks4=1,2"));
    BAD("nn_config_get_int", nn_config_get_int(&c, "units", &i, 0, 1, 1, 10), NN_ERR_CONFIG,
        "L: units must be an integer, but got 'abc'");
    BAD("nn_config_get_int", nn_config_get_int(&c, "big", &i, 0, 1, 1, 10), NN_ERR_CONFIG,
        "L: big must be between 1 and 10, but got 99");
    BAD("nn_config_get_int", nn_config_get_int(&c, "absent", &i, 0, 1, 1, 10), NN_ERR_CONFIG,
        "L: config key 'absent' is required");
    BAD("nn_config_get_float", nn_config_get_float(&c, "rate", &f, 0, 1, 0.0f, 1.0f),
        NN_ERR_CONFIG, "L: rate must be between 0 and 1, but got nan");
    BAD("nn_config_get_float", nn_config_get_float(&c, "r2", &f, 0, 1, 0.0f, 1.0f),
        NN_ERR_CONFIG, "L: r2 must be between 0 and 1, but got 1.5");
    BAD("nn_config_get_float", nn_config_get_float(&c, "units", &f, 0, 1, 0.0f, 1.0f),
        NN_ERR_CONFIG, "L: units must be a number, but got 'abc'");
    BAD("nn_config_get_bool", nn_config_get_bool(&c, "b", &i, 0), NN_ERR_CONFIG,
        "L: b must be true or false, but got 'maybe'");
    BAD("nn_config_get_u64", nn_config_get_u64(&c, "seed", &u, &present), NN_ERR_CONFIG,
        "L: seed must be a non-negative integer, but got '-1'");
    static const char *const pads[] = {"valid", "same", NULL};
    BAD("nn_config_get_choice", nn_config_get_choice(&c, "pad", &i, 0, pads), NN_ERR_CONFIG,
        "L: pad must be one of {valid, same}, but got 'full'");
    BAD("nn_config_get_choice", nn_config_get_choice(&c, "absent", &i, -1, pads), NN_ERR_CONFIG,
        "L: config key 'absent' is required");
    BAD("nn_config_get_ints", nn_config_get_ints(&c, "ks", ints, 2, NULL, 1, 1, 9), NN_ERR_CONFIG,
        "L: ks takes at most 2 values, but got '3,3,3'");
    BAD("nn_config_get_ints", nn_config_get_ints(&c, "ks2", ints, 2, NULL, 1, 1, 9), NN_ERR_CONFIG,
        "L: ks2 has an empty item in '3,,3'");
    BAD("nn_config_get_ints", nn_config_get_ints(&c, "ks3", ints, 2, NULL, 1, 1, 9), NN_ERR_CONFIG,
        "L: ks3 values must be between 1 and 9, but got '3,0'");
    BAD("nn_config_get_ints", nn_config_get_ints(&c, "ks4", ints, 3, NULL, 1, 1, 9), NN_ERR_CONFIG,
        "L: ks4 needs 1 or 3 values, but got '1,2'");
    assert_ok(nn_config_parse(&c, "dense", "units=3 unitz=4"));
    assert_ok(nn_config_get_int(&c, "units", &i, 0, 1, 1, 10));
    BAD("nn_config_finish", nn_config_finish(&c), NN_ERR_CONFIG, "dense: unknown config key 'unitz'");

    nn_data_format fmt;
    BAD("nn_data_format_parse", nn_data_format_parse("NCHW", &fmt), NN_ERR_ARG,
        "data_format must be one of {channels_last, channels_first}, but got 'NCHW'");
    BAD("nn_data_format_parse", nn_data_format_parse("Channels_Last", &fmt), NN_ERR_ARG,
        "but got 'Channels_Last'");
    BAD("nn_set_image_data_format", nn_set_image_data_format((nn_data_format)7), NN_ERR_ARG,
        "nn_set_image_data_format: unknown format 7");
    assert_ok(nn_config_parse(&c, "conv2d", "data_format=NHWC"));
    BAD("nn_config_get_data_format", nn_config_get_data_format(&c, &fmt), NN_ERR_CONFIG,
        "conv2d: data_format must be one of {channels_last, channels_first}, but got 'NHWC'");

    /* The default's two outside sources: the environment, then ~/.nn/nn.json. */
    nn_reset_image_data_format();
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char *env = getenv("NN_IMAGE_DATA_FORMAT") ? strdup(getenv("NN_IMAGE_DATA_FORMAT")) : NULL;
    setenv("NN_IMAGE_DATA_FORMAT", "channels_middle", 1);
    BAD("nn_image_data_format", nn_image_data_format(&fmt), NN_ERR_CONFIG,
        "NN_IMAGE_DATA_FORMAT must be channels_last or channels_first, but got 'channels_middle'");
    unsetenv("NN_IMAGE_DATA_FORMAT");
    setenv("HOME", test_dir(), 1);
    mkdir(test_path(".nn"), 0700);
    test_write_bytes(test_path(".nn/nn.json"), "{\"image_data_format\": ", 22);
    BAD("nn_image_data_format", nn_image_data_format(&fmt), NN_ERR_FORMAT,
        "/.nn/nn.json: not valid JSON (at offset");
    test_write_bytes(test_path(".nn/nn.json"), "{\"image_data_format\": \"nhwc\"}", 29);
    BAD("nn_image_data_format", nn_image_data_format(&fmt), NN_ERR_FORMAT,
        "nn.json: image_data_format must be \"channels_last\" or \"channels_first\"");
    /* A layer that takes the default reports it too, at creation. */
    BAD_NULL("nn_layer_create", nn_layer_create("maxpool2d", ""), "image_data_format must be");
    unlink(test_path(".nn/nn.json"));
    rmdir(test_path(".nn"));
    if (home) setenv("HOME", home, 1);
    else unsetenv("HOME");
    if (env) setenv("NN_IMAGE_DATA_FORMAT", env, 1);
    free(home);
    free(env);
}

/* ---- messages that say what to do ------------------------------------------ */

/* A NULL pointer is named, with the function, whichever argument it is. */
static void test_null_arguments_named(void **state)
{
    (void)state;
    nn_model *m = test_make_model(MLP, 1, mlp_in, 1);
    nn_graph *g = nn_model_graph(m);
    tensor *x = tensor_zeros(2, (int[]){2, 5}), *y = NULL;
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    const int labels[2] = {0, 1};
    const nn_loss mse = {NN_LOSS_MEAN_SQUARED_ERROR, 0};
    uint8_t *px = NULL;
    int n = 0, cols = 0;
    nn_mnist mn;
    BAD("nn_model_forward", nn_model_forward(m, NULL, &y, NN_MODE_EVAL), NN_ERR_ARG,
        "nn_model_forward: NULL argument: x is NULL");
    BAD("nn_model_forward", nn_model_forward(m, x, NULL, NN_MODE_EVAL), NN_ERR_ARG,
        "nn_model_forward: NULL argument: y is NULL");
    BAD("nn_model_predict", nn_model_predict(NULL, x, NULL, &y, NULL, NULL), NN_ERR_ARG,
        "nn_model_predict: NULL argument: m is NULL");
    BAD("nn_model_train_step", nn_model_train_step(m, o, x, NULL, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step: NULL argument: labels is NULL");
    BAD("nn_model_train_step_loss", nn_model_train_step_loss(m, o, x, NULL, labels, NULL, NULL, NULL),
        NN_ERR_ARG, "nn_model_train_step_loss: NULL argument (m, opt, x and loss are required): loss is NULL");
    BAD("nn_model_evaluate_loss", nn_model_evaluate_loss(m, NULL, &mse, NULL, NULL, NULL, NULL, NULL),
        NN_ERR_ARG, "nn_model_evaluate_loss: NULL argument (m and x are required): x is NULL");
    BAD("nn_model_summary", nn_model_summary(NULL, stdout), NN_ERR_ARG,
        "nn_model_summary: NULL argument: m is NULL");
    BAD("nn_model_add_spec", nn_model_add_spec(NULL, "relu\n"), NN_ERR_ARG,
        "nn_model_add_spec: NULL argument: m is NULL");
    BAD("nn_model_layer_keys", nn_model_layer_keys(m, 0, NULL, 8), NN_ERR_ARG,
        "nn_model_layer_keys: NULL argument: buf is NULL");
    BAD("nn_graph_backward", nn_graph_backward(NULL, x), NN_ERR_ARG,
        "nn_graph_backward: NULL argument: g is NULL");
    BAD("nn_graph_retain_grad", nn_graph_retain_grad(g, NULL), NN_ERR_ARG,
        "nn_graph_retain_grad: NULL argument: t is NULL");
    BAD("nn_op_add", nn_op_add(g, x, NULL, &y), NN_ERR_ARG, "add: NULL tensor: b is NULL");
    BAD("nn_op_weighted_sum", nn_op_weighted_sum(g, NULL, x, &y), NN_ERR_ARG,
        "weighted_sum: NULL tensor: a is NULL");
    BAD("tensor_copy", tensor_copy(x, NULL), NN_ERR_ARG, "tensor_copy: NULL tensor: src is NULL");
    BAD("optim_step", optim_step(o, m->params, NULL, m->n_params), NN_ERR_ARG,
        "optim_step: NULL argument: g is NULL");
    BAD("nn_layer_forward", nn_layer_forward(m->layers[0], g, x, NULL, 0), NN_ERR_ARG,
        "nn_layer_forward: NULL argument: y is NULL");
    BAD("nn_layer_forward_multi", nn_layer_forward_multi(m->layers[0], NULL, 1, &x, &y, 0),
        NN_ERR_ARG, "nn_layer_forward_multi: NULL argument: g is NULL");
    nn_layer *add = nn_layer_create("add", "");
    BAD("nn_layer_build_multi", nn_layer_build_multi(add, 2, NULL, NULL), NN_ERR_ARG,
        "nn_layer_build_multi: NULL argument: in_rank is NULL");
    nn_layer_free(add);
    BAD("nn_npy_save", nn_npy_save(test_path("n.npy"), NULL), NN_ERR_ARG,
        "nn_npy_save: NULL argument: t is NULL");
    BAD("nn_safetensors_save", nn_safetensors_save(m, NULL), NN_ERR_ARG,
        "nn_safetensors_save: NULL argument: path is NULL");
    BAD("nn_safetensors_load", nn_safetensors_load(NULL, "w.safetensors"), NN_ERR_ARG,
        "nn_safetensors_load: NULL argument: m is NULL");
    BAD("nn_checkpoint_save", nn_checkpoint_save(test_path("n.ckpt"), m, NULL, NULL, 4), NN_ERR_ARG,
        "nn_checkpoint_save: NULL argument: extra is NULL but extra_len is not 0");
    BAD("nn_checkpoint_load", nn_checkpoint_load(test_path("n.ckpt"), NULL, NULL, NULL, 0, NULL),
        NN_ERR_ARG, "nn_checkpoint_load: NULL argument: m is NULL");
    BAD("nn_idx_load_images", nn_idx_load_images("x", &px, &n, NULL, &cols), NN_ERR_ARG,
        "nn_idx_load_images: NULL argument: rows is NULL");
    BAD("nn_idx_load_labels", nn_idx_load_labels("x", &px, NULL), NN_ERR_ARG,
        "nn_idx_load_labels: NULL argument: n is NULL");
    BAD("nn_mnist_load", nn_mnist_load(NULL, &mn), NN_ERR_ARG,
        "nn_mnist_load: NULL argument: dir is NULL");
    optim_free(o);
    tensor_free(x);
    nn_model_free(m);
}

/* A misspelt key is reported as such, before the "required" error it
 * causes, with the closest key and the keys the layer reads; unknown layer
 * types and activations say how to add one. */
static void test_config_messages_help(void **state)
{
    (void)state;
    BAD_NULL("nn_layer_create", nn_layer_create("conv2d", "filters=8 kernal_size=3"),
             "conv2d: unknown config key 'kernal_size' (did you mean 'kernel_size'?)");
    assert_error_contains("conv2d takes the keys filters, kernel_size, strides, padding, "
                          "dilation_rate, use_bias, activation, data_format");
    /* Before a bad value too, and through a model spec. */
    BAD_NULL("nn_layer_create", nn_layer_create("conv2d", "filters=0 kernal_size=3"),
             "unknown config key 'kernal_size' (did you mean 'kernel_size'?)");
    nn_model *m = nn_model_create(1);
    BAD("nn_model_add_spec", nn_model_add_spec(m, "conv2d filters=8 kernal_size=3\nflatten\n"),
        NN_ERR_CONFIG, "model spec line 1: conv2d: unknown config key 'kernal_size' (did you mean "
                       "'kernel_size'?); conv2d takes the keys filters, kernel_size");
    BAD("nn_model_add", nn_model_add(m, "dense", "unitz=3"), NN_ERR_CONFIG,
        "dense: unknown config key 'unitz' (did you mean 'units'?); dense takes the keys units, ");
    /* A key like none of them gets no guess; a layer that reads no key says so. */
    BAD_NULL("nn_layer_create", nn_layer_create("dense", "units=3 zzz=1"),
             "dense: unknown config key 'zzz'; dense takes the keys units");
    assert_null(strstr(nn_last_error(), "did you mean"));
    BAD_NULL("nn_layer_create", nn_layer_create("flatten", "units=3"),
             "flatten: unknown config key 'units'; flatten takes no keys");
    /* A hook that stops at a check of its own (epsilon > 0) has not read the
     * keys after it: they are not called unknown, its error stands. */
    BAD_NULL("nn_layer_create", nn_layer_create("batchnorm", "epsilon=0 center=false"),
             "batchnorm: epsilon must be greater than 0, but got 0");
    /* Without an unknown key, the required-key error is unchanged. */
    BAD_NULL("nn_layer_create", nn_layer_create("conv2d", "filters=8 strides=2"),
             "conv2d: config key 'kernel_size' is required");

    BAD_NULL("nn_layer_create", nn_layer_create("conv3d", ""),
             "unknown layer type 'conv3d' (known: dense, relu, flatten");
    assert_error_contains("to add a layer type, write it as examples/custom_layer.c does and "
                          "register it with nn_registry_add");
    BAD("nn_model_add_spec", nn_model_add_spec(m, "swish beta=1\n"), NN_ERR_CONFIG,
        "model spec line 1: unknown layer type 'swish'");
    assert_error_contains("concatenate); to add a layer type, write it as examples/custom_layer.c "
                          "does and register it with nn_registry_add");
    BAD_NULL("nn_layer_create", nn_layer_create("dense", "units=4 activation=swish"),
             "dense: activation must be one of {linear, relu, sigmoid, tanh, leaky_relu, elu, gelu, "
             "softmax}, but got 'swish'; for another activation, write a layer type as "
             "examples/custom_layer.c does (swish), register it with nn_registry_add and put it "
             "after this layer");
    nn_model_free(m);
}

/* ---- layers/layer.h, nn/registry.h: every registered layer type --------------- */

/* Per type: configs that must be refused and what the message must say. */
static const struct {
    const char *type, *config, *needle;
} bad_configs[] = {
    {"dense", "", "dense: config key 'units' is required"},
    {"dense", "units=0", "dense: units must be between 1 and 16777216, but got 0"},
    {"dense", "units=4 activation=swish", "dense: activation must be one of {linear, relu, sigmoid, tanh, leaky_relu, elu, gelu, softmax}, but got 'swish'"},
    {"dense", "units=4 use_bias=2", "dense: use_bias must be true or false, but got '2'"},
    {"relu", "alpha=0.1", "relu: unknown config key 'alpha'"},
    {"flatten", "data_format=channels_first", "flatten: unknown config key 'data_format'"},
    {"dropout", "rate=1.5", "dropout: rate must be between 0 and 1, but got 1.5"},
    {"dropout", "rate=nan", "dropout: rate must be between 0 and 1, but got nan"},
    {"dropout", "rate=-0.1", "dropout: rate must be between 0 and 1, but got -0.1"},
    {"dropout", "rate=0.5 seed=x", "dropout: seed must be a non-negative integer, but got 'x'"},
    {"spatial_dropout1d", "rate=2", "spatial_dropout1d: rate must be between 0 and 1, but got 2"},
    {"spatial_dropout1d", "rate=0.2 data_format=NLC", "but got 'NLC'"},
    {"spatial_dropout2d", "rate=inf", "spatial_dropout2d: rate must be between 0 and 1, but got inf"},
    {"spatial_dropout2d", "rate=0.25 data_format=NCHW",
     "data_format must be one of {channels_last, channels_first}, but got 'NCHW'"},
    {"spatial_dropout2d", "rate=0.25 inplace=yes", "inplace must be true or false, but got 'yes'"},
    {"spatial_dropout2d", "", "spatial_dropout2d: config key 'rate' is required"},
    {"spatial_dropout3d", "rate=-1", "spatial_dropout3d: rate must be between 0 and 1, but got -1"},
    {"conv2d", "kernel_size=3", "conv2d: config key 'filters' is required"},
    {"conv2d", "filters=0 kernel_size=3", "conv2d: filters must be between 1 and 1048576, but got 0"},
    {"conv2d", "filters=4 kernel_size=0", "kernel_size values must be between 1 and 4096, but got '0'"},
    {"conv2d", "filters=4 kernel_size=3,3,3", "kernel_size takes at most 2 values, but got '3,3,3'"},
    {"conv2d", "filters=4 kernel_size=3 padding=full", "padding must be one of {valid, same}, but got 'full'"},
    {"conv2d", "filters=4 kernel_size=3 strides=-1", "strides values must be between 1 and 4096"},
    {"maxpool2d", "pool_size=0", "pool_size values must be between 1 and 4096, but got '0'"},
    {"avgpool2d", "pool_size=2 padding=causal", "padding must be one of {valid, same}, but got 'causal'"},
    {"global_avgpool2d", "data_format=CHW", "but got 'CHW'"},
    {"batchnorm", "epsilon=0", "batchnorm: epsilon must be greater than 0, but got 0"},
    {"batchnorm", "momentum=1.5", "batchnorm: momentum must be between 0 and 1, but got 1.5"},
};

static void test_layers(void **state)
{
    (void)state;
    BAD_NULL("nn_layer_create", nn_layer_create("conv3d", ""), "unknown layer type 'conv3d' (known: dense");
    BAD_NULL("nn_layer_create", nn_layer_create(NULL, ""), "unknown layer type '(null)'");
    /* Every registered type refuses a key it does not have, by name. */
    for (int k = 0; k < nn_registry_count(); k++) {
        const nn_layer_type *t = nn_registry_get(k);
        char cfg[256], needle[128];
        snprintf(cfg, sizeof cfg, "%s no_such_key=1", t->test_config ? t->test_config : "");
        snprintf(needle, sizeof needle, "%s: unknown config key 'no_such_key'", t->name);
        BAD_NULL("nn_layer_create", nn_layer_create(t->name, cfg), needle);
    }
    for (size_t k = 0; k < sizeof bad_configs / sizeof bad_configs[0]; k++) {
        assert_non_null(nn_registry_find(bad_configs[k].type));
        nn_clear_error();
        nn_layer *l = nn_layer_create(bad_configs[k].type, bad_configs[k].config);
        if (l) fail_msg("%s %s was accepted", bad_configs[k].type, bad_configs[k].config);
        assert_error_contains(bad_configs[k].needle);
        count("nn_layer_create");
    }

    /* Every registered type refuses a per-sample input of a rank it cannot
     * take, by name and shape, and none crashes on rank 5 (which leaves room
     * for the batch axis) or on an extent of 0. */
    const int r5[5] = {2, 2, 2, 2, 2}, empty[3] = {0, 4, 4};
    for (int k = 0; k < nn_registry_count(); k++) {
        const nn_layer_type *t = nn_registry_get(k);
        nn_layer *l = nn_layer_create(t->name, t->test_config);
        assert_non_null(l);
        nn_clear_error();
        nn_status s = nn_layer_build(l, 5, r5);
        if (s != NN_OK) {
            if (!strstr(nn_last_error(), l->name) || !strstr(nn_last_error(), "(2, 2, 2, 2, 2)"))
                fail_msg("%s on rank 5: message '%s' names neither the layer nor the shape",
                         t->name, nn_last_error());
            count("nn_layer_build");
        }
        nn_layer_free(l);
        l = nn_layer_create(t->name, t->test_config);
        nn_clear_error();
        s = nn_layer_build(l, 3, empty);
        if (s != NN_OK && !nn_last_error()[0]) fail_msg("%s on (0, 4, 4): no message", t->name);
        nn_layer_free(l);
    }

    nn_layer *d = nn_layer_create("dense", "units=4");
    char small[4];
    BAD("nn_layer_config_string", nn_layer_config_string(d, small, sizeof small), NN_ERR_ARG,
        "nn_layer_config_string: dense needs");
    const int s23[2] = {2, 3}, s5[1] = {5}, s6[6] = {1, 1, 1, 1, 1, 1};
    BAD("nn_layer_build", nn_layer_build(d, 2, s23), NN_ERR_SHAPE,
        "expected a per-sample input of rank 1 (features), got (2, 3)");
    BAD("nn_layer_build", nn_layer_build(d, 7, s6), NN_ERR_SHAPE, "rank 7 is outside 1..6");
    BAD("nn_layer_alloc_params", nn_layer_alloc_params(d, 1), NN_ERR_STATE, "build the layer first");
    nn_graph *g = nn_graph_create(0);
    tensor *x = tensor_zeros(2, (int[]){2, 5});
    tensor *y = NULL;
    BAD("nn_layer_forward", nn_layer_forward(d, g, x, &y, 1), NN_ERR_STATE, "build the layer first");
    assert_ok(nn_layer_build(d, 1, s5));
    BAD("nn_layer_build", nn_layer_build(d, 1, s5), NN_ERR_STATE, "layer is already built");
    BAD("nn_layer_forward", nn_layer_forward(d, g, x, &y, 1), NN_ERR_STATE,
        "parameters are not allocated");
    assert_ok(nn_layer_alloc_params(d, 1));
    tensor *x4 = tensor_zeros(2, (int[]){2, 4});
    BAD("nn_layer_forward", nn_layer_forward(d, g, x4, &y, 1), NN_ERR_SHAPE,
        "expected input of shape (batch, 5), got (2, 4)");
    BAD("nn_layer_forward", nn_layer_forward(d, g, NULL, &y, 1), NN_ERR_ARG,
        "nn_layer_forward: NULL argument");
    BAD("nn_layer_check_rank", nn_layer_check_rank(d, x4, 4, "(N, H, W, C)"), NN_ERR_SHAPE,
        "expected input of rank 4 (N, H, W, C), got rank 2 with shape (2, 4)");

    /* A per-sample rank of 6 leaves no room for the batch axis. */
    nn_layer *r = nn_layer_create("relu", "");
    BAD("nn_layer_build", nn_layer_build(r, 6, s6), NN_ERR_SHAPE, "relu");
    nn_layer_free(r);

    /* nn_layer_add_param is for build hooks; check it on a built layer's
     * record directly. */
    nn_layer *f = nn_layer_create("flatten", "");
    const int neg[2] = {2, -2};
    BAD("nn_layer_add_param", nn_layer_add_param(f, "kernel", 2, neg, NN_INIT_ZEROS, 1, 1, 1),
        NN_ERR_SHAPE, "negative extent in shape (2, -2)");
    for (int k = 0; k < NN_LAYER_MAX_PARAMS; k++)
        assert_ok(nn_layer_add_param(f, "p", 1, s5, NN_INIT_ZEROS, 1, 1, 1));
    BAD("nn_layer_add_param", nn_layer_add_param(f, "p", 1, s5, NN_INIT_ZEROS, 1, 1, 1),
        NN_ERR_STATE, "more than 4 parameters");
    nn_layer_free(f);

    /* The registry. */
    assert_null(nn_registry_find("no_such_layer"));
    assert_null(nn_registry_get(-1));
    assert_null(nn_registry_get(nn_registry_count()));
    count("nn_registry_find");
    count("nn_registry_get");
    BAD("nn_registry_add", nn_registry_add(NULL), NN_ERR_ARG,
        "the type needs a name and the parse, write, build and forward hooks");
    nn_layer_type copy = *nn_registry_find("relu");
    BAD("nn_registry_add", nn_registry_add(&copy), NN_ERR_ARG, "a layer type named 'relu' already exists");
    copy.name = "relu_without_forward";
    copy.forward = NULL;
    BAD("nn_registry_add", nn_registry_add(&copy), NN_ERR_ARG, "forward hooks");

    tensor_free(x);
    tensor_free(x4);
    nn_graph_free(g);
    nn_layer_free(d);
}

/* ---- nn/model.h ----------------------------------------------------------- */

static void test_model(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    BAD("nn_model_add", nn_model_add(m, "dense", "units=-3"), NN_ERR_CONFIG,
        "dense: units must be between 1 and 16777216, but got -3");
    BAD("nn_model_add", nn_model_add(m, "densse", "units=3"), NN_ERR_CONFIG, "unknown layer type 'densse'");
    BAD("nn_model_add", nn_model_add(NULL, "dense", "units=3"), NN_ERR_ARG, "nn_model_add: model is NULL");
    BAD("nn_model_add_spec", nn_model_add_spec(m, "dense units=3\nfoo\n"), NN_ERR_CONFIG,
        "model spec line 2: unknown layer type 'foo'");
    BAD("nn_model_add_spec", nn_model_add_spec(m, "# comment\n\ndropout rate=2\n"), NN_ERR_CONFIG,
        "model spec line 3: dropout: rate must be between 0 and 1, but got 2");
    BAD("nn_model_add_spec", nn_model_add_spec(m, NULL), NN_ERR_ARG, "nn_model_add_spec: NULL argument");
    assert_int_equal(m->n_layers, 0); /* a refused spec adds none of its lines */
    BAD("nn_model_load_spec", nn_model_load_spec(m, test_path("absent.txt")), NN_ERR_IO,
        "absent.txt: cannot open model spec");
    test_write_bytes(test_path("nul.txt"), "dense units=3\n\0relu\n", 20);
    BAD("nn_model_load_spec", nn_model_load_spec(m, test_path("nul.txt")), NN_ERR_FORMAT,
        "nul.txt: model spec contains a NUL byte at offset 14");
    test_write_bytes(test_path("bad.txt"), "relu\nrelu\ndense unit=3\n", 23);
    BAD("nn_model_load_spec", nn_model_load_spec(m, test_path("bad.txt")), NN_ERR_CONFIG,
        "bad.txt: model spec line 3");
    BAD("nn_model_build", nn_model_build(m, 1, mlp_in), NN_ERR_STATE, "the model has no layers");
    nn_model_free(m);

    m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, MLP));
    BAD("nn_model_build", nn_model_build(m, 0, mlp_in), NN_ERR_SHAPE,
        "nn_model_build: input shape: rank 0 is outside 1..6");
    const int img[3] = {4, 4, 1};
    BAD("nn_model_build", nn_model_build(m, 3, img), NN_ERR_SHAPE,
        "dense_1: expected a per-sample input of rank 1 (features), got (4, 4, 1)");
    nn_model_free(m);
    m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, MLP));
    char spec[8];
    BAD("nn_model_spec_string", nn_model_spec_string(m, spec, sizeof spec), NN_ERR_ARG,
        "nn_model_spec_string: needs");
    BAD("nn_model_summary", nn_model_summary(m, stdout), NN_ERR_STATE, "build the model first");
    tensor *x = tensor_zeros(2, (int[]){2, 5}), *y = NULL;
    BAD("nn_model_forward", nn_model_forward(m, x, &y, NN_MODE_EVAL), NN_ERR_STATE,
        "nn_model_forward: build the model first");
    assert_ok(nn_model_build(m, 1, mlp_in));
    BAD("nn_model_build", nn_model_build(m, 1, mlp_in), NN_ERR_STATE, "the model is already built");
    BAD("nn_model_add", nn_model_add(m, "relu", ""), NN_ERR_STATE, "the model is already built");
    BAD("nn_model_summary", nn_model_summary(m, NULL), NN_ERR_ARG, "nn_model_summary: NULL argument");
    BAD("nn_model_forward", nn_model_forward(m, x, &y, (nn_mode)5), NN_ERR_ARG,
        "nn_model_forward: mode must be -1, 0 or 1, but got 5");
    tensor *x6 = tensor_zeros(2, (int[]){2, 6});
    BAD("nn_model_forward", nn_model_forward(m, x6, &y, NN_MODE_EVAL), NN_ERR_SHAPE,
        "dense_1: expected input of shape (batch, 5), got (2, 6)");
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    const int labels[2] = {0, 7};
    BAD("nn_model_train_step", nn_model_train_step(m, o, x, labels, NULL, NULL), NN_ERR_ARG,
        "label 7 of row 1 is outside [0, 3)");
    BAD("nn_model_train_step", nn_model_train_step(m, o, x6, labels, NULL, NULL), NN_ERR_SHAPE,
        "expected input of shape (batch, 5), got (2, 6)");
    BAD("nn_model_train_step", nn_model_train_step(m, NULL, x, labels, NULL, NULL), NN_ERR_ARG,
        "nn_model_train_step: NULL argument");
    /* A non-finite input makes a non-finite loss: reported, not trained on. */
    float before[64];
    memcpy(before, m->params, m->n_params * sizeof(float));
    x->data[3] = INFINITY;
    const int good[2] = {0, 1};
    BAD("nn_model_train_step", nn_model_train_step(m, o, x, good, NULL, NULL), NN_ERR_NUMERIC,
        "loss is");
    assert_memory_equal(before, m->params, m->n_params * sizeof(float));
    x->data[3] = 0.0f;
    BAD("nn_model_predict", nn_model_predict(m, x, labels, NULL, NULL, NULL), NN_ERR_ARG,
        "label 7 of row 1 is outside [0, 3)");
    BAD("nn_model_predict", nn_model_predict(m, x6, NULL, NULL, NULL, NULL), NN_ERR_SHAPE,
        "got (2, 6)");

    /* At most NN_MODEL_MAX_LAYERS layers. */
    nn_model *deep = nn_model_create(1);
    for (int i = 0; i < NN_MODEL_MAX_LAYERS; i++) assert_ok(nn_model_add(deep, "relu", NULL));
    BAD("nn_model_add", nn_model_add(deep, "relu", NULL), NN_ERR_STATE, "at most 64 layers");
    nn_model_free(deep);

    optim_free(o);
    tensor_free(x);
    tensor_free(x6);
    nn_model_free(m);
}

/* ---- optim/optim.h, tensor/threads.h ------------------------------------------ */

static void test_optim_threads(void **state)
{
    (void)state;
    BAD_NULL("optim_sgd_create", optim_sgd_create(0.0f, 0.0f, 0, 0.0f),
             "optim_sgd_create: lr must be a finite number > 0, but got 0");
    BAD_NULL("optim_sgd_create", optim_sgd_create(NAN, 0.0f, 0, 0.0f), "lr must be a finite number > 0, but got nan");
    BAD_NULL("optim_sgd_create", optim_sgd_create(INFINITY, 0.0f, 0, 0.0f), "but got inf");
    BAD_NULL("optim_sgd_create", optim_sgd_create(0.1f, 1.0f, 0, 0.0f),
             "optim_sgd_create: momentum must be in [0, 1), but got 1");
    BAD_NULL("optim_sgd_create", optim_sgd_create(0.1f, -0.5f, 0, 0.0f), "momentum must be in [0, 1), but got -0.5");
    BAD_NULL("optim_sgd_create", optim_sgd_create(0.1f, 0.9f, 0, -1.0f),
             "optim_sgd_create: weight_decay must be >= 0, but got -1");
    BAD_NULL("optim_sgd_create", optim_sgd_create(0.1f, 0.0f, 1, 0.0f), "nesterov needs a momentum > 0");
    BAD_NULL("optim_adam_create", optim_adam_create(-1.0f, 0.9f, 0.999f, 1e-8f, 0.0f, 0),
             "optim_adam_create: lr must be a finite number > 0, but got -1");
    BAD_NULL("optim_adam_create", optim_adam_create(1e-3f, 1.0f, 0.999f, 1e-8f, 0.0f, 0),
             "betas must be in [0, 1), but got (1, 0.999)");
    BAD_NULL("optim_adam_create", optim_adam_create(1e-3f, 0.9f, NAN, 1e-8f, 0.0f, 0),
             "betas must be in [0, 1), but got (0.9, nan)");
    BAD_NULL("optim_adam_create", optim_adam_create(1e-3f, 0.9f, 0.999f, 0.0f, 0.0f, 0),
             "optim_adam_create: eps must be > 0, but got 0");
    BAD_NULL("optim_adam_create", optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-8f, NAN, 1),
             "weight_decay must be >= 0, but got nan");

    optim *o = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    float w[11] = {0}, g[11] = {0};
    assert_ok(optim_step(o, w, g, 10));
    BAD("optim_step", optim_step(o, w, g, 11), NN_ERR_SHAPE,
        "optim_step: state was made for 10 parameters, got 11");
    BAD("optim_step", optim_step(o, NULL, g, 10), NN_ERR_ARG, "optim_step: NULL argument");
    BAD("optim_set_lr", optim_set_lr(o, NAN), NN_ERR_ARG, "optim_set_lr: lr must be a finite number > 0, but got nan");
    BAD("optim_set_lr", optim_set_lr(o, -3.0f), NN_ERR_ARG, "but got -3");
    BAD("optim_set_lr", optim_set_lr(NULL, 1.0f), NN_ERR_ARG, "optim_set_lr: optimizer is NULL");
    assert_true(optim_get_lr(o) == 1e-3f); /* the refused values changed nothing */
    optim_free(o);

    const int before = nn_get_threads();
    BAD("nn_set_threads", nn_set_threads(0), NN_ERR_ARG, "nn_set_threads: n must be between 1 and 1024, but got 0");
    BAD("nn_set_threads", nn_set_threads(-4), NN_ERR_ARG, "but got -4");
    BAD("nn_set_threads", nn_set_threads(5000), NN_ERR_ARG, "but got 5000");
    assert_int_equal(nn_get_threads(), before);
}

/* ---- nn/io/npy.h, nn/io/safetensors.h ------------------------------------------- */

static void test_npy_safetensors(void **state)
{
    (void)state;
    uint8_t buf[512];
    tensor *t = NULL;
    BAD("nn_npy_load", nn_npy_load(test_path("absent.npy"), &t), NN_ERR_IO, "absent.npy: cannot open");
    size_t n = test_npy_bytes(buf, 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 64,
                              NULL, 4 * 4);
    test_write_bytes(test_path("f8.npy"), buf, n);
    BAD("nn_npy_load", nn_npy_load(test_path("f8.npy"), &t), NN_ERR_FORMAT,
        "f8.npy: dtype '<f8' is not supported; only little-endian float32 '<f4' is (this one is "
        "float64");
    n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 64,
                       NULL, 5 * 4);
    test_write_bytes(test_path("short.npy"), buf, n);
    BAD("nn_npy_load", nn_npy_load(test_path("short.npy"), &t), NN_ERR_FORMAT,
        "short.npy: shape (2, 3) needs 24 data bytes at offset 128, but the file has 20 (truncated)");
    /* A header that promises far more than the file holds is refused
     * before anything that large is allocated. */
    n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2000000000,), }", 64,
                       NULL, 2 * 4);
    test_write_bytes(test_path("huge.npy"), buf, n);
    BAD("nn_npy_load", nn_npy_load(test_path("huge.npy"), &t), NN_ERR_FORMAT,
        "huge.npy: shape (2000000000,) needs 8000000000 data bytes at offset 128, but the file has 8");
    assert_null(t);
    BAD("nn_npy_load", nn_npy_load(NULL, &t), NN_ERR_ARG, "nn_npy_load: path is NULL");

    BAD("nn_npy_parse", nn_npy_parse("PK\x03\x04zipzip", 10, "a.npz", &t), NN_ERR_FORMAT,
        "a.npz: not an npy file: bad magic at offset 0");
    n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", 64,
                       NULL, 3 * 4);
    BAD("nn_npy_parse", nn_npy_parse(buf, n, "int.npy", &t), NN_ERR_FORMAT,
        "int.npy: npy header at offset 60: '(3)' is an int, not a tuple");
    n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", 64,
                       NULL, 3 * 4);
    BAD("nn_npy_parse", nn_npy_parse(buf, n, "f.npy", &t), NN_ERR_FORMAT,
        "f.npy: fortran_order is True; only C order is supported");
    n = test_npy_bytes(buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1), }", 64,
                       NULL, 1 * 4);
    BAD("nn_npy_parse", nn_npy_parse(buf, n, "r7.npy", &t), NN_ERR_FORMAT,
        "'shape' has more than 6 dimensions");
    BAD("nn_npy_parse", nn_npy_parse(buf, n, "x", NULL), NN_ERR_ARG, "nn_npy_parse: out is NULL");

    const int s2[1] = {2};
    tensor *v = tensor_zeros(1, s2);
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/v.npy", test_dir());
    BAD("nn_npy_save", nn_npy_save(nodir, v), NN_ERR_IO, "/no/such/dir/v.npy");
    BAD("nn_npy_save", nn_npy_save(test_path("v.npy"), NULL), NN_ERR_ARG, "nn_npy_save: NULL argument");
    tensor_free(v);

    nn_model *unbuilt = nn_model_create(1);
    assert_ok(nn_model_add_spec(unbuilt, MLP));
    BAD("nn_safetensors_save", nn_safetensors_save(unbuilt, test_path("u.safetensors")), NN_ERR_STATE,
        "u.safetensors: build the model first");
    BAD("nn_safetensors_load", nn_safetensors_load(unbuilt, test_path("u.safetensors")), NN_ERR_STATE,
        "build the model before loading its parameters");
    nn_model_free(unbuilt);
    nn_model *m = test_make_model(MLP, 1, mlp_in, 3);
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.safetensors", test_dir());
    BAD("nn_safetensors_save", nn_safetensors_save(m, nodir), NN_ERR_IO, "cannot create");
    BAD("nn_safetensors_load", nn_safetensors_load(m, test_path("absent.safetensors")), NN_ERR_IO,
        "absent.safetensors: cannot open");
    BAD("nn_safetensors_parse", nn_safetensors_parse(m, "abc", 3, "s.st"), NN_ERR_FORMAT,
        "s.st: truncated: 3 bytes, the header length alone takes 8");
    const uint8_t huge_len[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}', ' ', ' '};
    BAD("nn_safetensors_parse", nn_safetensors_parse(m, huge_len, 12, "s.st"), NN_ERR_FORMAT,
        "s.st: header length 9223372036854775807 at offset 0 is over the limit");
    /* A file written for another network: the first tensor that differs is
     * named with both shapes. */
    nn_model *other = test_make_model("dense units=4 activation=relu\ndense units=2\n", 1, mlp_in, 3);
    assert_ok(nn_safetensors_save(other, test_path("other.safetensors")));
    float before[64];
    memcpy(before, m->params, m->n_params * sizeof(float));
    BAD("nn_safetensors_load", nn_safetensors_load(m, test_path("other.safetensors")), NN_ERR_SHAPE,
        "tensor 'dense_2.kernel' has shape (4, 2) in the file, the model has (4, 3)");
    assert_memory_equal(before, m->params, m->n_params * sizeof(float));
    nn_model_free(other);
    const char *f16 = "{\"dense_1.kernel\":{\"dtype\":\"F16\",\"shape\":[5,4],\"data_offsets\":[0,40]}}";
    uint8_t st[256] = {0};
    size_t hl = strlen(f16);
    st[0] = (uint8_t)hl;
    memcpy(st + 8, f16, hl);
    BAD("nn_safetensors_parse", nn_safetensors_parse(m, st, 8 + hl + 40, "h.st"), NN_ERR_FORMAT,
        "h.st: tensor 'dense_1.kernel': dtype 'F16' is not supported (only F32)");
    BAD("nn_safetensors_parse", nn_safetensors_parse(NULL, st, 8, "h.st"), NN_ERR_ARG,
        "nn_safetensors_parse: model is NULL");
    nn_model_free(m);
}

/* ---- nn/io/idx.h, nn/io/checkpoint.h -------------------------------------------- */

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void write_idx(const char *path, uint32_t magic, int dims, const uint32_t *ext,
                      size_t data_bytes, int gz)
{
    uint8_t b[4096] = {0};
    be32(b, magic);
    for (int d = 0; d < dims; d++) be32(b + 4 + 4 * d, ext[d]);
    for (size_t i = 0; i < data_bytes; i++) b[4 + 4 * dims + i] = (uint8_t)(i % 10);
    const size_t len = 4 + 4 * (size_t)dims + data_bytes;
    if (!gz) {
        test_write_bytes(path, b, len);
        return;
    }
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, b, (unsigned)len), (int)len);
    gzclose(g);
}

/* ---- nn/io/onnx.h ------------------------------------------------------------ */

static void test_onnx(void **state)
{
    (void)state;
    nn_model *unbuilt = nn_model_create(1);
    assert_ok(nn_model_add_spec(unbuilt, MLP));
    BAD("nn_onnx_save", nn_onnx_save(unbuilt, test_path("u.onnx")), NN_ERR_STATE,
        "nn_onnx_save: the model is not built");
    nn_model_free(unbuilt);
    nn_model *m = test_make_model(MLP, 1, mlp_in, 3);
    BAD("nn_onnx_save", nn_onnx_save(m, NULL), NN_ERR_ARG, "nn_onnx_save: path is NULL");
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.onnx", test_dir());
    BAD("nn_onnx_save", nn_onnx_save(m, nodir), NN_ERR_IO, "/no/such/dir/m.onnx");
    unsigned char *buf = NULL;
    size_t len = 0;
    BAD("nn_onnx_encode", nn_onnx_encode(NULL, &buf, &len), NN_ERR_ARG, "nn_onnx_save: NULL argument");
    nn_model *out = NULL;
    BAD("nn_onnx_load", nn_onnx_load(test_path("absent.onnx"), &out), NN_ERR_IO,
        "absent.onnx: cannot open");
    BAD("nn_onnx_load", nn_onnx_load(test_path("absent.onnx"), NULL), NN_ERR_ARG,
        "nn_onnx_load: out is NULL");
    static const unsigned char junk[] = {0x3a, 0x05, 0x0a};
    BAD("nn_onnx_parse", nn_onnx_parse(junk, sizeof junk, "junk.onnx", &out), NN_ERR_FORMAT,
        "junk.onnx: offset 0: field 7 declares 5 bytes");
    BAD("nn_onnx_parse", nn_onnx_parse(junk, 0, "empty.onnx", &out), NN_ERR_FORMAT,
        "empty.onnx: no graph in the file");
    assert_null(out);
    nn_model_free(m);
}

static void test_idx_checkpoint(void **state)
{
    (void)state;
    uint8_t *px = NULL;
    int n = 0, rows = 0, cols = 0;
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("absent-idx3"), &px, &n, &rows, &cols),
        NN_ERR_IO, "absent-idx3: cannot open");
    const uint32_t lab5[1] = {5}, img[3] = {2, 3, 2}, img_rows0[3] = {2, 0, 2};
    write_idx(test_path("labels"), NN_IDX_MAGIC_LABELS, 1, lab5, 5, 0);
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("labels"), &px, &n, &rows, &cols),
        NN_ERR_FORMAT, "labels: wrong magic 0x00000801 at offset 0, expected 0x00000803");
    write_idx(test_path("rows0"), NN_IDX_MAGIC_IMAGES, 3, img_rows0, 0, 0);
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("rows0"), &px, &n, &rows, &cols),
        NN_ERR_FORMAT, "rows0: bad image rows 0 at offset 8 (must be 1..16384)");
    write_idx(test_path("short.gz"), NN_IDX_MAGIC_IMAGES, 3, img, 7, 1);
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("short.gz"), &px, &n, &rows, &cols),
        NN_ERR_FORMAT, "short.gz: truncated data: expected 12 bytes from offset 16, got 7");
    write_idx(test_path("long"), NN_IDX_MAGIC_IMAGES, 3, img, 13, 0);
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("long"), &px, &n, &rows, &cols),
        NN_ERR_FORMAT, "long: unexpected bytes after the data at offset 28");
    const uint32_t huge[3] = {4000000000u, 16384, 16384};
    write_idx(test_path("huge"), NN_IDX_MAGIC_IMAGES, 3, huge, 0, 0);
    BAD("nn_idx_load_images", nn_idx_load_images(test_path("huge"), &px, &n, &rows, &cols),
        NN_ERR_FORMAT, "huge: bad image count 4000000000 at offset 4");
    assert_null(px);
    const uint32_t lab0[1] = {0};
    uint8_t *lab = NULL;
    write_idx(test_path("lab0"), NN_IDX_MAGIC_LABELS, 1, lab0, 0, 0);
    BAD("nn_idx_load_labels", nn_idx_load_labels(test_path("lab0"), &lab, &n), NN_ERR_FORMAT,
        "lab0: bad label count 0 at offset 4");
    test_write_bytes(test_path("garbage.gz"), "\x1f\x8b\x08\x00garbage-garbage", 19);
    BAD("nn_idx_load_labels", nn_idx_load_labels(test_path("garbage.gz"), &lab, &n), NN_ERR_FORMAT,
        "garbage.gz");
    BAD("nn_idx_load_labels", nn_idx_load_labels(NULL, &lab, &n), NN_ERR_ARG,
        "nn_idx_load_labels: NULL argument");

    nn_mnist data;
    BAD("nn_mnist_load", nn_mnist_load(test_path("nowhere"), &data), NN_ERR_IO,
        "nowhere: neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz exists");
    mkdir(test_path("mn"), 0700);
    const uint32_t i3[3] = {3, 2, 2}, l2[1] = {2}, l3[1] = {3};
    write_idx(test_path("mn/train-images-idx3-ubyte"), NN_IDX_MAGIC_IMAGES, 3, i3, 12, 0);
    write_idx(test_path("mn/train-labels-idx1-ubyte.gz"), NN_IDX_MAGIC_LABELS, 1, l2, 2, 1);
    BAD("nn_mnist_load", nn_mnist_load(test_path("mn"), &data), NN_ERR_FORMAT,
        "train-images-idx3-ubyte has 3 images but");
    assert_null(data.train_images);
    write_idx(test_path("mn/train-labels-idx1-ubyte.gz"), NN_IDX_MAGIC_LABELS, 1, l3, 3, 1);
    const uint8_t bad_label[11] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 12, 2};
    test_write_bytes(test_path("mn/t10k-labels-idx1-ubyte"), bad_label, sizeof bad_label);
    write_idx(test_path("mn/t10k-images-idx3-ubyte"), NN_IDX_MAGIC_IMAGES, 3, i3, 12, 0);
    BAD("nn_mnist_load", nn_mnist_load(test_path("mn"), &data), NN_ERR_FORMAT,
        "t10k-labels-idx1-ubyte: label 12 at offset 9 is outside 0..9");
    const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz",
                           "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"};
    for (int k = 0; k < 4; k++) {
        char p[128];
        snprintf(p, sizeof p, "mn/%s", names[k]);
        unlink(test_path(p));
    }
    rmdir(test_path("mn"));

    /* Checkpoints: the argument errors here; corrupted files in
     * test_checkpoint_corrupt.c, mismatching networks in test_checkpoint.c. */
    nn_model *m = test_make_model(MLP, 1, mlp_in, 3);
    optim *o = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    float w[5] = {0}, g[5] = {0};
    assert_ok(optim_step(o, w, g, 5));
    BAD("nn_checkpoint_save", nn_checkpoint_save(test_path("a.ckpt"), m, o, NULL, 0), NN_ERR_STATE,
        "nn_checkpoint_save: the optimizer holds state for 5 parameters, the model has 39");
    BAD("nn_checkpoint_save", nn_checkpoint_save(NULL, m, NULL, NULL, 0), NN_ERR_ARG,
        "nn_checkpoint_save: NULL argument");
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.ckpt", test_dir());
    BAD("nn_checkpoint_save", nn_checkpoint_save(nodir, m, NULL, NULL, 0), NN_ERR_IO, "cannot create");
    BAD("nn_checkpoint_load", nn_checkpoint_load(test_path("absent.ckpt"), m, NULL, NULL, 0, NULL),
        NN_ERR_IO, "absent.ckpt: cannot open checkpoint");
    BAD("nn_checkpoint_load", nn_checkpoint_load(test_dir(), m, NULL, NULL, 0, NULL), NN_ERR_IO,
        "not a regular file");
    assert_ok(nn_checkpoint_save(test_path("m.ckpt"), m, NULL, NULL, 0));
    optim *fresh = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    BAD("nn_checkpoint_load", nn_checkpoint_load(test_path("m.ckpt"), m, fresh, NULL, 0, NULL),
        NN_ERR_STATE, "m.ckpt: checkpoint has no optimizer state (saved without one)");
    nn_model *other = test_make_model("dense units=6 activation=relu\ndense units=3\n", 1, mlp_in, 3);
    BAD("nn_checkpoint_load", nn_checkpoint_load(test_path("m.ckpt"), other, NULL, NULL, 0, NULL),
        NN_ERR_SHAPE, "layer 0 (dense_1): checkpoint has dense units=4, model has dense units=6 "
                      "(kernel (5, 4) against (5, 6))");
    optim_free(fresh);
    optim_free(o);
    nn_model_free(other);
    nn_model_free(m);
}

/* ---- layers/spatial_dropout.h ---------------------------------------------- */

static void test_spatial_dropout(void **state)
{
    (void)state;
    uint8_t mask[8];
    float x[16] = {0}, y[16];
    BAD("nn_spatial_dropout_mask", nn_spatial_dropout_mask(mask, -1, 2, 0.5f, 1, 0), NN_ERR_SHAPE,
        "nn_spatial_dropout_mask: N and C must be >= 0, but got N=-1, C=2");
    BAD("nn_spatial_dropout_mask", nn_spatial_dropout_mask(mask, 2, 2, 1.5f, 1, 0), NN_ERR_ARG,
        "nn_spatial_dropout_mask: rate must be between 0 and 1, but got 1.5");
    BAD("nn_spatial_dropout_mask", nn_spatial_dropout_mask(NULL, 2, 2, 0.5f, 1, 0), NN_ERR_ARG,
        "nn_spatial_dropout_mask: mask is NULL for a non-empty shape");
    BAD("nn_spatial_dropout_forward",
        nn_spatial_dropout_forward(y, mask, x, 2, 2, 4, NN_CHANNELS_FIRST, NAN, 1, 0), NN_ERR_ARG,
        "nn_spatial_dropout_forward: rate must be between 0 and 1, but got nan");
    BAD("nn_spatial_dropout_forward",
        nn_spatial_dropout_forward(y, mask, x, 2, 2, 4, (nn_data_format)5, 0.5f, 1, 0), NN_ERR_ARG,
        "fmt must be NN_CHANNELS_FIRST or NN_CHANNELS_LAST, but got 5");
    BAD("nn_spatial_dropout_forward",
        nn_spatial_dropout_forward(y, mask, NULL, 2, 2, 4, NN_CHANNELS_LAST, 0.5f, 1, 0), NN_ERR_ARG,
        "x is NULL for a non-empty shape");
    BAD("nn_spatial_dropout_forward",
        nn_spatial_dropout_forward(y, mask, x, INT_MAX, INT_MAX, LONG_MAX, NN_CHANNELS_LAST, 0.5f, 1,
                                   0),
        NN_ERR_SHAPE, "is too large");
    BAD("nn_spatial_dropout_apply",
        nn_spatial_dropout_apply(y, mask, x, 2, -2, 4, NN_CHANNELS_LAST, 0.5f), NN_ERR_SHAPE,
        "nn_spatial_dropout_apply: N, C and spatial must be >= 0, but got N=2, C=-2, spatial=4");
    BAD("nn_spatial_dropout_apply",
        nn_spatial_dropout_apply(y, NULL, x, 2, 2, 4, NN_CHANNELS_LAST, 0.5f), NN_ERR_ARG,
        "mask is NULL");
    BAD("nn_spatial_dropout_backward",
        nn_spatial_dropout_backward(y, mask, x, 2, 2, -4, NN_CHANNELS_FIRST, 0.5f), NN_ERR_SHAPE,
        "nn_spatial_dropout_backward: N, C and spatial must be >= 0, but got N=2, C=2, spatial=-4");
    BAD("nn_spatial_dropout_backward",
        nn_spatial_dropout_backward(y, mask, x, 2, 2, 4, NN_CHANNELS_FIRST, -0.25f), NN_ERR_ARG,
        "rate must be between 0 and 1, but got -0.25");

    /* The layer plumbing, through a layer made by name. */
    nn_layer *l = nn_layer_create("spatial_dropout2d", "rate=0.5 data_format=channels_first");
    assert_non_null(l);
    nn_config c;
    assert_ok(nn_config_parse(&c, "spatial_dropout2d", "rate=7"));
    BAD("nn_spatial_dropout_layer_parse", nn_spatial_dropout_layer_parse(l, &c, 2), NN_ERR_CONFIG,
        "spatial_dropout2d: rate must be between 0 and 1, but got 7");
    BAD("nn_spatial_dropout_layer_parse", nn_spatial_dropout_layer_parse(l, &c, 4), NN_ERR_ARG,
        "nn_spatial_dropout_layer_parse: dims must be 1, 2 or 3, but got 4");
    const int chw[2] = {3, 4};
    BAD("nn_spatial_dropout_layer_build", nn_spatial_dropout_layer_build(l, 2, chw), NN_ERR_SHAPE,
        "expected a per-sample input of rank 3");
    nn_layer_free(l);
    /* In place over a model parameter would corrupt it. */
    l = nn_layer_create("spatial_dropout2d", "rate=0.5 inplace=true data_format=channels_first");
    const int s3[3] = {2, 2, 2};
    assert_ok(nn_layer_build(l, 3, s3));
    nn_graph *g = nn_graph_create(0);
    tensor *p = tensor_zeros(4, (int[]){1, 2, 2, 2}), *out = NULL;
    p->flags |= TENSOR_PARAM;
    BAD("nn_spatial_dropout_layer_forward", nn_spatial_dropout_layer_forward(l, g, p, &out, 1),
        NN_ERR_STATE, "inplace=true cannot overwrite a model parameter");
    tensor_free(p);
    nn_graph_free(g);
    nn_layer_free(l);
}

static int teardown(void **state)
{
    (void)state;
    static const char *files[] = {"nul.txt", "bad.txt", "f8.npy", "short.npy", "huge.npy",
                                  "other.safetensors", "labels", "rows0", "short.gz", "long",
                                  "huge", "lab0", "garbage.gz", "m.ckpt", "a.ckpt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(test_path(files[i]));
    if (rmdir(test_dir()) != 0)
        fprintf(stderr, "test_errors: %s left behind (not empty)\n", test_dir());
    /* The tally, one line per entry point. */
    int total = 0;
    printf("bad inputs tried, by entry point (%d entry points):\n", n_fns);
    for (int i = 0; i < n_fns; i++) {
        printf("  %-36s %3d\n", tally[i].fn, tally[i].n);
        total += tally[i].n;
    }
    printf("  %-36s %3d\n", "total", total);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_and_tensor),
        cmocka_unit_test(test_graph_and_ops),
        cmocka_unit_test(test_config_and_format),
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_optim_threads),
        cmocka_unit_test(test_npy_safetensors),
        cmocka_unit_test(test_idx_checkpoint),
        cmocka_unit_test(test_onnx),
        cmocka_unit_test(test_spatial_dropout),
        cmocka_unit_test(test_null_arguments_named),
        cmocka_unit_test(test_config_messages_help),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, teardown);
}
