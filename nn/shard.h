/* Data-parallel training over several ranks (processes, machines), with the
 * transport left to the caller: the library computes, a small table of
 * functions (nn_comm) moves bytes. nn/mpi.h fills that table over MPI; a
 * test fills it with threads in one process. Nothing here needs MPI.
 *
 * Exact mode (the default): the same weights, bit for bit, for any number of
 * ranks. A global batch of b samples is cut into micro-shards of `shard`
 * samples (the last one shorter), ceil(b / shard) of them, which depend only
 * on the batch. Rank r of R computes shards [ceil(r S / R), ceil((r+1) S / R))
 * of the S shards, each one as its own pass (forward, the loss seeded with
 * the shard's sample count so its gradients are sums over its samples,
 * backward; only batchnorm's statistics are shared, see below). The shards'
 * sums are then added in one fixed binary tree over the shard indices,
 *     v(i, 2s) = v(i, s) + v(i + s, s)     (or v(i, s) when i + s >= S),
 * whichever rank holds which part: a rank adds the whole subtrees inside its
 * range itself, sends them to rank 0 (point-to-point), which adds the rest of
 * the tree and broadcasts the total. Every rank then divides by b (the
 * global batch mean), and runs the optimizer on the same numbers. One rank
 * runs the same tree over the same shards, so 1, 2 or 4 ranks (or 3) give the
 * same bits; only the shard size changes the result. (A floating-point
 * MPI_Allreduce adds in an order that depends on the rank count and the
 * message size, so it is never used here.)
 * - Dropout: each layer's draws are keyed by the sample's index in the whole
 *   batch (nn_layer.sample_offset) and the step's call number, so a shard
 *   draws the masks the whole batch would, on any rank.
 * - Batch normalisation uses the whole batch's statistics, as one pass over
 *   the batch would. Its two meeting points (layers/layer.h, l->meet) are
 *   met by all shards together: in forward each shard's per-channel count
 *   and sums about its first value go through the same fixed tree, merged
 *   (layers/batchnorm.c) into sums about the batch's first value; in
 *   backward its sums of dy and dy (x - mean), added. Each rank's subtrees
 *   go to rank 0, which sends the totals back to every rank that has
 *   shards, and every shard normalises (and differentiates) with them. So
 *   a rank's shards advance in lockstep: each runs as a coroutine with its
 *   own tape, switching at the meetings, and all of a rank's activations
 *   are held at once. The moving statistics update once, from the whole
 *   batch's. A model without such a layer runs its shards one after
 *   another on the model's own tape.
 * - One shard (shard >= b) is the plain step: the gradients of the mean
 *   loss and the moving statistics as nn_model_train_step_loss leaves them,
 *   bit for bit.
 * - A short last batch gets fewer (and a shorter last) shard; no sample is
 *   repeated, and ranks with no shard send nothing.
 * - The loss (mean over the batch) and the correct count come through the
 *   same tree, in double (counts exact below 2^53).
 *
 * Fast mode: rank r takes rows [ceil(r b / R), ceil((r+1) b / R)) of the
 * batch as one pass and the gradient sums of all ranks are added by the
 * comm's allreduce. Reproducible for a fixed rank count only: the sum's
 * order depends on the rank count and on MPI's algorithm. With the comm's
 * non-blocking sums (iallreduce_f32, progress, wait_all) the reduction
 * overlaps backward: the gradients are cut into buckets, contiguous ranges
 * of m->grads of whole parameters taken from the last layer's backwards,
 * each at least bucket_bytes (the last may be less), so fixed by the model
 * and the comm, never by timing. A parameter hook on the tape
 * (nn_graph_set_param_hook) counts each bucket's parameters as backward
 * finishes them; a complete bucket is copied into the record and its sum
 * started, in bucket order (the order every rank starts them in), and the
 * hook calls progress between layers, since a transport without a progress
 * thread (OpenMPI's default) moves data only inside its calls. After
 * backward the moving statistics' changes go as one more sum, wait_all
 * completes all, then the loss and count as before. Without those
 * functions: one blocking allreduce of gradients and moving statistics
 * after backward. Element by element both add the same values, so at 2
 * ranks (a + b = b + a) they give the same bits; at 3 or more the transport
 * may pick another order for another message size.
 *
 * Cost of exact mode per step: each rank sends at most log2(S) + 1 subtree
 * sums of (parameters + moving statistics) floats to rank 0, which receives
 * them one after another and broadcasts one total; rank 0 holds one record
 * per shard. With batchnorm, two more meetings per batchnorm layer (each
 * rank's subtrees of 3C + 1 or 2C doubles to rank 0, the total back), a
 * coroutine stack (8 MiB of address space, little of it touched) and a
 * tape per shard of the rank: the memory of a rank's whole part of the
 * batch. See the README ("Training on several processes").
 *
 * Ownership: an nn_shard_trainer borrows its model and comm (both must
 * outlive it) and owns its buffers. Thread-safety: as the model's. The
 * lockstep coroutines are POSIX ucontext (glibc); they switch only outside
 * OpenMP regions, on the calling thread.
 */
