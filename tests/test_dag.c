/* Models that are graphs, not chains: the spec's name= and inputs= keys,
 * the merge layers add and concatenate, their errors, a layer output read
 * twice, in-place layers on a shared input, the summary's "Connected to"
 * column, checkpoints, .safetensors and resuming, and a two-branch network's
 * output and every gradient against PyTorch 1.13 (tests/fixtures/dag,
 * written by tests/gen_dag_fixtures.py). Thread-count invariance of a
 * residual network is in tests/test_determinism.c.
 *
 * Fixture tolerance, as in tests/test_conv.c (both must hold):
 *   elementwise  |got - ref| <= 1e-4 * |ref| + 1e-5 * max|ref|
 *   norm-wise    ||got - ref|| / ||ref|| < 1e-4 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

/* A residual block with a projection shortcut, then a head. */
static const char RES_SPEC[] =
    "conv2d filters=4 kernel_size=3 padding=same activation=relu\n"
    "conv2d filters=4 kernel_size=3 padding=same activation=relu\n"
    "conv2d filters=4 kernel_size=3 padding=same\n"
    "add inputs=conv2d_1,conv2d_3\n"
    "relu\n"
    "spatial_dropout2d rate=0.25 seed=5\n"
    "conv2d name=proj inputs=input filters=2 kernel_size=1\n"
    "concatenate inputs=spatial_dropout2d_1,proj\n"
    "global_avgpool2d\n"
    "dense units=3\n";
static const int RES_SHAPE[3] = {6, 6, 2};
#define BATCH 4

static nn_model *build(const char *spec, uint64_t seed)
{
    return test_make_model(spec, 3, RES_SHAPE, seed);
}

static tensor *make_batch(int *labels)
{
    int shape[4] = {BATCH, RES_SHAPE[0], RES_SHAPE[1], RES_SHAPE[2]};
    tensor *x = tensor_create(4, shape);
    tensor_rng rng;
    tensor_rng_seed(&rng, 77);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    for (int i = 0; i < BATCH; i++) labels[i] = i % 3;
    return x;
}

static void train(nn_model *m, optim *o, tensor *x, const int *labels, int steps)
{
    for (int s = 0; s < steps; s++) assert_ok(nn_model_train_step(m, o, x, labels, NULL, NULL));
}

/* The logits of an eval-mode prediction, copied out of the arena. */
static float *predict_copy(nn_model *m, tensor *x, size_t *n)
{
    tensor *y;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    float *out = malloc(y->size * sizeof(float));
    memcpy(out, y->data, y->size * sizeof(float));
    *n = y->size;
    return out;
}

/* ---- spec syntax ----------------------------------------------------------- */

static void test_spec_round_trip(void **state)
{
    (void)state;
    nn_model *m = build(RES_SPEC, 1);
    assert_false(nn_model_is_sequential(m));
    assert_int_equal(m->n_inputs[3], 2);
    assert_int_equal(m->inputs[3][0], 0);
    assert_int_equal(m->inputs[3][1], 2);
    assert_int_equal(m->inputs[6][0], -1);
    assert_string_equal(m->layers[6]->name, "proj");
    char spec[4096], again[4096];
    assert_ok(nn_model_spec_string(m, spec, sizeof spec));
    /* name= and inputs= appear only where the defaults differ. */
    const char *want =
        "conv2d filters=4 kernel_size=3,3 strides=1,1 padding=same dilation_rate=1,1 use_bias=true "
        "activation=relu data_format=channels_last\n"
        "conv2d filters=4 kernel_size=3,3 strides=1,1 padding=same dilation_rate=1,1 use_bias=true "
        "activation=relu data_format=channels_last\n"
        "conv2d filters=4 kernel_size=3,3 strides=1,1 padding=same dilation_rate=1,1 use_bias=true "
        "activation=linear data_format=channels_last\n"
        "add inputs=conv2d_1,conv2d_3 activation=linear\n"
        "relu\n"
        "spatial_dropout2d rate=0.25 data_format=channels_last inplace=false seed=5\n"
        "conv2d name=proj inputs=input filters=2 kernel_size=1,1 strides=1,1 padding=valid "
        "dilation_rate=1,1 use_bias=true activation=linear data_format=channels_last\n"
        "concatenate inputs=spatial_dropout2d_1,proj data_format=channels_last\n"
        "global_avgpool2d data_format=channels_last\n"
        "dense units=3 use_bias=true activation=linear\n";
    assert_string_equal(spec, want);
    nn_model *b = build(spec, 1);
    assert_ok(nn_model_spec_string(b, again, sizeof again));
    assert_string_equal(spec, again);
    assert_memory_equal(m->params, b->params, m->n_params * sizeof(float));

    /* A sequential spec, with inputs= naming the line before and a name
     * equal to the automatic one, is written without them, and builds the
     * same weights as the plain spec. */
    nn_model *s1 = test_make_model("dense units=4\nrelu\ndense units=2\n", 1, (int[]){3}, 5);
    nn_model *s2 = test_make_model("dense name=dense_1 units=4 inputs=input\nrelu inputs=dense_1\n"
                                   "dense inputs=relu_1 units=2\n", 1, (int[]){3}, 5);
    assert_true(nn_model_is_sequential(s2));
    char t1[512], t2[512];
    assert_ok(nn_model_spec_string(s1, t1, sizeof t1));
    assert_ok(nn_model_spec_string(s2, t2, sizeof t2));
    assert_string_equal(t1, t2);
    assert_null(strstr(t1, "inputs="));
    assert_null(strstr(t1, "name="));
    assert_memory_equal(s1->params, s2->params, s1->n_params * sizeof(float));

    /* Keys are model keys: a layer config never sees them (nn_model_add too). */
    nn_model *c = nn_model_create(1);
    assert_ok(nn_model_add(c, "dense", "units=2 name=head"));
    assert_ok(nn_model_add(c, "dense", "inputs=input units=2"));
    assert_ok(nn_model_add(c, "add", "inputs=head,dense_2 name=sum"));
    assert_string_equal(c->layers[2]->name, "sum");
    char k[128];
    assert_ok(nn_model_layer_keys(c, 1, k, sizeof k));
    assert_string_equal(k, "inputs=input");
    assert_ok(nn_model_layer_keys(c, 2, k, sizeof k));
    assert_string_equal(k, "name=sum inputs=head,dense_2");
    assert_ok(nn_model_layer_keys(c, 0, k, sizeof k));
    assert_string_equal(k, "name=head");
    nn_model_free(c);
    nn_model_free(m);
    nn_model_free(b);
    nn_model_free(s1);
    nn_model_free(s2);
}

