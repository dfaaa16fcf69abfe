/* One thread pool for the whole process.
 * OpenBLAS is linked in its OpenMP build, so its GEMMs and our OpenMP loops
 * share OpenMP's pool: setting the thread count once here sets both, and the
 * two never run more threads than asked for. Not thread-safe: call at start. */
#ifndef NN_TENSOR_THREADS_H
#define NN_TENSOR_THREADS_H

#include "tensor/status.h"

/* Sets the threads used by OpenMP loops and OpenBLAS. n must be >= 1. */
nn_status nn_set_threads(int n);
/* The current thread count. */
int nn_get_threads(void);

#endif
