/* Data-parallel training without MPI (nn/shard.h): N ranks emulated in one
 * process, one thread per rank, each with its own model and optimizer, the
 * bytes moved by an in-process nn_comm (mailboxes per pair of ranks). Only
 * one rank runs at a time (a rank gives the turn away while it waits for a
 * message), so the library is never entered by two threads at once, as
 * with separate processes.
 *
 * Checked: exact mode gives the same weights, moving statistics, call
 * counters and history, bit for bit, for 1, 2, 3 and 4 ranks, with two
 * batch normalisation layers (whole-batch statistics, the shards in
 * lockstep), spatial dropout and dropout, a short last batch and a
 * validation set, every rank of a run equal to the others; with several
 * shards, batchnorm's gradients and moving statistics are the whole
 * batch's (a float64 reference), not each shard's; one shard of the whole
 * batch is nn_model_train_step_loss's step, bit for bit; the gradient a
 * step leaves is the fixed tree sum of the shards' gradients (computed here
 * by hand), which differs from a left-to-right sum for this data; a
 * micro-shard's dropout masks are the whole batch's rows; validation over
 * ranks equals nn_model_evaluate in one process; a run saved after one
 * epoch with 2 ranks and resumed with 3 equals a straight run with 1; fast
 * mode is reproducible at a fixed rank count and close to exact mode; its
 * overlap (sums started in buckets during backward) gives the bits of the
 * sums after backward, in the model's bucket order, started early; bad
 * arguments are named.
 * Not covered here: MPI itself (tests/test_mpi.sh runs the MNIST program
 * under mpirun when OpenMPI is installed). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#define SIDE TEST_TOY_SIDE
#define PIX (SIDE * SIDE)
#define N_TRAIN 100 /* batch 32: three full batches, then one of 4 */
#define N_VAL 50
#define BATCH 32
#define SHARD 8
#define MAX_RANKS 4

static const char spec[] = "conv2d filters=4 kernel_size=3 padding=same use_bias=false\n"
                           "batchnorm activation=relu momentum=0.9\n"
                           "spatial_dropout2d rate=0.25\n"
                           "conv2d filters=4 kernel_size=3 activation=relu\n"
                           "batchnorm momentum=0.9\n"
                           "flatten\n"
                           "dropout rate=0.25\n"
                           "dense units=4\n";
/* Without batchnorm: shards that run one after another, each on its own. */
static const char spec_plain[] = "conv2d filters=4 kernel_size=3 padding=same\n"
                                 "spatial_dropout2d rate=0.25\n"
                                 "conv2d filters=4 kernel_size=3 activation=relu\n"
                                 "flatten\n"
                                 "dropout rate=0.25\n"
                                 "dense units=4\n";
static const int in_shape[3] = {SIDE, SIDE, 1};

static uint8_t train_images[N_TRAIN * PIX], train_labels[N_TRAIN];
static uint8_t val_images[N_VAL * PIX], val_labels[N_VAL];

static int setup(void **state)
{
    test_toy_quadrants(train_images, train_labels, N_TRAIN, 21);
    test_toy_quadrants(val_images, val_labels, N_VAL, 22);
    return test_dir_setup(state);
}

/* ---- the in-process comm ---- */

typedef struct msg {
    struct msg *next;
    size_t n;
    unsigned char data[];
} msg;

typedef struct world {
    int size;
    pthread_mutex_t mu; /* the turn: held by the one rank that runs */
    pthread_cond_t cv;
    msg *head[MAX_RANKS][MAX_RANKS], *tail[MAX_RANKS][MAX_RANKS]; /* [from][to] */
} world;

/* Fast mode's overlap, emulated: a started sum waits (with a copy of what
 * it was given) until wait_all runs the blocking sums in start order. */
#define MAX_STARTED 64
typedef struct started {
    float *buf, *copy;
    size_t n;
} started;

typedef struct endpoint {
    world *w;
    int rank;
    const nn_model *m; /* whose first layer tells whether backward is done */
    started st[MAX_STARTED];
    int n_st;
    size_t sizes[MAX_STARTED]; /* the first step's sums, in start order */
    int n_sizes, steps;
    long early;    /* steps whose first sum started before backward reached layer 0 */
    long progress; /* progress calls with sums started */
} endpoint;

static int local_send(void *ctx, int to, const void *buf, size_t bytes)
{
    endpoint *e = ctx;
    world *w = e->w;
    msg *m = malloc(sizeof *m + bytes);
    if (!m) return 1;
    m->next = NULL;
    m->n = bytes;
    memcpy(m->data, buf, bytes);
    if (w->tail[e->rank][to]) w->tail[e->rank][to]->next = m;
    else w->head[e->rank][to] = m;
    w->tail[e->rank][to] = m;
    pthread_cond_broadcast(&w->cv);
    return 0;
}

static int local_recv(void *ctx, int from, void *buf, size_t bytes)
{
    endpoint *e = ctx;
    world *w = e->w;
    while (!w->head[from][e->rank]) pthread_cond_wait(&w->cv, &w->mu);
    msg *m = w->head[from][e->rank];
    w->head[from][e->rank] = m->next;
    if (!m->next) w->tail[from][e->rank] = NULL;
    const int ok = m->n == bytes;
    if (ok) memcpy(buf, m->data, bytes);
    else nn_error(NN_ERR_IO, "expected %zu bytes, got %zu", bytes, m->n);
    free(m);
    return !ok;
}

