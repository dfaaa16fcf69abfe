/* Data-parallel steps over micro-shards and ranks (see shard.h).
 *
 * A shard's "record" is what it contributes to the step, in one buffer so
 * that one message moves it: the gradient sums of the parameters, then its
 * changes of the moving statistics times its sample count (floats), then
 * its loss sum and correct count (doubles). Records add element by element,
 * so a sum of records is a sum of each part.
 * Reading order: nn_shard_step, then shard_run (one shard), shard_tree (the
 * fixed order of the sums), shard_gather and shard_exchange (who sends what
 * to rank 0), then shard_lockstep (a model with batchnorm: the rank's
 * shards as coroutines that meet inside the layers); fast mode's overlap
 * last (shard_buckets_plan, shard_param_done, shard_fast_overlap).
 * Omitted: a reduction tree among the ranks themselves (rank 0 receives
 * every subtree: fine for a few ranks, see the README's cost model), and
 * overlap of communication with backward in exact mode.
 */
#include "nn/shard.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "tensor/ops.h"

/* One shard of a lockstep step (shard_lockstep): a coroutine with its own
 * stack and tape, and its own copy of what the layers change as they run. */
typedef struct shard_co {
    ucontext_t uc;
    void *stack;           /* SHARD_STACK bytes */
    nn_graph *graph;       /* its tape: the model's for the first, else own */
    nn_graph *own;         /* kept across steps */
    uint64_t *calls;       /* the layers' call counters as it left them */
    float *buffers;        /* the moving statistics as it left them */
    unsigned long pass_generation; /* the model's pass state (model.h) for its graph */
    int pass_alone, pass_taped_training;
    int shard, slot, first, n; /* its index in the batch, its record, its rows */
    int state;             /* SHARD_CO_RUN, SHARD_CO_MEET or SHARD_CO_DONE */
    nn_status status;      /* once done */
    const nn_layer *at;    /* at a meeting: the layer, its sums, how they merge */
    double *sums;
    size_t n_sums;
    nn_meet_combine combine;
} shard_co;

enum { SHARD_CO_RUN, SHARD_CO_MEET, SHARD_CO_DONE };

/* A shard's stack: what a pass needs (the layers' kernels keep small
 * arrays on it), as a thread's default; only the touched pages are
 * memory. */
#define SHARD_STACK ((size_t)8 << 20)

/* Fast mode: gradients m->grads[lo, hi) of `params` whole parameters,
 * summed over ranks in one call once backward has finished them all. */
typedef struct shard_bucket {
    size_t lo, hi;
    int params, pending;
} shard_bucket;

struct nn_shard_trainer {
    nn_model *m;
    const nn_comm *c;
    nn_shard_mode mode;
    int shard, max_batch;
    size_t nf;            /* floats per record: parameters, then moving statistics */
    size_t rec_bytes;     /* nf floats (padded to 8 bytes), then 2 doubles */
    int slots;            /* records held: rank 0 one per shard, others their own */
    unsigned char *recs;  /* slots * rec_bytes */
    int *given;           /* given[k]: slot k holds the tree node of this size, or 0 */
    float *saved;         /* the moving statistics when the step began */
    uint64_t *calls;      /* the layers' call counters after the step's forward */
    /* Lockstep (a layer with whole_batch): */
    int lockstep;
    nn_batch_meet meet;   /* every layer's l->meet during the step */
    shard_co *co;         /* n_co: this rank's most shards in a step */
    int n_co, cur;        /* cur: the shard running */
    ucontext_t main_uc;   /* nn_shard_step's, while a shard runs */
    struct {
        tensor *x;
        const nn_loss *loss;
        const int *labels;
        const tensor *targets;
    } step;
    tensor **gparams;     /* the trainable parameters, their grads at goff in a record */
    size_t *goff;
    int n_gparams;
    double *meet_recs;    /* slots * meet_cap: the partial sums of a meeting */
    size_t meet_cap;
    int *meet_given;
    /* Fast mode's overlap (the comm's non-blocking sums): */
    int overlap;
    shard_bucket *buckets; /* n_buckets, from the end of m->grads down */
    int n_buckets, started;
};

void nn_shard_split(int n, int ranks, int rank, int *lo, int *hi)
{
    *lo = (int)(((long long)rank * n + ranks - 1) / ranks);
    *hi = (int)(((long long)(rank + 1) * n + ranks - 1) / ranks);
}

/* ---- moving bytes ---- */

static nn_status shard_comm_fail(const nn_comm *c, const char *what, int peer)
{
    char msg[300];
    snprintf(msg, sizeof msg, "%s", nn_last_error());
    if (peer >= 0)
        return nn_error(NN_ERR_IO, "rank %d: %s rank %d failed%s%s", c->rank, what, peer,
                        msg[0] ? ": " : "", msg);
    return nn_error(NN_ERR_IO, "rank %d: %s failed%s%s", c->rank, what, msg[0] ? ": " : "", msg);
}

static nn_status shard_send(const nn_comm *c, int to, const void *buf, size_t bytes)
{
    nn_clear_error();
    return c->send(c->ctx, to, buf, bytes) ? shard_comm_fail(c, "a send to", to) : NN_OK;
}

static nn_status shard_recv(const nn_comm *c, int from, void *buf, size_t bytes)
{
    nn_clear_error();
    return c->recv(c->ctx, from, buf, bytes) ? shard_comm_fail(c, "a receive from", from) : NN_OK;
}

