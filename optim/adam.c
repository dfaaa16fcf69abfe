/* Adam and AdamW, as torch.optim.Adam / AdamW (bias-corrected moments,
 * eps added after the square root). */
#include "optim/optim.h"

#include <math.h>

void optim_adam_update(optim *o, float *w, const float *g, size_t n)
{
    const float lr = o->lr, b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
    const float bc1 = 1.0f - powf(b1, (float)o->t);
    const float bc2_sqrt = sqrtf(1.0f - powf(b2, (float)o->t));
    const float step = lr / bc1;
    float *m = o->state, *v = o->state + n;
    const int decoupled = o->decoupled;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (decoupled) w[i] -= lr * wd * w[i];
        else gi += wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}