/* Sums in rank order on rank 0, then sends the sum back: a stand-in for
 * MPI_Allreduce, for fast mode. */
static int local_allreduce(void *ctx, void *buf, size_t n, int dbl)
{
    endpoint *e = ctx;
    const size_t unit = dbl ? sizeof(double) : sizeof(float), bytes = n * unit;
    if (e->rank != 0) return local_send(ctx, 0, buf, bytes) || local_recv(ctx, 0, buf, bytes);
    void *part = malloc(bytes ? bytes : 1);
    if (!part) return 1;
    for (int r = 1; r < e->w->size; r++) {
        if (local_recv(ctx, r, part, bytes)) return free(part), 1;
        for (size_t j = 0; j < n; j++)
            if (dbl) ((double *)buf)[j] += ((double *)part)[j];
            else ((float *)buf)[j] += ((float *)part)[j];
    }
    free(part);
    for (int r = 1; r < e->w->size; r++)
        if (local_send(ctx, r, buf, bytes)) return 1;
    return 0;
}
static int local_allreduce_f32(void *ctx, float *buf, size_t n) { return local_allreduce(ctx, buf, n, 0); }
static int local_allreduce_f64(void *ctx, double *buf, size_t n) { return local_allreduce(ctx, buf, n, 1); }

static int local_iallreduce_f32(void *ctx, float *buf, size_t n)
{
    endpoint *e = ctx;
    if (e->n_st == MAX_STARTED) return 1;
    if (e->n_st == 0) {
        /* The step's first sum: has backward reached the first layer? */
        const tensor *k = e->m->layers[0]->params[0].t;
        int untouched = 1;
        for (size_t j = 0; j < k->size; j++) untouched &= k->grad[j] == 0.0f;
        e->early += untouched;
    }
    if (e->steps == 0 && e->n_sizes < MAX_STARTED) e->sizes[e->n_sizes++] = n;
    started *s = &e->st[e->n_st++];
    s->buf = buf;
    s->n = n;
    s->copy = malloc((n ? n : 1) * sizeof *buf);
    if (!s->copy) return 1;
    memcpy(s->copy, buf, n * sizeof *buf);
    return 0;
}

static int local_progress(void *ctx)
{
    endpoint *e = ctx;
    e->progress += e->n_st > 0;
    return 0;
}

/* The started sums, in start order; a buffer written after its start is
 * an error (the transport owned it). */
static int local_wait_all(void *ctx)
{
    endpoint *e = ctx;
    int rc = 0;
    for (int i = 0; i < e->n_st; i++) {
        started *s = &e->st[i];
        if (!rc && memcmp(s->buf, s->copy, s->n * sizeof *s->buf)) {
            nn_error(NN_ERR_STATE, "sum %d of %zu floats changed after it started", i, s->n);
            rc = 1;
        }
        if (!rc) rc = local_allreduce(ctx, s->buf, s->n, 0);
        free(s->copy);
    }
    e->n_st = 0;
    e->steps++;
    return rc;
}

/* ---- one rank's run of nn_model_fit ---- */

typedef struct job {
    /* in */
    world *w;
    int rank;
    nn_shard_mode mode;
    int overlap;           /* fast mode: the non-blocking sums */
    size_t bucket_bytes;
    int epochs, initial_epoch;
    const char *resume;    /* checkpoint to start from, or NULL */
    const char *save;      /* checkpoint after the last epoch, by rank 0, or NULL */
    /* out */
    nn_status status;
    char msg[400];
    nn_model *m;
    optim *opt;
    nn_history h;
    tensor_rng order;      /* the data-order stream after the last epoch */
    endpoint e;            /* what the comm saw */
} job;

static int job_on_epoch(nn_fit_epoch *ev, void *user)
{
    job *j = user;
    if (!ev->end) return NN_FIT_CONTINUE;
    j->order = ev->order_state;
    if (j->save && j->rank == 0 &&
        nn_checkpoint_save(j->save, ev->model, ev->optim, &j->order, sizeof j->order) != NN_OK)
        return -1;
    return NN_FIT_CONTINUE;
}

