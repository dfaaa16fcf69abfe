/* nn: a small deep-learning framework in C. The one header a user includes.
 *
 *   nn/status.h    error status and messages
 *   tensor/        tensors, seeded random numbers
 *   nn/graph.h     autograd tape and arena
 *   nn/ops.h       graph operations and the loss
 *   nn/layer.h     the layer interface;  nn/registry.h  layer types by name
 *   nn/model.h     sequential models, training step, summary
 *   optim/optim.h  SGD and Adam(W)
 *   nn/threads.h   the shared OpenMP/OpenBLAS thread count
 *   nn/format.h    image data format (channels_last / channels_first) default
 */
#ifndef NN_NN_H
#define NN_NN_H

#define NN_VERSION_MAJOR 0
#define NN_VERSION_MINOR 1
#define NN_VERSION_PATCH 0
#define NN_VERSION_STRING "0.1.0"

#include "nn/status.h"
#include "tensor/tensor.h"
#include "tensor/random.h"
#include "nn/graph.h"
#include "nn/ops.h"
#include "nn/layer.h"
#include "nn/registry.h"
#include "nn/model.h"
#include "nn/threads.h"
#include "nn/format.h"
#include "nn/npy.h"
#include "nn/safetensors.h"
#include "optim/optim.h"
#include "layers/spatial_dropout.h"
#include "nn/idx.h"
#include "nn/checkpoint.h"

/* The library's version string, e.g. "0.1.0". */
const char *nn_version(void);

#endif
