/* The layer registry, layer configs, model specs, summaries, shape errors and
 * model modes.
 *
 * The generic tests loop over the registry table, so every layer type added
 * to nn/registry.c (or with nn_registry_add) is covered without editing this
 * file: unique names, mandatory hooks, config round trips, the generic config
 * errors, and build/forward agreeing on the output shape.
 * Not covered here: gradients (test_gradcheck.c) and the layer-specific
 * behaviour of each type (its own suite). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

#define CFG_LEN 512

/* --- a user-defined layer type: y = 2x ----------------------------------- */

static nn_status twice_parse(nn_layer *l, nn_config *c)
{
    (void)l;
    (void)c;
    return NN_OK;
}

static void twice_write(const nn_layer *l, nn_config_writer *w)
{
    (void)l;
    (void)w;
}

static nn_status twice_build(nn_layer *l, int in_rank, const int *in_shape)
{
    l->out_rank = in_rank;
    memcpy(l->out_shape, in_shape, (size_t)in_rank * sizeof *in_shape);
    return NN_OK;
}

static void twice_backward(nn_node *n)
{
    tensor *x = n->in[0];
    if (!x->grad) return;
    for (size_t i = 0; i < x->size; i++) x->grad[i] += 2.0f * n->out->grad[i];
}

static nn_status twice_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **y, int training)
{
    (void)l;
    (void)training;
    tensor *t = nn_graph_tensor(g, x->rank, x->shape);
    if (!t) return NN_ERR_MEMORY;
    for (size_t i = 0; i < x->size; i++) t->data[i] = 2.0f * x->data[i];
    nn_graph_record(g, "test_twice", t, &x, 1, twice_backward, NULL);
    *y = t;
    return NN_OK;
}

static const nn_layer_type twice_type = {
    .name = "test_twice",
    .summary = "y = 2x (a user type registered by the test)",
    .parse = twice_parse,
    .write = twice_write,
    .build = twice_build,
    .forward = twice_forward,
    .test_config = "",
    .test_rank = 2,
    .test_shape = {2, 3},
};

static void test_registry_add(void **state)
{
    (void)state;
    const int before = nn_registry_count();
    assert_null(nn_registry_find("test_twice"));
    assert_ok(nn_registry_add(&twice_type));
    assert_int_equal(nn_registry_count(), before + 1);
    assert_ptr_equal(nn_registry_find("test_twice"), &twice_type);
    assert_ptr_equal(nn_registry_get(before), &twice_type);

    assert_int_equal(nn_registry_add(&twice_type), NN_ERR_ARG);
    assert_error_contains("a layer type named 'test_twice' already exists");
    nn_layer_type clash = twice_type;
    clash.name = "dense";
    assert_int_equal(nn_registry_add(&clash), NN_ERR_ARG);
    assert_error_contains("'dense' already exists");
    nn_layer_type partial = twice_type;
    partial.name = "test_partial";
    partial.forward = NULL;
    assert_int_equal(nn_registry_add(&partial), NN_ERR_ARG);
    assert_error_contains("parse, write, build and forward hooks");
    assert_int_equal(nn_registry_add(NULL), NN_ERR_ARG);
    assert_int_equal(nn_registry_count(), before + 1);

    /* The new type works in a model like a built-in one. */
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "test_twice\ndense units=2\n"));
    assert_string_equal(m->layers[0]->name, "test_twice_1");
    int in[1] = {3};
    assert_ok(nn_model_build(m, 1, in));
    float xv[3] = {1, -2, 0.5f};
    int xs[2] = {1, 3};
    tensor *x = tensor_wrap(xv, 2, xs), *y;
    nn_graph_reset(nn_model_graph(m));
    assert_ok(nn_layer_forward(m->layers[0], nn_model_graph(m), x, &y, 0));
    assert_true(y->data[0] == 2.0f && y->data[1] == -4.0f && y->data[2] == 1.0f);
    tensor_free(x);
    nn_model_free(m);
}

/* --- generic checks over the whole table ---------------------------------- */