#ifndef NN_NN_SHARD_H
#define NN_NN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"
#include "optim/optim.h"
#include "tensor/loss.h"

/* The transport: rank in [0, size), and operations that return 0 or
 * nonzero on failure (with a message in nn_last_error, or none). Every
 * transfer's size is known to both sides. send/recv are required; bcast
 * (rank 0's buf to every rank) may be NULL, and is then made of sends;
 * allreduce_f32/_f64 (element-wise sums over ranks, in place) only fast
 * mode needs. The last four are optional, for fast mode's overlap (all of
 * the three functions, or none): iallreduce_f32 starts such a sum and
 * returns at once (buf is the transport's until wait_all; every rank starts
 * the same sums in the same order); progress lets started sums advance;
 * wait_all returns when every started sum is done. bucket_bytes: the
 * smallest sum to start, in bytes (0: NN_SHARD_BUCKET_BYTES). Initialise an
 * nn_comm with designated initialisers, so that fields added later are 0. */
typedef struct nn_comm {
    int rank, size;
    void *ctx;
    int (*send)(void *ctx, int to, const void *buf, size_t bytes);
    int (*recv)(void *ctx, int from, void *buf, size_t bytes);
    int (*bcast)(void *ctx, void *buf, size_t bytes);
    int (*allreduce_f32)(void *ctx, float *buf, size_t n);
    int (*allreduce_f64)(void *ctx, double *buf, size_t n);
    int (*iallreduce_f32)(void *ctx, float *buf, size_t n);
    int (*progress)(void *ctx);
    int (*wait_all)(void *ctx);
    size_t bucket_bytes;
} nn_comm;

/* Fast mode's bucket size when the comm's bucket_bytes is 0: large enough
 * that a sum's start-up cost is small against its bytes, small enough that
 * the first sum starts well before backward ends. */
#define NN_SHARD_BUCKET_BYTES ((size_t)4 << 20)

typedef enum nn_shard_mode {
    NN_SHARD_EXACT = 0, /* micro-shards and a fixed tree: any rank count, same bits */
    NN_SHARD_FAST = 1   /* one pass per rank and the comm's allreduce */
} nn_shard_mode;

/* The micro-shard size nn_model_fit uses when options.shard is 0. */
#define NN_SHARD_DEFAULT 32

/* [*lo, *hi) = the part of n items that rank `rank` of `ranks` takes:
 * lo = ceil(rank n / ranks), so rank 0 takes the first item whenever n > 0. */
void nn_shard_split(int n, int ranks, int rank, int *lo, int *hi);

/* Rank 0's buf[0..bytes) to every rank (the comm's bcast, or sends). */
nn_status nn_comm_bcast(const nn_comm *c, void *buf, size_t bytes);
/* Every rank holds items [lo, hi) of n (nn_shard_split) of `unit` bytes each
 * in buf; afterwards every rank holds all n. */
nn_status nn_comm_share(const nn_comm *c, void *buf, size_t unit, int n);
/* Returns on every rank after every rank has called it (and rank 0 has
 * finished what it did before): e.g. after rank 0 wrote a checkpoint. */
nn_status nn_comm_barrier(const nn_comm *c);

typedef struct nn_shard_trainer nn_shard_trainer;

/* A trainer for m (built) over comm, for batches of at most max_batch
 * samples; shard (exact mode) >= 1. Returns NULL with a message on a bad
 * argument or no memory. */
nn_shard_trainer *nn_shard_trainer_create(nn_model *m, const nn_comm *comm, nn_shard_mode mode,
                                          int shard, int max_batch);
void nn_shard_trainer_free(nn_shard_trainer *t);

/* The rows [*first, *first + *count) of a batch of b that this rank reads:
 * only those rows of the batch tensor given to nn_shard_step need to be
 * filled. */
void nn_shard_rows(const nn_shard_trainer *t, int b, int *first, int *count);

/* One training step on a global batch, on every rank with the same b: x is
 * the whole batch (b, input shape), of which only this rank's rows are read;
 * labels[b] or targets (b, output shape) as for nn_model_train_step_loss.
 * *loss_mean gets the batch's mean loss and *correct the batch's correct
 * count, the same on every rank (either may be NULL). Errors: the model's,
 * and the comm's (naming the rank); after an error on one rank the others
 * wait in their next exchange, so the caller ends them (nn_mpi_abort). */
nn_status nn_shard_step(nn_shard_trainer *t, optim *opt, tensor *x, const nn_loss *loss,
                        const int *labels, const tensor *targets, float *loss_mean,
                        long long *correct);

#endif