nn_status nn_comm_bcast(const nn_comm *c, void *buf, size_t bytes)
{
    if (c->size == 1 || bytes == 0) return NN_OK;
    if (c->bcast) {
        nn_clear_error();
        return c->bcast(c->ctx, buf, bytes) ? shard_comm_fail(c, "a broadcast", -1) : NN_OK;
    }
    if (c->rank != 0) return shard_recv(c, 0, buf, bytes);
    for (int r = 1; r < c->size; r++) NN_TRY(shard_send(c, r, buf, bytes));
    return NN_OK;
}

nn_status nn_comm_share(const nn_comm *c, void *buf, size_t unit, int n)
{
    unsigned char *p = buf;
    int lo, hi;
    if (c->rank != 0) {
        nn_shard_split(n, c->size, c->rank, &lo, &hi);
        if (hi > lo) NN_TRY(shard_send(c, 0, p + (size_t)lo * unit, (size_t)(hi - lo) * unit));
    } else {
        for (int r = 1; r < c->size; r++) {
            nn_shard_split(n, c->size, r, &lo, &hi);
            if (hi > lo) NN_TRY(shard_recv(c, r, p + (size_t)lo * unit, (size_t)(hi - lo) * unit));
        }
    }
    return nn_comm_bcast(c, buf, (size_t)n * unit);
}

nn_status nn_comm_barrier(const nn_comm *c)
{
    unsigned char token = 1;
    if (c->size == 1) return NN_OK;
    if (c->rank != 0) NN_TRY(shard_send(c, 0, &token, 1));
    else
        for (int r = 1; r < c->size; r++) NN_TRY(shard_recv(c, r, &token, 1));
    return nn_comm_bcast(c, &token, 1);
}

/* ---- the trainer ---- */

void nn_shard_trainer_free(nn_shard_trainer *t)
{
    if (!t) return;
    for (int k = 0; t->co && k < t->n_co; k++) {
        free(t->co[k].stack);
        nn_graph_free(t->co[k].own);
        free(t->co[k].calls);
        free(t->co[k].buffers);
    }
    free(t->co);
    free(t->gparams);
    free(t->goff);
    free(t->meet_recs);
    free(t->meet_given);
    free(t->buckets);
    tensor_aligned_free(t->recs);
    free(t->given);
    free(t->saved);
    free(t->calls);
    free(t);
}

static void shard_meet(nn_batch_meet *bm, const nn_layer *l, double *sums, size_t n,
                       nn_meet_combine combine);
static nn_status shard_buckets_plan(nn_shard_trainer *t);

nn_shard_trainer *nn_shard_trainer_create(nn_model *m, const nn_comm *comm, nn_shard_mode mode,
                                          int shard, int max_batch)
{
    static const char fn[] = "nn_shard_trainer_create";
    if (!m || !comm) {
        nn_error(NN_ERR_ARG, "%s: %s is NULL", fn, !m ? "m (the model)" : "comm");
        return NULL;
    }
    if (!m->built) {
        nn_error(NN_ERR_STATE, "%s: build the model first", fn);
        return NULL;
    }
    if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size || !comm->send || !comm->recv) {
        nn_error(NN_ERR_ARG, "%s: comm has rank %d of %d%s", fn, comm->rank, comm->size,
                 !comm->send || !comm->recv ? " and no send or receive function" : "");
        return NULL;
    }
    if (mode != NN_SHARD_EXACT && mode != NN_SHARD_FAST) {
        nn_error(NN_ERR_ARG, "%s: mode must be NN_SHARD_EXACT or NN_SHARD_FAST, but got %d", fn,
                 (int)mode);
        return NULL;
    }
    if (mode == NN_SHARD_FAST && comm->size > 1 && (!comm->allreduce_f32 || !comm->allreduce_f64)) {
        nn_error(NN_ERR_ARG, "%s: fast mode needs the comm's allreduce_f32 and allreduce_f64", fn);
        return NULL;
    }
    const int nonblocking = !!comm->iallreduce_f32 + !!comm->progress + !!comm->wait_all;
    if (nonblocking != 0 && nonblocking != 3) {
        nn_error(NN_ERR_ARG, "%s: the comm has %d of iallreduce_f32, progress and wait_all; "
                 "overlap needs all three or none", fn, nonblocking);
        return NULL;
    }
    if (mode == NN_SHARD_EXACT && shard < 1) {
        nn_error(NN_ERR_ARG, "%s: shard must be >= 1, but got %d", fn, shard);
        return NULL;
    }
    if (max_batch < 1) {
        nn_error(NN_ERR_ARG, "%s: max_batch must be >= 1, but got %d", fn, max_batch);
        return NULL;
    }
    nn_shard_trainer *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->m = m;
    t->c = comm;
    t->mode = mode;
    t->shard = mode == NN_SHARD_EXACT ? shard : max_batch;
    t->max_batch = max_batch;
    t->nf = m->n_params + m->n_buffers;
    t->rec_bytes = (t->nf * sizeof(float) + 7) / 8 * 8 + 2 * sizeof(double);
    const int shards = mode == NN_SHARD_EXACT ? (max_batch + shard - 1) / shard : 1;
    /* A rank never holds more than ceil(S / R) of S shards, for any S up
     * to the most a batch has. */
    const int most = (shards + comm->size - 1) / comm->size;
    t->slots = comm->rank == 0 ? shards : most;
    t->recs = tensor_aligned_alloc((size_t)t->slots * t->rec_bytes);
    t->given = calloc((size_t)t->slots, sizeof *t->given);
    t->saved = malloc((m->n_buffers ? m->n_buffers : 1) * sizeof *t->saved);
    t->calls = calloc((size_t)(m->n_layers ? m->n_layers : 1), sizeof *t->calls);
    if (!t->recs || !t->given || !t->saved || !t->calls) goto oom;
    for (int i = 0; i < m->n_layers; i++) t->lockstep |= m->layers[i]->type->whole_batch;
    t->lockstep &= mode == NN_SHARD_EXACT;
    if (t->lockstep) {
        /* The coroutines' stacks and tapes come with the first step that
         * needs them (shard_co_reserve). */
        t->meet.meet = shard_meet;
        t->n_co = most;
        t->co = calloc((size_t)most, sizeof *t->co);
        for (int i = 0; i < m->n_layers; i++)
            for (int k = 0; k < m->layers[i]->n_params; k++) t->n_gparams += m->layers[i]->params[k].trainable;
        t->gparams = malloc((size_t)(t->n_gparams ? t->n_gparams : 1) * sizeof *t->gparams);
        t->goff = malloc((size_t)(t->n_gparams ? t->n_gparams : 1) * sizeof *t->goff);
        t->meet_given = calloc((size_t)t->slots, sizeof *t->meet_given);
        if (!t->co || !t->gparams || !t->goff || !t->meet_given) goto oom;
        int j = 0;
        for (int i = 0; i < m->n_layers; i++)
            for (int k = 0; k < m->layers[i]->n_params; k++)
                if (m->layers[i]->params[k].trainable) {
                    t->gparams[j] = m->layers[i]->params[k].t;
                    t->goff[j] = (size_t)(t->gparams[j]->grad - m->grads);
                    j++;
                }
    }
    t->overlap = mode == NN_SHARD_FAST && comm->size > 1 && nonblocking == 3;
    if (t->overlap && shard_buckets_plan(t) != NN_OK) {
        nn_shard_trainer_free(t);
        return NULL;
    }
    return t;