static void test_entries_complete(void **state)
{
    (void)state;
    const int n = nn_registry_count();
    assert_true(n >= 4);
    printf("    %d layer types:", n);
    for (int i = 0; i < n; i++) {
        const nn_layer_type *t = nn_registry_get(i);
        assert_non_null(t);
        printf(" %s", t->name ? t->name : "(null)");
        if (!t->name || !t->name[0]) fail_msg("entry %d has no name", i);
        if (strlen(t->name) >= NN_CONFIG_KEY_LEN) fail_msg("%s: name too long", t->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(nn_registry_get(j)->name, t->name))
                fail_msg("entries %d and %d are both named '%s'", j, i, t->name);
        const int merge = nn_layer_type_is_merge(t);
        if (!t->parse || !t->write || !(merge ? t->build_multi != NULL : t->build && t->forward))
            fail_msg("%s: a mandatory hook (parse, write, build, forward) is missing", t->name);
        if (merge && (t->test_inputs < 2 || t->test_inputs > NN_LAYER_MAX_INPUTS))
            fail_msg("%s: a merge layer's test_inputs %d is outside 2..%d", t->name,
                     t->test_inputs, NN_LAYER_MAX_INPUTS);
        if (!t->test_config) fail_msg("%s: no test_config", t->name);
        if (t->test_rank < 1 || t->test_rank >= TENSOR_MAX_RANK)
            fail_msg("%s: test_rank %d is outside 1..%d", t->name, t->test_rank, TENSOR_MAX_RANK - 1);
        for (int k = 0; k < t->test_rank; k++)
            if (t->test_shape[k] < 1) fail_msg("%s: test_shape[%d] = %d", t->name, k, t->test_shape[k]);
        assert_ptr_equal(nn_registry_find(t->name), t);
    }
    printf("\n");
    assert_null(nn_registry_get(-1));
    assert_null(nn_registry_get(n));
    assert_null(nn_registry_find(NULL));
    assert_null(nn_registry_find("no_such_layer"));
}

static nn_layer *create_or_fail(const char *type, const char *config)
{
    nn_layer *l = nn_layer_create(type, config);
    if (!l) fail_msg("%s '%s': %s", type, config, nn_last_error());
    return l;
}

static void build_or_fail(nn_layer *l, int rank, const int *shape)
{
    if (nn_layer_build(l, rank, shape) != NN_OK)
        fail_msg("%s: build failed: %s", l->name, nn_last_error());
}

/* Builds a layer of type t on its test input(s): a merge layer on its
 * test_inputs shapes, any other on test_shape. */
static void build_test_or_fail(nn_layer *l, const nn_layer_type *t)
{
    if (!nn_layer_type_is_merge(t)) {
        build_or_fail(l, t->test_rank, t->test_shape);
        return;
    }
    int ranks[NN_LAYER_MAX_INPUTS];
    for (int k = 0; k < t->test_inputs; k++) ranks[k] = t->test_rank;
    if (nn_layer_build_multi(l, t->test_inputs, ranks, t->test_shapes) != NN_OK)
        fail_msg("%s: build failed: %s", l->name, nn_last_error());
}

