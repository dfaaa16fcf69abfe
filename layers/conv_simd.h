/* conv_simd: layers/simd.h plus the floating-point contraction the
 * convolution kernels (conv_gemm.c, conv_winograd.c) need.
 *
 * Internal to those two files: it sets a pragma for the file that includes
 * it, which no other file should inherit (the dropout's dx += dy * s, for
 * one, keeps its separate multiply and add).
 */
#ifndef NN_LAYERS_CONV_SIMD_H
#define NN_LAYERS_CONV_SIMD_H

/* acc += a * b must compile to one FMA: -std=c11 (ISO mode) makes GCC keep
 * the multiply and the add apart, which costs half the throughput. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include "layers/simd.h"

#endif
