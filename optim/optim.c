/* Optimizer lifecycle and dispatch (see optim.h); the update rules are in
 * sgd.c and adam.c. */
#include "optim/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor.h"

void optim_sgd_update(optim *o, float *w, const float *g, size_t n);
void optim_adam_update(optim *o, float *w, const float *g, size_t n);

static optim *optim_new(optim_kind kind, float lr)
{
    optim *o = calloc(1, sizeof *o);
    if (!o) {
        nn_error(NN_ERR_MEMORY, "optim: out of memory");
        return NULL;
    }
    o->kind = kind;
    o->lr = lr;
    return o;
}

static int optim_lr_ok(float lr, const char *fn)
{
    if (isfinite(lr) && lr > 0.0f) return 1;
    nn_error(NN_ERR_ARG, "%s: lr must be a finite number > 0, but got %g", fn, (double)lr);
    return 0;
}

optim *optim_sgd_create(float lr, float momentum, int nesterov, float weight_decay)
{
    if (!optim_lr_ok(lr, "optim_sgd_create")) return NULL;
    if (!(momentum >= 0.0f && momentum < 1.0f)) {
        nn_error(NN_ERR_ARG, "optim_sgd_create: momentum must be in [0, 1), but got %g", (double)momentum);
        return NULL;
    }
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay)) {
        nn_error(NN_ERR_ARG, "optim_sgd_create: weight_decay must be >= 0, but got %g", (double)weight_decay);
        return NULL;
    }
    if (nesterov && momentum == 0.0f) {
        nn_error(NN_ERR_ARG, "optim_sgd_create: nesterov needs a momentum > 0");
        return NULL;
    }
    optim *o = optim_new(OPTIM_SGD, lr);
    if (!o) return NULL;
    o->momentum = momentum;
    o->nesterov = nesterov != 0;
    o->weight_decay = weight_decay;
    return o;
}

optim *optim_adam_create(float lr, float beta1, float beta2, float eps, float weight_decay,
                         int decoupled)
{
    if (!optim_lr_ok(lr, "optim_adam_create")) return NULL;
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f)) {
        nn_error(NN_ERR_ARG, "optim_adam_create: betas must be in [0, 1), but got (%g, %g)",
                 (double)beta1, (double)beta2);
        return NULL;
    }
    if (!(eps > 0.0f) || !isfinite(eps)) {
        nn_error(NN_ERR_ARG, "optim_adam_create: eps must be > 0, but got %g", (double)eps);
        return NULL;
    }
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay)) {
        nn_error(NN_ERR_ARG, "optim_adam_create: weight_decay must be >= 0, but got %g",
                 (double)weight_decay);
        return NULL;
    }
    optim *o = optim_new(OPTIM_ADAM, lr);
    if (!o) return NULL;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->decoupled = decoupled != 0;
    return o;
}

void optim_free(optim *o)
{
    if (!o) return;
    tensor_aligned_free(o->state);
    free(o);
}

size_t optim_state_count(const optim *o, size_t n)
{
    if (o->kind == OPTIM_ADAM) return 2 * n;
    return o->momentum > 0.0f ? n : 0;
}

nn_status optim_step(optim *o, float *w, const float *g, size_t n)
{
    if (!o || !w || !g)
        return nn_error(NN_ERR_ARG, "optim_step: NULL argument: %s is NULL",
                        !o ? "o" : !w ? "w" : "g");
    if (o->n && o->n != n)
        return nn_error(NN_ERR_SHAPE, "optim_step: state was made for %zu parameters, got %zu",
                        o->n, n);
    if (!o->n) {
        size_t count = optim_state_count(o, n);
        if (n > SIZE_MAX / 2 / sizeof(float))
            return nn_error(NN_ERR_ARG, "optim_step: %zu parameters is too many", n);
        if (count) {
            o->state = tensor_aligned_alloc(count * sizeof(float));
            if (!o->state) return NN_ERR_MEMORY;
            memset(o->state, 0, count * sizeof(float));
        }
        o->n = n;
    }
    o->t++;
    if (o->kind == OPTIM_SGD) optim_sgd_update(o, w, g, n);
    else optim_adam_update(o, w, g, n);
    return NN_OK;
}

nn_status optim_set_lr(optim *o, float lr)
{
    if (!o) return nn_error(NN_ERR_ARG, "optim_set_lr: optimizer is NULL");
    if (!optim_lr_ok(lr, "optim_set_lr")) return NN_ERR_ARG;
    o->lr = lr;
    return NN_OK;
}

float optim_get_lr(const optim *o) { return o->lr; }