static void test_config_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < nn_registry_count(); i++) {
        const nn_layer_type *t = nn_registry_get(i);
        char c1[CFG_LEN], c2[CFG_LEN];
        nn_layer *a = create_or_fail(t->name, t->test_config);
        assert_ok(nn_layer_config_string(a, c1, sizeof c1));
        nn_layer *b = create_or_fail(t->name, c1);
        assert_ok(nn_layer_config_string(b, c2, sizeof c2));
        if (strcmp(c1, c2)) fail_msg("%s: config '%s' reads back as '%s'", t->name, c1, c2);
        /* Every key of the test config survives (values may be normalised). */
        char keys[CFG_LEN];
        snprintf(keys, sizeof keys, "%s", t->test_config);
        for (char *save = NULL, *tok = strtok_r(keys, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
            char *eq = strchr(tok, '=');
            assert_non_null(eq);
            eq[1] = '\0';
            if (strncmp(c1, tok, strlen(tok)) && !strstr(c1, tok))
                fail_msg("%s: key '%s' of the test config is missing from '%s'", t->name, tok, c1);
        }
        build_test_or_fail(a, t);
        build_test_or_fail(b, t);
        assert_int_equal(a->out_rank, b->out_rank);
        assert_memory_equal(a->out_shape, b->out_shape, sizeof a->out_shape);
        assert_int_equal(a->n_params, b->n_params);
        for (int k = 0; k < a->n_params; k++) {
            assert_string_equal(a->params[k].name, b->params[k].name);
            assert_memory_equal(a->params[k].shape, b->params[k].shape, sizeof a->params[k].shape);
        }
        /* The output shape build declares is the one forward produces, in
         * both modes, for a batch of 3. */
        assert_ok(nn_layer_alloc_params(a, 5));
        nn_graph *g = nn_graph_create(0);
        const int n_in = nn_layer_type_is_merge(t) ? t->test_inputs : 1;
        tensor *x[NN_LAYER_MAX_INPUTS];
        tensor_rng rng;
        tensor_rng_seed(&rng, 9);
        for (int k = 0; k < n_in; k++) {
            int xs[TENSOR_MAX_RANK] = {3};
            memcpy(xs + 1, n_in > 1 ? t->test_shapes[k] : t->test_shape,
                   (size_t)t->test_rank * sizeof(int));
            x[k] = tensor_create(t->test_rank + 1, xs);
            tensor_init_normal(x[k], &rng, 0.0f, 1.0f);
        }
        for (int training = 0; training <= 1; training++) {
            tensor *y;
            nn_graph_reset(g);
            if (nn_layer_forward_multi(a, g, n_in, x, &y, training) != NN_OK)
                fail_msg("%s: forward failed: %s", t->name, nn_last_error());
            assert_int_equal(y->rank, a->out_rank + 1);
            assert_int_equal(y->shape[0], 3);
            for (int k = 0; k < a->out_rank; k++)
                if (y->shape[k + 1] != a->out_shape[k])
                    fail_msg("%s: forward gives extent %d on axis %d, build declared %d", t->name,
                             y->shape[k + 1], k + 1, a->out_shape[k]);
        }
        for (int k = 0; k < n_in; k++) tensor_free(x[k]);
        nn_graph_free(g);
        nn_layer_free(a);
        nn_layer_free(b);
    }
}

/* nn_layer_create must fail with NN_ERR_CONFIG (checked through
 * nn_model_add, which returns the status) and a message naming the layer
 * and `needle`. */
static void expect_config_error(const char *type, const char *config, const char *needle)
{
    nn_model *m = nn_model_create(1);
    nn_clear_error();
    nn_status s = nn_model_add(m, type, config);
    if (s != NN_ERR_CONFIG)
        fail_msg("%s '%s': status %d (%s), expected a config error containing '%s'", type, config,
                 (int)s, nn_status_str(s), needle);
    assert_int_equal(m->n_layers, 0);
    nn_model_free(m);
    if (!strstr(nn_last_error(), needle))
        fail_msg("%s '%s': error '%s' does not contain '%s'", type, config, nn_last_error(), needle);
    if (nn_registry_find(type) && !strstr(nn_last_error(), type))
        fail_msg("%s '%s': error '%s' does not name the layer", type, config, nn_last_error());
    assert_null(nn_layer_create(type, config));
}

static void test_generic_config_errors(void **state)
{
    (void)state;
    for (int i = 0; i < nn_registry_count(); i++) {
        const nn_layer_type *t = nn_registry_get(i);
        char cfg[CFG_LEN];
        snprintf(cfg, sizeof cfg, "%s bogus", t->test_config);
        expect_config_error(t->name, cfg, "config token 'bogus' is not key=value");
        snprintf(cfg, sizeof cfg, "%s zz_unknown=1", t->test_config);
        expect_config_error(t->name, cfg, "unknown config key 'zz_unknown'");
        snprintf(cfg, sizeof cfg, "%s zz_key=", t->test_config);
        expect_config_error(t->name, cfg, "config token 'zz_key=' has an empty value");
        snprintf(cfg, sizeof cfg, "%s =3", t->test_config);
        expect_config_error(t->name, cfg, "config token '=3' has an empty key");
        /* Repeat the first key of the test config, if it has one. */
        const char *first = t->test_config;
        while (*first == ' ') first++;
        if (*first) {
            char key[64];
            size_t len = strcspn(first, "=");
            snprintf(key, sizeof key, "%.*s", (int)len, first);
            snprintf(cfg, sizeof cfg, "%s %s", t->test_config, first);
            char needle[96];
            snprintf(needle, sizeof needle, "config key '%s' is given twice", key);
            expect_config_error(t->name, cfg, needle);
        }
    }
}

