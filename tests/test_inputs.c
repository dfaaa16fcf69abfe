/* Models with several inputs, as Keras's Model(inputs=[a, b]): the spec's
 * "input name=... shape=..." line, nn_model_build_inputs,
 * nn_model_forward_inputs against the same network computed by hand, the
 * summary, the spec text, .safetensors files and checkpoints (read back by
 * nn_model_load and by a model built by the caller), every error message of
 * the new calls, and that a one-input model runs the same through both
 * forwards. ONNX export and import of such models are in tests/test_onnx.c.
 *
 * Tolerance of the hand computation: the dense layers sum in blocks, the
 * loops below in order; 1e-5 relative to the largest output holds both. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

/* y = dense_3(concat(dense_a(input) + dense_b(b), b)). */
static const char SPEC[] =
    "input name=b shape=4\n"
    "dense units=3 name=da\n"
    "dense units=3 inputs=b name=db\n"
    "add inputs=da,db\n"
    "concatenate inputs=add_1,b\n"
    "dense units=2\n";
#define IN_A 5
#define IN_B 4
#define BATCH 3

static nn_model *build_spec(const char *spec, uint64_t seed)
{
    nn_model *m = nn_model_create(seed);
    assert_non_null(m);
    assert_ok(nn_model_add_spec(m, spec));
    const int a = IN_A;
    assert_ok(nn_model_build(m, 1, &a));
    /* Non-zero biases, so the hand computation checks them too. */
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++)
            if (!strcmp(m->layers[i]->params[k].name, "bias")) {
                tensor *t = m->layers[i]->params[k].t;
                for (size_t j = 0; j < t->size; j++) t->data[j] = 0.1f * (float)(j + 1) - 0.15f * i;
            }
    return m;
}

static void make_inputs(tensor **xa, tensor **xb)
{
    const int sa[2] = {BATCH, IN_A}, sb[2] = {BATCH, IN_B};
    *xa = tensor_create(2, sa);
    *xb = tensor_create(2, sb);
    for (size_t i = 0; i < (*xa)->size; i++) (*xa)->data[i] = sinf(0.7f * (float)i);
    for (size_t i = 0; i < (*xb)->size; i++) (*xb)->data[i] = cosf(0.3f * (float)i + 0.2f);
}

/* out[n][u] = sum_k x[n][k] W[k][u] + b[u] (Keras's dense: W is (in, units)). */
static void dense_ref(const nn_layer *l, const float *x, int n, int in, float *out)
{
    const tensor *w = l->params[0].t, *b = l->params[1].t;
    const int units = w->shape[1];
    assert_int_equal(w->shape[0], in);
    for (int r = 0; r < n; r++)
        for (int u = 0; u < units; u++) {
            double s = b->data[u];
            for (int k = 0; k < in; k++) s += (double)x[r * in + k] * w->data[k * units + u];
            out[r * units + u] = (float)s;
        }
}

static float *forward_copy(nn_model *m, tensor *xa, tensor *xb, size_t *n)
{
    tensor *xs[2] = {xa, xb}, *y;
    assert_ok(nn_model_forward_inputs(m, 2, xs, &y, NN_MODE_EVAL));
    float *out = malloc(y->size * sizeof(float));
    memcpy(out, y->data, y->size * sizeof(float));
    *n = y->size;
    return out;
}

static void test_forward_by_hand(void **state)
{
    (void)state;
    nn_model *m = build_spec(SPEC, 7);
    assert_int_equal(nn_model_input_count(m), 2);
    assert_string_equal(nn_model_input_name(m, 0), "input");
    assert_string_equal(nn_model_input_name(m, 1), "b");
    assert_null(nn_model_input_name(m, 2));
    assert_false(nn_model_is_sequential(m));
    tensor *xa, *xb;
    make_inputs(&xa, &xb);
    size_t n;
    float *got = forward_copy(m, xa, xb, &n);
    assert_int_equal(n, BATCH * 2);
    float da[BATCH * 3], db[BATCH * 3], cat[BATCH * 7], want[BATCH * 2];
    dense_ref(m->layers[0], xa->data, BATCH, IN_A, da);
    dense_ref(m->layers[1], xb->data, BATCH, IN_B, db);
    for (int r = 0; r < BATCH; r++) {
        for (int u = 0; u < 3; u++) cat[r * 7 + u] = da[r * 3 + u] + db[r * 3 + u];
        for (int k = 0; k < IN_B; k++) cat[r * 7 + 3 + k] = xb->data[r * IN_B + k];
    }
    dense_ref(m->layers[4], cat, BATCH, 7, want);
    float amax = 0.0f;
    for (int i = 0; i < BATCH * 2; i++) amax = fmaxf(amax, fabsf(want[i]));
    assert_true(amax > 0.1f);
    for (int i = 0; i < BATCH * 2; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * amax))
            fail_msg("output %d: %g, by hand %g", i, got[i], want[i]);
    free(got);
    tensor_free(xa);
    tensor_free(xb);
    nn_model_free(m);
}

