/* Memory stays flat while a CNN trains: the convolution, pooling and
 * spatial-dropout paths allocate per step only from the graph arena, which
 * each step rewinds. A small CNN (conv2d with fused ReLU, maxpool2d,
 * spatial_dropout2d, flatten, dense; 12x12x1 inputs, batch 16, Adam) trains
 * for 2,000 steps, with an eval-mode pass every 50 steps and a checkpoint
 * every 500 (the first at step 50), as a training loop does. Checked: the
 * arena and the pool of gradient buffers hold the same number of bytes after
 * every step as after the first,
 * and the resident set size (/proc/self/statm) after step 2,000 is within
 * 256 KiB of the one after step 100: by then every path (train step, eval,
 * save) has run once, so malloc's heap, OpenMP and OpenBLAS have taken what
 * they keep; the first save alone adds about 110 KiB of heap that malloc
 * keeps for the next one. The numbers are printed. test_graph.c does the same for a dense
 * network. The RSS bound is not checked under ASan (its quarantine keeps
 * freed blocks) or valgrind (statm describes valgrind itself); those tools
 * report leaks themselves.
 * Inference is bounded too: 100,000 predictions of batch 1 (5,000 under
 * ASan or valgrind, where only the arena is checked), and as many
 * eval-mode nn_model_forward calls without a reset, keep the arena at its
 * size after the first call and the resident set within the same slack; a
 * training forward repeated without a reset is an error, not growth.
 * And for the two example networks (examples/mnist_cnn.txt and
 * examples/fashion_resnet.txt) batch-1 nn_model_predict allocates nothing
 * after its first call (see test_predict_allocation_free). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define SPEC                                                                                       \
    "conv2d filters=8 kernel_size=3 activation=relu\n"                                             \
    "maxpool2d pool_size=2\n"                                                                      \
    "spatial_dropout2d rate=0.25\n"                                                                \
    "flatten\n"                                                                                    \
    "dense units=4\n"

enum { SIDE = 12, BATCH = 16, CLASSES = 4, N_BATCHES = 8, STEPS = 2000, SETTLE = 100 };
#define RSS_SLACK_KIB 256

static char dir[64];

/* Class k lights quadrant k of the image (plus noise): learnable. */
static void make_batch(tensor *x, int *labels, tensor_rng *rng)
{
    for (int i = 0; i < BATCH; i++) {
        const int k = (int)tensor_rng_below(rng, CLASSES);
        labels[i] = k;
        float *img = x->data + (size_t)i * SIDE * SIDE;
        for (int r = 0; r < SIDE; r++)
            for (int c = 0; c < SIDE; c++) {
                const int q = (r >= SIDE / 2) * 2 + (c >= SIDE / 2);
                img[r * SIDE + c] = (q == k ? 0.8f : 0.0f) + 0.3f * tensor_rng_uniform(rng);
            }
    }
}

