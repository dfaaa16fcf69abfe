/* Byte order of the float32 data in the file formats (.npy and
 * .safetensors store little-endian): the host's order and a byte swap.
 * Plumbing for nn/io/npy.c, nn/io/safetensors.c and nn/io/atomic_file.c; not
 * included by nn.h. */
#ifndef NN_IO_BYTE_ORDER_H
#define NN_IO_BYTE_ORDER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int nn_host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* Reverses the bytes of each of the n floats at x, in place. */
static inline void nn_swap_floats(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = (u >> 24) | ((u >> 8) & 0xff00u) | ((u << 8) & 0xff0000u) | (u << 24);
        memcpy(&x[i], &u, 4);
    }
}

#endif
