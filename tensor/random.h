/* Seeded random numbers.
 *
 * Two generators, both explicit (no global state):
 *  - tensor_rng: a sequential xoshiro256** stream for weight initialisation
 *    and data shuffling, seeded from one 64-bit value.
 *  - tensor_hash_*: a counter-based generator: a pure function of a key
 *    (seed, stream, counter, index), so any thread can compute draw i without
 *    the draws before it. Dropout masks use it, which makes them independent
 *    of the thread count and schedule.
 * Thread-safety: a tensor_rng is used by one thread at a time; the hash
 * functions are pure and may be called from any thread.
 */
#ifndef NN_TENSOR_RANDOM_H
#define NN_TENSOR_RANDOM_H

#include <stdint.h>

#include "tensor/tensor.h"

typedef struct tensor_rng {
    uint64_t s[4];
} tensor_rng;

void tensor_rng_seed(tensor_rng *r, uint64_t seed);
uint64_t tensor_rng_next(tensor_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float tensor_rng_uniform(tensor_rng *r);
/* Standard normal (Box-Muller). */
float tensor_rng_normal(tensor_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias (0 when n is 0). */
uint32_t tensor_rng_below(tensor_rng *r, uint32_t n);

/* SplitMix64's finaliser: a bijective 64-bit mix. */
static inline uint64_t tensor_hash_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 64 random bits for (seed, counter, index). */
static inline uint64_t tensor_hash3(uint64_t seed, uint64_t counter, uint64_t index)
{
    return tensor_hash_mix(tensor_hash_mix(tensor_hash_mix(seed) ^ counter) ^ index);
}

/* Uniform in [0, 1) from the top 24 bits of tensor_hash3: exact in float. */
static inline float tensor_hash_uniform(uint64_t seed, uint64_t counter, uint64_t index)
{
    return (float)(tensor_hash3(seed, counter, index) >> 40) * (1.0f / 16777216.0f);
}

/* Initialisers; each consumes draws from r in element order. */
void tensor_init_uniform(tensor *t, tensor_rng *r, float lo, float hi);
void tensor_init_normal(tensor *t, tensor_rng *r, float mean, float stddev);
/* Glorot (Xavier) uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)). */
void tensor_init_glorot_uniform(tensor *t, tensor_rng *r, int fan_in, int fan_out);
/* He normal: N(0, 2 / fan_in). */
void tensor_init_he_normal(tensor *t, tensor_rng *r, int fan_in);
/* He uniform: U(-l, l), l = sqrt(6 / fan_in). */
void tensor_init_he_uniform(tensor *t, tensor_rng *r, int fan_in);

#endif
