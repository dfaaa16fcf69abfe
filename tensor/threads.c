/* Thread count for OpenMP and OpenBLAS (see threads.h). */
#include "tensor/threads.h"

#include <omp.h>

void openblas_set_num_threads(int n);

nn_status nn_set_threads(int n)
{
    if (n < 1 || n > 1024)
        return nn_error(NN_ERR_ARG, "nn_set_threads: n must be between 1 and 1024, but got %d", n);
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return NN_OK;
}

int nn_get_threads(void) { return omp_get_max_threads(); }
