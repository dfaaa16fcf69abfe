/* What a layer type provides, and the per-instance layer record.
 *
 * A layer type is one file in layers/ that exports a `const nn_layer_type`
 * and is listed once in nn/registry.c. Its hooks:
 *   parse   read the config keys into l->state (allocated zeroed, state_size
 *           bytes); runs at creation, so bad configs fail early.
 *   write   write the config back as "key=value ..." (the round trip through
 *           parse gives an equal layer); resolved defaults are written too.
 *   build   given the per-sample input shape (no batch axis), set the
 *           per-sample output shape and declare parameters with
 *           nn_layer_add_param. Runs once, when the model is built.
 *   forward y = f(x) on a batch (axis 0 is the batch); record a graph node
 *           whose backward adds into x->grad and the parameters' grads.
 *   destroy optional: release memory the layer allocated itself.
 * Shapes passed to build exclude the batch axis, as in Keras.
 *
 * Merge layers (add, concatenate) read two or more tensors. Such a type
 * sets build_multi and forward_multi instead of build and forward: the same
 * contracts, over n_in inputs (2..NN_LAYER_MAX_INPUTS), with backward adding
 * into every input's grad. A type has one pair or the other, never both, so
 * a single-input type is written as before.
 *
 * Parameters live in the model's blocks (nn/model.h); a layer reaches them as
 * l->params[i].t, valid after the model is built. Stochastic layers draw from
 * the counter-based generator keyed by (l->seed, l->calls, index) and
 * increment l->calls once per training forward. The index counts from the
 * first sample of the whole batch: a forward over rows [o, o + n) of a
 * larger batch (a micro-shard, nn/shard.h) has l->sample_offset = o and
 * draws what the whole batch's forward draws for those rows.
 *
 * A layer whose training forward needs statistics of its whole batch
 * (batchnorm) sets whole_batch in its type. In a sharded step each
 * micro-shard runs on its own; the trainer then sets l->meet, and the layer
 * calls l->meet->meet(l->meet, l, sums, n, combine) with its shard's
 * partial sums, in forward and in backward alike: the call returns when
 * sums holds the totals over the whole batch (the shards' partials merged
 * by combine, or added when combine is NULL, in an order fixed by the
 * trainer). Every shard makes the same calls in the same order; l->meet is
 * NULL in every other pass.
 *
 * Thread-safety: a layer is used by one thread at a time (forward advances
 * l->calls); its hooks may run OpenMP loops inside.
 */
#ifndef NN_LAYERS_LAYER_H
#define NN_LAYERS_LAYER_H

#include <stdint.h>

#include "layers/config.h"
#include "tensor/graph.h"

#define NN_LAYER_MAX_PARAMS 4
#define NN_NAME_LEN 32
/* A graph node holds at most NN_NODE_MAX_INPUTS inputs, so a merge layer
 * records its backward in one node. */
#define NN_LAYER_MAX_INPUTS NN_NODE_MAX_INPUTS

typedef struct nn_layer nn_layer;

/* acc = acc (+) next for two partials of n doubles: acc covers samples
 * before next's. */
typedef void (*nn_meet_combine)(double *acc, const double *next, size_t n);

/* The meeting point of a sharded step (see above); set by the trainer. */
typedef struct nn_batch_meet nn_batch_meet;
struct nn_batch_meet {
    void (*meet)(nn_batch_meet *bm, const nn_layer *l, double *sums, size_t n,
                 nn_meet_combine combine);
};

typedef enum nn_init {
    NN_INIT_ZEROS,
    NN_INIT_ONES,
    NN_INIT_GLOROT_UNIFORM,
    NN_INIT_HE_NORMAL,
    NN_INIT_HE_UNIFORM
} nn_init;

typedef struct nn_param {
    char name[NN_NAME_LEN];   /* "kernel", "bias", "moving_mean", ... */
    tensor *t;                /* owned by the model; NULL until built */
    int rank, shape[TENSOR_MAX_RANK];
    nn_init init;
    int fan_in, fan_out;
    int trainable;            /* 0: a buffer such as batchnorm's moving mean */
} nn_param;

typedef struct nn_layer_type {
    const char *name;
    const char *summary;      /* one line: what the layer does */
    size_t state_size;
    nn_status (*parse)(nn_layer *l, nn_config *cfg);
    void (*write)(const nn_layer *l, nn_config_writer *w);
    nn_status (*build)(nn_layer *l, int in_rank, const int *in_shape);
    nn_status (*forward)(nn_layer *l, nn_graph *g, tensor *x, tensor **y, int training);
    void (*destroy)(nn_layer *l);
    /* For the generic gradient check: a config and a per-sample input shape. */
    const char *test_config;
    int test_rank;
    int test_shape[TENSOR_MAX_RANK];
    /* Merge layers only (see above); in_shape[k] is input k's per-sample
     * shape, of rank in_rank[k]. */
    nn_status (*build_multi)(nn_layer *l, int n_in, const int *in_rank,
                             const int (*in_shape)[TENSOR_MAX_RANK]);
    nn_status (*forward_multi)(nn_layer *l, nn_graph *g, int n_in, tensor **x, tensor **y,
                               int training);
    /* The gradient check of a merge layer: test_inputs inputs, input k of
     * per-sample shape test_shapes[k] (rank test_rank). 0 for other types. */
    int test_inputs;
    int test_shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
    /* 1: a training forward reads statistics of the whole batch (l->meet). */
    int whole_batch;
} nn_layer_type;