static void test_specific_config_errors(void **state)
{
    (void)state;
    expect_config_error("dense", "", "config key 'units' is required");
    expect_config_error("dense", "units=0", "units must be between 1 and 16777216, but got 0");
    expect_config_error("dense", "units=-3", "but got -3");
    expect_config_error("dense", "units=abc", "units must be an integer, but got 'abc'");
    expect_config_error("dense", "units=3.5", "units must be an integer, but got '3.5'");
    expect_config_error("dense", "units=99999999999999999999", "units must be an integer");
    expect_config_error("dense", "units=4 activation=swish",
                        "activation must be one of {linear, relu, sigmoid, tanh, leaky_relu, elu, "
                        "gelu, softmax}, but got 'swish'");
    expect_config_error("dense", "units=4 use_bias=maybe", "use_bias must be true or false, but got 'maybe'");
    expect_config_error("dropout", "rate=1.5", "rate must be between 0 and 1, but got 1.5");
    expect_config_error("dropout", "rate=-0.1", "but got -0.1");
    expect_config_error("dropout", "rate=nan", "but got nan");
    expect_config_error("dropout", "rate=inf", "but got inf");
    expect_config_error("dropout", "rate=abc", "rate must be a number, but got 'abc'");
    expect_config_error("dropout", "rate=0.5x", "rate must be a number, but got '0.5x'");
    expect_config_error("dropout", "rate=0.5 seed=-1", "seed must be a non-negative integer, but got '-1'");
    expect_config_error("relu", "units=3", "unknown config key 'units'");
    expect_config_error("conv9d", "", "unknown layer type 'conv9d' (known: dense, relu");
    expect_config_error(NULL, "", "unknown layer type '(null)'");
    char long_value[200];
    snprintf(long_value, sizeof long_value, "units=%0100d", 1);
    expect_config_error("dense", long_value, "is too long");
}

