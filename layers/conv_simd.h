/* conv_simd: the vector type the convolution kernels (conv_gemm.c,
 * conv_winograd.c) compute with: 16 floats with AVX-512, 8 with AVX, 4
 * otherwise, through GCC/Clang vector extensions rather than intrinsics, so
 * -march decides and one source serves every machine.
 *
 * Internal to those two files: it sets a floating-point pragma for the file
 * that includes it, which no other file should inherit.
 */
#ifndef NN_LAYERS_CONV_SIMD_H
#define NN_LAYERS_CONV_SIMD_H

#include <string.h>

/* acc += a * b must compile to one FMA: -std=c11 (ISO mode) makes GCC keep
 * the multiply and the add apart, which costs half the throughput. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int vi __attribute__((vector_size(VL * sizeof(int))));

#define UNROLL _Pragma("GCC unroll 8")
#define INLINE static inline __attribute__((always_inline))

INLINE vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* A vector of copies of a: x - 0 is x for every float (0 + x is not, for
 * x = -0), so this folds to a single broadcast. */
INLINE vf splat(float a) { return a - (vf){0}; }

#endif
