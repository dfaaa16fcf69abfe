/* xoshiro256** stream and initialisers (see random.h). */
#include "tensor/random.h"

#include <math.h>

static inline uint64_t random_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tensor_rng_seed(tensor_rng *r, uint64_t seed)
{
    /* SplitMix64 expands the seed so that nearby seeds give unrelated streams. */
    for (int i = 0; i < 4; i++) r->s[i] = tensor_hash_mix(seed + (uint64_t)i * 0x9e3779b97f4a7c15ull);
}

uint64_t tensor_rng_next(tensor_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = random_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = random_rotl(s[3], 45);
    return result;
}

float tensor_rng_uniform(tensor_rng *r)
{
    return (float)(tensor_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float tensor_rng_normal(tensor_rng *r)
{
    /* u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(tensor_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(tensor_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t tensor_rng_below(tensor_rng *r, uint32_t n)
{
    if (n == 0) return 0; /* no valid answer; never divide by zero */
    uint64_t m = (uint64_t)(uint32_t)tensor_rng_next(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)-n % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)tensor_rng_next(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void tensor_init_uniform(tensor *t, tensor_rng *r, float lo, float hi)
{
    for (size_t i = 0; i < t->size; i++) t->data[i] = lo + (hi - lo) * tensor_rng_uniform(r);
}

void tensor_init_normal(tensor *t, tensor_rng *r, float mean, float stddev)
{
    for (size_t i = 0; i < t->size; i++) t->data[i] = mean + stddev * tensor_rng_normal(r);
}

void tensor_init_glorot_uniform(tensor *t, tensor_rng *r, int fan_in, int fan_out)
{
    float limit = sqrtf(6.0f / (float)(fan_in + fan_out));
    tensor_init_uniform(t, r, -limit, limit);
}

void tensor_init_he_normal(tensor *t, tensor_rng *r, int fan_in)
{
    tensor_init_normal(t, r, 0.0f, sqrtf(2.0f / (float)fan_in));
}

void tensor_init_he_uniform(tensor *t, tensor_rng *r, int fan_in)
{
    float limit = sqrtf(6.0f / (float)fan_in);
    tensor_init_uniform(t, r, -limit, limit);
}