/* nn_model_add_spec fails, adds nothing, and its message holds every needle. */
static void expect_spec_error(const char *spec, const char *const *needles)
{
    nn_model *m = nn_model_create(1);
    nn_clear_error();
    nn_status s = nn_model_add_spec(m, spec);
    if (s == NN_OK) fail_msg("spec was accepted:\n%s", spec);
    assert_int_equal(m->n_layers, 0);
    for (; *needles; needles++) assert_error_contains(*needles);
    nn_model_free(m);
}

/* The spec parses, and nn_model_build fails with every needle. */
static void expect_build_error(const char *spec, const char *const *needles)
{
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, spec));
    nn_clear_error();
    if (nn_model_build(m, 3, RES_SHAPE) == NN_OK) fail_msg("model was built:\n%s", spec);
    for (; *needles; needles++) assert_error_contains(*needles);
    nn_model_free(m);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_spec_errors(void **state)
{
    (void)state;
    /* An unknown input: the names defined so far are listed. */
    expect_spec_error("conv2d filters=2 kernel_size=1\nrelu name=r\nadd inputs=r,conv2d_7\n",
                      NEEDLES("model spec line 3: add_1: input 'conv2d_7' is not defined",
                              "(defined so far: input, conv2d_1, r)"));
    /* A forward reference, by explicit and by automatic name; a cycle. */
    expect_spec_error("conv2d filters=2 kernel_size=1\nadd inputs=conv2d_1,later\n"
                      "conv2d name=later filters=2 kernel_size=1\n",
                      NEEDLES("model spec line 2: add_1: input 'later' is defined later, on line 3",
                              "inputs must be defined on an earlier line",
                              "which also rules out cycles"));
    expect_spec_error("conv2d filters=2 kernel_size=1\nrelu name=r inputs=conv2d_2\n# c\n"
                      "conv2d filters=2 kernel_size=1\n",
                      NEEDLES("line 2: r: input 'conv2d_2' is defined later, on line 4"));
    expect_spec_error("dense units=2\nadd name=loop inputs=dense_1,loop\n",
                      NEEDLES("line 2: loop: a layer cannot read its own output (a cycle)",
                              "inputs must be defined on an earlier line, which rules out cycles"));
    /* Input counts. */
    expect_spec_error("dense units=2\nadd\n",
                      NEEDLES("line 2: add_1: add merges 2 to 4 inputs, got 1 (dense_1)"));
    expect_spec_error("dense units=2\nconcatenate inputs=dense_1\n",
                      NEEDLES("concatenate_1: concatenate merges 2 to 4 inputs, got 1 (dense_1)"));
    expect_spec_error("dense units=2\ndense units=2 inputs=input\ndense units=2 inputs=dense_1,dense_2\n",
                      NEEDLES("line 3: dense_3: dense takes 1 input, got 2 (inputs=dense_1,dense_2)"));
    expect_spec_error("dense units=2\nadd inputs=dense_1,dense_1,dense_1,dense_1,dense_1\n",
                      NEEDLES("add_1: inputs=dense_1,dense_1,dense_1,dense_1,dense_1 names more "
                              "than 4 inputs"));
    /* Names. */
    expect_spec_error("dense units=2 name=a\nrelu name=a\n",
                      NEEDLES("line 2: relu: name 'a' is already used by layer 1 (dense)"));
    expect_spec_error("dense units=2 name=dense_2\ndense units=2\n",
                      NEEDLES("line 2: dense: the automatic name 'dense_2' is already used by layer "
                              "1 (dense); give this layer a name= of its own"));
    expect_spec_error("dense units=2 name=input\n",
                      NEEDLES("line 1: dense: name 'input' is the model's input"));
    expect_spec_error("dense units=2 name=a.b\n",
                      NEEDLES("dense: name 'a.b': only letters, digits, '_' and '-' are allowed"));
    expect_spec_error("dense units=2 name=a name=b\n", NEEDLES("model key 'name' is given twice"));
    expect_spec_error("dense units=2\nadd inputs=dense_1,,dense_1\n",
                      NEEDLES("add_1: inputs=dense_1,,dense_1 has an empty name"));
    /* The layer's own config still reports its own keys. */
    expect_spec_error("dense units=2 inputs=input nme=x\n",
                      NEEDLES("line 1: dense: unknown config key 'nme'"));

    /* Build: an output nothing reads; merge shapes; every shape printed. */
    expect_build_error("conv2d filters=2 kernel_size=1\nconv2d name=lost filters=2 kernel_size=1\n"
                       "conv2d inputs=conv2d_1 filters=2 kernel_size=1\n",
                       NEEDLES("nn_model_build: the output of layer 2 (lost) is never used",
                               "every other layer must be an input of a later one"));
    expect_build_error("conv2d filters=2 kernel_size=1\nconv2d filters=3 kernel_size=1\n"
                       "add inputs=conv2d_1,conv2d_2\n",
                       NEEDLES("add_1: add needs inputs of one shape, got (6, 6, 2), (6, 6, 3)",
                               "(inputs: conv2d_1 (6, 6, 2), conv2d_2 (6, 6, 3))"));
    expect_build_error("conv2d filters=2 kernel_size=3\nconcatenate inputs=conv2d_1,input\n",
                       NEEDLES("concatenate_1: concatenate along the channel axis (channels_last, "
                               "axis 2 of the sample) needs inputs of one rank that agree on every "
                               "other axis, got (4, 4, 2), (6, 6, 2)",
                               "(inputs: conv2d_1 (4, 4, 2), input (6, 6, 2))"));
    expect_build_error("flatten\nconcatenate inputs=flatten_1,input\n",
                       NEEDLES("got (72,), (6, 6, 2)", "(inputs: flatten_1 (72,), input (6, 6, 2))"));
    /* A single-input layer on a non-default input: its own message, then the
     * input and its shape. */
    expect_build_error("flatten\ndense units=2 inputs=input\nadd inputs=flatten_1,dense_1\n",
                       NEEDLES("dense_1: expected a per-sample input of rank 1",
                               "(inputs: input (6, 6, 2))"));
}