struct nn_layer {
    const nn_layer_type *type;
    char name[NN_NAME_LEN];   /* unique in its model, e.g. "conv2d_1" */
    void *state;              /* type-defined, owned by the layer */
    int in_rank, in_shape[TENSOR_MAX_RANK];   /* per sample */
    int out_rank, out_shape[TENSOR_MAX_RANK]; /* per sample */
    nn_param params[NN_LAYER_MAX_PARAMS];
    int n_params;
    uint64_t seed;            /* for stochastic layers */
    int seed_fixed;           /* seed came from the config; the model keeps it */
    uint64_t calls;           /* training forwards done so far */
    uint64_t sample_offset;   /* index of the input's first sample in its
                               * whole batch; 0 but in sharded steps */
    nn_batch_meet *meet;      /* NULL but in sharded steps (above) */
    int built;
    /* Every input's per-sample shape (in_rank/in_shape above repeat input
     * 0): n_in is 1, or 2..NN_LAYER_MAX_INPUTS for a merge layer. */
    int n_in;
    int in_ranks[NN_LAYER_MAX_INPUTS], in_shapes[NN_LAYER_MAX_INPUTS][TENSOR_MAX_RANK];
    /* Set by a build hook when forward writes over its input's storage
     * (spatial dropout with inplace=true): a model refuses such a layer when
     * another layer reads the same input. */
    int overwrites_input;
};

/* Creates a layer of the given type from config text ("rate=0.25 ...").
 * To create one by type name, use nn_layer_create (nn/registry.h).
 * Errors: a NULL type or one without a parse hook, a bad config. */
nn_layer *nn_layer_create_from_type(const nn_layer_type *type, const char *config);
void nn_layer_free(nn_layer *l);
/* Writes the layer's config (as parse reads it) into buf; returns NN_OK or an
 * error if it does not fit. */
nn_status nn_layer_config_string(const nn_layer *l, char *buf, size_t n);
/* Runs build; used by the model and by tests that use a layer on its own.
 * Parameters declared here are allocated and initialised by the caller
 * (nn_model_build, or nn_layer_alloc_params for a standalone layer).
 * Errors: a merge layer (it needs nn_layer_build_multi), a bad shape. */
nn_status nn_layer_build(nn_layer *l, int in_rank, const int *in_shape);
/* Runs build for n_in inputs: a merge layer's build_multi, or, for n_in == 1,
 * nn_layer_build. Errors: a merge layer given fewer than 2 or more than
 * NN_LAYER_MAX_INPUTS inputs, a single-input layer given several. */
nn_status nn_layer_build_multi(nn_layer *l, int n_in, const int *in_rank,
                               const int (*in_shape)[TENSOR_MAX_RANK]);
/* True for a type with several inputs (build_multi/forward_multi). */
int nn_layer_type_is_merge(const nn_layer_type *type);
/* Standalone use: gives each parameter its own zeroed tensor with a grad
 * buffer, initialised from rng_seed. Freed by nn_layer_free. */
nn_status nn_layer_alloc_params(nn_layer *l, uint64_t rng_seed);
/* Runs forward after checking that x's per-sample shape is the built one.
 * training is 0 or 1 here (the model resolves its default). */
nn_status nn_layer_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **y, int training);
/* As nn_layer_forward for the n_in inputs x[0..n_in) the layer was built for
 * (n_in == 1 runs nn_layer_forward). */
nn_status nn_layer_forward_multi(nn_layer *l, nn_graph *g, int n_in, tensor **x, tensor **y,
                                 int training);

/* Fills p->t from its init rule, drawing from rng. */
struct tensor_rng;
void nn_param_init(nn_param *p, struct tensor_rng *rng);

/* For build hooks: declares a parameter. */
nn_status nn_layer_add_param(nn_layer *l, const char *name, int rank, const int *shape,
                             nn_init init, int fan_in, int fan_out, int trainable);
/* Element count of the declared parameters (trainable or not). */
size_t nn_layer_param_count(const nn_layer *l, int trainable);

/* A build hook for layers whose output has the input's shape (activations,
 * dropouts): out_shape = in_shape. Use it as `.build = nn_layer_build_identity`
 * or call it at the end of a build hook that checks the input first. */
nn_status nn_layer_build_identity(nn_layer *l, int in_rank, const int *in_shape);

/* For forward hooks of layers with inplace=true: whether writing the
 * output over x loses nothing anyone reads later. x must not be a
 * parameter, a leaf the user wants a gradient for, or an output its
 * producer's backward reads; keeps_sign says the layer leaves every value
 * positive where it was positive (or zero), so a producer whose backward
 * reads only where its output is positive (output_is_mask) is still
 * served. The error names l and the producer. */
nn_status nn_layer_check_inplace(const nn_layer *l, const tensor *x, int keeps_sign);

/* For forward hooks: checks that x has rank `rank` (batch included) and
 * reports "layer: expected input of rank R (shape desc), got shape (...)". */
nn_status nn_layer_check_rank(const nn_layer *l, const tensor *x, int rank, const char *desc);

#endif
