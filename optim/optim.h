/* Optimizers over a flat parameter block.
 *
 * One interface for every optimizer: optim_step(o, w, g, n) updates the n
 * parameters w from their gradients g. State (momentum, Adam moments) is kept
 * per parameter element, allocated on the first step for n elements; later
 * steps must pass the same n. The model keeps all trainable parameters in one
 * block (nn/model.h), so one call updates a whole model.
 *
 *   SGD:  g' = g + wd*w;  b = momentum*b + g';  step = nesterov ? g' + momentum*b : b
 *         w -= lr*step          (PyTorch's torch.optim.SGD, dampening 0)
 *   Adam: g' = g + wd*w (L2, Adam) or w -= lr*wd*w first (decoupled, AdamW);
 *         m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'^2
 *         w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   (torch.optim.Adam)
 *
 * Ownership: optim_free releases the optimizer and its state.
 * Thread-safety: one optimizer per thread; the step itself may use OpenMP.
 */
#ifndef NN_OPTIM_OPTIM_H
#define NN_OPTIM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/status.h"

typedef enum optim_kind { OPTIM_SGD, OPTIM_ADAM } optim_kind;

typedef struct optim {
    optim_kind kind;
    float lr;
    float momentum;      /* SGD */
    int nesterov;        /* SGD */
    float beta1, beta2, eps; /* Adam */
    float weight_decay;
    int decoupled;       /* AdamW */
    uint64_t t;          /* steps taken */
    size_t n;            /* parameters the state was made for (0: none yet) */
    float *state;        /* SGD: n (momentum); Adam: 2n (m then v) */
} optim;

/* Errors: lr not finite and > 0, momentum outside [0, 1), weight_decay < 0,
 * nesterov without momentum. NULL with the message. */
optim *optim_sgd_create(float lr, float momentum, int nesterov, float weight_decay);
/* Errors: lr not > 0, betas outside [0, 1), eps not > 0, weight_decay < 0.
 * decoupled = 1 gives AdamW. */
optim *optim_adam_create(float lr, float beta1, float beta2, float eps, float weight_decay,
                         int decoupled);
void optim_free(optim *o);

nn_status optim_step(optim *o, float *w, const float *g, size_t n);
nn_status optim_set_lr(optim *o, float lr);
float optim_get_lr(const optim *o);
/* Floats of state for n parameters (what a checkpoint stores besides t). */
size_t optim_state_count(const optim *o, size_t n);

#endif