/* ---- the merge layers on their own ----------------------------------------- */

static tensor *filled(int rank, const int *shape, float start)
{
    tensor *t = tensor_create(rank, shape);
    for (size_t i = 0; i < t->size; i++) t->data[i] = start + (float)i;
    return t;
}

static void test_merge_layers(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    /* add: three inputs, summed. */
    nn_layer *a = nn_layer_create("add", "");
    const int r3[3] = {2, 2, 2}, s3[3][TENSOR_MAX_RANK] = {{2, 3}, {2, 3}, {2, 3}};
    assert_ok(nn_layer_build_multi(a, 3, r3, s3));
    tensor *x[3] = {filled(2, (int[]){2, 6}, 0), filled(2, (int[]){2, 6}, 100),
                    filled(2, (int[]){2, 6}, 1000)};
    /* built for (2, 3) per sample: a (2, 6) batch is refused by shape. */
    tensor *y;
    assert_int_equal(nn_layer_forward_multi(a, g, 3, x, &y, 0), NN_ERR_SHAPE);
    assert_error_contains("add: expected input 0 of shape (batch, 2, 3), got (2, 6)");
    nn_layer_free(a);
    a = nn_layer_create("add", "");
    const int r1[3] = {1, 1, 1}, s1[3][TENSOR_MAX_RANK] = {{6}, {6}, {6}};
    assert_ok(nn_layer_build_multi(a, 3, r1, s1));
    assert_ok(nn_layer_forward_multi(a, g, 3, x, &y, 0));
    for (size_t i = 0; i < y->size; i++) assert_true(y->data[i] == 1100.0f + 3.0f * (float)i);
    assert_int_equal(nn_layer_forward(a, g, x[0], &y, 0), NN_ERR_ARG);
    assert_error_contains("add: built for 3 inputs, got 1");
    nn_layer_free(a);
    for (int k = 0; k < 3; k++) tensor_free(x[k]);

    /* concatenate, channels_last: (N, H, W, C1) + (N, H, W, C2). */
    nn_layer *c = nn_layer_create("concatenate", "data_format=channels_last");
    const int rr[2] = {3, 3}, ss[2][TENSOR_MAX_RANK] = {{2, 1, 2}, {2, 1, 1}};
    assert_ok(nn_layer_build_multi(c, 2, rr, ss));
    assert_int_equal(c->out_rank, 3);
    assert_int_equal(c->out_shape[2], 3);
    tensor *u[2] = {filled(4, (int[]){2, 2, 1, 2}, 0), filled(4, (int[]){2, 2, 1, 1}, 100)};
    assert_ok(nn_layer_forward_multi(c, g, 2, u, &y, 0));
    const float want_last[12] = {0, 1, 100, 2, 3, 101, 4, 5, 102, 6, 7, 103};
    assert_memory_equal(y->data, want_last, sizeof want_last);
    nn_layer_free(c);
    /* channels_first: (N, C1, H, W) + (N, C2, H, W). */
    c = nn_layer_create("concatenate", "data_format=channels_first");
    const int sf[2][TENSOR_MAX_RANK] = {{2, 2, 1}, {1, 2, 1}};
    assert_ok(nn_layer_build_multi(c, 2, rr, sf));
    assert_int_equal(c->out_shape[0], 3);
    tensor_free(u[0]);
    tensor_free(u[1]);
    u[0] = filled(4, (int[]){2, 2, 2, 1}, 0);
    u[1] = filled(4, (int[]){2, 1, 2, 1}, 100);
    assert_ok(nn_layer_forward_multi(c, g, 2, u, &y, 0));
    const float want_first[12] = {0, 1, 2, 3, 100, 101, 4, 5, 6, 7, 102, 103};
    assert_memory_equal(y->data, want_first, sizeof want_first);
    nn_layer_free(c);
    tensor_free(u[0]);
    tensor_free(u[1]);

    /* The build calls refuse a wrong number of inputs. */
    nn_layer *d = nn_layer_create("dense", "units=2");
    assert_int_equal(nn_layer_build_multi(d, 2, rr, sf), NN_ERR_ARG);
    assert_error_contains("dense: dense takes 1 input, got 2");
    nn_layer_free(d);
    a = nn_layer_create("add", "");
    assert_int_equal(nn_layer_build(a, 1, (int[]){3}), NN_ERR_ARG);
    assert_error_contains("add: add merges 2 to 4 inputs, got one, of shape (3,)");
    assert_int_equal(nn_layer_build_multi(a, 5, r3, s3), NN_ERR_ARG);
    assert_error_contains("add: add merges 2 to 4 inputs, got 5");
    nn_layer_free(a);
    nn_graph_free(g);
}