static void test_cnn_memory_flat(void **state)
{
    (void)state;
    assert_int_equal(test_tmpdir_make(dir, sizeof dir, "memory"), 0);
    nn_model *m = nn_model_create(21);
    assert_non_null(m);
    assert_ok(nn_model_add_spec(m, SPEC));
    const int in_shape[3] = {SIDE, SIDE, 1};
    assert_ok(nn_model_build(m, 3, in_shape));
    optim *opt = optim_adam_create(3e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    assert_non_null(opt);
    tensor *x[N_BATCHES];
    int labels[N_BATCHES][BATCH];
    tensor_rng rng;
    tensor_rng_seed(&rng, 77);
    for (int b = 0; b < N_BATCHES; b++) {
        x[b] = tensor_create(4, (int[]){BATCH, SIDE, SIDE, 1});
        assert_non_null(x[b]);
        make_batch(x[b], labels[b], &rng);
    }

    size_t arena = 0, pool = 0;
    long rss_settled = 0;
    float loss = 0.0f, first_loss = 0.0f;
    double eval_loss_first = 0.0, eval_loss = 0.0;
    int saves = 0;
    for (int step = 0; step < STEPS; step++) {
        const int b = step % N_BATCHES;
        assert_ok(nn_model_train_step(m, opt, x[b], labels[b], &loss, NULL));
        if (step == 0) {
            first_loss = loss;
            arena = nn_graph_arena_bytes(nn_model_graph(m));
            pool = nn_graph_grad_pool_bytes(nn_model_graph(m));
        }
        if (step % 50 == 49) {
            double sum = 0.0;
            assert_ok(nn_model_predict(m, x[0], labels[0], NULL, &sum, NULL));
            if (step == 49) eval_loss_first = sum / BATCH;
            eval_loss = sum / BATCH;
        }
        if (step % 500 == 49) {
            assert_ok(nn_checkpoint_save(test_path_in(dir, "m.ckpt"), m, opt, NULL, 0));
            saves++;
        }
        const size_t now = nn_graph_arena_bytes(nn_model_graph(m));
        if (now != arena)
            fail_msg("step %d: the arena holds %zu bytes, %zu after the first step", step + 1, now,
                     arena);
        const size_t pool_now = nn_graph_grad_pool_bytes(nn_model_graph(m));
        if (pool_now != pool)
            fail_msg("step %d: the gradient pool holds %zu bytes, %zu after the first step",
                     step + 1, pool_now, pool);
        if (step + 1 == SETTLE) rss_settled = test_rss_kib();
    }
    const long rss_end = test_rss_kib();
    printf("    CNN %dx%dx1, batch %d, Adam, %d steps: arena %zu and gradient pool %zu bytes "
           "after every step; RSS %ld KiB after step %d, %ld KiB after step %d (%+ld KiB); loss %.3f -> %.3f, "
           "eval loss %.3f -> %.3f; %d checkpoints\n",
           SIDE, SIDE, BATCH, STEPS, arena, pool, rss_settled, SETTLE, rss_end, STEPS,
           rss_end - rss_settled, (double)first_loss, (double)loss, eval_loss_first, eval_loss,
           saves);
    assert_true(arena > 0 && pool > 0);
    assert_true(rss_settled > 0 && rss_end > 0);
    /* It trained: the same batch scores better in eval mode. */
    if (!(eval_loss < 0.5 * eval_loss_first))
        fail_msg("eval loss %.4f -> %.4f: the network did not learn", eval_loss_first, eval_loss);
    if (test_rss_unreliable())
        printf("    (resident-memory bound not checked under ASan or valgrind)\n");
    else if (rss_end - rss_settled > RSS_SLACK_KIB)
        fail_msg("resident memory grew by %ld KiB from step %d to step %d (bound %d KiB)",
                 rss_end - rss_settled, SETTLE, STEPS, RSS_SLACK_KIB);
    for (int b = 0; b < N_BATCHES; b++) tensor_free(x[b]);
    optim_free(opt);
    nn_model_free(m);
    test_tmpdir_remove(dir);
}

/* Under ASan or valgrind the resident set is not checked and each call is
 * tens of times slower, so the arena check runs over fewer calls there. */
enum { PREDICTIONS = 100000, PREDICTIONS_INSTRUMENTED = 5000, PRED_SETTLE = 1000 };

/* Runs `calls` batch-1 passes, by nn_model_predict (raw = 0) or by
 * nn_model_forward in eval mode with gradients enabled and no reset (raw =
 * 1), and checks the arena after each one and the resident set at the end. */
static void inference_flat(nn_model *m, tensor *x, int raw, const char *what)
{
    nn_graph *g = nn_model_graph(m);
    size_t arena = 0;
    long rss_settled = 0;
    tensor *y = NULL;
    double sum = 0.0;
    const int calls = test_rss_unreliable() ? PREDICTIONS_INSTRUMENTED : PREDICTIONS;
    for (int i = 0; i < calls; i++) {
        x->data[i % x->size] += 0.001f; /* a different input each call */
        if (raw)
            assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
        else
            assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
        sum += y->data[0];
        const size_t now = nn_graph_arena_bytes(g);
        if (i == 0) arena = now;
        else if (now != arena)
            fail_msg("%s, call %d: the arena holds %zu bytes, %zu after the first call", what,
                     i + 1, now, arena);
        if (i + 1 == PRED_SETTLE) rss_settled = test_rss_kib();
    }
    const long rss_end = test_rss_kib();
    printf("    %s: %d calls of batch 1: arena %zu bytes after every call, %d graph nodes; RSS "
           "%ld KiB after call %d, %ld KiB after call %d (%+ld KiB); mean output %.4f\n",
           what, calls, arena, nn_graph_node_count(g), rss_settled, PRED_SETTLE, rss_end,
           calls, rss_end - rss_settled, sum / calls);
    assert_true(arena > 0 && rss_settled > 0 && rss_end > 0);
    if (!test_rss_unreliable() && rss_end - rss_settled > RSS_SLACK_KIB)
        fail_msg("%s: resident memory grew by %ld KiB from call %d to call %d (bound %d KiB)", what,
                 rss_end - rss_settled, PRED_SETTLE, calls, RSS_SLACK_KIB);
}

static void test_inference_memory_flat(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(5);
    assert_non_null(m);
    assert_ok(nn_model_add_spec(m, SPEC));
    const int in_shape[3] = {SIDE, SIDE, 1};
    assert_ok(nn_model_build(m, 3, in_shape));
    tensor *x = tensor_create(4, (int[]){1, SIDE, SIDE, 1});
    assert_non_null(x);
    tensor_rng rng;
    tensor_rng_seed(&rng, 78);
    for (size_t i = 0; i < x->size; i++) x->data[i] = tensor_rng_uniform(&rng);
    inference_flat(m, x, 0, "nn_model_predict");
    nn_graph_reset(nn_model_graph(m));
    inference_flat(m, x, 1, "nn_model_forward, eval mode, no reset");
    /* The last call's output is still valid, and equals predict's. */
    tensor *y = NULL, *p = NULL;
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_EVAL));
    float y0[CLASSES];
    memcpy(y0, y->data, sizeof y0);
    assert_ok(nn_model_predict(m, x, NULL, &p, NULL, NULL));
    assert_memory_equal(y0, p->data, sizeof y0);
    tensor_free(x);
    nn_model_free(m);
}