/* The config API directly: tuples, choices, seeds. */
static void test_config_api(void **state)
{
    (void)state;
    nn_config c;
    int v[2];
    const int def[2] = {1, 1};
    const struct {
        const char *text;
        int ok, a, b;
        const char *needle;
    } cases[] = {
        {"k=3", 1, 3, 3, NULL},
        {"k=3,5", 1, 3, 5, NULL},
        {"k=3x5", 1, 3, 5, NULL},
        {"k=3,5,7", 0, 0, 0, "k takes at most 2 values, but got '3,5,7'"},
        {"k=3,", 0, 0, 0, "k has an empty item in '3,'"},
        {"k=,3", 0, 0, 0, "k has an empty item in ',3'"},
        {"k=3,,5", 0, 0, 0, "empty item"},
        {"k=3,a", 0, 0, 0, "k must be an integer, but got 'a'"},
        {"k=0,3", 0, 0, 0, "k values must be between 1 and 9, but got '0,3'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_ok(nn_config_parse(&c, "layer_x", cases[i].text));
        nn_status s = nn_config_get_ints(&c, "k", v, 2, def, 0, 1, 9);
        if (cases[i].ok) {
            if (s != NN_OK) fail_msg("'%s': %s", cases[i].text, nn_last_error());
            assert_int_equal(v[0], cases[i].a);
            assert_int_equal(v[1], cases[i].b);
            assert_ok(nn_config_finish(&c));
        } else {
            if (s != NN_ERR_CONFIG) fail_msg("'%s' was accepted", cases[i].text);
            assert_error_contains(cases[i].needle);
            assert_error_contains("layer_x");
        }
    }
    assert_ok(nn_config_parse(&c, "layer_x", NULL));
    assert_ok(nn_config_get_ints(&c, "k", v, 2, def, 0, 1, 9));
    assert_int_equal(v[1], 1);
    assert_int_equal(nn_config_get_ints(&c, "k", v, 2, def, 1, 1, 9), NN_ERR_CONFIG);
    assert_error_contains("layer_x: config key 'k' is required");

    static const char *const modes[] = {"fast", "slow", NULL};
    int m;
    assert_ok(nn_config_parse(&c, "layer_x", "mode=slow seed=18446744073709551615"));
    assert_ok(nn_config_get_choice(&c, "mode", &m, 0, modes));
    assert_int_equal(m, 1);
    unsigned long long seed;
    int present;
    assert_ok(nn_config_get_u64(&c, "seed", &seed, &present));
    assert_true(present && seed == 18446744073709551615ull);
    assert_ok(nn_config_finish(&c));
    assert_ok(nn_config_parse(&c, "layer_x", "mode=Slow seed=18446744073709551616"));
    assert_int_equal(nn_config_get_choice(&c, "mode", &m, 0, modes), NN_ERR_CONFIG);
    assert_error_contains("mode must be one of {fast, slow}, but got 'Slow'");
    assert_int_equal(nn_config_get_u64(&c, "seed", &seed, &present), NN_ERR_CONFIG);
    assert_error_contains("seed must be a non-negative integer");

    char many[1024] = "";
    for (int i = 0; i <= NN_CONFIG_MAX_KEYS; i++) {
        size_t len = strlen(many);
        snprintf(many + len, sizeof many - len, "k%d=1 ", i);
    }
    assert_int_equal(nn_config_parse(&c, "layer_x", many), NN_ERR_CONFIG);
    assert_error_contains("more than 24 config keys");

    /* Floats are written so that they read back exactly. */
    char buf[128];
    nn_config_writer w = {buf, sizeof buf, 0};
    const float x = 0.1f + 1e-8f;
    nn_config_write_float(&w, "rate", x);
    nn_config_write(&w, "n", "%d", 3);
    assert_ok(nn_config_parse(&c, "layer_x", buf));
    float back;
    assert_ok(nn_config_get_float(&c, "rate", &back, 0.0f, 1, 0.0f, 1.0f));
    assert_true(back == x);
    /* A writer that runs out of room keeps counting, so the caller can see it. */
    char tiny[8];
    nn_config_writer t = {tiny, sizeof tiny, 0};
    nn_config_write(&t, "units", "%d", 12345);
    assert_true(t.len > sizeof tiny);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

/* --- model specs ---------------------------------------------------------- */

static void test_spec_parsing(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    const char *spec = "# a small classifier\n"
                       "\n"
                       "dense units=16 activation=relu   # hidden\r\n"
                       "   \t\n"
                       "dropout rate=0.25\n"
                       "  dense units=4 # logits\n"
                       "relu"; /* no final newline */
    assert_ok(nn_model_add_spec(m, spec));
    assert_int_equal(m->n_layers, 4);
    assert_string_equal(m->layers[0]->name, "dense_1");
    assert_string_equal(m->layers[1]->name, "dropout_1");
    assert_string_equal(m->layers[2]->name, "dense_2");
    assert_string_equal(m->layers[3]->name, "relu_1");
    nn_model_free(m);

    m = nn_model_create(1);
    assert_int_equal(nn_model_add_spec(m, "dense units=4\n\n# ok so far\nrelu\nbogus_layer x=1\n"),
                     NN_ERR_CONFIG);
    assert_error_contains("model spec line 5: unknown layer type 'bogus_layer'");
    nn_model_free(m);

    m = nn_model_create(1);
    assert_int_equal(nn_model_add_spec(m, "relu\n# comment\ndense units=0\n"), NN_ERR_CONFIG);
    assert_error_contains("model spec line 3: dense: units must be between 1");
    nn_model_free(m);

    /* From a file: the message names the file and the line. */
    char path[] = "/tmp/nn_test_spec_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "dense units=8\nrelu\ndense units=2 activation=swish\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    m = nn_model_create(1);
    assert_int_equal(nn_model_load_spec(m, path), NN_ERR_CONFIG);
    assert_error_contains(path);
    assert_error_contains("model spec line 3: dense: activation must be one of");
    nn_model_free(m);
    unlink(path);
    m = nn_model_create(1);
    assert_int_equal(nn_model_load_spec(m, path), NN_ERR_IO);
    assert_error_contains("cannot open model spec");
    assert_error_contains(path);
    assert_int_equal(nn_model_add_spec(m, NULL), NN_ERR_ARG);
    nn_model_free(m);
}

static void test_spec_string_round_trip(void **state)
{
    (void)state;
    nn_model *a = nn_model_create(21), *b = nn_model_create(21);
    assert_ok(nn_model_add_spec(a, "dense units=16 activation=relu\ndropout rate=0.1 seed=5\n"
                                   "dense units=8 use_bias=false\nrelu\ndense units=3\n"));
    char s1[2048], s2[2048];
    assert_ok(nn_model_spec_string(a, s1, sizeof s1));
    assert_string_equal(s1, "dense units=16 use_bias=true activation=relu\n"
                            "dropout rate=0.100000001 seed=5\n"
                            "dense units=8 use_bias=false activation=linear\n"
                            "relu\n"
                            "dense units=3 use_bias=true activation=linear\n");
    assert_ok(nn_model_add_spec(b, s1));
    assert_ok(nn_model_spec_string(b, s2, sizeof s2));
    assert_string_equal(s1, s2);
    int in[1] = {10};
    assert_ok(nn_model_build(a, 1, in));
    assert_ok(nn_model_build(b, 1, in));
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_params, 10 * 16 + 16 + 16 * 8 + 8 * 3 + 3);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    char small[40];
    assert_int_equal(nn_model_spec_string(a, small, sizeof small), NN_ERR_ARG);
    assert_error_contains("needs");
    nn_model_free(a);
    nn_model_free(b);
}

static void test_summary(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "dense units=16 activation=relu\ndropout rate=0.5\ndense units=10\n"));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(nn_model_summary(m, f), NN_ERR_STATE);
    assert_error_contains("build the model first");
    int in[1] = {20};
    assert_ok(nn_model_build(m, 1, in));
    assert_ok(nn_model_summary(m, f));
    fclose(f);
    printf("%s", text);
    const char *expect[] = {"Layer (type)", "Output Shape", "Param #",
                            "dense_1 (dense)", "dropout_1 (dropout)", "dense_2 (dense)",
                            "(None, 16)", "(None, 10)", " 336\n", " 170\n",
                            "Total params: 506 (1.98 KB)", "Trainable params: 506",
                            "Non-trainable params: 0"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        if (!strstr(text, expect[i])) fail_msg("summary lacks '%s':\n%s", expect[i], text);
    /* Rows come in layer order. */
    assert_true(strstr(text, "dense_1") < strstr(text, "dropout_1"));
    assert_true(strstr(text, "dropout_1") < strstr(text, "dense_2"));
    free(text);
    assert_int_equal(nn_model_summary(m, NULL), NN_ERR_ARG);
    nn_model_free(m);

    /* A long "name (type)" widens the name column for every row: each
     * layer row (and the header) ends at the same column. */
    m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "spatial_dropout1d rate=0.5 data_format=channels_last\n"
                                   "flatten\ndense units=3\n"));
    int in3[2] = {4, 5};
    assert_ok(nn_model_build(m, 2, in3));
    text = NULL;
    f = open_memstream(&text, &len);
    assert_ok(nn_model_summary(m, f));
    fclose(f);
    printf("%s", text);
    size_t end = 0;
    int rows = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        const size_t n = (size_t)(nl - line);
        char row[256];
        snprintf(row, sizeof row, "%.*s", (int)n, line);
        if (!strstr(row, "(None") && strncmp(row, " Layer (type)", 13)) continue;
        if (!end) end = n;
        if (n != end) fail_msg("summary row of width %zu, the header's is %zu:\n%s", n, end, text);
        rows++;
    }
    assert_int_equal(rows, 4); /* header + 3 layers */
    free(text);
    nn_model_free(m);
}

