/* Layer lifecycle shared by all types (see layer.h): creation, build with
 * one input or several (merge layers), checked forward calls, parameters. */
#include "layers/layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/random.h"

/* After the parse hook failed with status s: a hook stops at its first
 * error, so a misspelt key ("kernal_size") shows only as the "required"
 * error it causes. The hook runs again on a probe of the config (getters that
 * never fail) and a scratch state, to read every key it can; when it gets
 * through, a given key it never read is reported instead of s, since it
 * likely explains s. When the hook stops at a check of its own (batchnorm's
 * epsilon > 0), the keys after it are unknown territory: s stands. */
static nn_status layer_unknown_key_first(const nn_layer *l, const nn_config *cfg, nn_status s)
{
    int unread = 0;
    for (int i = 0; i < cfg->n; i++) unread |= !cfg->kv[i].used;
    if (!unread) return s;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nn_last_error());
    nn_layer scratch = *l;
    scratch.state = l->type->state_size ? calloc(1, l->type->state_size) : NULL;
    if (l->type->state_size && !scratch.state) return s;
    nn_config probe;
    nn_config_probe(&probe, cfg);
    const nn_status read_all = l->type->parse(&scratch, &probe);
    if (l->type->destroy) l->type->destroy(&scratch);
    free(scratch.state);
    if (read_all == NN_OK && nn_config_finish(&probe) != NN_OK) return NN_ERR_CONFIG;
    return nn_error(s, "%s", msg);
}

nn_layer *nn_layer_create_from_type(const nn_layer_type *type, const char *config)
{
    if (!type || !type->name || !type->parse) {
        nn_error(NN_ERR_ARG, "nn_layer_create_from_type: type is NULL or has no name or parse hook");
        return NULL;
    }
    nn_layer *l = calloc(1, sizeof *l);
    if (!l) {
        nn_error(NN_ERR_MEMORY, "nn_layer_create: out of memory");
        return NULL;
    }
    l->type = type;
    snprintf(l->name, sizeof l->name, "%s", type->name);
    if (type->state_size) {
        l->state = calloc(1, type->state_size);
        if (!l->state) {
            free(l);
            nn_error(NN_ERR_MEMORY, "nn_layer_create: out of memory");
            return NULL;
        }
    }
    nn_config cfg;
    nn_status s = nn_config_parse(&cfg, type->name, config);
    if (s == NN_OK) {
        s = type->parse(l, &cfg);
        s = s == NN_OK ? nn_config_finish(&cfg) : layer_unknown_key_first(l, &cfg, s);
    }
    if (s != NN_OK) {
        nn_layer_free(l);
        return NULL;
    }
    return l;
}

void nn_layer_free(nn_layer *l)
{
    if (!l) return;
    if (l->type->destroy) l->type->destroy(l);
    free(l->state);
    /* Standalone layers own their parameter tensors (nn_layer_alloc_params);
     * in a model the tensors are views the model frees. */
    for (int i = 0; i < l->n_params; i++) tensor_free(l->params[i].t);
    free(l);
}

nn_status nn_layer_config_string(const nn_layer *l, char *buf, size_t n)
{
    nn_config_writer w = {buf, n, 0};
    if (n) buf[0] = '\0';
    l->type->write(l, &w);
    if (w.len >= n)
        return nn_error(NN_ERR_ARG, "nn_layer_config_string: %s needs %zu bytes, buffer has %zu",
                        l->name, w.len + 1, n);
    return NN_OK;
}

nn_status nn_layer_add_param(nn_layer *l, const char *name, int rank, const int *shape,
                             nn_init init, int fan_in, int fan_out, int trainable)
{
    if (l->n_params == NN_LAYER_MAX_PARAMS)
        return nn_error(NN_ERR_STATE, "%s: more than %d parameters", l->name, NN_LAYER_MAX_PARAMS);
    size_t size;
    NN_TRY(tensor_shape_size(rank, shape, &size, l->name));
    nn_param *p = &l->params[l->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->rank = rank;
    memcpy(p->shape, shape, (size_t)rank * sizeof *shape);
    p->init = init;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    p->trainable = trainable;
    return NN_OK;
}

size_t nn_layer_param_count(const nn_layer *l, int trainable)
{
    size_t total = 0;
    for (int i = 0; i < l->n_params; i++) {
        if (l->params[i].trainable != trainable) continue;
        size_t size = 1;
        for (int k = 0; k < l->params[i].rank; k++) size *= (size_t)l->params[i].shape[k];
        total += size;
    }
    return total;
}

int nn_layer_type_is_merge(const nn_layer_type *type)
{
    return type && type->forward_multi != NULL;
}

/* Checks one per-sample input shape and stores it as input k. */
static nn_status layer_set_input(nn_layer *l, int k, int in_rank, const int *in_shape)
{
    size_t size;
    NN_TRY(tensor_shape_size(in_rank, in_shape, &size, l->name));
    /* A batch adds an axis: per-sample shapes have at most TENSOR_MAX_RANK - 1. */
    if (in_rank >= TENSOR_MAX_RANK) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "%s: per-sample input %s has rank %d; at most %d leaves "
                        "room for the batch axis", l->name, tensor_shape_str(in_rank, in_shape, b,
                        sizeof b), in_rank, TENSOR_MAX_RANK - 1);
    }
    l->in_ranks[k] = in_rank;
    memcpy(l->in_shapes[k], in_shape, (size_t)in_rank * sizeof *in_shape);
    if (k == 0) {
        l->in_rank = in_rank;
        memcpy(l->in_shape, in_shape, (size_t)in_rank * sizeof *in_shape);
    }
    return NN_OK;
}