/* ---- a layer output read twice ---------------------------------------------- */

/* Parameter gradients after one backward of sum(w * model(x)). */
static float *grads_of(nn_model *m, tensor *x, tensor *w)
{
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    nn_model_zero_grad(m);
    tensor *y, *l;
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    assert_ok(nn_op_weighted_sum(g, y, w, &l));
    assert_ok(nn_graph_backward(g, l));
    float *out = malloc(m->n_params * sizeof(float));
    memcpy(out, m->grads, m->n_params * sizeof(float));
    return out;
}

/* dense_1's output feeds two dense layers, whose outputs are added. The same
 * network written with dense_1 twice (two copies of its weights, one per
 * reader) must give gradients whose sum over the copies is dense_1's: the
 * graph adds the gradients of the two readers. */
static void test_output_read_twice(void **state)
{
    (void)state;
    nn_model *shared = test_make_model("dense units=5 activation=relu\n"
                                       "dense name=p units=3\n"
                                       "dense name=q inputs=dense_1 units=3\n"
                                       "add inputs=p,q\n", 1, (int[]){4}, 3);
    nn_model *twice = test_make_model("dense name=d1 units=5 activation=relu\n"
                                      "dense name=p units=3\n"
                                      "dense name=d2 inputs=input units=5 activation=relu\n"
                                      "dense name=q units=3\n"
                                      "add inputs=p,q\n", 1, (int[]){4}, 3);
    /* Copy the weights: twice = [d1, p, d2, q] in block order, d1 = d2. */
    const size_t nd = 4 * 5 + 5, np = 5 * 3 + 3;
    memcpy(twice->params, shared->params, (nd + np) * sizeof(float));
    memcpy(twice->params + nd + np, shared->params, nd * sizeof(float));
    memcpy(twice->params + 2 * nd + np, shared->params + nd + np, np * sizeof(float));
    assert_int_equal(shared->n_params, nd + 2 * np);
    assert_int_equal(twice->n_params, 2 * nd + 2 * np);
    tensor_rng rng;
    tensor_rng_seed(&rng, 8);
    tensor *x = tensor_create(2, (int[]){6, 4}), *w = tensor_create(2, (int[]){6, 3});
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    tensor_init_normal(w, &rng, 0.0f, 1.0f);
    float *gs = grads_of(shared, x, w), *gt = grads_of(twice, x, w);
    double dd = 0, rr = 0, one = 0;
    for (size_t i = 0; i < nd; i++) {
        const double sum = (double)gt[i] + gt[nd + np + i];
        dd += (gs[i] - sum) * (gs[i] - sum);
        rr += sum * sum;
        one += (gs[i] - gt[i]) * (gs[i] - gt[i]);
    }
    assert_true(rr > 1e-3);
    if (!(sqrt(dd / rr) < 1e-6)) fail_msg("dense_1's gradient is off by %.3g", sqrt(dd / rr));
    /* Not only one reader's share. */
    assert_true(sqrt(one / rr) > 1e-2);
    /* The readers' own gradients are the same as in the copy. */
    assert_memory_equal(gs + nd, gt + nd, np * sizeof(float));
    assert_memory_equal(gs + nd + np, gt + 2 * nd + np, np * sizeof(float));
    free(gs);
    free(gt);
    tensor_free(x);
    tensor_free(w);
    nn_model_free(shared);
    nn_model_free(twice);
}