oom:
    nn_error(NN_ERR_MEMORY, "%s: out of memory for %d records of %zu values", fn,
             t ? t->slots : 0, t ? t->nf : (size_t)0);
    nn_shard_trainer_free(t);
    return NULL;
}

/* Exact mode: shards; fast mode: one part per rank. */
static int shard_count(const nn_shard_trainer *t, int b)
{
    return t->mode == NN_SHARD_EXACT ? (b + t->shard - 1) / t->shard : t->c->size;
}

void nn_shard_rows(const nn_shard_trainer *t, int b, int *first, int *count)
{
    int lo, hi;
    if (t->mode == NN_SHARD_FAST) {
        nn_shard_split(b, t->c->size, t->c->rank, &lo, &hi);
    } else {
        nn_shard_split(shard_count(t, b), t->c->size, t->c->rank, &lo, &hi);
        lo *= t->shard;
        hi = hi * t->shard < b ? hi * t->shard : b;
    }
    *first = lo;
    *count = hi > lo ? hi - lo : 0;
}

static float *shard_rec(const nn_shard_trainer *t, int slot)
{
    return (float *)(t->recs + (size_t)slot * t->rec_bytes);
}

static double *shard_rec_tail(const nn_shard_trainer *t, int slot)
{
    return (double *)(t->recs + (size_t)(slot + 1) * t->rec_bytes - 2 * sizeof(double));
}

/* Slots of partial sums that the fixed tree combines: the records, or the
 * sums of one meeting (a layer's, in a lockstep step). */
typedef struct shard_pool {
    nn_shard_trainer *t;
    unsigned char *base;
    size_t bytes;      /* per slot */
    int *given;        /* given[k]: slot k holds the tree node of this size, or 0 */
    void (*add)(const struct shard_pool *p, int dst, int src);
    size_t n;          /* a meeting's doubles per slot, and their combination */
    nn_meet_combine combine;
} shard_pool;

/* Record dst += record src, element by element (the same bits for any
 * thread count). */
static void shard_add(const shard_pool *p, int dst, int src)
{
    const nn_shard_trainer *t = p->t;
    float *a = shard_rec(t, dst);
    const float *b = shard_rec(t, src);
    const long n = (long)t->nf;
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (long j = 0; j < n; j++) a[j] += b[j];
    double *ad = shard_rec_tail(t, dst);
    const double *bd = shard_rec_tail(t, src);
    ad[0] += bd[0];
    ad[1] += bd[1];
}

/* A meeting's partials: dst (+)= src, the layer's combination or a sum. */
static void shard_meet_add(const shard_pool *p, int dst, int src)
{
    double *a = (double *)(p->base + (size_t)dst * p->bytes);
    const double *b = (const double *)(p->base + (size_t)src * p->bytes);
    if (p->combine) p->combine(a, b, p->n);
    else
        for (size_t j = 0; j < p->n; j++) a[j] += b[j];
}

