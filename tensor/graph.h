/* The autograd graph: a tape of nodes recorded by operations, walked backward.
 *
 * An operation computes its output, then calls nn_graph_record() with its
 * inputs, a backward function and the context that backward needs (a mask,
 * saved indices). Nodes are kept in the order they were recorded, which is a
 * topological order, so nn_graph_backward() walks them from last to first.
 *
 * Backward functions ADD into the gradients of their inputs (dx += ...),
 * never assign, so a tensor used twice receives the sum of both uses. A
 * backward function must skip an input whose grad is NULL (it needs none).
 *
 * Memory: every tensor and context made during a step lives in the graph's
 * arena and stays valid until nn_graph_reset(), which rewinds the arena
 * without returning memory. Gradients are kept only where they are read:
 * - a leaf's (a tensor no node produced, such as a parameter or an input
 *   that requires a gradient) and the loss's stay until the reset;
 * - an intermediate tensor's (the output of a recorded node) lives only
 *   until the backward of the node that produced it has run; backward then
 *   sets that tensor's grad to NULL and its buffer goes back to a pool that
 *   the next gradients of the step, and of later steps, reuse (matched by
 *   size), so a step holds all its activations but only the gradients in
 *   flight, and a training loop allocates nothing after its first steps.
 *   nn_graph_retain_grad() keeps one until the reset. A training step's
 *   nn_graph_backward_recycle puts them in the arena instead, in
 *   activations no backward still to run reads.
 * Parameters (TENSOR_PARAM) keep their own grad buffers, which backward adds
 * into; other leaves get theirs from the arena when they have none.
 *
 * With gradients disabled (nn_graph_set_grad_enabled(g, 0)) nothing is
 * recorded and no gradient memory is used: inference mode.
 * Thread-safety: one graph per thread; the calls themselves may run OpenMP
 * loops inside.
 */
#ifndef NN_TENSOR_GRAPH_H
#define NN_TENSOR_GRAPH_H

#include <stddef.h>

#include "tensor/tensor.h"

#define NN_NODE_MAX_INPUTS 4

typedef struct nn_node nn_node;
typedef void (*nn_backward_fn)(nn_node *node);

struct nn_node {
    const char *op;                    /* operation name, for messages */
    tensor *out;
    tensor *in[NN_NODE_MAX_INPUTS];
    int n_in;
    nn_backward_fn backward;
    void *ctx;                         /* op-defined, in the arena */
    int saves_output;                  /* backward reads out->data; without it, never */
    /* ... only as a ReLU's mask, out > 0, passing no gradient where it is
     * not: scaling out in place by factors >= 0 whose zeros also zero the
     * gradient that comes back (spatial dropout) changes nothing backward
     * computes. */
    int output_is_mask;
    /* out is a view of in[0] (same size) whose gradient may share in[0]'s
     * grad storage: every backward adds into its inputs' grads, so what
     * out's consumers add lands in in[0]'s gradient directly, and this
     * node's backward must then add nothing (it sees out->grad ==
     * in[0]->grad). Saves a copy of the gradient. */
    int grad_is_input;
    /* backward can turn out->grad into in[0]'s gradient in place (same
     * size, elementwise once any sums over out->grad are taken): when
     * in[0] has no gradient yet and every other input is a parameter, the
     * graph hands in[0] out->grad's storage, and the node's backward,
     * seeing out->grad == in[0]->grad, overwrites instead of adding.
     * out->grad then holds dx. */
    int grad_in_place;
    /* Set and read by the graph only: the pool buffer holding out's
     * gradient (its index + 1, 0 when out's gradient is not the node's to
     * release), and whether that gradient outlives this node's backward. */
    int grad_buf;
    int retain_grad;
    /* backward reads no input's data (only gradients, and out->data when
     * saves_output): add's. A recycling backward may then put gradients in
     * an input's storage when nothing else reads it (nn_graph_backward_recycle).
     * This field and the next are at the end, so the fields before keep
     * their places for ops built earlier (nodes are only ever made by
     * nn_graph_record, zeroed). */
    int inputs_unread;
    /* Set and read by backward with a parameter hook only: bit k says in[k]
     * is a parameter whose gradient this node's backward finishes. */
    unsigned param_final;
};

typedef struct nn_graph nn_graph;

/* A new graph; arena_bytes is the first arena block's size (0: 1 MiB). */
nn_graph *nn_graph_create(size_t arena_bytes);
void nn_graph_free(nn_graph *g);
/* Forgets all nodes and rewinds the arena: every tensor and context made
 * since the last reset becomes invalid. */
void nn_graph_reset(nn_graph *g);
void nn_graph_set_grad_enabled(nn_graph *g, int enabled);
int nn_graph_grad_enabled(const nn_graph *g);

/* 64-byte aligned memory valid until the next reset; NULL with an error. */
void *nn_graph_alloc(nn_graph *g, size_t bytes);
/* An arena tensor (uninitialised data, no grad) valid until the next reset. */
tensor *nn_graph_tensor(nn_graph *g, int rank, const int *shape);
/* An arena tensor header over existing storage (a view; never owns data). */
tensor *nn_graph_view(nn_graph *g, tensor *src, int rank, const int *shape);

/* One scratch buffer for what an op needs only while one of its calls
 * runs (a kernel's workspace): ops run one at a time, so the graph holds
 * the largest request instead of the sum of all. nn_graph_scratch_reserve
 * makes it at least `bytes` (64-byte aligned) and may move it, keeping no
 * contents; a backward whose forward reserved gets it back with
 * nn_graph_scratch, which cannot fail then. Nothing in it outlives the call
 * that wrote it. Kept across resets, freed with the graph. Errors: out of
 * memory (NULL). */
