/* nn: a small deep-learning framework in C. The one header a user includes.
 *
 *   tensor/status.h    error status and messages
 *   tensor/        tensors, seeded random numbers
 *   tensor/graph.h     autograd tape and arena
 *   tensor/ops.h       graph operations and the loss
 *   layers/layer.h     the layer interface;  nn/registry.h  layer types by name
 *   nn/model.h     sequential models, training step, summary
 *   optim/optim.h  SGD and Adam(W)
 *   tensor/threads.h   the shared OpenMP/OpenBLAS thread count
 *   layers/format.h    image data format (channels_last / channels_first) default
 */
#ifndef NN_NN_H
#define NN_NN_H

#define NN_VERSION_MAJOR 0
#define NN_VERSION_MINOR 1
#define NN_VERSION_PATCH 0
#define NN_VERSION_STRING "0.1.0"

#include "tensor/status.h"
#include "tensor/tensor.h"
#include "tensor/random.h"
#include "tensor/graph.h"
#include "tensor/ops.h"
#include "layers/layer.h"
#include "nn/registry.h"
#include "nn/model.h"
#include "tensor/threads.h"
#include "layers/format.h"
#include "nn/io/npy.h"
#include "nn/io/safetensors.h"
#include "optim/optim.h"
#include "layers/spatial_dropout.h"
#include "nn/io/idx.h"
#include "nn/io/checkpoint.h"

/* The library's version string, e.g. "0.1.0". */
const char *nn_version(void);

#endif