/* --- shape errors ----------------------------------------------------------- */

static void test_shape_errors(void **state)
{
    (void)state;
    nn_graph *g = nn_graph_create(0);
    int s23[2] = {2, 3}, s32[2] = {3, 2};
    tensor *a = tensor_zeros(2, s23), *b = tensor_zeros(2, s32), *y = NULL;
    assert_int_equal(nn_op_add(g, a, b, &y), NN_ERR_SHAPE);
    assert_error_contains("add: shapes (2, 3) and (3, 2) differ");
    assert_null(y);
    assert_int_equal(nn_op_mul(g, a, b, &y), NN_ERR_SHAPE);
    assert_error_contains("mul: shapes (2, 3) and (3, 2) differ");
    assert_int_equal(nn_op_weighted_sum(g, a, b, &y), NN_ERR_SHAPE);
    assert_error_contains("weighted_sum: shapes (2, 3) and (3, 2) differ");
    assert_int_equal(nn_op_add(g, a, NULL, &y), NN_ERR_ARG);
    int s3[3] = {2, 3, 1}, labels[2] = {0, 3};
    tensor *c = tensor_zeros(3, s3);
    assert_int_equal(nn_op_softmax_cross_entropy(g, c, labels, &y, NULL), NN_ERR_SHAPE);
    assert_error_contains("logits must be (batch, classes), got (2, 3, 1)");
    assert_int_equal(nn_op_softmax_cross_entropy(g, a, labels, &y, NULL), NN_ERR_ARG);
    assert_error_contains("label 3 of row 1 is outside [0, 3)");
    tensor_free(a);
    tensor_free(b);
    tensor_free(c);
    nn_graph_free(g);

    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "dense units=8 activation=relu\ndense units=2\n"));
    int xs[2] = {4, 19};
    tensor *x = tensor_zeros(2, xs);
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_DEFAULT), NN_ERR_STATE);
    assert_error_contains("build the model first");
    int in[1] = {20};
    assert_ok(nn_model_build(m, 1, in));
    assert_int_equal(nn_model_build(m, 1, in), NN_ERR_STATE);
    assert_error_contains("already built");
    assert_int_equal(nn_model_add(m, "relu", ""), NN_ERR_STATE);
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_DEFAULT), NN_ERR_SHAPE);
    assert_error_contains("dense_1: expected input of shape (batch, 20), got (4, 19)");
    tensor_free(x);
    int xs3[3] = {4, 20, 1};
    x = tensor_zeros(3, xs3);
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_DEFAULT), NN_ERR_SHAPE);
    assert_error_contains("expected input of shape (batch, 20), got (4, 20, 1)");
    int labels4[4] = {0, 1, 0, 1};
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    assert_int_equal(nn_model_train_step(m, o, x, labels4, NULL, NULL), NN_ERR_SHAPE);
    assert_int_equal(nn_model_predict(m, x, labels4, &y, NULL, NULL), NN_ERR_SHAPE);
    optim_free(o);
    tensor_free(x);
    nn_model_free(m);

    /* Build-time shape errors name the layer and say what to do. */
    m = nn_model_create(1);
    assert_ok(nn_model_add(m, "dense", "units=3"));
    int img[3] = {8, 8, 1};
    assert_int_equal(nn_model_build(m, 3, img), NN_ERR_SHAPE);
    assert_error_contains("dense_1: expected a per-sample input of rank 1 (features), got (8, 8, 1); "
                          "add a flatten layer");
    nn_model_free(m);
    m = nn_model_create(1);
    assert_int_equal(nn_model_build(m, 1, in), NN_ERR_STATE);
    assert_error_contains("no layers");
    assert_ok(nn_model_add(m, "relu", ""));
    int bad[2] = {3, -2};
    assert_int_equal(nn_model_build(m, 2, bad), NN_ERR_SHAPE);
    assert_error_contains("negative extent in shape (3, -2)");
    nn_model_free(m);
}