void *nn_graph_scratch_reserve(nn_graph *g, size_t bytes);
void *nn_graph_scratch(const nn_graph *g);
/* Bytes the scratch buffer holds. */
size_t nn_graph_scratch_bytes(const nn_graph *g);

/* Records out = op(in[0..n_in)) if gradients are enabled and any input
 * requires a gradient; marks out as requiring one. Returns the node, or NULL
 * when nothing was recorded (which is not an error). What the node's
 * backward reads must be made before this call: a recycling backward reuses
 * what was made after it once the node's backward is next. */
nn_node *nn_graph_record(nn_graph *g, const char *op, tensor *out, tensor **in,
                         int n_in, nn_backward_fn backward, void *ctx);
/* True when an op on these inputs would be recorded. */
int nn_graph_needs_grad(const nn_graph *g, tensor **in, int n_in);

/* d(loss)/d(t) for every recorded t; loss must hold one element. Gradients of
 * parameters are added to their grad buffers (zero them between steps).
 * After it, leaves and the loss hold their gradients, an intermediate tensor
 * only when retained (nn_graph_retain_grad), else its grad is NULL.
 * Runs once per reset (a second call is an error: it would add the
 * intermediate gradients twice); an op that failed to record reports here. */
nn_status nn_graph_backward(nn_graph *g, tensor *loss);
/* As nn_graph_backward with d(loss)/d(loss) = seed instead of 1: the
 * gradients of seed * loss. A micro-shard of a sharded step (nn/shard.h)
 * seeds its mean loss with its sample count, so its gradients are sums over
 * its samples. Errors: as nn_graph_backward's, and a seed that is not finite. */
nn_status nn_graph_backward_seed(nn_graph *g, tensor *loss, float seed);
/* As nn_graph_backward_seed, for a training step that reads nothing of the
 * step's arena after backward (read the loss before it): the gradients of
 * intermediate tensors go to arena memory that no backward still to run
 * reads, instead of the pool. That is memory made after a node was
 * recorded, once that node's backward is next (every reader of it is a
 * later node, done), and, from the start, an output that neither its node
 * nor a later node's backward reads (saves_output and inputs_unread tell);
 * the pool takes what does not fit. The gradients are the same to the bit,
 * and the step holds about its activations where nn_graph_backward holds
 * its activations plus the pool's buffers. Afterwards only parameters' and
 * other leaves' gradients are valid: every tensor, node and context of the
 * step holds undefined contents until the reset. Errors: as
 * nn_graph_backward_seed's. */
nn_status nn_graph_backward_recycle(nn_graph *g, tensor *loss, float seed);

/* A parameter hook: told during backward that a trainable parameter's
 * gradient is final, so a caller can start using it (a data-parallel
 * trainer starts summing it over ranks) while backward goes on. */
typedef nn_status (*nn_graph_param_fn)(void *ctx, tensor *param);

/* Sets g's parameter hook (fn NULL: none), kept across resets. Every later
 * backward calls fn(ctx, p) once for each trainable parameter p (flags
 * TENSOR_PARAM and TENSOR_REQUIRES_GRAD) that some recorded node reads, right
 * after the backward of the earliest-recorded node that reads it (or where
 * that backward would have run, for a node off the path to the loss): no
 * later backward touches p->grad. So parameters come in the reverse order
 * of their first use, for a model the last layer's first. Within one node,
 * in input order. A parameter no node reads is not reported (its gradient
 * stays as it was).
 * fn may read any reported gradient and call code that leaves the graph
 * alone (a transport); it must not change a gradient that backward has yet
 * to finish, nor the graph. A status other than NN_OK from fn stops backward,
 * which returns it (fn sets the message). ctx is borrowed: it must outlive
 * the hook. Costs one pass over the nodes per backward when set, none
 * otherwise. */
void nn_graph_set_param_hook(nn_graph *g, nn_graph_param_fn fn, void *ctx);

/* Keeps t's gradient after backward, until the next reset, when t is the
 * output of a recorded node (a leaf's is always kept; a tensor that needs no
 * gradient gets none). Call it between recording t and backward. A retained
 * gradient that the graph shares with its node's input (grad_is_input,
 * grad_in_place) holds what that input's gradient holds, as before. */
nn_status nn_graph_retain_grad(nn_graph *g, tensor *t);

/* Number of nodes recorded since the last reset. */
int nn_graph_node_count(const nn_graph *g);
/* Bytes of arena memory held (all blocks). */
size_t nn_graph_arena_bytes(const nn_graph *g);
/* Bytes held by the pool of intermediate gradient buffers. */
size_t nn_graph_grad_pool_bytes(const nn_graph *g);
/* Bytes of the arena handed out since the last reset (0 right after one). */
size_t nn_graph_arena_used(const nn_graph *g);
/* True when p points into arena memory handed out since the last reset: a
 * tensor (or its data) that the next reset would invalidate. */
int nn_graph_holds(const nn_graph *g, const void *p);
/* Changes at every reset (1 for a new graph): an owner that noted it knows
 * whether the graph was reset since. */
unsigned long nn_graph_generation(const nn_graph *g);
/* True when backward has run since the last reset. */
int nn_graph_backward_ran(const nn_graph *g);

#endif