/* xs (and ts) = rows [first, first + n) of x (and of targets), as views. */
static nn_status shard_views(const tensor *x, const tensor *targets, int first, int n, tensor *xs,
                             tensor *ts)
{
    int shape[TENSOR_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = n;
    memset(xs, 0, sizeof *xs);
    xs->data = x->data + (size_t)first * (x->size / (size_t)x->shape[0]);
    NN_TRY(tensor_set_shape(xs, x->rank, shape));
    if (targets) {
        memcpy(shape, targets->shape, sizeof shape);
        shape[0] = n;
        memset(ts, 0, sizeof *ts);
        ts->data = targets->data + (size_t)first * (targets->size / (size_t)targets->shape[0]);
        NN_TRY(tensor_set_shape(ts, targets->rank, shape));
    }
    return NN_OK;
}

/* Rows [first, first + n) of the batch as one pass, into record `slot`: the
 * gradients of the loss times n (sums over the rows), the moving statistics'
 * changes times n, the loss sum and the correct count. The moving
 * statistics are put back as the step found them, and the layers' call
 * counters too (kept in t->calls as the forward left them). With `whole`
 * (exact mode, one shard: the whole batch) the record holds the plain
 * step's numbers instead: the gradients of the mean loss and the moving
 * statistics themselves. */
static nn_status shard_run(nn_shard_trainer *t, int slot, tensor *x, const nn_loss *loss,
                           const int *labels, const tensor *targets, int first, int n, int whole)
{
    nn_model *m = t->m;
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->sample_offset = (uint64_t)first;
    tensor xs, ts;
    NN_TRY(shard_views(x, targets, first, n, &xs, &ts));
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *y, *l;
    int correct = 0;
    NN_TRY(nn_model_forward(m, &xs, &y, NN_MODE_TRAIN));
    NN_TRY(nn_op_loss(m->graph, loss, y, labels ? labels + first : NULL, targets ? &ts : NULL, &l,
                      &correct));
    NN_TRY(nn_graph_backward_seed(m->graph, l, whole ? 1.0f : (float)n));
    float *r = shard_rec(t, slot);
    /* With overlap the buckets took the gradients into the record already,
     * and the transport holds them now. */
    if (!t->overlap) memcpy(r, m->grads, m->n_params * sizeof *r);
    const float w = (float)n;
    for (size_t j = 0; j < m->n_buffers; j++) {
        r[m->n_params + j] = whole ? m->buffers[j] : (m->buffers[j] - t->saved[j]) * w;
        m->buffers[j] = t->saved[j];
    }
    double *d = shard_rec_tail(t, slot);
    d[0] = (double)l->data[0] * n;
    d[1] = correct;
    for (int i = 0; i < m->n_layers; i++) {
        t->calls[i] = m->layers[i]->calls;
        m->layers[i]->sample_offset = 0;
    }
    return NN_OK;
}

/* Node (i, s) of the fixed tree over shards [0, S), the sum of shards
 * [i, min(i + s, S)), into the slot of shard i (lo: the first shard held):
 *     v(i, 2s) = v(i, s) + v(i + s, s), or v(i, s) when i + s >= S.
 * A slot that already holds the node (given) is taken as it is: a computed
 * leaf, or a subtree another rank sent. */
static void shard_tree(const shard_pool *p, int i, int s, int S, int lo)
{
    if (p->given[i - lo] == s) return;
    NN_ASSERT(s > 1);
    const int h = s / 2;
    shard_tree(p, i, h, S, lo);
    if (i + h < S) {
        shard_tree(p, i + h, h, S, lo);
        p->add(p, i - lo, i + h - lo);
    }
    p->given[i - lo] = s;
}

/* The largest tree node starting at i inside [i, hi). */
static int shard_block(int i, int hi)
{
    int s = 1;
    while (i % (2 * s) == 0 && i + 2 * s <= hi) s *= 2;
    return s;
}

/* Every rank: its shards' subtrees; rank 0 receives the other ranks' (in
 * the order each sent them) and adds the tree's top, the total, into its
 * slot 0. */
static nn_status shard_gather(const shard_pool *p, const nn_comm *c, int S, int lo, int hi)
{
    for (int i = lo; i < hi; i += shard_block(i, hi)) {
        const int s = shard_block(i, hi);
        shard_tree(p, i, s, S, lo);
        if (c->rank != 0) NN_TRY(shard_send(c, 0, p->base + (size_t)(i - lo) * p->bytes, p->bytes));
    }
    if (c->rank == 0) {
        for (int r = 1; r < c->size; r++) {
            int rlo, rhi;
            nn_shard_split(S, c->size, r, &rlo, &rhi);
            for (int i = rlo; i < rhi; i += shard_block(i, rhi)) {
                NN_TRY(shard_recv(c, r, p->base + (size_t)i * p->bytes, p->bytes));
                p->given[i] = shard_block(i, rhi);
            }
        }
        int top = 1;
        while (top < S) top *= 2;
        shard_tree(p, 0, top, S, 0);
    }
    return NN_OK;
}

/* The records' total from rank 0's slot 0 to every rank's slot 0, and the
 * layers' call counters with it. */
static nn_status shard_exchange(nn_shard_trainer *t, int S, int lo, int hi)
{
    const shard_pool p = {t, t->recs, t->rec_bytes, t->given, shard_add, 0, NULL};
    NN_TRY(shard_gather(&p, t->c, S, lo, hi));
    NN_TRY(nn_comm_bcast(t->c, t->recs, t->rec_bytes));
    return nn_comm_bcast(t->c, t->calls, (size_t)t->m->n_layers * sizeof *t->calls);
}

/* ---- lockstep: the shards of a model whose layers meet ----
 *
 * A layer with whole_batch (batchnorm) needs the whole batch's sums in the
 * middle of its forward and of its backward, so a rank's shards cannot run
 * one after another: each runs as a coroutine (ucontext) on this thread,
 * with its own stack and tape, and a layer's l->meet->meet (shard_meet)
 * switches back to shard_lockstep. When all of the rank's shards wait at
 * the same meeting, their sums go through the fixed tree (with the other
 * ranks' through rank 0, as the records do), every shard gets the total,
 * and each is resumed in turn to its next meeting or its end. Switches
 * happen only there, outside any OpenMP region, so the one thread keeps its
 * one OpenMP team. What the layers change as they run (call counters,
 * moving statistics, the model's tape and pass state, the parameters'
 * gradient pointers, which lead into the shard's record) is swapped with
 * the running shard. */

static _Thread_local nn_shard_trainer *shard_running;

static void shard_co_enter(nn_shard_trainer *t, int k)
{
    nn_model *m = t->m;
    shard_co *co = &t->co[k];
    m->graph = co->graph;
    m->pass_generation = co->pass_generation;
    m->pass_alone = co->pass_alone;
    m->pass_taped_training = co->pass_taped_training;
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i]->calls = co->calls[i];
        m->layers[i]->sample_offset = (uint64_t)co->first;
    }
    memcpy(m->buffers, co->buffers, m->n_buffers * sizeof *m->buffers);
    float *r = shard_rec(t, co->slot);
    for (int j = 0; j < t->n_gparams; j++) t->gparams[j]->grad = r + t->goff[j];
    t->cur = k;
    shard_running = t;
}

