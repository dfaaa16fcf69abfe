/* Adam and AdamW, as torch.optim.Adam / AdamW (bias-corrected moments,
 * eps added after the square root).
 * The per-step scalars (bias corrections, 1 - beta, AdamW's decay factor) are
 * computed in double and rounded once, as PyTorch does: in float,
 * 1 - 0.999^t loses about five significant digits to cancellation. */
#include "optim/optim.h"

#include <math.h>

void optim_adam_update(optim *o, float *w, const float *g, size_t n)
{
    const double t = (double)o->t;
    const double bc1 = 1.0 - pow((double)o->beta1, t);
    const float step = (float)((double)o->lr / bc1);
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)o->beta2, t));
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
    const float a1 = (float)(1.0 - (double)b1), a2 = (float)(1.0 - (double)b2);
    const float decay = (float)(1.0 - (double)o->lr * wd); /* AdamW: w *= 1 - lr*wd */
    float *m = o->state, *v = o->state + n;
    /* Two loops rather than a test inside one, so each vectorises. */
    if (o->decoupled) {
        #pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) {
            const float gi = g[i];
            w[i] *= decay;
            m[i] = m[i] * b1 + a1 * gi;
            v[i] = v[i] * b2 + a2 * gi * gi;
            w[i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
        }
    } else {
        #pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) {
            const float gi = g[i] + wd * w[i];
            m[i] = m[i] * b1 + a1 * gi;
            v[i] = v[i] * b2 + a2 * gi * gi;
            w[i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
        }
    }
}
