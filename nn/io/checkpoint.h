/* Checkpoints: a model's parameters and everything else that training state
 * needs to continue bit for bit, in one versioned binary file.
 *
 * What is stored: the network's description (input shape, every layer's type,
 * name and config, every parameter and buffer tensor's name and shape), then
 * the values: trainable parameters, buffers, each layer's seed and `calls`
 * counter (so dropout masks continue where they stopped), the optimizer
 * (kind, hyperparameters, step count, moment/momentum arrays) and a small
 * caller-defined blob for the training loop's own state (epoch, data-order
 * RNG, learning-rate schedule position). Gradients are not stored: they are
 * zeroed at every step.
 *
 * Layout (integers little-endian, floats IEEE-754 binary32 little-endian,
 * strings as u32 length + bytes):
 *   0   char[8]  magic "NNCKPT\0\n"
 *   8   u32      format version (NN_CHECKPOINT_VERSION)
 *   12  u32      0 (reserved)
 *   16  u64      file size in bytes, CRC included (tells truncation apart
 *                from corruption)
 *   24  u64      header length H
 *   32  header   model seed u64; input rank u32 + extents u32; layer count
 *                u32; per layer: type, name, config (strings), parameter
 *                count u32, per parameter: name, trainable u32, rank u32,
 *                extents u32; parameter and buffer element counts u64;
 *                optimizer kind u32 (0 none, 1 sgd, 2 adam); optimizer state
 *                element count u64; blob length u64
 *   32+H payload parameters f32[], buffers f32[], per layer seed u64 and
 *                calls u64; if an optimizer: lr, momentum f32, nesterov u32,
 *                beta1, beta2, eps, weight_decay f32, decoupled u32, step
 *                count u64, state size n u64, state f32[]; blob bytes
 *   end-4 u32    CRC-32 (zlib's crc32) of bytes 24 .. end-4: header and
 *                payload together
 *
 * Saving writes "PATH.tmp.<pid>.<n>", flushes and fsyncs it, renames it
 * over PATH and fsyncs the directory (nn/io/atomic_file.h): PATH is always
 * either the old complete file or the new complete file, and no temporary
 * file is left behind; one left by a writer that was killed is removed by
 * the next save to PATH.
 *
 * Loading checks everything before it changes anything: size, magic,
 * version, CRC, that the network matches, optimizer kind and size, blob
 * size. Any failure leaves the model, the optimizer and the blob buffer
 * exactly as they were. "The network matches" means what decides the
 * parameters, as Keras's load_weights asks: the input shape, the layer types
 * in order, their names and inputs, and each parameter's name, kind
 * (trainable or buffer) and shape. Keys that hold no parameter (a dropout
 * rate, a seed, inplace=, an activation) may differ: the model keeps its own
 * settings and takes the file's values. A difference is reported with the
 * keys that explain it, e.g. "layer 3 (dense_2): checkpoint has dense
 * units=64, model has dense units=128 (kernel (144, 64) against (144,
 * 128))".
 *
 * To rebuild the saved model itself rather than load into one made by the
 * caller, use nn_model_load (nn/model_load.h), which reads the network from
 * the file through nn_checkpoint_describe.
 *
 * Thread-safety: the model and optimizer must not be used by another thread
 * during a call.
 */
#ifndef NN_IO_CHECKPOINT_H
#define NN_IO_CHECKPOINT_H

#include <stddef.h>

#include "nn/model.h"
#include "optim/optim.h"

#define NN_CHECKPOINT_VERSION 1u
/* The version written for a model with several inputs: after the first
 * input's extents, u32 count of further inputs and per input its name
 * (string), rank u32 and extents u32; the rest as version 1. */
#define NN_CHECKPOINT_VERSION_INPUTS 2u
/* The file's first 8 bytes. */
#define NN_CHECKPOINT_MAGIC "NNCKPT\0\n"

/* Writes m (built), opt (may be NULL: no optimizer section) and
 * extra[0..extra_len) (may be NULL when extra_len is 0) to path atomically. */
nn_status nn_checkpoint_save(const char *path, const nn_model *m, const optim *opt,
                             const void *extra, size_t extra_len);

/* Reads path into m (built, with the same network), opt and extra.
 *  - opt NULL: the optimizer section is skipped (weights-only load, e.g. for
 *    evaluation or fine-tuning with a fresh optimizer). Otherwise the file
 *    must hold an optimizer of the same kind; its hyperparameters, step
 *    count and state replace opt's.
 *  - extra NULL: the blob is skipped. Otherwise it is copied to extra when
 *    it fits in extra_cap bytes (an error if not), and *extra_len (may be
 *    NULL) gets its length.
 * Layer seeds and call counters are restored, so stochastic layers continue
 * the mask sequence they had when saved. */
nn_status nn_checkpoint_load(const char *path, nn_model *m, optim *opt, void *extra,
                             size_t extra_cap, size_t *extra_len);

/* As nn_checkpoint_load, from the complete file contents buf[0..len) in
 * memory; name is used in messages. For callers with their own I/O. */
nn_status nn_checkpoint_parse(const void *buf, size_t len, const char *name, nn_model *m,
                              optim *opt, void *extra, size_t extra_cap, size_t *extra_len);

/* One layer as a checkpoint stores it. */
typedef struct nn_checkpoint_layer {
    char type[NN_NAME_LEN];
    char name[NN_NAME_LEN];
    char config[512]; /* resolved config, then its name= and inputs= keys where the spec has them */
} nn_checkpoint_layer;

/* The network a checkpoint was saved from: enough to rebuild it with
 * nn_model_create(seed), nn_model_add("input", "name=N shape=...") for
 * each further input, nn_model_add(type, config) for each layer, and
 * nn_model_build(in_rank, in_shape). About 40 KB: allocate it, do not put it
 * on a small stack. */
typedef struct nn_checkpoint_network {
    uint64_t seed;                   /* the model seed */
    int in_rank;                     /* per-sample input shape */
    int in_shape[TENSOR_MAX_RANK];
    int n_extra_inputs;              /* the model's further inputs (version 2) */
    nn_model_input extra_inputs[NN_MODEL_MAX_INPUTS - 1];
    int n_layers;
    nn_checkpoint_layer layers[NN_MODEL_MAX_LAYERS];
} nn_checkpoint_network;

/* Reads the network description of a checkpoint held in buf[0..len) (name
 * is used in messages) after the integrity checks (magic, version, size,
 * CRC). The parameters' names and shapes are not checked here: loading the
 * values into the rebuilt model checks them. */
nn_status nn_checkpoint_describe(const void *buf, size_t len, const char *name,
                                 nn_checkpoint_network *net);

#endif