/* ---- in-place layers -------------------------------------------------------- */

static void test_inplace_shared_input(void **state)
{
    (void)state;
    /* conv2d_1 is read by the dropout and by the add: refused at build. */
    expect_build_error("conv2d filters=2 kernel_size=1\n"
                       "spatial_dropout2d rate=0.5 inplace=true\n"
                       "add inputs=conv2d_1,spatial_dropout2d_1\n",
                       NEEDLES("nn_model_build: spatial_dropout2d_1 writes over its input in place, "
                               "the output of conv2d_1, which add_1 reads too; use inplace=false"));
    expect_build_error("spatial_dropout2d rate=0.5 inplace=true\n"
                       "conv2d inputs=input filters=2 kernel_size=1\n"
                       "add inputs=spatial_dropout2d_1,conv2d_1\n",
                       NEEDLES("spatial_dropout2d_1 writes over its input in place, the output of "
                               "the model's input 'input', which conv2d_1 reads too"));
    /* Through a layer that returns its input's storage (dropout at rate 0):
     * the build sees one reader, the forward sees the shared storage. */
    nn_model *m = build("conv2d filters=2 kernel_size=1\n"
                        "spatial_dropout2d name=same rate=0\n"
                        "spatial_dropout2d rate=0.5 inplace=true\n"
                        "add inputs=conv2d_1,spatial_dropout2d_2\n", 1);
    int labels[BATCH];
    tensor *x = make_batch(labels), *y;
    nn_graph_reset(nn_model_graph(m));
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_TRAIN), NN_ERR_STATE);
    assert_error_contains("nn_model_forward: spatial_dropout2d_2 writes over its input in place, "
                          "whose storage conv2d_1 shares, which add_1 reads; use inplace=false");
    nn_model_free(m);
    /* A sole reader may write in place, in a graph as in a chain. */
    m = build("conv2d filters=2 kernel_size=1\n"
              "conv2d filters=2 kernel_size=1\n"
              "spatial_dropout2d rate=0.5 inplace=true\n"
              "add inputs=conv2d_1,spatial_dropout2d_1\n"
              "flatten\ndense units=3\n", 1);
    optim *o = optim_sgd_create(0.01f, 0.0f, 0, 0.0f);
    assert_non_null(o);
    train(m, o, x, labels, 2);
    optim_free(o);
    nn_model_free(m);
    tensor_free(x);
}

/* add inplace=true writes the sum over its first input, a batchnorm's
 * output that nothing else reads, and spatial dropout inplace=true over a
 * batchnorm's fused relu output (read backward only as relu's mask): the
 * same training as without, bit for bit. add is refused when the first input is read by another layer (at build) or
 * is an output its producer's backward reads (at the forward). */