/* Checked, not asserted: user-registered types have build hooks too. */
static nn_status layer_check_output(nn_layer *l)
{
    if (l->out_rank >= 1 && l->out_rank < TENSOR_MAX_RANK) return NN_OK;
    char b[96];
    return nn_error(NN_ERR_SHAPE, "%s: the %s build hook gave an output of rank %d for input "
                    "%s (must be 1..%d)", l->name, l->type->name, l->out_rank,
                    tensor_shape_str(l->in_rank, l->in_shape, b, sizeof b), TENSOR_MAX_RANK - 1);
}

nn_status nn_layer_build(nn_layer *l, int in_rank, const int *in_shape)
{
    if (l->built)
        return nn_error(NN_ERR_STATE, "%s: layer is already built", l->name);
    if (nn_layer_type_is_merge(l->type)) {
        char b[96];
        return nn_error(NN_ERR_ARG, "%s: %s merges 2 to %d inputs, got one, of shape %s (a merge "
                        "layer is built with nn_layer_build_multi)", l->name, l->type->name,
                        NN_LAYER_MAX_INPUTS, tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    NN_TRY(layer_set_input(l, 0, in_rank, in_shape));
    l->n_in = 1;
    l->n_params = 0;
    NN_TRY(l->type->build(l, in_rank, in_shape));
    NN_TRY(layer_check_output(l));
    l->built = 1;
    return NN_OK;
}

nn_status nn_layer_build_multi(nn_layer *l, int n_in, const int *in_rank,
                               const int (*in_shape)[TENSOR_MAX_RANK])
{
    if (!l || !in_rank || !in_shape)
        return nn_error(NN_ERR_ARG, "nn_layer_build_multi: NULL argument: %s is NULL",
                        !l ? "l" : !in_rank ? "in_rank" : "in_shape");
    if (!nn_layer_type_is_merge(l->type)) {
        if (n_in == 1) return nn_layer_build(l, in_rank[0], in_shape[0]);
        return nn_error(NN_ERR_ARG, "%s: %s takes 1 input, got %d", l->name, l->type->name,
                        n_in);
    }
    if (l->built)
        return nn_error(NN_ERR_STATE, "%s: layer is already built", l->name);
    if (n_in < 2 || n_in > NN_LAYER_MAX_INPUTS)
        return nn_error(NN_ERR_ARG, "%s: %s merges 2 to %d inputs, got %d", l->name,
                        l->type->name, NN_LAYER_MAX_INPUTS, n_in);
    for (int k = 0; k < n_in; k++) NN_TRY(layer_set_input(l, k, in_rank[k], in_shape[k]));
    l->n_in = n_in;
    l->n_params = 0;
    NN_TRY(l->type->build_multi(l, n_in, l->in_ranks, (const int (*)[TENSOR_MAX_RANK])l->in_shapes));
    NN_TRY(layer_check_output(l));
    l->built = 1;
    return NN_OK;
}

void nn_param_init(nn_param *p, tensor_rng *rng)
{
    switch (p->init) {
    case NN_INIT_ZEROS: tensor_fill(p->t, 0.0f); break;
    case NN_INIT_ONES: tensor_fill(p->t, 1.0f); break;
    case NN_INIT_GLOROT_UNIFORM: tensor_init_glorot_uniform(p->t, rng, p->fan_in, p->fan_out); break;
    case NN_INIT_HE_NORMAL: tensor_init_he_normal(p->t, rng, p->fan_in); break;
    case NN_INIT_HE_UNIFORM: tensor_init_he_uniform(p->t, rng, p->fan_in); break;
    }
}

nn_status nn_layer_alloc_params(nn_layer *l, uint64_t rng_seed)
{
    if (!l->built) return nn_error(NN_ERR_STATE, "%s: build the layer first", l->name);
    tensor_rng rng;
    tensor_rng_seed(&rng, rng_seed);
    for (int i = 0; i < l->n_params; i++) {
        nn_param *p = &l->params[i];
        if (p->t) continue;
        p->t = tensor_zeros(p->rank, p->shape);
        if (!p->t) return NN_ERR_MEMORY;
        p->t->flags |= TENSOR_PARAM;
        if (p->trainable) {
            p->t->grad = tensor_aligned_alloc(p->t->size * sizeof(float));
            if (!p->t->grad) return NN_ERR_MEMORY;
            memset(p->t->grad, 0, p->t->size * sizeof(float));
            p->t->flags |= TENSOR_OWNS_GRAD | TENSOR_REQUIRES_GRAD;
        }
        nn_param_init(p, &rng);
    }
    return NN_OK;
}

nn_status nn_layer_build_identity(nn_layer *l, int in_rank, const int *in_shape)
{
    l->out_rank = in_rank;
    for (int i = 0; i < in_rank; i++) l->out_shape[i] = in_shape[i];
    return NN_OK;
}

nn_status nn_layer_check_inplace(const nn_layer *l, const tensor *x, int keeps_sign)
{
    if (x->flags & TENSOR_PARAM)
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite a model parameter; "
                        "use inplace=false", l->name);
    if ((x->flags & TENSOR_REQUIRES_GRAD) && !x->node)
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite a leaf tensor that "
                        "requires a gradient; use inplace=false", l->name);
    if (x->node && x->node->saves_output && !(keeps_sign && x->node->output_is_mask))
        return nn_error(NN_ERR_STATE, "%s: inplace=true cannot overwrite the output of '%s', "
                        "whose backward reads it; use inplace=false", l->name, x->node->op);
    return NN_OK;
}