static void shard_co_leave(nn_shard_trainer *t, int k)
{
    nn_model *m = t->m;
    shard_co *co = &t->co[k];
    co->pass_generation = m->pass_generation;
    co->pass_alone = m->pass_alone;
    co->pass_taped_training = m->pass_taped_training;
    for (int i = 0; i < m->n_layers; i++) co->calls[i] = m->layers[i]->calls;
    memcpy(co->buffers, m->buffers, m->n_buffers * sizeof *m->buffers);
}

/* The layers' meeting point: note where the sums are and switch back. */
static void shard_meet(nn_batch_meet *bm, const nn_layer *l, double *sums, size_t n,
                       nn_meet_combine combine)
{
    nn_shard_trainer *t = (nn_shard_trainer *)((char *)bm - offsetof(nn_shard_trainer, meet));
    shard_co *co = &t->co[t->cur];
    co->at = l;
    co->sums = sums;
    co->n_sums = n;
    co->combine = combine;
    co->state = SHARD_CO_MEET;
    const int rc = swapcontext(&co->uc, &t->main_uc);
    NN_ASSERT(rc == 0);
}

/* A shard's pass, on its stack: forward, loss, backward into its record
 * (its gradients, through the swapped pointers), loss sum and count. */
static nn_status shard_co_pass(nn_shard_trainer *t, const shard_co *co)
{
    nn_model *m = t->m;
    tensor xs, ts, *y, *l;
    int correct = 0;
    NN_TRY(shard_views(t->step.x, t->step.targets, co->first, co->n, &xs, &ts));
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    NN_TRY(nn_model_forward(m, &xs, &y, NN_MODE_TRAIN));
    NN_TRY(nn_op_loss(m->graph, t->step.loss, y, t->step.labels ? t->step.labels + co->first : NULL,
                      t->step.targets ? &ts : NULL, &l, &correct));
    NN_TRY(nn_graph_backward_seed(m->graph, l, (float)co->n));
    double *d = shard_rec_tail(t, co->slot);
    d[0] = (double)l->data[0] * co->n;
    d[1] = correct;
    return NN_OK;
}

/* The coroutine's body; returning resumes main_uc (uc_link). */
static void shard_co_main(void)
{
    nn_shard_trainer *t = shard_running;
    shard_co *co = &t->co[t->cur];
    co->status = shard_co_pass(t, co);
    co->state = SHARD_CO_DONE;
}

/* Stacks, tapes and copies for the first n coroutines; the first runs on
 * the model's tape, which a step without lockstep uses too. */
static nn_status shard_co_reserve(nn_shard_trainer *t, int n)
{
    const nn_model *m = t->m;
    NN_ASSERT(n <= t->n_co);
    for (int k = 0; k < n; k++) {
        shard_co *co = &t->co[k];
        if (!co->stack) co->stack = malloc(SHARD_STACK);
        if (!co->own && k > 0) co->own = nn_graph_create(0);
        co->graph = k > 0 ? co->own : m->graph;
        if (!co->calls) co->calls = malloc((size_t)(m->n_layers ? m->n_layers : 1) * sizeof *co->calls);
        if (!co->buffers) co->buffers = malloc((m->n_buffers ? m->n_buffers : 1) * sizeof *co->buffers);
        if (!co->stack || !co->graph || !co->calls || !co->buffers)
            return nn_error(NN_ERR_MEMORY, "nn_shard_step: out of memory for shard %d's stack "
                            "and tape", k);
    }
    return NN_OK;
}