static void test_add_inplace(void **state)
{
    (void)state;
    static const char *const spec[2] = {
        "conv2d filters=2 kernel_size=3 padding=same name=c1\nbatchnorm activation=relu\n"
        "spatial_dropout2d rate=0.5 name=sd\n"
        "conv2d filters=2 kernel_size=3 padding=same\nbatchnorm name=b\n"
        "conv2d inputs=sd filters=2 kernel_size=1\nbatchnorm name=p\n"
        "add inputs=p,b activation=relu\nflatten\ndense units=3\n",
        "conv2d filters=2 kernel_size=3 padding=same name=c1\nbatchnorm activation=relu\n"
        "spatial_dropout2d rate=0.5 name=sd inplace=true\n"
        "conv2d filters=2 kernel_size=3 padding=same\nbatchnorm name=b\n"
        "conv2d inputs=sd filters=2 kernel_size=1\nbatchnorm name=p\n"
        "add inputs=p,b activation=relu inplace=true\nflatten\ndense units=3\n"};
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *m[2];
    for (int k = 0; k < 2; k++) {
        m[k] = build(spec[k], 7);
        optim *o = optim_sgd_create(0.05f, 0.0f, 0, 0.0f);
        assert_non_null(o);
        train(m[k], o, x, labels, 3);
        optim_free(o);
    }
    assert_int_equal(m[0]->n_params, m[1]->n_params);
    assert_memory_equal(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float));
    assert_memory_equal(m[0]->buffers, m[1]->buffers, m[0]->n_buffers * sizeof(float));
    char buf[1024];
    assert_ok(nn_model_spec_string(m[1], buf, sizeof buf));
    assert_non_null(strstr(buf, "inplace=true"));
    nn_model_free(m[0]);
    nn_model_free(m[1]);
    expect_build_error("conv2d filters=2 kernel_size=1 name=c\n"
                       "conv2d filters=2 kernel_size=1 name=d\n"
                       "add inputs=c,d inplace=true\n",
                       NEEDLES("nn_model_build: add_1 writes over its input in place, the output "
                               "of c, which d reads too; use inplace=false"));
    nn_model *r = build("conv2d filters=2 kernel_size=1 activation=relu name=c\n"
                        "conv2d inputs=input filters=2 kernel_size=1 name=d\n"
                        "add inputs=c,d inplace=true\n", 1);
    tensor *y;
    nn_graph_reset(nn_model_graph(r));
    assert_int_equal(nn_model_forward(r, x, &y, NN_MODE_TRAIN), NN_ERR_STATE);
    assert_error_contains("add_1: inplace=true cannot overwrite the output of 'conv2d', whose "
                          "backward reads it; use inplace=false");
    nn_model_free(r);
    tensor_free(x);
}

/* ---- summary ------------------------------------------------------------------ */