/* A one-input model: nn_model_forward_inputs(m, 1, &x) is nn_model_forward. */
static void test_one_input_same(void **state)
{
    (void)state;
    const int shape[3] = {6, 6, 2};
    nn_model *m = test_make_model("conv2d filters=3 kernel_size=3 activation=relu\nflatten\n"
                                  "dense units=4\n", 3, shape, 3);
    assert_int_equal(nn_model_input_count(m), 1);
    const int xs_shape[4] = {2, 6, 6, 2};
    tensor *x = tensor_create(4, xs_shape);
    for (size_t i = 0; i < x->size; i++) x->data[i] = sinf((float)i);
    tensor *y;
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
    float ref[8];
    memcpy(ref, y->data, sizeof ref);
    assert_ok(nn_model_forward_inputs(m, 1, &x, &y, NN_MODE_EVAL));
    assert_memory_equal(ref, y->data, sizeof ref);
    char spec[512];
    assert_ok(nn_model_spec_string(m, spec, sizeof spec));
    assert_null(strstr(spec, "input"));
    tensor_free(x);
    nn_model_free(m);
}

static void test_spec_and_summary(void **state)
{
    (void)state;
    nn_model *m = build_spec(SPEC, 7);
    char spec[1024];
    assert_ok(nn_model_spec_string(m, spec, sizeof spec));
    if (strncmp(spec, "input name=b shape=4\n", 21)) fail_msg("spec: %s", spec);
    assert_non_null(strstr(spec, "inputs=b"));
    assert_non_null(strstr(spec, "inputs=add_1,b"));
    /* The spec text rebuilds the same network: same seed, same outputs. */
    nn_model *again = build_spec(spec, 7);
    tensor *xa, *xb;
    make_inputs(&xa, &xb);
    size_t n, n2;
    float *a = forward_copy(m, xa, xb, &n), *b = forward_copy(again, xa, xb, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(a, b, n * sizeof(float));
    free(a);
    free(b);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_ok(nn_model_summary(m, f));
    fclose(f);
    assert_non_null(strstr(text, "Model: \"functional\""));
    assert_non_null(strstr(text, " input (InputLayer)"));
    assert_non_null(strstr(text, " b (InputLayer)"));
    assert_non_null(strstr(text, "(None, 4)"));
    assert_non_null(strstr(text, "Connected to"));
    free(text);
    /* A shape left to nn_model_build_inputs. */
    nn_model *late = nn_model_create(7);
    assert_ok(nn_model_add_spec(late, "input name=b\ndense units=3 name=da\n"
                                      "dense units=3 inputs=b name=db\nadd inputs=da,db\n"));
    const int a5 = IN_A;
    assert_int_equal(nn_model_build(late, 1, &a5), NN_ERR_STATE);
    assert_error_contains("nn_model_build: the model input 'b' has no shape: give shape= on its "
                          "input line, or build with nn_model_build_inputs");
    const int ranks[2] = {1, 1}, sa[1] = {IN_A}, sb[1] = {IN_B};
    const int *shapes[2] = {sa, sb};
    assert_ok(nn_model_build_inputs(late, 2, ranks, shapes));
    assert_ok(nn_model_spec_string(late, spec, sizeof spec));
    assert_int_equal(strncmp(spec, "input name=b shape=4\n", 21), 0);
    nn_model_free(late);
    tensor_free(xa);
    tensor_free(xb);
    nn_model_free(again);
    nn_model_free(m);
}

static void test_files(void **state)
{
    (void)state;
    nn_model *m = build_spec(SPEC, 7);
    tensor *xa, *xb;
    make_inputs(&xa, &xb);
    size_t n;
    float *ref = forward_copy(m, xa, xb, &n);
    const char *st = test_path("two.safetensors"), *ck = test_path("two.ckpt");
    assert_ok(nn_safetensors_save(m, st));
    assert_ok(nn_checkpoint_save(ck, m, NULL, NULL, 0));
    size_t len;
    uint8_t *bytes = test_read_bytes(ck, &len);
    assert_int_equal(bytes[8], NN_CHECKPOINT_VERSION_INPUTS);
    free(bytes);
    const char *paths[2] = {st, ck};
    for (int k = 0; k < 2; k++) {
        nn_model *back = NULL;
        assert_ok(nn_model_load(paths[k], &back));
        assert_int_equal(nn_model_input_count(back), 2);
        size_t n2;
        float *got = forward_copy(back, xa, xb, &n2);
        assert_int_equal(n, n2);
        assert_memory_equal(ref, got, n * sizeof(float));
        free(got);
        nn_model_free(back);
    }
    /* Into a model built by the caller: the same network, then one whose
     * input b has another shape. */
    nn_model *same = build_spec(SPEC, 99);
    assert_ok(nn_checkpoint_load(ck, same, NULL, NULL, 0, NULL));
    float *got = forward_copy(same, xa, xb, &n);
    assert_memory_equal(ref, got, n * sizeof(float));
    free(got);
    nn_model_free(same);
    nn_model *other = nn_model_create(1);
    assert_ok(nn_model_add_spec(other, "input name=b shape=6\ndense units=3 name=da\n"
                                       "dense units=3 inputs=b name=db\nadd inputs=da,db\n"
                                       "concatenate inputs=add_1,b\ndense units=2\n"));
    const int a5 = IN_A;
    assert_ok(nn_model_build(other, 1, &a5));
    assert_int_equal(nn_checkpoint_load(ck, other, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("input 1: checkpoint has 'b' of shape (4,), the model has 'b' of shape (6,)");
    nn_model_free(other);
    nn_model *one = test_make_model("dense units=2\n", 1, &a5, 1);
    assert_int_equal(nn_checkpoint_load(ck, one, NULL, NULL, 0, NULL), NN_ERR_SHAPE);
    assert_error_contains("checkpoint was made for a model with 2 inputs, the model has 1");
    /* A one-input model still writes version 1. */
    assert_ok(nn_checkpoint_save(ck, one, NULL, NULL, 0));
    bytes = test_read_bytes(ck, &len);
    assert_int_equal(bytes[8], NN_CHECKPOINT_VERSION);
    free(bytes);
    nn_model_free(one);
    free(ref);
    tensor_free(xa);
    tensor_free(xb);
    nn_model_free(m);
}

/* The spec text's errors: each message names the line and what is wrong. */
static void expect_spec_error(const char *spec, const char *want)
{
    nn_model *m = nn_model_create(1);
    assert_int_equal(nn_model_add_spec(m, spec), NN_ERR_CONFIG);
    assert_error_contains(want);
    assert_int_equal(m->n_layers, 0);
    nn_model_free(m);
}

static void test_spec_errors(void **state)
{
    (void)state;
    expect_spec_error("input name=b shape=4\ndense units=3 inputs=c\n",
                      "model spec line 2: dense_1: input 'c' is not defined (defined so far: "
                      "input, b)");
    expect_spec_error("dense units=3 inputs=b\ninput name=b shape=4\n",
                      "model spec line 1: dense_1: input 'b' is defined later, on line 2");
    expect_spec_error("input shape=4\n", "model spec line 1: input: a further input needs a "
                      "name= (the first input, 'input', is there without a line)");
    expect_spec_error("input name=input shape=4\n",
                      "input: name 'input' is the model's input; choose another name");
    expect_spec_error("input name=b\ninput name=b\n",
                      "model spec line 2: input: name 'b' is already used by a model input");
    expect_spec_error("input name=b\ndense units=2 name=b\n",
                      "model spec line 2: dense: name 'b' is already used by a model input");
    expect_spec_error("dense units=2\ninput name=dense_1\n",
                      "model spec line 2: input: name 'dense_1' is already used by layer 1 (dense)");
    char bad_shape[96];
    snprintf(bad_shape, sizeof bad_shape, "input: shape=4,0 is not 1 to %d positive integers "
             "separated by commas", TENSOR_MAX_RANK);
    expect_spec_error("input name=b shape=4,0\n", bad_shape);
    expect_spec_error("input name=b units=4\n",
                      "input: 'units=4' is not a key of an input line (name=, shape=, each once)");
    expect_spec_error("input name=b-1.x\n", "input: name 'b-1.x': only letters, digits");
    expect_spec_error("input name=\n", "input: name '' is empty or longer than 31 characters");
    expect_spec_error("input name=abcdefghijabcdefghijabcdefghijab\n",
                      "input: name 'abcdefghijabcdefghijabcdefghijab' is empty or longer than 31 "
                      "characters");
    char many[256] = "";
    for (int k = 0; k < NN_MODEL_MAX_INPUTS; k++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "input name=i%d\n", k);
    char want[96];
    snprintf(want, sizeof want, "line %d: input: at most %d model inputs, 'input' included",
             NN_MODEL_MAX_INPUTS, NN_MODEL_MAX_INPUTS);
    expect_spec_error(many, want);
    /* An input no layer reads. */
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "input name=b shape=3\ndense units=2\n"));
    const int a = 4;
    assert_int_equal(nn_model_build(m, 1, &a), NN_ERR_STATE);
    assert_error_contains("nn_model_build: the model input 'b' is never read: name it in some "
                          "layer's inputs=");
    nn_model_free(m);
    /* Shapes that do not merge: the message lists the inputs and shapes. */
    m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "input name=b shape=3\nadd inputs=input,b\n"));
    assert_int_equal(nn_model_build(m, 1, &a), NN_ERR_SHAPE);
    assert_error_contains("(inputs: input (4,), b (3,))");
    nn_model_free(m);
    /* Writing over input b in place while another layer reads it. */
    m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "input name=b shape=4,2\nadd inputs=input,b\n"
                                   "spatial_dropout1d rate=0.5 inputs=b inplace=true\n"
                                   "add inputs=add_1,spatial_dropout1d_1\n"));
    const int a2[2] = {4, 2};
    assert_int_equal(nn_model_build(m, 2, a2), NN_ERR_STATE);
    assert_error_contains("spatial_dropout1d_1 writes over its input in place, the output of the "
                          "model's input 'b', which add_1 reads too");
    nn_model_free(m);
}

