/* Stochastic gradient descent with momentum, Nesterov and L2 weight decay,
 * as torch.optim.SGD with dampening 0 (the first step sets b = g). */
#include "optim/optim.h"

void optim_sgd_update(optim *o, float *w, const float *g, size_t n)
{
    const float lr = o->lr, mu = o->momentum, wd = o->weight_decay;
    float *b = o->state;
    const int first = o->t == 1;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        if (b) {
            b[i] = first ? d : mu * b[i] + d;
            d = o->nesterov ? d + mu * b[i] : b[i];
        }
        w[i] -= lr * d;
    }
}