static void test_summary(void **state)
{
    (void)state;
    nn_model *m = test_make_model("conv2d filters=2 kernel_size=1\n"
                                  "conv2d name=shortcut inputs=input filters=2 kernel_size=1\n"
                                  "add inputs=conv2d_1,shortcut\n"
                                  "flatten\n", 3, (int[]){2, 2, 3}, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_ok(nn_model_summary(m, f));
    fclose(f);
    const char *want =
        "Model: \"functional\"\n"
        "_____________________________________________________________________________\n"
        " Layer (type)                 Output Shape              Param #  Connected to\n"
        "=============================================================================\n"
        " input (InputLayer)           (None, 2, 2, 3)                 0  -\n"
        "\n"
        " conv2d_1 (conv2d)            (None, 2, 2, 2)                 8  input\n"
        "\n"
        " shortcut (conv2d)            (None, 2, 2, 2)                 8  input\n"
        "\n"
        " add_1 (add)                  (None, 2, 2, 2)                 0  conv2d_1\n"
        "                                                                 shortcut\n"
        "\n"
        " flatten_1 (flatten)          (None, 8)                       0  add_1\n"
        "=============================================================================\n"
        "Total params: 16 (0.06 KB)\n"
        "Trainable params: 16\n"
        "Non-trainable params: 0\n"
        "_____________________________________________________________________________\n";
    assert_string_equal(buf, want);
    free(buf);
    nn_model_free(m);
}

/* ---- checkpoints, safetensors, resume ------------------------------------------ */

static void test_save_and_reload(void **state)
{
    (void)state;
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = build(RES_SPEC, 1);
    optim *oa = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    train(a, oa, x, labels, 3);
    assert_ok(nn_checkpoint_save(test_path("res.ckpt"), a, oa, NULL, 0));
    assert_ok(nn_safetensors_save(a, test_path("res.safetensors")));
    size_t n, nb;
    float *pa = predict_copy(a, x, &n);

    /* Rebuilt from the written spec, as a program would from the file. */
    char spec[4096];
    assert_ok(nn_model_spec_string(a, spec, sizeof spec));
    nn_model *b = build(spec, 99);
    assert_memory_not_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_ok(nn_checkpoint_load(test_path("res.ckpt"), b, NULL, NULL, 0, NULL));
    float *pb = predict_copy(b, x, &nb);
    assert_int_equal(nb, n);
    assert_memory_equal(pa, pb, n * sizeof(float));
    free(pb);
    nn_model *c = build(spec, 98);
    assert_ok(nn_safetensors_load(c, test_path("res.safetensors")));
    pb = predict_copy(c, x, &nb);
    assert_memory_equal(pa, pb, n * sizeof(float));
    free(pb);

    /* The same layers wired otherwise (the add's inputs swapped) do not take
     * the checkpoint. */
    nn_model *d = build("conv2d filters=4 kernel_size=3 padding=same activation=relu\n"
                        "conv2d filters=4 kernel_size=3 padding=same activation=relu\n"
                        "conv2d filters=4 kernel_size=3 padding=same\n"
                        "add inputs=conv2d_3,conv2d_1\n"
                        "relu\n"
                        "spatial_dropout2d rate=0.25 seed=5\n"
                        "conv2d name=proj inputs=input filters=2 kernel_size=1\n"
                        "concatenate inputs=spatial_dropout2d_1,proj\n"
                        "global_avgpool2d\n"
                        "dense units=3\n", 2);
    nn_clear_error();
    assert_int_not_equal(nn_checkpoint_load(test_path("res.ckpt"), d, NULL, NULL, 0, NULL), NN_OK);
    assert_error_contains("layer 3 (add_1): checkpoint has add inputs=conv2d_1,conv2d_3");
    assert_error_contains("model has add inputs=conv2d_3,conv2d_1");
    free(pa);
    nn_model_free(a);
    nn_model_free(b);
    nn_model_free(c);
    nn_model_free(d);
    optim_free(oa);
    tensor_free(x);
}

/* 2 + 2 steps through a checkpoint give the weights, optimizer state and
 * dropout counters of 4 steps in one go, bit for bit. */
static void test_resume(void **state)
{
    (void)state;
    int labels[BATCH];
    tensor *x = make_batch(labels);
    nn_model *a = build(RES_SPEC, 1);
    optim *oa = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    train(a, oa, x, labels, 4);

    nn_model *b = build(RES_SPEC, 1);
    optim *ob = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    train(b, ob, x, labels, 2);
    assert_ok(nn_checkpoint_save(test_path("half.ckpt"), b, ob, NULL, 0));
    nn_model_free(b);
    optim_free(ob);
    b = build(RES_SPEC, 1);
    ob = optim_adam_create(1e-2f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_ok(nn_checkpoint_load(test_path("half.ckpt"), b, ob, NULL, 0, NULL));
    train(b, ob, x, labels, 2);

    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_int_equal(ob->t, oa->t);
    assert_memory_equal(ob->state, oa->state, 2 * oa->n * sizeof(float));
    for (int i = 0; i < a->n_layers; i++) assert_int_equal(b->layers[i]->calls, a->layers[i]->calls);
    assert_int_equal(a->layers[5]->calls, 4); /* the dropout drew 4 masks */
    nn_model_free(a);
    nn_model_free(b);
    optim_free(oa);
    optim_free(ob);
    tensor_free(x);
}

/* ---- PyTorch fixtures ---------------------------------------------------------- */

#define FX_DIR "tests/fixtures/dag/"
#define FX_MAX_ARRAYS 32

typedef struct {
    char name[48];
    int rank, shape[TENSOR_MAX_RANK];
    size_t size;
    float *data;
} fx_array;

typedef struct {
    char spec[2048];
    int in_rank, in_shape[TENSOR_MAX_RANK];
    fx_array arr[FX_MAX_ARRAYS];
    int n;
} fx_case;

static void fx_load(fx_case *c, const char *path)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot read fixture (run tests from the repository root)", path);
    char word[64];
    while (fscanf(f, " %63s", word) == 1) {
        if (word[0] == '#') {
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {}
        } else if (!strcmp(word, "format")) {
            if (fscanf(f, " %63s", word) != 1) fail_msg("%s: bad format line", path);
        } else if (!strcmp(word, "input")) {
            if (fscanf(f, " %d", &c->in_rank) != 1 || c->in_rank < 1 || c->in_rank > 5)
                fail_msg("%s: bad input line", path);
            for (int i = 0; i < c->in_rank; i++)
                if (fscanf(f, " %d", &c->in_shape[i]) != 1) fail_msg("%s: bad input line", path);
        } else if (!strcmp(word, "spec")) {
            char line[512];
            if (!fgets(line, sizeof line, f)) fail_msg("%s: bad spec line", path);
            strncat(c->spec, line, sizeof c->spec - strlen(c->spec) - 1);
        } else if (!strcmp(word, "array")) {
            if (c->n == FX_MAX_ARRAYS) fail_msg("%s: more than %d arrays", path, FX_MAX_ARRAYS);
            fx_array *a = &c->arr[c->n++];
            if (fscanf(f, " %47s %d", a->name, &a->rank) != 2 || a->rank < 1 ||
                a->rank > TENSOR_MAX_RANK)
                fail_msg("%s: bad array header", path);
            a->size = 1;
            for (int i = 0; i < a->rank; i++) {
                if (fscanf(f, " %d", &a->shape[i]) != 1) fail_msg("%s: bad array header", path);
                a->size *= (size_t)a->shape[i];
            }
            a->data = malloc(a->size * sizeof(float));
            for (size_t i = 0; i < a->size; i++)
                if (fscanf(f, " %f", &a->data[i]) != 1)
                    fail_msg("%s: array %s: value %zu missing", path, a->name, i);
        } else {
            fail_msg("%s: unknown keyword '%s'", path, word);
        }
    }
    fclose(f);
}

static fx_array *fx_get(fx_case *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->arr[i].name, name)) return &c->arr[i];
    fail_msg("fixture has no array '%s'", name);
    return NULL;
}

