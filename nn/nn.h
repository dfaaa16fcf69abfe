/* nn: a small deep-learning framework in C. The one header a user includes
 * (`#include <nn/nn.h>`; installed, `pkg-config --cflags nn` finds it).
 *
 * The library is built in floors; each folder uses only its own floor and
 * the ones below (tests/test_floors.sh checks it):
 *
 *   nn/        nn/model.h      models (graphs of named layers), training, summary
 *              nn/registry.h   layer types by name, nn_layer_create
 *              nn/io/          file formats: npy.h, safetensors.h, idx.h,
 *                              checkpoint.h (atomic_file.h underneath)
 *              nn/model_load.h nn_model_load: a saved model rebuilt from its file
 *              nn/fit.h        nn_model_fit / evaluate / predict over data sets
 *   layers/    layers/layer.h  the layer interface; config.h its key=value
 *                              configs; format.h the image data format
 *              layers/spatial_dropout.h   SpatialDropout1D/2D/3D and its raw
 *                              kernels; one file per layer type
 *   optim/     optim/optim.h   SGD and Adam(W)
 *   tensor/    tensor.h        tensors;  status.h  errors and messages
 *              random.h        seeded random numbers;  threads.h  the shared
 *                              OpenMP/OpenBLAS thread count
 *              graph.h         the autograd tape and arena;  ops.h  graph
 *                              operations and the losses;  loss.h  a loss
 *                              chosen by name
 */
#ifndef NN_NN_H
#define NN_NN_H

#define NN_VERSION_MAJOR 3
#define NN_VERSION_MINOR 0
#define NN_VERSION_PATCH 0
#define NN_VERSION_STRING "3.0.0"

#include "tensor/status.h"
#include "tensor/tensor.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tensor/graph.h"
#include "tensor/ops.h"
#include "tensor/loss.h"
#include "optim/optim.h"
#include "layers/layer.h"
#include "layers/format.h"
#include "layers/spatial_dropout.h"
#include "nn/registry.h"
#include "nn/model.h"
#include "nn/io/npy.h"
#include "nn/io/safetensors.h"
#include "nn/io/idx.h"
#include "nn/io/checkpoint.h"
#include "nn/shard.h"
#include "nn/io/onnx.h"
#include "nn/fit.h"
#include "nn/model_load.h"

/* The library's version string, e.g. "2.0.0". */
const char *nn_version(void);

#endif