static void *job_run(void *arg)
{
    job *j = arg;
    world *w = j->w;
    pthread_mutex_lock(&w->mu);
    endpoint *e = &j->e;
    memset(e, 0, sizeof *e);
    e->w = w;
    e->rank = j->rank;
    const nn_comm comm = {.rank = j->rank, .size = w->size, .ctx = e, .send = local_send,
                          .recv = local_recv, .allreduce_f32 = local_allreduce_f32,
                          .allreduce_f64 = local_allreduce_f64,
                          .iallreduce_f32 = j->overlap ? local_iallreduce_f32 : NULL,
                          .progress = j->overlap ? local_progress : NULL,
                          .wait_all = j->overlap ? local_wait_all : NULL,
                          .bucket_bytes = j->bucket_bytes};
    nn_status s = NN_OK;
    tensor_rng order;
    j->m = nn_model_create(5);
    e->m = j->m;
    j->opt = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    if (!j->m || !j->opt) s = NN_ERR_MEMORY;
    if (s == NN_OK) s = nn_model_add_spec(j->m, spec);
    if (s == NN_OK) s = nn_model_build(j->m, 3, in_shape);
    if (s == NN_OK && j->resume)
        s = nn_checkpoint_load(j->resume, j->m, j->opt, &order, sizeof order, NULL);
    nn_dataset train, val;
    if (s == NN_OK) s = nn_dataset_init_u8(&train, train_images, N_TRAIN, 3, in_shape, 1.0f / 255, 0);
    if (s == NN_OK) s = nn_dataset_set_labels_u8(&train, train_labels);
    if (s == NN_OK) s = nn_dataset_init_u8(&val, val_images, N_VAL, 3, in_shape, 1.0f / 255, 0);
    if (s == NN_OK) s = nn_dataset_set_labels_u8(&val, val_labels);
    if (s == NN_OK) {
        nn_fit_options o = nn_fit_defaults();
        o.epochs = j->epochs;
        o.initial_epoch = j->initial_epoch;
        o.order_state = j->resume ? &order : NULL;
        o.batch = BATCH;
        o.shuffle_seed = 3;
        o.validation = &val;
        o.comm = &comm;
        o.shard_mode = j->mode;
        o.shard = SHARD;
        o.on_epoch = job_on_epoch;
        o.user = j;
        s = nn_model_fit(j->m, j->opt, &train, &o, &j->h);
    }
    j->status = s;
    if (s != NN_OK) snprintf(j->msg, sizeof j->msg, "%s", nn_last_error());
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Runs `ranks` ranks of tmpl to the end; jobs[0..ranks) get the results. */
static void run_world(int ranks, const job *tmpl, job *jobs)
{
    world w;
    memset(&w, 0, sizeof w);
    w.size = ranks;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < ranks; r++) {
        jobs[r] = *tmpl;
        jobs[r].w = &w;
        jobs[r].rank = r;
        assert_int_equal(pthread_create(&th[r], NULL, job_run, &jobs[r]), 0);
    }
    for (int r = 0; r < ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < ranks; r++) {
        if (jobs[r].status != NN_OK) fprintf(stderr, "rank %d: %s\n", r, jobs[r].msg);
        assert_int_equal(jobs[r].status, NN_OK);
    }
    /* Every message was received. */
    for (int a = 0; a < ranks; a++)
        for (int b = 0; b < ranks; b++) assert_null(w.head[a][b]);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static void jobs_free(job *jobs, int n)
{
    for (int r = 0; r < n; r++) {
        nn_model_free(jobs[r].m);
        optim_free(jobs[r].opt);
        nn_history_free(&jobs[r].h);
    }
}

static void assert_same_run(const job *a, const job *b)
{
    const nn_model *x = a->m, *y = b->m;
    assert_int_equal(x->n_params, y->n_params);
    assert_memory_equal(x->params, y->params, x->n_params * sizeof(float));
    assert_memory_equal(x->buffers, y->buffers, x->n_buffers * sizeof(float));
    for (int i = 0; i < x->n_layers; i++) assert_true(x->layers[i]->calls == y->layers[i]->calls);
    assert_int_equal(a->h.epochs, b->h.epochs);
    const size_t n = (size_t)a->h.epochs * sizeof(double);
    assert_memory_equal(a->h.train_loss, b->h.train_loss, n);
    assert_memory_equal(a->h.train_accuracy, b->h.train_accuracy, n);
    assert_memory_equal(a->h.val_loss, b->h.val_loss, n);
    assert_memory_equal(a->h.val_accuracy, b->h.val_accuracy, n);
}

/* 1, 2, 3 and 4 ranks: the same bits everywhere. Three epochs of four
 * steps, the last batch of 4 samples is one shard (so ranks 1-3 have none). */
static void test_exact_any_rank_count(void **state)
{
    (void)state;
    const job tmpl = {.mode = NN_SHARD_EXACT, .epochs = 3};
    job one[1], many[MAX_RANKS];
    run_world(1, &tmpl, one);
    /* It learnt something and the moving statistics moved. */
    assert_true(one[0].h.val_accuracy[2] > 0.6);
    assert_true(one[0].h.train_loss[2] < one[0].h.train_loss[0]);
    int moved = 0;
    for (size_t j = 0; j < one[0].m->n_buffers; j++)
        moved |= one[0].m->buffers[j] != 0.0f && one[0].m->buffers[j] != 1.0f;
    assert_true(moved);
    for (int ranks = 2; ranks <= MAX_RANKS; ranks++) {
        run_world(ranks, &tmpl, many);
        for (int r = 0; r < ranks; r++) assert_same_run(&one[0], &many[r]);
        jobs_free(many, ranks);
    }
    /* Validation over ranks is one process's evaluation. */
    nn_dataset val;
    assert_ok(nn_dataset_init_u8(&val, val_images, N_VAL, 3, in_shape, 1.0f / 255, 0));
    assert_ok(nn_dataset_set_labels_u8(&val, val_labels));
    double loss, acc;
    assert_ok(nn_model_evaluate(one[0].m, &val, BATCH, NULL, &loss, &acc));
    assert_memory_equal(&loss, &one[0].h.val_loss[2], sizeof loss);
    assert_memory_equal(&acc, &one[0].h.val_accuracy[2], sizeof acc);
    jobs_free(one, 1);
}

/* Saved after epoch 1 by 2 ranks, resumed by 3 for epochs 2 and 3: the
 * weights of 3 straight epochs on 1 rank, and the same checkpoint bytes. */
static void test_exact_resume_other_rank_count(void **state)
{
    (void)state;
    char first[256], straight[256], resumed[256];
    snprintf(first, sizeof first, "%s", test_path("first.ckpt"));
    snprintf(straight, sizeof straight, "%s", test_path("straight.ckpt"));
    snprintf(resumed, sizeof resumed, "%s", test_path("resumed.ckpt"));
    job a[MAX_RANKS], b[MAX_RANKS], c[1];
    const job t1 = {.mode = NN_SHARD_EXACT, .epochs = 1, .save = first};
    run_world(2, &t1, a);
    const job t2 = {.mode = NN_SHARD_EXACT, .epochs = 3, .initial_epoch = 1, .resume = first,
                    .save = resumed};
    run_world(3, &t2, b);
    const job t3 = {.mode = NN_SHARD_EXACT, .epochs = 3, .save = straight};
    run_world(1, &t3, c);
    assert_memory_equal(b[0].m->params, c[0].m->params, c[0].m->n_params * sizeof(float));
    assert_memory_equal(b[2].m->buffers, c[0].m->buffers, c[0].m->n_buffers * sizeof(float));
    size_t na, nb;
    uint8_t *x = test_read_bytes(resumed, &na), *y = test_read_bytes(straight, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    jobs_free(a, 2);
    jobs_free(b, 3);
    jobs_free(c, 1);
}

/* Fast mode: the same bits twice at 2 ranks, and close to exact mode. */
static void test_fast_mode(void **state)
{
    (void)state;
    const job tf = {.mode = NN_SHARD_FAST, .epochs = 2}, te = {.mode = NN_SHARD_EXACT, .epochs = 2};
    job a[2], b[2], e[2];
    run_world(2, &tf, a);
    run_world(2, &tf, b);
    run_world(2, &te, e);
    assert_same_run(&a[0], &b[0]);
    assert_same_run(&a[0], &a[1]);
    /* Different shards (16 per rank, not 8) and order: not the same bits,
     * but the same training. */
    assert_true(fabs(a[0].h.train_loss[1] - e[0].h.train_loss[1]) < 0.2);
    assert_true(a[0].h.val_accuracy[1] > 0.6);
    jobs_free(a, 2);
    jobs_free(b, 2);
    jobs_free(e, 2);
}

/* Fast mode with its sums started during backward, in buckets of one
 * parameter each (bucket_bytes 1) and in one bucket (the default): the
 * bits of the sums after backward, at 2 and 3 ranks (the stand-in adds
 * element by element in rank order, whatever the message). The sums start
 * from the last layer's parameters down, then the moving statistics; the
 * first before backward reached the first layer, with progress calls in
 * between; no bucket is written after its start (local_wait_all). */
static void test_fast_mode_overlap(void **state)
{
    (void)state;
    for (int ranks = 2; ranks <= 3; ranks++) {
        const job plain = {.mode = NN_SHARD_FAST, .epochs = 2};
        const job each = {.mode = NN_SHARD_FAST, .epochs = 2, .overlap = 1, .bucket_bytes = 1};
        const job one = {.mode = NN_SHARD_FAST, .epochs = 2, .overlap = 1};
        job a[MAX_RANKS], b[MAX_RANKS], c[MAX_RANKS];
        run_world(ranks, &plain, a);
        run_world(ranks, &each, b);
        run_world(ranks, &one, c);
        for (int r = 0; r < ranks; r++) {
            assert_same_run(&a[0], &b[r]);
            assert_same_run(&a[0], &c[r]);
            const nn_model *m = b[r].m;
            const endpoint *e = &b[r].e;
            int k = 0;
            for (int i = m->n_layers - 1; i >= 0; i--)
                for (int q = m->layers[i]->n_params - 1; q >= 0; q--)
                    if (m->layers[i]->params[q].trainable) {
                        assert_true(k < e->n_sizes);
                        assert_int_equal(e->sizes[k++], m->layers[i]->params[q].t->size);
                    }
            assert_int_equal(e->n_sizes, k + 1);
            assert_int_equal(e->sizes[k], m->n_buffers);
            assert_int_equal(e->early, e->steps);
            assert_true(e->progress >= e->steps);
            /* One bucket: it is complete only when backward is. */
            assert_int_equal(c[r].e.n_sizes, 2);
            assert_int_equal(c[r].e.sizes[0], m->n_params);
            assert_int_equal(c[r].e.early, 0);
        }
        jobs_free(a, ranks);
        jobs_free(b, ranks);
        jobs_free(c, ranks);
    }
}

/* ---- one step by hand ---- */

/* One exact step on one rank over a batch of 36 in shards of 8 (four of 8
 * and one of 4), and the same shards computed here one by one (forward,
 * loss seeded with the shard's size, backward), added in the tree order
 * ((g0 + g1) + (g2 + g3)) + g4 and divided by 36: the gradient the step left
 * in m->grads, bit for bit. The left-to-right sum differs for this data,
 * so the test tells the orders apart. */
static void test_exact_tree_order(void **state)
{
    (void)state;
    enum { B = 36, K = 8, S = 5 };
    nn_model *m = test_make_model(spec_plain, 3, in_shape, 9);
    nn_model *h = test_make_model(spec_plain, 3, in_shape, 9);
    optim *opt = optim_sgd_create(0.0f + 1e-3f, 0.0f, 0, 0.0f);
    assert_non_null(opt);
    float *x = malloc((size_t)B * PIX * sizeof *x);
    int labels[B];
    for (int i = 0; i < B * PIX; i++) x[i] = train_images[i] / 255.0f;
    for (int i = 0; i < B; i++) labels[i] = train_labels[i];
    tensor batch;
    memset(&batch, 0, sizeof batch);
    batch.data = x;
    assert_ok(tensor_set_shape(&batch, 4, (int[]){B, SIDE, SIDE, 1}));
    /* The hand-made shards first (on h, which starts equal to m). */
    const size_t P = h->n_params;
    float *g[S];
    const nn_loss loss = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    for (int s = 0; s < S; s++) {
        const int first = s * K, n = B - first < K ? B - first : K;
        for (int i = 0; i < h->n_layers; i++) {
            h->layers[i]->calls = 0;
            h->layers[i]->sample_offset = (uint64_t)first;
        }
        tensor xs;
        memset(&xs, 0, sizeof xs);
        xs.data = x + (size_t)first * PIX;
        assert_ok(tensor_set_shape(&xs, 4, (int[]){n, SIDE, SIDE, 1}));
        nn_graph_reset(nn_model_graph(h));
        nn_model_zero_grad(h);
        tensor *y, *l;
        assert_ok(nn_model_forward(h, &xs, &y, NN_MODE_TRAIN));
        assert_ok(nn_op_loss(nn_model_graph(h), &loss, y, labels + first, NULL, &l, NULL));
        assert_ok(nn_graph_backward_seed(nn_model_graph(h), l, (float)n));
        g[s] = malloc(P * sizeof(float));
        memcpy(g[s], h->grads, P * sizeof(float));
    }
    endpoint e = {.rank = 0};
    const nn_comm comm = {.rank = 0, .size = 1, .ctx = &e, .send = local_send, .recv = local_recv};
    nn_shard_trainer *t = nn_shard_trainer_create(m, &comm, NN_SHARD_EXACT, K, B);
    assert_non_null(t);
    int first, count;
    nn_shard_rows(t, B, &first, &count);
    assert_int_equal(first, 0);
    assert_int_equal(count, B);
    float lm;
    long long right = -1;
    assert_ok(nn_shard_step(t, opt, &batch, &loss, labels, NULL, &lm, &right));
    assert_true(right >= 0 && right <= B);
    assert_true(isfinite(lm) && lm > 0.0f);
    int tree_differs = 0;
    for (size_t j = 0; j < P; j++) {
        const float tree = (((g[0][j] + g[1][j]) + (g[2][j] + g[3][j])) + g[4][j]) / (float)B;
        const float left = ((((g[0][j] + g[1][j]) + g[2][j]) + g[3][j]) + g[4][j]) / (float)B;
        assert_memory_equal(&m->grads[j], &tree, sizeof tree);
        tree_differs |= tree != left;
    }
    assert_true(tree_differs);
    for (int i = 0; i < m->n_layers; i++) assert_true(m->layers[i]->sample_offset == 0);
    nn_shard_trainer_free(t);
    for (int s = 0; s < S; s++) free(g[s]);
    free(x);
    optim_free(opt);
    nn_model_free(m);
    nn_model_free(h);
}

/* One rank, shards of at least the batch: one shard, the whole batch, so
 * the step is nn_model_train_step_loss's, bit for bit (weights, moving
 * statistics, dropout counters, loss, count), over three steps. */
static void test_exact_one_shard_is_plain_step(void **state)
{
    (void)state;
    enum { B = 36 };
    static const int shards[2] = {B, 64};
    const nn_loss loss = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    for (int v = 0; v < 2; v++) {
        nn_model *a = test_make_model(spec, 3, in_shape, 4), *p = test_make_model(spec, 3, in_shape, 4);
        optim *oa = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
        optim *op = optim_adam_create(0.01f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
        endpoint e = {.rank = 0};
        const nn_comm comm = {.rank = 0, .size = 1, .ctx = &e, .send = local_send, .recv = local_recv};
        nn_shard_trainer *t = nn_shard_trainer_create(a, &comm, NN_SHARD_EXACT, shards[v], B);
        assert_non_null(t);
        float x[B * PIX];
        int labels[B];
        for (int step = 0; step < 3; step++) {
            for (int i = 0; i < B * PIX; i++) x[i] = train_images[step * PIX + i] / 255.0f;
            for (int i = 0; i < B; i++) labels[i] = train_labels[step + i];
            tensor batch;
            memset(&batch, 0, sizeof batch);
            batch.data = x;
            assert_ok(tensor_set_shape(&batch, 4, (int[]){B, SIDE, SIDE, 1}));
            float la, lp;
            long long ca;
            int cp;
            assert_ok(nn_shard_step(t, oa, &batch, &loss, labels, NULL, &la, &ca));
            assert_ok(nn_model_train_step_loss(p, op, &batch, &loss, labels, NULL, &lp, &cp));
            assert_memory_equal(&la, &lp, sizeof la);
            assert_int_equal(ca, cp);
        }
        assert_memory_equal(a->params, p->params, a->n_params * sizeof(float));
        assert_memory_equal(a->buffers, p->buffers, a->n_buffers * sizeof(float));
        for (int i = 0; i < a->n_layers; i++) assert_true(a->layers[i]->calls == p->layers[i]->calls);
        nn_shard_trainer_free(t);
        optim_free(oa);
        optim_free(op);
        nn_model_free(a);
        nn_model_free(p);
    }
}

/* ---- batchnorm over the whole batch, against float64 ---- */

enum { RB = 36, RD = 5, RH = 6, RK = 3, RSHARD = 8 };
static const char ref_spec[] = "dense units=6 use_bias=false\n"
                               "batchnorm activation=relu momentum=0.9\n"
                               "dense units=3\n";
/* The parameter block: W1 (D, H), gamma (H), beta (H), W2 (H, K), b2 (K). */
#define REF_W1 0
#define REF_GAMMA (RD * RH)
#define REF_BETA (REF_GAMMA + RH)
#define REF_W2 (REF_BETA + RH)
#define REF_B2 (REF_W2 + RH * RK)
#define REF_P (REF_B2 + RK)

/* The gradients of ref_spec's mean softmax cross-entropy over the batch, in
 * double, with batchnorm's statistics over groups of `group` samples (RB:
 * the whole batch, as full-batch training computes them; RSHARD: each
 * shard's own), and the moving statistics (mean then variance) one step
 * leaves from (0, 1) with momentum 0.9. */
static void ref_step(const float *prm, const float *x, const int *y, int group, double *grad,
                     double *moving)
{
    const double eps = 1e-3, mom = 0.9;
    double z[RB][RH], xh[RB][RH], a[RB][RH], dy[RB][RH], dl[RB][RK], inv[RB][RH];
    memset(grad, 0, REF_P * sizeof *grad);
    for (int b = 0; b < RB; b++)
        for (int h = 0; h < RH; h++) {
            z[b][h] = 0.0;
            for (int d = 0; d < RD; d++) z[b][h] += (double)x[b * RD + d] * prm[REF_W1 + d * RH + h];
        }
    for (int g0 = 0; g0 < RB; g0 += group) {
        const int g1 = g0 + group < RB ? g0 + group : RB, M = g1 - g0;
        for (int h = 0; h < RH; h++) {
            double mean = 0.0, var = 0.0;
            for (int b = g0; b < g1; b++) mean += z[b][h];
            mean /= M;
            for (int b = g0; b < g1; b++) var += (z[b][h] - mean) * (z[b][h] - mean);
            var /= M;
            for (int b = g0; b < g1; b++) {
                inv[b][h] = 1.0 / sqrt(var + eps);
                xh[b][h] = (z[b][h] - mean) * inv[b][h];
                const double v = prm[REF_GAMMA + h] * xh[b][h] + prm[REF_BETA + h];
                a[b][h] = v > 0.0 ? v : 0.0;
            }
            if (g0 == 0) {
                moving[h] = mean * (1.0 - mom);
                moving[RH + h] = mom + var * M / (M - 1) * (1.0 - mom);
            }
        }
    }
    for (int b = 0; b < RB; b++) {
        double lg[RK], mx = -1e300, sum = 0.0;
        for (int k = 0; k < RK; k++) {
            lg[k] = prm[REF_B2 + k];
            for (int h = 0; h < RH; h++) lg[k] += a[b][h] * prm[REF_W2 + h * RK + k];
            mx = lg[k] > mx ? lg[k] : mx;
        }
        for (int k = 0; k < RK; k++) sum += exp(lg[k] - mx);
        for (int k = 0; k < RK; k++) dl[b][k] = (exp(lg[k] - mx) / sum - (k == y[b])) / RB;
    }
    for (int b = 0; b < RB; b++)
        for (int h = 0; h < RH; h++) {
            double da = 0.0;
            for (int k = 0; k < RK; k++) {
                grad[REF_W2 + h * RK + k] += a[b][h] * dl[b][k];
                da += dl[b][k] * prm[REF_W2 + h * RK + k];
            }
            dy[b][h] = a[b][h] > 0.0 ? da : 0.0;
        }
    for (int b = 0; b < RB; b++)
        for (int k = 0; k < RK; k++) grad[REF_B2 + k] += dl[b][k];
    for (int g0 = 0; g0 < RB; g0 += group) {
        const int g1 = g0 + group < RB ? g0 + group : RB, M = g1 - g0;
        for (int h = 0; h < RH; h++) {
            double sdy = 0.0, sdyx = 0.0;
            for (int b = g0; b < g1; b++) {
                sdy += dy[b][h];
                sdyx += dy[b][h] * xh[b][h];
            }
            grad[REF_GAMMA + h] += sdyx;
            grad[REF_BETA + h] += sdy;
            for (int b = g0; b < g1; b++) {
                const double dz = prm[REF_GAMMA + h] * inv[b][h] *
                                  (dy[b][h] - sdy / M - xh[b][h] * sdyx / M);
                for (int d = 0; d < RD; d++) grad[REF_W1 + d * RH + h] += x[b * RD + d] * dz;
            }
        }
    }
}

/* The largest |v[j] - w[j]| over [lo, hi), over the largest |w[j]| there. */
static double ref_rel_err(const double *v, const double *w, int lo, int hi)
{
    double e = 0.0, s = 0.0;
    for (int j = lo; j < hi; j++) {
        e = fabs(v[j] - w[j]) > e ? fabs(v[j] - w[j]) : e;
        s = fabs(w[j]) > s ? fabs(w[j]) : s;
    }
    return e / s;
}

/* Five shards (four of 8, one of 4) on one rank: every gradient and the
 * moving statistics are those of full-batch batchnorm in float64, to
 * float rounding, and far from the ghost-batch (per-shard statistics)
 * values, so the check tells the two apart. The inputs sit away from 0, as
 * later layers' do, so the moments merge about different shifts. */
static void test_exact_batchnorm_whole_batch(void **state)
{
    (void)state;
    const int shape[1] = {RD};
    nn_model *m = test_make_model(ref_spec, 1, shape, 6);
    assert_int_equal(m->n_params, REF_P);
    assert_int_equal(m->n_buffers, 2 * RH);
    float x[RB * RD], prm[REF_P];
    int y[RB];
    for (int i = 0; i < RB * RD; i++) x[i] = (float)(3.0 + sin(0.37 * i) + 0.5 * cos(1.3 * i));
    for (int i = 0; i < RB; i++) y[i] = (i * 7) % RK;
    memcpy(prm, m->params, sizeof prm);
    /* beta away from 0: relu keeps part of every channel. */
    for (int h = 0; h < RH; h++) m->params[REF_BETA + h] = prm[REF_BETA + h] = 0.1f * (h % 3);
    endpoint e = {.rank = 0};
    const nn_comm comm = {.rank = 0, .size = 1, .ctx = &e, .send = local_send, .recv = local_recv};
    nn_shard_trainer *t = nn_shard_trainer_create(m, &comm, NN_SHARD_EXACT, RSHARD, RB);
    assert_non_null(t);
    optim *opt = optim_sgd_create(1e-3f, 0.0f, 0, 0.0f);
    tensor batch;
    memset(&batch, 0, sizeof batch);
    batch.data = x;
    assert_ok(tensor_set_shape(&batch, 2, (int[]){RB, RD}));
    const nn_loss loss = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    assert_ok(nn_shard_step(t, opt, &batch, &loss, y, NULL, NULL, NULL));
    double got[REF_P], ref[REF_P], ghost[REF_P], mov[2 * RH], mov_ghost[2 * RH], got_mov[2 * RH];
    for (int j = 0; j < REF_P; j++) got[j] = m->grads[j];
    for (int j = 0; j < 2 * RH; j++) got_mov[j] = m->buffers[j];
    ref_step(prm, x, y, RB, ref, mov);
    ref_step(prm, x, y, RSHARD, ghost, mov_ghost);
    static const int part[6] = {REF_W1, REF_GAMMA, REF_BETA, REF_W2, REF_B2, REF_P};
    for (int k = 0; k < 5; k++) {
        const double err = ref_rel_err(got, ref, part[k], part[k + 1]);
        const double far = ref_rel_err(ghost, ref, part[k], part[k + 1]);
        if (err > 1e-5) fail_msg("parameter block %d: relative error %g", k, err);
        /* beta's and b2's gradients do not see the statistics. */
        if (k != 2 && k != 4 && far < 1e-3) fail_msg("block %d: ghost batches differ by only %g", k, far);
    }
    assert_true(ref_rel_err(got_mov, mov, 0, RH) < 1e-5);
    assert_true(ref_rel_err(got_mov, mov, RH, 2 * RH) < 1e-5);
    assert_true(ref_rel_err(mov_ghost, mov, 0, 2 * RH) > 1e-3);
    nn_shard_trainer_free(t);
    optim_free(opt);
    nn_model_free(m);
}

/* A forward over rows [o, o + n) with sample_offset o draws the rows of the
 * whole batch's mask: dropout and spatial dropout. */
static void test_dropout_rows_of_batch(void **state)
{
    (void)state;
    static const char *const specs[] = {"dropout rate=0.5 seed=4\n",
                                        "spatial_dropout2d rate=0.5 seed=4\n"};
    const int shape[3] = {3, 3, 8};
    enum { N = 10, O = 6, E = 3 * 3 * 8 };
    for (int k = 0; k < 2; k++) {
        nn_model *m = test_make_model(specs[k], 3, shape, 1);
        float *x = malloc(N * E * sizeof *x), *whole = malloc(N * E * sizeof *x);
        for (int i = 0; i < N * E; i++) x[i] = 1.0f + (float)i;
        tensor t;
        memset(&t, 0, sizeof t);
        t.data = x;
        assert_ok(tensor_set_shape(&t, 4, (int[]){N, 3, 3, 8}));
        tensor *y;
        assert_ok(nn_model_forward(m, &t, &y, NN_MODE_TRAIN));
        memcpy(whole, y->data, N * E * sizeof *x);
        m->layers[0]->calls = 0;
        m->layers[0]->sample_offset = O;
        nn_graph_reset(nn_model_graph(m));
        tensor part;
        memset(&part, 0, sizeof part);
        part.data = x + O * E;
        assert_ok(tensor_set_shape(&part, 4, (int[]){N - O, 3, 3, 8}));
        assert_ok(nn_model_forward(m, &part, &y, NN_MODE_TRAIN));
        assert_memory_equal(y->data, whole + O * E, (N - O) * E * sizeof *x);
        /* Some dropped, some kept, and not those of offset 0. */
        int zeros = 0, kept = 0;
        for (int i = 0; i < (N - O) * E; i++) zeros += y->data[i] == 0.0f, kept += y->data[i] != 0.0f;
        assert_true(zeros > 0 && kept > 0);
        m->layers[0]->calls = 0;
        m->layers[0]->sample_offset = 0;
        nn_graph_reset(nn_model_graph(m));
        assert_ok(nn_model_forward(m, &part, &y, NN_MODE_TRAIN));
        assert_memory_not_equal(y->data, whole + O * E, (N - O) * E * sizeof *x);
        free(x);
        free(whole);
        nn_model_free(m);
    }
}

/* The split: contiguous, rank 0 first, everything covered once. */
static void test_split(void **state)
{
    (void)state;
    for (int n = 0; n <= 9; n++)
        for (int ranks = 1; ranks <= 5; ranks++) {
            int next = 0;
            for (int r = 0; r < ranks; r++) {
                int lo, hi;
                nn_shard_split(n, ranks, r, &lo, &hi);
                assert_int_equal(lo, next);
                assert_true(hi >= lo);
                if (r == 0 && n > 0) assert_true(hi > 0);
                next = hi;
            }
            assert_int_equal(next, n);
        }
}

static void test_errors(void **state)
{
    (void)state;
    nn_model *m = test_make_model(spec, 3, in_shape, 1);
    endpoint e = {.rank = 0};
    nn_comm comm = {.rank = 0, .size = 1, .ctx = &e, .send = local_send, .recv = local_recv};
    assert_null(nn_shard_trainer_create(m, &comm, NN_SHARD_EXACT, 0, 32));
    assert_error_contains("shard must be >= 1");
    assert_null(nn_shard_trainer_create(m, NULL, NN_SHARD_EXACT, 8, 32));
    assert_error_contains("comm");
    comm.size = 2;
    assert_null(nn_shard_trainer_create(m, &comm, NN_SHARD_FAST, 8, 32));
    assert_error_contains("allreduce");
    comm.allreduce_f32 = local_allreduce_f32;
    comm.allreduce_f64 = local_allreduce_f64;
    comm.iallreduce_f32 = local_iallreduce_f32;
    assert_null(nn_shard_trainer_create(m, &comm, NN_SHARD_FAST, 8, 32));
    assert_error_contains("the comm has 1 of iallreduce_f32, progress and wait_all");
    comm.iallreduce_f32 = NULL;
    comm.rank = 2;
    assert_null(nn_shard_trainer_create(m, &comm, NN_SHARD_EXACT, 8, 32));
    assert_error_contains("rank 2 of 2");
    comm.rank = 0;
    comm.size = 1;
    nn_shard_trainer *t = nn_shard_trainer_create(m, &comm, NN_SHARD_EXACT, 8, 32);
    assert_non_null(t);
    optim *opt = optim_sgd_create(0.01f, 0.0f, 0, 0.0f);
    float x[40 * PIX] = {0};
    int labels[40] = {0};
    tensor batch;
    memset(&batch, 0, sizeof batch);
    batch.data = x;
    assert_ok(tensor_set_shape(&batch, 4, (int[]){40, SIDE, SIDE, 1}));
    const nn_loss loss = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    assert_int_equal(nn_shard_step(t, opt, &batch, &loss, labels, NULL, NULL, NULL), NN_ERR_SHAPE);
    assert_error_contains("a batch of 40 samples; the trainer takes 1 to 32");
    nn_shard_trainer_free(t);
    optim_free(opt);
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_dropout_rows_of_batch),
        cmocka_unit_test(test_exact_tree_order),
        cmocka_unit_test(test_exact_one_shard_is_plain_step),
        cmocka_unit_test(test_exact_batchnorm_whole_batch),
        cmocka_unit_test(test_exact_any_rank_count),
        cmocka_unit_test(test_exact_resume_other_rank_count),
        cmocka_unit_test(test_fast_mode),
        cmocka_unit_test(test_fast_mode_overlap),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, test_dir_teardown);
}