/* After its first call, batch-1 nn_model_predict allocates nothing, for
 * the example networks (Winograd and GEMM convolutions, batchnorm, add,
 * pooling, dense; channels_last, 28x28x1). The forward takes memory only
 * from the graph's arena (layers and kernels take their scratch there) and
 * reads the model's three blocks, which build made. An arena allocation
 * either chains a block, which raises the arena's total, or merges the
 * chain at a reset into a new block, which moves every address handed out
 * after it. So over 1,000 calls (the input changing each time) the arena
 * must keep its size, hand out the same bytes and return the output at the
 * same address; no node may be recorded and no gradient buffer pooled; the
 * model's blocks stay where they are. Without the second pass of a first
 * call that grew the arena (nn_model_predict), the residual network's
 * second call merged a 7 MB chain, and the output moved. Not nn's and not
 * checked: libgomp allocates and frees a small team descriptor around each
 * parallel region that one thread enters. */
enum { ALLOC_CALLS = 1000 };

static void predict_allocation_free(const char *spec)
{
    nn_model *m = nn_model_create(8);
    assert_non_null(m);
    assert_ok(nn_model_load_spec(m, spec));
    assert_ok(nn_model_build(m, 3, (int[]){28, 28, 1}));
    tensor *x = tensor_create(4, (int[]){1, 28, 28, 1});
    assert_non_null(x);
    tensor_rng rng;
    tensor_rng_seed(&rng, 80);
    for (size_t i = 0; i < x->size; i++) x->data[i] = tensor_rng_uniform(&rng);
    nn_graph *g = nn_model_graph(m);
    const size_t arena_before = nn_graph_arena_bytes(g);
    tensor *y = NULL;
    assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
    const size_t bytes = nn_graph_arena_bytes(g), used = nn_graph_arena_used(g);
    const tensor *y_first = y;
    const float *out = y->data, *params = m->params, *grads = m->grads, *buffers = m->buffers;
    const float first = y->data[0];
    int changed = 0;
    for (int i = 1; i <= ALLOC_CALLS; i++) {
        x->data[(size_t)i * 37 % x->size] += 0.01f;
        assert_ok(nn_model_predict(m, x, NULL, &y, NULL, NULL));
        if (nn_graph_arena_bytes(g) != bytes || nn_graph_arena_used(g) != used)
            fail_msg("%s, call %d: the arena holds %zu bytes and handed out %zu; after the first "
                     "call %zu and %zu", spec, i + 1, nn_graph_arena_bytes(g),
                     nn_graph_arena_used(g), bytes, used);
        if (y != y_first || y->data != out)
            fail_msg("%s, call %d: the output moved (a new arena block)", spec, i + 1);
        assert_int_equal(nn_graph_node_count(g), 0);
        assert_int_equal(nn_graph_grad_pool_bytes(g), 0);
        assert_ptr_equal(m->params, params);
        assert_ptr_equal(m->grads, grads);
        assert_ptr_equal(m->buffers, buffers);
        changed += y->data[0] != first;
    }
    printf("    %s: %d batch-1 predictions after the first: arena %zu bytes (%zu before the first "
           "call), %zu handed out by every call, output at the same address\n",
           spec, ALLOC_CALLS, bytes, arena_before, used);
    assert_true(changed > 0); /* the calls computed on their inputs */
    tensor_free(x);
    nn_model_free(m);
}

