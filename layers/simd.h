/* simd: the vector type the layers' hand-vectorized kernels compute with
 * (conv_gemm.c, conv_winograd.c; spatial_dropout_kernels.c keeps a copy of
 * the few lines it needs, so that it travels alone): 16 floats with
 * AVX-512, 8 with AVX, 4 otherwise, through GCC/Clang vector extensions
 * rather than intrinsics, so -march decides and one source serves every
 * machine. Loads and stores go through memcpy, so any alignment works.
 *
 * Internal to the kernels of layers/: not part of the public API.
 */
#ifndef NN_LAYERS_SIMD_H
#define NN_LAYERS_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__FMA__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

#define UNROLL _Pragma("GCC unroll 8")
#define INLINE static inline __attribute__((always_inline))

INLINE vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* The n < VL floats at p in the low lanes, zeros above: the last part of
 * a row that is not a whole number of vectors, read without reading past it. */
INLINE vf vload_part(const float *p, int n)
{
    vf v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

/* a * b + c, rounded once wherever the machine has FMA. Written out rather
 * than left to contraction: GCC's tuning for some CPUs (-mtune=znver3, which
 * -march=native picks there) splits FMA chains into a multiply and an add,
 * and the results would then depend on the -mtune the library was built
 * with. */
INLINE vf vfma(vf a, vf b, vf c)
{
#if defined(__FMA__) && VL == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && VL == 8
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__FMA__)
    return (vf)_mm_fmadd_ps((__m128)a, (__m128)b, (__m128)c);
#else
    return a * b + c;
#endif
}

/* A vector of copies of a: x - 0 is x for every float (0 + x is not, for
 * x = -0), so this folds to a single broadcast. */
INLINE vf splat(float a) { return a - (vf){0}; }

#endif