nn_status nn_layer_check_rank(const nn_layer *l, const tensor *x, int rank, const char *desc)
{
    if (x->rank == rank) return NN_OK;
    char b[96];
    return nn_error(NN_ERR_SHAPE, "%s: expected input of rank %d %s, got rank %d with shape %s",
                    l->name, rank, desc, x->rank,
                    tensor_shape_str(x->rank, x->shape, b, sizeof b));
}

/* Checks that x is a batch of input k's built per-sample shape. */
static nn_status layer_check_input(const nn_layer *l, int k, const tensor *x)
{
    const int rank = l->in_ranks[k];
    const int *shape = l->in_shapes[k];
    int ok = x->rank == rank + 1;
    for (int i = 0; ok && i < rank; i++) ok = x->shape[i + 1] == shape[i];
    if (ok) return NN_OK;
    char a[96] = "(batch", b[96], which[32] = "";
    for (int i = 0; i < rank; i++) {
        size_t len = strlen(a);
        snprintf(a + len, sizeof a - len, ", %d", shape[i]);
    }
    strncat(a, ")", sizeof a - strlen(a) - 1);
    if (l->n_in > 1) snprintf(which, sizeof which, " %d", k);
    return nn_error(NN_ERR_SHAPE, "%s: expected input%s of shape %s, got %s", l->name, which, a,
                    tensor_shape_str(x->rank, x->shape, b, sizeof b));
}

static nn_status layer_check_params(const nn_layer *l)
{
    for (int i = 0; i < l->n_params; i++)
        if (!l->params[i].t)
            return nn_error(NN_ERR_STATE, "%s: parameters are not allocated", l->name);
    return NN_OK;
}

nn_status nn_layer_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **y, int training)
{
    if (!l || !g || !x || !y)
        return nn_error(NN_ERR_ARG, "nn_layer_forward: NULL argument: %s is NULL",
                        !l ? "l" : !g ? "g" : !x ? "x" : "y");
    if (!l->built) return nn_error(NN_ERR_STATE, "%s: build the layer first", l->name);
    if (l->n_in != 1)
        return nn_error(NN_ERR_ARG, "%s: built for %d inputs, got 1", l->name, l->n_in);
    NN_TRY(layer_check_input(l, 0, x));
    NN_TRY(layer_check_params(l));
    return l->type->forward(l, g, x, y, training ? 1 : 0);
}

nn_status nn_layer_forward_multi(nn_layer *l, nn_graph *g, int n_in, tensor **x, tensor **y,
                                 int training)
{
    if (!l || !g || !x || !y)
        return nn_error(NN_ERR_ARG, "nn_layer_forward_multi: NULL argument: %s is NULL",
                        !l ? "l" : !g ? "g" : !x ? "x" : "y");
    if (!l->built) return nn_error(NN_ERR_STATE, "%s: build the layer first", l->name);
    if (n_in != l->n_in)
        return nn_error(NN_ERR_ARG, "%s: built for %d inputs, got %d", l->name, l->n_in, n_in);
    if (n_in == 1 && !nn_layer_type_is_merge(l->type))
        return nn_layer_forward(l, g, x[0], y, training);
    for (int k = 0; k < n_in; k++) {
        if (!x[k]) return nn_error(NN_ERR_ARG, "nn_layer_forward_multi: input %d is NULL", k);
        NN_TRY(layer_check_input(l, k, x[k]));
    }
    NN_TRY(layer_check_params(l));
    return l->type->forward_multi(l, g, n_in, x, y, training ? 1 : 0);
}