static void test_predict_allocation_free(void **state)
{
    (void)state;
    predict_allocation_free("examples/mnist_cnn.txt");
    predict_allocation_free("examples/fashion_resnet.txt");
}

/* A training forward after one that recorded a tape, with no reset between:
 * the error says what to do, and nothing piles up. Resetting, or
 * nn_model_train_step, makes it work again. An eval forward after a
 * training forward keeps the tape (so the two outputs can be compared). */
static void test_forgotten_reset(void **state)
{
    (void)state;
    nn_model *m = nn_model_create(6);
    assert_ok(nn_model_add_spec(m, SPEC));
    const int in_shape[3] = {SIDE, SIDE, 1};
    assert_ok(nn_model_build(m, 3, in_shape));
    tensor *x = tensor_create(4, (int[]){BATCH, SIDE, SIDE, 1});
    int labels[BATCH];
    tensor_rng rng;
    tensor_rng_seed(&rng, 79);
    make_batch(x, labels, &rng);
    nn_graph *g = nn_model_graph(m);
    tensor *y = NULL, *ye = NULL, *l = NULL;

    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    const int nodes = nn_graph_node_count(g);
    const size_t used = nn_graph_arena_used(g);
    assert_true(nodes > 0);
    assert_ok(nn_model_forward(m, x, &ye, NN_MODE_EVAL)); /* beside the tape */
    assert_int_equal(nn_graph_node_count(g), 2 * nodes - 1); /* dropout records nothing in eval */
    assert_true(ye->data != y->data);
    const size_t used2 = nn_graph_arena_used(g);
    nn_clear_error();
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_TRAIN), NN_ERR_STATE);
    assert_error_contains("nn_model_forward: a training forward needs the graph reset since the "
                          "previous one, whose");
    assert_error_contains("(backward has not run); call nn_graph_reset(nn_model_graph(m)) at the "
                          "start of each step, as nn_model_train_step does");
    assert_int_equal(nn_graph_arena_used(g), used2);
    assert_true(used2 > used);

    /* After backward, still an error without the reset. */
    assert_ok(nn_op_softmax_cross_entropy(g, y, labels, &l, NULL));
    assert_ok(nn_graph_backward(g, l));
    nn_clear_error();
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_TRAIN), NN_ERR_STATE);
    assert_error_contains("still in it (backward ran); call nn_graph_reset");
    /* The model's own mode counts as well. */
    nn_model_set_training(m, 1);
    assert_int_equal(nn_model_forward(m, x, &y, NN_MODE_DEFAULT), NN_ERR_STATE);
    nn_model_set_training(m, 0);

    nn_graph_reset(g);
    assert_ok(nn_model_forward(m, x, &y, NN_MODE_TRAIN));
    optim *opt = optim_sgd_create(0.01f, 0.0f, 0, 0.0f);
    for (int i = 0; i < 3; i++) assert_ok(nn_model_train_step(m, opt, x, labels, NULL, NULL));
    /* After the step's backward, an eval forward resets what the step left. */
    assert_ok(nn_model_forward(m, x, &ye, NN_MODE_EVAL));
    assert_int_equal(nn_graph_node_count(g), nodes - 1);
    optim_free(opt);

    /* A graph that held the caller's tensors when the forward began is the
     * caller's: x in the arena, and another arena tensor, survive. */
    nn_graph_reset(g);
    tensor *xa = nn_graph_tensor(g, x->rank, x->shape), *keep = nn_graph_tensor(g, 1, (int[]){4});
    memcpy(xa->data, x->data, x->size * sizeof(float));
    for (int i = 0; i < 4; i++) keep->data[i] = (float)i;
    assert_ok(nn_model_forward(m, xa, &y, NN_MODE_EVAL));
    float first[CLASSES];
    memcpy(first, y->data, sizeof first);
    assert_ok(nn_model_forward(m, xa, &y, NN_MODE_EVAL));
    assert_memory_equal(first, y->data, sizeof first);
    assert_memory_equal(xa->data, x->data, x->size * sizeof(float));
    for (int i = 0; i < 4; i++) assert_true(keep->data[i] == (float)i);
    tensor_free(x);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn_memory_flat),
        cmocka_unit_test(test_inference_memory_flat),
        cmocka_unit_test(test_forgotten_reset),
        cmocka_unit_test(test_predict_allocation_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
