/* Data-parallel steps over micro-shards and ranks (see shard.h).
 *
 * A shard's "record" is what it contributes to the step, in one buffer so
 * that one message moves it: the gradient sums of the parameters, then its
 * changes of the moving statistics times its sample count (floats), then
 * its loss sum and correct count (doubles). Records add element by element,
 * so a sum of records is a sum of each part.
 * Reading order: nn_shard_step, then shard_run (one shard), shard_tree (the
 * fixed order of the sums), shard_exchange (who sends what to rank 0).
 * Omitted: a reduction tree among the ranks themselves (rank 0 receives
 * every subtree: fine for a few ranks, see the README's cost model), and
 * overlap of communication with backward.
 */
#include "nn/shard.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"

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
    tensor_aligned_free(t->recs);
    free(t->given);
    free(t->saved);
    free(t->calls);
    free(t);
}

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
    int lo, hi;
    nn_shard_split(shards, comm->size, comm->rank, &lo, &hi);
    t->slots = comm->rank == 0 ? shards : hi - lo > 0 ? hi - lo : 1;
    t->recs = tensor_aligned_alloc((size_t)t->slots * t->rec_bytes);
    t->given = calloc((size_t)t->slots, sizeof *t->given);
    t->saved = malloc((m->n_buffers ? m->n_buffers : 1) * sizeof *t->saved);
    t->calls = calloc((size_t)(m->n_layers ? m->n_layers : 1), sizeof *t->calls);
    if (!t->recs || !t->given || !t->saved || !t->calls) goto oom;
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

/* Record dst += record src, element by element (the same bits for any
 * thread count). */
static void shard_add(const nn_shard_trainer *t, int dst, int src)
{
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

/* Rows [first, first + n) of the batch as one pass, into record `slot`: the
 * gradients of the loss times n (sums over the rows), the moving statistics'
 * changes times n, the loss sum and the correct count. The moving
 * statistics are put back as the step found them, and the layers' call
 * counters too (kept in t->calls as the forward left them). */
static nn_status shard_run(nn_shard_trainer *t, int slot, tensor *x, const nn_loss *loss,
                           const int *labels, const tensor *targets, int first, int n)
{
    nn_model *m = t->m;
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->sample_offset = (uint64_t)first;
    int shape[TENSOR_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = n;
    const size_t sample = x->size / (size_t)x->shape[0];
    tensor xs, ts;
    memset(&xs, 0, sizeof xs);
    xs.data = x->data + (size_t)first * sample;
    NN_TRY(tensor_set_shape(&xs, x->rank, shape));
    if (targets) {
        memcpy(shape, targets->shape, sizeof shape);
        shape[0] = n;
        memset(&ts, 0, sizeof ts);
        ts.data = targets->data + (size_t)first * (targets->size / (size_t)targets->shape[0]);
        NN_TRY(tensor_set_shape(&ts, targets->rank, shape));
    }
    nn_graph_reset(m->graph);
    nn_graph_set_grad_enabled(m->graph, 1);
    nn_model_zero_grad(m);
    tensor *y, *l;
    int correct = 0;
    NN_TRY(nn_model_forward(m, &xs, &y, NN_MODE_TRAIN));
    NN_TRY(nn_op_loss(m->graph, loss, y, labels ? labels + first : NULL, targets ? &ts : NULL, &l,
                      &correct));
    NN_TRY(nn_graph_backward_seed(m->graph, l, (float)n));
    float *r = shard_rec(t, slot);
    memcpy(r, m->grads, m->n_params * sizeof *r);
    const float w = (float)n;
    for (size_t j = 0; j < m->n_buffers; j++) {
        r[m->n_params + j] = (m->buffers[j] - t->saved[j]) * w;
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
static void shard_tree(nn_shard_trainer *t, int i, int s, int S, int lo)
{
    if (t->given[i - lo] == s) return;
    NN_ASSERT(s > 1);
    const int h = s / 2;
    shard_tree(t, i, h, S, lo);
    if (i + h < S) {
        shard_tree(t, i + h, h, S, lo);
        shard_add(t, i - lo, i + h - lo);
    }
    t->given[i - lo] = s;
}

/* The largest tree node starting at i inside [i, hi). */
static int shard_block(int i, int hi)
{
    int s = 1;
    while (i % (2 * s) == 0 && i + 2 * s <= hi) s *= 2;
    return s;
}

/* Every rank: its shards' subtrees; rank 0 receives the other ranks'
 * (in the order each sent them) and adds the tree's top; the total goes
 * from rank 0's slot 0 to every rank's slot 0. */
static nn_status shard_exchange(nn_shard_trainer *t, int S, int lo, int hi)
{
    const nn_comm *c = t->c;
    for (int i = lo; i < hi; i += shard_block(i, hi)) {
        const int s = shard_block(i, hi);
        shard_tree(t, i, s, S, lo);
        if (c->rank != 0) NN_TRY(shard_send(c, 0, shard_rec(t, i - lo), t->rec_bytes));
    }
    if (c->rank == 0) {
        for (int r = 1; r < c->size; r++) {
            int rlo, rhi;
            nn_shard_split(S, c->size, r, &rlo, &rhi);
            for (int i = rlo; i < rhi; i += shard_block(i, rhi)) {
                NN_TRY(shard_recv(c, r, shard_rec(t, i), t->rec_bytes));
                t->given[i] = shard_block(i, rhi);
            }
        }
        int top = 1;
        while (top < S) top *= 2;
        shard_tree(t, 0, top, S, 0);
    }
    NN_TRY(nn_comm_bcast(c, t->recs, t->rec_bytes));
    return nn_comm_bcast(c, t->calls, (size_t)t->m->n_layers * sizeof *t->calls);
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
    nn_status s = NN_OK;
    if (t->mode == NN_SHARD_EXACT) {
        for (int i = lo; i < hi && s == NN_OK; i++) {
            for (int k = 0; k < m->n_layers; k++) m->layers[k]->calls = calls0[k];
            const int first = i * t->shard, n = b - first < t->shard ? b - first : t->shard;
            s = shard_run(t, i - lo, x, loss, labels, targets, first, n);
            t->given[i - lo] = 1;
        }
        if (s == NN_OK) s = shard_exchange(t, S, lo, hi);
    } else {
        int first, n;
        nn_shard_rows(t, b, &first, &n);
        if (n > 0) {
            s = shard_run(t, 0, x, loss, labels, targets, first, n);
        } else {
            memset(shard_rec(t, 0), 0, t->rec_bytes);
            memcpy(t->calls, calls0, (size_t)m->n_layers * sizeof *t->calls);
        }
        nn_clear_error();
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
    /* The sums over the batch become its means. */
    const float *r = shard_rec(t, 0);
    const float B = (float)b;
    for (size_t j = 0; j < m->n_params; j++) m->grads[j] = r[j] / B;
    for (size_t j = 0; j < m->n_buffers; j++)
        m->buffers[j] = t->saved[j] + r[m->n_params + j] / B;
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->calls = t->calls[i];
    const double *d = shard_rec_tail(t, 0);
    NN_TRY(optim_step(opt, m->params, m->grads, m->n_params));
    if (loss_mean) *loss_mean = (float)(d[0] / b);
    if (correct) *correct = (long long)d[1];
    return NN_OK;
}