/* The comparison described at the top of the file. */
static void check_close(const char *what, const float *got, const float *ref, size_t n)
{
    double maxref = 0.0, dd = 0.0, rr = 0.0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - ref[i]);
        if (!(diff <= 1e-4 * fabs(ref[i]) + 1e-5 * maxref)) bad++;
        dd += diff * diff;
        rr += (double)ref[i] * ref[i];
    }
    const double rel = rr > 0 ? sqrt(dd / rr) : sqrt(dd);
    if (bad || !(rel < 1e-4))
        fail_msg("%s: %zu of %zu elements out of tolerance, norm-wise relative error %.3g", what,
                 bad, n, rel);
}

static void run_fixture(const char *file)
{
    char path[256];
    snprintf(path, sizeof path, FX_DIR "%s", file);
    fx_case c;
    fx_load(&c, path);
    nn_model *m = test_make_model(c.spec, c.in_rank, c.in_shape, 1);
    int checked = 0;
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++) {
            nn_param *p = &m->layers[i]->params[k];
            char name[96];
            snprintf(name, sizeof name, "param:%s.%s", m->layers[i]->name, p->name);
            fx_array *a = fx_get(&c, name);
            assert_int_equal(a->size, p->t->size);
            memcpy(p->t->data, a->data, a->size * sizeof(float));
        }
    fx_array *ax = fx_get(&c, "x");
    tensor *x = tensor_create(ax->rank, ax->shape);
    memcpy(x->data, ax->data, ax->size * sizeof(float));
    test_require_grad(x);
    fx_array *ady = fx_get(&c, "dy");
    tensor *dy = tensor_create(ady->rank, ady->shape);
    memcpy(dy->data, ady->data, ady->size * sizeof(float));
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    nn_model_zero_grad(m);
    tensor *y, *l;
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    char what[128];
    snprintf(what, sizeof what, "%s: y", file);
    assert_int_equal(y->size, fx_get(&c, "y")->size);
    check_close(what, y->data, fx_get(&c, "y")->data, y->size);
    assert_ok(nn_op_weighted_sum(g, y, dy, &l));
    assert_ok(nn_graph_backward(g, l));
    snprintf(what, sizeof what, "%s: dx", file);
    check_close(what, x->grad, fx_get(&c, "dx")->data, x->size);
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++) {
            nn_param *p = &m->layers[i]->params[k];
            snprintf(what, sizeof what, "grad:%s.%s", m->layers[i]->name, p->name);
            check_close(what, p->t->grad, fx_get(&c, what)->data, p->t->size);
            checked++;
        }
    assert_int_equal(checked, 10); /* stem, a, b, side, out: kernel and bias */
    for (int i = 0; i < c.n; i++) free(c.arr[i].data);
    tensor_free(x);
    tensor_free(dy);
    nn_model_free(m);
}

static void test_pytorch_fixtures(void **state)
{
    (void)state;
    run_fixture("two_branch_nhwc.txt");
    run_fixture("two_branch_nchw.txt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_round_trip),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_merge_layers),
        cmocka_unit_test(test_output_read_twice),
        cmocka_unit_test(test_inplace_shared_input),
        cmocka_unit_test(test_add_inplace),
        cmocka_unit_test(test_summary),
        cmocka_unit_test_setup_teardown(test_save_and_reload, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_resume, test_dir_setup, test_dir_teardown),
        cmocka_unit_test(test_pytorch_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