/* All of the rank's shards wait at one meeting: their sums through the
 * tree and rank 0, the total to every shard. */
static nn_status shard_meet_exchange(nn_shard_trainer *t, int S, int lo, int hi)
{
    const nn_comm *c = t->c;
    const int n = hi - lo;
    const shard_co *a = &t->co[0];
    for (int k = 1; k < n; k++) {
        const shard_co *o = &t->co[k];
        if (o->at != a->at || o->n_sums != a->n_sums || o->combine != a->combine)
            return nn_error(NN_ERR_STATE, "nn_shard_step: rank %d: shard %d meets in %s, shard %d "
                            "in %s", c->rank, a->shard, a->at->name, o->shard, o->at->name);
    }
    if (a->n_sums > t->meet_cap) {
        double *p = realloc(t->meet_recs, (size_t)t->slots * a->n_sums * sizeof *p);
        if (!p)
            return nn_error(NN_ERR_MEMORY, "nn_shard_step: out of memory for %s's sums", a->at->name);
        t->meet_recs = p;
        t->meet_cap = a->n_sums;
    }
    memset(t->meet_given, 0, (size_t)t->slots * sizeof *t->meet_given);
    const shard_pool p = {t, (unsigned char *)t->meet_recs, a->n_sums * sizeof(double),
                          t->meet_given, shard_meet_add, a->n_sums, a->combine};
    for (int k = 0; k < n; k++) {
        memcpy(p.base + (size_t)k * p.bytes, t->co[k].sums, p.bytes);
        t->meet_given[k] = 1;
    }
    NN_TRY(shard_gather(&p, c, S, lo, hi));
    if (c->rank == 0) {
        for (int r = 1; r < c->size; r++) {
            int rlo, rhi;
            nn_shard_split(S, c->size, r, &rlo, &rhi);
            if (rhi > rlo) NN_TRY(shard_send(c, r, p.base, p.bytes));
        }
    } else {
        NN_TRY(shard_recv(c, 0, p.base, p.bytes));
    }
    for (int k = 0; k < n; k++) memcpy(t->co[k].sums, p.base, p.bytes);
    return NN_OK;
}

/* Shards [lo, hi) of S (hi > lo) in lockstep, into records 0.. hi-lo-1:
 * the gradient sums, the loss sums and counts as shard_run leaves them; the
 * moving statistics, the same in every shard (each updated them once from
 * the whole batch's), as values in shard 0's record (zeros elsewhere); the
 * call counters in t->calls. On return the model is as the step found it,
 * but for its moving statistics, call counters and tape. */
static nn_status shard_lockstep(nn_shard_trainer *t, int S, int lo, int hi, int b,
                                const uint64_t *calls0)
{
    nn_model *m = t->m;
    const int n = hi - lo;
    NN_TRY(shard_co_reserve(t, n));
    for (int k = 0; k < n; k++) {
        shard_co *co = &t->co[k];
        co->shard = lo + k;
        co->slot = k;
        co->first = co->shard * t->shard;
        co->n = b - co->first < t->shard ? b - co->first : t->shard;
        memcpy(co->calls, calls0, (size_t)m->n_layers * sizeof *co->calls);
        memcpy(co->buffers, t->saved, m->n_buffers * sizeof *co->buffers);
        co->pass_generation = 0;
        co->pass_alone = co->pass_taped_training = 0;
        co->state = SHARD_CO_RUN;
        memset(shard_rec(t, k), 0, t->rec_bytes);
        if (getcontext(&co->uc))
            return nn_error(NN_ERR_STATE, "nn_shard_step: getcontext failed for shard %d", co->shard);
        co->uc.uc_stack.ss_sp = co->stack;
        co->uc.uc_stack.ss_size = SHARD_STACK;
        co->uc.uc_link = &t->main_uc;
        makecontext(&co->uc, shard_co_main, 0);
    }
    nn_graph *graph = m->graph;
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->meet = &t->meet;
    nn_status s = NN_OK;
    for (;;) {
        int done = 0;
        for (int k = 0; k < n && s == NN_OK; k++) {
            shard_co *co = &t->co[k];
            if (co->state != SHARD_CO_DONE) {
                shard_co_enter(t, k);
                co->state = SHARD_CO_RUN;
                const int rc = swapcontext(&t->main_uc, &co->uc);
                NN_ASSERT(rc == 0);
                shard_co_leave(t, k);
                if (co->state == SHARD_CO_DONE) s = co->status;
            }
            done += co->state == SHARD_CO_DONE;
        }
        if (s != NN_OK || done == n) break;
        if (done) {
            s = nn_error(NN_ERR_STATE, "nn_shard_step: rank %d: some shards ended while others "
                         "wait in %s", t->c->rank, t->co[n - 1].at ? t->co[n - 1].at->name : "?");
            break;
        }
        s = shard_meet_exchange(t, S, lo, hi);
        if (s != NN_OK) break;
    }
    /* A shard left waiting after an error is dropped: the next step makes
     * its context anew and resets its tape. The model keeps its graph with
     * the first shard's tape in it, as after a step without lockstep. */
    m->graph = graph;
    m->pass_generation = t->co[0].pass_generation;
    m->pass_alone = t->co[0].pass_alone;
    m->pass_taped_training = t->co[0].pass_taped_training;
    for (int j = 0; j < t->n_gparams; j++) t->gparams[j]->grad = m->grads + t->goff[j];
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i]->meet = NULL;
        m->layers[i]->sample_offset = 0;
    }
    if (s != NN_OK) return s;
    memcpy(t->calls, t->co[0].calls, (size_t)m->n_layers * sizeof *t->calls);
    if (lo == 0) memcpy(shard_rec(t, 0) + m->n_params, t->co[0].buffers, m->n_buffers * sizeof(float));
    return NN_OK;
}