/* --- modes ------------------------------------------------------------------ */

static int count_zeros(const tensor *y)
{
    int z = 0;
    for (size_t i = 0; i < y->size; i++) z += y->data[i] == 0.0f;
    return z;
}

static void test_modes(void **state)
{
    (void)state;
    enum { N = 2000 };
    nn_model *m = nn_model_create(3);
    assert_ok(nn_model_add(m, "dropout", "rate=0.5"));
    int in[1] = {N};
    assert_ok(nn_model_build(m, 1, in));
    assert_false(nn_model_is_training(m)); /* a new model is in eval mode */
    int xs[2] = {1, N};
    tensor *x = tensor_create(2, xs), *y;
    tensor_fill(x, 3.0f);
    nn_graph *g = nn_model_graph(m);

    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_DEFAULT));
    assert_ptr_equal(y, x); /* eval: the identity, no copy */

    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN)); /* per-call override */
    int z = count_zeros(y);
    /* Binomial(2000, 0.5): sd 22.4; 5 sd. */
    assert_true(abs(z - N / 2) < 112);
    for (size_t i = 0; i < y->size; i++) assert_true(y->data[i] == 0.0f || y->data[i] == 6.0f);
    assert_false(nn_model_is_training(m)); /* the override does not stick */

    nn_model_set_training(m, 1);
    assert_true(nn_model_is_training(m));
    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_DEFAULT));
    assert_true(y != x);
    assert_true(abs(count_zeros(y) - N / 2) < 112);
    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
    assert_ptr_equal(y, x);
    /* predict is always eval, whatever the model's mode. */
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    assert_ptr_equal(y, x);
    assert_true(nn_model_is_training(m));

    assert_int_equal(nn_model_forward(m, x, &y, (nn_mode)5), NN_ERR_ARG);
    assert_error_contains("mode must be -1, 0 or 1, but got 5");
    nn_model_set_training(m, 0);
    assert_false(nn_model_is_training(m));
    tensor_free(x);
    nn_model_free(m);
}