static void test_call_errors(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, SPEC));
    const int ranks[2] = {1, 1}, sa[1] = {IN_A}, sb[1] = {IN_B}, sb6[1] = {6};
    const int *shapes[2] = {sa, sb}, *bad[2] = {sa, sb6}, *null_b[2] = {sa, NULL};
    assert_int_equal(nn_model_build_inputs(m, 1, ranks, shapes), NN_ERR_ARG);
    assert_error_contains("nn_model_build_inputs: n is 1, but the model has 2 inputs (input, b)");
    assert_int_equal(nn_model_build_inputs(m, 2, ranks, bad), NN_ERR_SHAPE);
    assert_error_contains("nn_model_build_inputs: shapes[1] (input 'b') is (6,), but its input line "
                          "declares shape (4,)");
    assert_int_equal(nn_model_build_inputs(m, 2, ranks, null_b), NN_ERR_ARG);
    assert_error_contains("nn_model_build_inputs: shapes[1] (input 'b') is NULL");
    assert_int_equal(nn_model_build_inputs(m, 2, NULL, shapes), NN_ERR_ARG);
    assert_error_contains("nn_model_build_inputs: NULL argument: ranks is NULL");
    tensor *xa, *xb, *y;
    make_inputs(&xa, &xb);
    tensor *xs[2] = {xa, xb};
    assert_int_equal(nn_model_forward_inputs(m, 2, xs, &y, NN_MODE_EVAL), NN_ERR_STATE);
    assert_error_contains("nn_model_forward_inputs: build the model first");
    assert_ok(nn_model_build_inputs(m, 2, ranks, shapes));
    assert_int_equal(nn_model_build_inputs(m, 2, ranks, shapes), NN_ERR_STATE);
    assert_error_contains("nn_model_build_inputs: the model is already built");
    assert_int_equal(nn_model_add(m, "input", "name=c shape=2"), NN_ERR_STATE);
    assert_error_contains("nn_model_add: the model is already built");

    assert_int_equal(nn_model_forward_inputs(m, 1, xs, &y, NN_MODE_EVAL), NN_ERR_ARG);
    assert_error_contains("nn_model_forward_inputs: n is 1, but the model has 2 inputs (input, b)");
    tensor *with_null[2] = {xa, NULL};
    assert_int_equal(nn_model_forward_inputs(m, 2, with_null, &y, NN_MODE_EVAL), NN_ERR_ARG);
    assert_error_contains("nn_model_forward_inputs: xs[1] (input 'b') is NULL");
    tensor *swapped[2] = {xb, xa};
    assert_int_equal(nn_model_forward_inputs(m, 2, swapped, &y, NN_MODE_EVAL), NN_ERR_SHAPE);
    assert_error_contains("nn_model_forward_inputs: xs[0] (input 'input') has shape (3, 4), but "
                          "the model takes (3, 5) for it (per sample (5,); the batch of xs[0])");
    const int s2[2] = {2, IN_B};
    tensor *short_b = tensor_create(2, s2);
    tensor *mixed[2] = {xa, short_b};
    assert_int_equal(nn_model_forward_inputs(m, 2, mixed, &y, NN_MODE_EVAL), NN_ERR_SHAPE);
    assert_error_contains("nn_model_forward_inputs: xs[1] (input 'b') has shape (2, 4), but the "
                          "model takes (3, 4) for it");
    assert_int_equal(nn_model_forward_inputs(m, 2, xs, &y, 3), NN_ERR_ARG);
    assert_error_contains("nn_model_forward_inputs: mode must be -1, 0 or 1, but got 3");
    assert_int_equal(nn_model_forward_inputs(m, 2, NULL, &y, NN_MODE_EVAL), NN_ERR_ARG);
    assert_error_contains("nn_model_forward_inputs: NULL argument: xs is NULL");

    /* The one-input calls point to nn_model_forward_inputs. */
    assert_int_equal(nn_model_forward(m, xa, &y, NN_MODE_EVAL), NN_ERR_STATE);
    assert_error_contains("nn_model_forward: the model has 2 inputs (input, b); pass them all "
                          "with nn_model_forward_inputs");
    int labels[BATCH] = {0, 1, 0};
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    assert_int_equal(nn_model_train_step(m, o, xa, labels, NULL, NULL), NN_ERR_STATE);
    assert_error_contains("nn_model_train_step: the model has 2 inputs (input, b); training and "
                          "evaluation take a model with one input; run this one with "
                          "nn_model_forward_inputs");
    assert_int_equal(nn_model_predict(m, xa, NULL, &y, NULL, NULL), NN_ERR_STATE);
    assert_error_contains("nn_model_predict: the model has 2 inputs");
    const nn_loss ce = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0};
    assert_int_equal(nn_model_train_step_loss(m, o, xa, &ce, labels, NULL, NULL, NULL),
                     NN_ERR_STATE);
    assert_error_contains("nn_model_train_step_loss: the model has 2 inputs");
    assert_int_equal(nn_model_evaluate_loss(m, xa, &ce, labels, NULL, &y, NULL, NULL),
                     NN_ERR_STATE);
    assert_error_contains("nn_model_evaluate_loss: the model has 2 inputs");
    nn_dataset d = {0};
    assert_int_equal(nn_model_evaluate(m, &d, 4, NULL, NULL, NULL), NN_ERR_STATE);
    assert_error_contains("nn_model_evaluate: the model has 2 inputs; a data set feeds one, so "
                          "training and evaluation take a model with one input");
    /* A loop of one's own trains it: a training forward records the tape,
     * backward reaches the layer that reads only b, and steps lower the loss. */
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 20; step++) {
        nn_graph_reset(nn_model_graph(m));
        nn_model_zero_grad(m);
        tensor *l;
        assert_ok(nn_model_forward_inputs(m, 2, xs, &y, NN_MODE_TRAIN));
        assert_ok(nn_op_softmax_cross_entropy(nn_model_graph(m), y, labels, &l, NULL));
        assert_ok(nn_graph_backward(nn_model_graph(m), l));
        if (step == 0) {
            const tensor *kb = m->layers[1]->params[0].t; /* db's kernel */
            float g = 0.0f;
            for (size_t i = 0; i < kb->size; i++) g += fabsf(kb->grad[i]);
            assert_true(g > 0.0f);
            first = l->data[0];
        }
        last = l->data[0];
        assert_ok(optim_step(o, m->params, m->grads, m->n_params));
    }
    assert_true(last < first);
    optim_free(o);
    tensor_free(short_b);
    tensor_free(xa);
    tensor_free(xb);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_by_hand),
        cmocka_unit_test(test_one_input_same),
        cmocka_unit_test(test_spec_and_summary),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_call_errors),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