/* ---- fast mode's overlap ----
 *
 * The buckets, planned once from the model: parameters from the last
 * layer's last to the first layer's first, which is m->grads from its end
 * down (build lays the layers' parameters out in order) and the order in
 * which backward finishes them (reverse order of first use, tensor/graph.h); a
 * bucket closes once it holds bucket_bytes. Which bucket a parameter is in
 * depends on the model alone, so every rank starts the same sums. */
static nn_status shard_buckets_plan(nn_shard_trainer *t)
{
    const nn_model *m = t->m;
    const size_t cap = t->c->bucket_bytes ? t->c->bucket_bytes : NN_SHARD_BUCKET_BYTES;
    int n = 0;
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i]->n_params; k++) n += m->layers[i]->params[k].trainable;
    t->buckets = calloc((size_t)(n ? n : 1), sizeof *t->buckets);
    if (!t->buckets)
        return nn_error(NN_ERR_MEMORY, "nn_shard_trainer_create: out of memory for %d buckets", n);
    shard_bucket *b = NULL;
    size_t next = m->n_params; /* where the next bucket (going down) ends */
    for (int i = m->n_layers - 1; i >= 0; i--)
        for (int k = m->layers[i]->n_params - 1; k >= 0; k--) {
            const nn_param *p = &m->layers[i]->params[k];
            if (!p->trainable) continue;
            const size_t lo = (size_t)(p->t->grad - m->grads);
            NN_ASSERT(lo + p->t->size == next);
            if (!b) {
                b = &t->buckets[t->n_buckets++];
                b->hi = next;
            }
            b->lo = next = lo;
            b->params++;
            if ((b->hi - b->lo) * sizeof(float) >= cap) b = NULL;
        }
    return NN_OK;
}

/* Starts the sums of the complete buckets that come next in bucket order
 * (every bucket with `all`), each first copied from m->grads into record 0
 * (`copy`; a rank without rows sends its zeroed record). */
static nn_status shard_buckets_start(nn_shard_trainer *t, int all, int copy)
{
    const nn_comm *c = t->c;
    float *r = shard_rec(t, 0);
    while (t->started < t->n_buckets && (all || t->buckets[t->started].pending == 0)) {
        const shard_bucket *b = &t->buckets[t->started++];
        if (copy) memcpy(r + b->lo, t->m->grads + b->lo, (b->hi - b->lo) * sizeof *r);
        nn_clear_error();
        if (c->iallreduce_f32(c->ctx, r + b->lo, b->hi - b->lo))
            return shard_comm_fail(c, "starting an allreduce", -1);
    }
    return NN_OK;
}

/* The parameter hook: p's gradient is final. Its bucket has one parameter
 * less to wait for; the started sums get a turn to advance. */
static nn_status shard_param_done(void *ctx, tensor *p)
{
    nn_shard_trainer *t = ctx;
    const nn_model *m = t->m;
    if (p->grad < m->grads || p->grad >= m->grads + m->n_params) return NN_OK;
    const size_t off = (size_t)(p->grad - m->grads);
    for (int k = 0; k < t->n_buckets; k++)
        if (off >= t->buckets[k].lo && off < t->buckets[k].hi) {
            t->buckets[k].pending--;
            break;
        }
    NN_TRY(shard_buckets_start(t, 0, 1));
    const nn_comm *c = t->c;
    nn_clear_error();
    if (t->started && c->progress(c->ctx)) return shard_comm_fail(c, "an allreduce", -1);
    return NN_OK;
}

/* Fast mode with overlap: this rank's rows as one pass whose backward
 * starts the buckets' sums as it finishes them, then what is left (buckets
 * of parameters no node read, the moving statistics), the wait, and the
 * loss and count; record 0 then holds the sums, as without overlap. */
static nn_status shard_fast_overlap(nn_shard_trainer *t, tensor *x, const nn_loss *loss,
                                    const int *labels, const tensor *targets, int b,
                                    const uint64_t *calls0)
{
    nn_model *m = t->m;
    const nn_comm *c = t->c;
    int first, n;
    nn_shard_rows(t, b, &first, &n);
    t->started = 0;
    for (int k = 0; k < t->n_buckets; k++) t->buckets[k].pending = t->buckets[k].params;
    nn_status s = NN_OK;
    if (n > 0) {
        nn_graph_set_param_hook(m->graph, shard_param_done, t);
        s = shard_run(t, 0, x, loss, labels, targets, first, n, 0);
        nn_graph_set_param_hook(m->graph, NULL, NULL);
    } else {
        memset(shard_rec(t, 0), 0, t->rec_bytes);
        memcpy(t->calls, calls0, (size_t)m->n_layers * sizeof *t->calls);
    }
    if (s == NN_OK) s = shard_buckets_start(t, 1, n > 0);
    if (s != NN_OK) return s;
    nn_clear_error();
    if (m->n_buffers && c->iallreduce_f32(c->ctx, shard_rec(t, 0) + m->n_params, m->n_buffers))
        return shard_comm_fail(c, "starting an allreduce", -1);
    if (c->wait_all(c->ctx)) return shard_comm_fail(c, "an allreduce", -1);
    if (c->allreduce_f64(c->ctx, shard_rec_tail(t, 0), 2))
        return shard_comm_fail(c, "an allreduce", -1);
    if (b < c->size)
        s = nn_comm_bcast(c, t->calls, (size_t)m->n_layers * sizeof *t->calls);
    return s;
}