/* Empty extents: a batch of 0 samples, and samples with 0 features, run
 * without errors (and without BLAS complaining about a zero leading
 * dimension); zero features give y = bias. */
static void test_empty_extents(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(1);
    assert_ok(nn_model_add_spec(m, "dense units=3\nrelu\ndense units=2\n"));
    int in[1] = {4};
    assert_ok(nn_model_build(m, 1, in));
    int xs[2] = {0, 4};
    tensor *x = tensor_zeros(2, xs), *y;
    nn_graph_reset(nn_model_graph(m));
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_DEFAULT));
    assert_int_equal(y->rank, 2);
    assert_int_equal(y->shape[0], 0);
    assert_int_equal(y->shape[1], 2);
    tensor_free(x);
    nn_model_free(m);

    m = nn_model_create(1);
    assert_ok(nn_model_add(m, "dense", "units=3"));
    int none[1] = {0};
    assert_ok(nn_model_build(m, 1, none));
    m->params[0] = 0.5f; /* the bias: the kernel has no elements */
    int xs0[2] = {2, 0};
    x = tensor_zeros(2, xs0);
    const int labels[2] = {0, 2};
    optim *o = optim_sgd_create(0.1f, 0.0f, 0, 0.0f);
    float loss;
    assert_ok(nn_model_train_step(m, o, x, labels, &loss, NULL));
    assert_float_equal(loss, log(exp(0.5) + 2.0) - 0.25, 1e-6); /* logits (0.5, 0, 0) */
    nn_graph_reset(nn_model_graph(m));
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
    /* Every row gives the logits = bias; label 0 pulled bias[0] up, 2 bias[2]. */
    for (int i = 0; i < 2; i++)
        for (int u = 0; u < 3; u++) assert_true(y->data[i * 3 + u] == m->params[u]);
    assert_true(m->params[1] < 0.0f && m->params[0] > 0.5f - 0.1f);
    optim_free(o);
    tensor_free(x);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First, so that the generic tests below cover the user type too. */
        cmocka_unit_test(test_registry_add),
        cmocka_unit_test(test_entries_complete),
        cmocka_unit_test(test_config_round_trip),
        cmocka_unit_test(test_generic_config_errors),
        cmocka_unit_test(test_specific_config_errors),
        cmocka_unit_test(test_config_api),
        cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_spec_string_round_trip),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_empty_extents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