nn_status nn_shard_step(nn_shard_trainer *t, optim *opt, tensor *x, const nn_loss *loss,
                        const int *labels, const tensor *targets, float *loss_mean,
                        long long *correct)
{
    if (!t || !opt || !x || !loss)
        return nn_error(NN_ERR_ARG, "nn_shard_step: NULL argument: %s is NULL",
                        !t ? "t" : !opt ? "opt" : !x ? "x" : "loss");
    nn_model *m = t->m;
    const int b = x->rank >= 1 ? x->shape[0] : 0;
    if (b < 1 || b > t->max_batch)
        return nn_error(NN_ERR_SHAPE, "nn_shard_step: a batch of %d samples; the trainer takes 1 "
                        "to %d", b, t->max_batch);
    const nn_comm *c = t->c;
    const int S = shard_count(t, b);
    int lo, hi;
    nn_shard_split(S, c->size, c->rank, &lo, &hi);
    memcpy(t->saved, m->buffers, m->n_buffers * sizeof *t->saved);
    uint64_t calls0[NN_MODEL_MAX_LAYERS];
    for (int i = 0; i < m->n_layers; i++) calls0[i] = m->layers[i]->calls;
    memset(t->given, 0, (size_t)t->slots * sizeof *t->given);
    /* Exact mode: one shard is the whole batch, the plain step; a model
     * whose layers meet runs its shards in lockstep. */
    const int whole = t->mode == NN_SHARD_EXACT && S == 1;
    const int lockstep = t->lockstep && S > 1;
    nn_status s = NN_OK;
    if (t->mode == NN_SHARD_EXACT) {
        if (lockstep && hi > lo) {
            t->step.x = x;
            t->step.loss = loss;
            t->step.labels = labels;
            t->step.targets = targets;
            s = shard_lockstep(t, S, lo, hi, b, calls0);
            for (int i = lo; i < hi; i++) t->given[i - lo] = 1;
        }
        for (int i = lo; i < hi && s == NN_OK && !lockstep; i++) {
            for (int k = 0; k < m->n_layers; k++) m->layers[k]->calls = calls0[k];
            const int first = i * t->shard, n = b - first < t->shard ? b - first : t->shard;
            s = shard_run(t, i - lo, x, loss, labels, targets, first, n, whole);
            t->given[i - lo] = 1;
        }
        if (s == NN_OK) s = shard_exchange(t, S, lo, hi);
    } else if (t->overlap) {
        s = shard_fast_overlap(t, x, loss, labels, targets, b, calls0);
    } else {
        int first, n;
        nn_shard_rows(t, b, &first, &n);
        if (n > 0) {
            s = shard_run(t, 0, x, loss, labels, targets, first, n, 0);
        } else {
            memset(shard_rec(t, 0), 0, t->rec_bytes);
            memcpy(t->calls, calls0, (size_t)m->n_layers * sizeof *t->calls);
        }
        if (s == NN_OK) nn_clear_error();
        if (s == NN_OK && c->size > 1 && c->allreduce_f32(c->ctx, shard_rec(t, 0), t->nf))
            s = shard_comm_fail(c, "an allreduce", -1);
        if (s == NN_OK && c->size > 1 && c->allreduce_f64(c->ctx, shard_rec_tail(t, 0), 2))
            s = shard_comm_fail(c, "an allreduce", -1);
        /* A rank without rows did not run the layers: rank 0 always has. */
        if (s == NN_OK && b < c->size)
            s = nn_comm_bcast(c, t->calls, (size_t)m->n_layers * sizeof *t->calls);
    }
    if (s != NN_OK) {
        memcpy(m->buffers, t->saved, m->n_buffers * sizeof *t->saved);
        for (int i = 0; i < m->n_layers; i++) {
            m->layers[i]->calls = calls0[i];
            m->layers[i]->sample_offset = 0;
        }
        return s;
    }
    /* The sums over the batch become its means (the whole batch's step has
     * them already); the moving statistics are values after a whole-batch
     * or lockstep step, else the shards' mean change. */
    const float *r = shard_rec(t, 0);
    const float B = (float)b;
    for (size_t j = 0; j < m->n_params; j++) m->grads[j] = whole ? r[j] : r[j] / B;
    for (size_t j = 0; j < m->n_buffers; j++)
        m->buffers[j] = whole || lockstep ? r[m->n_params + j] : t->saved[j] + r[m->n_params + j] / B;
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->calls = t->calls[i];
    const double *d = shard_rec_tail(t, 0);
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    if (loss_mean) *loss_mean = (float)(d[0] / b);
    if (correct) *correct = (long long)d[1];
    return NN_OK;
}
