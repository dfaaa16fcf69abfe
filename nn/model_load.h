/* A saved model rebuilt from its file, as Keras's load_model(path) does:
 * the network, the input shape and every parameter come from the file, so a
 * predicting program needs neither the spec nor the shape.
 *
 * Both file kinds hold the network:
 *   checkpoint (nn/io/checkpoint.h)     every layer's type and config with
 *                                       its name= and inputs= keys, the
 *                                       input shape, the model seed; then
 *                                       parameters, buffers, layer seeds and
 *                                       call counters
 *   .safetensors (nn/io/safetensors.h)  __metadata__ nn_spec (the spec text)
 *                                       and nn_input_shape ("28,28,1"); then
 *                                       every parameter and buffer
 * The kind is told by the bytes, not by the file name: a checkpoint starts
 * with NN_CHECKPOINT_MAGIC, a .safetensors file has its JSON header's '{'
 * at offset 8.
 *
 * Deliberately omitted: the optimizer state and the training-state blob of
 * a checkpoint (load them with nn_checkpoint_load into the returned model to
 * resume training), .safetensors files without nn's metadata (written by
 * other tools: build the model in code, then nn_safetensors_load), and any
 * network the spec format cannot express. A model from a .safetensors file
 * gets seed 0, which only matters if it is trained further (the format
 * stores no seeds). A layer type registered by the program
 * (nn_registry_add) must be registered before the call.
 */
#ifndef NN_NN_MODEL_LOAD_H
#define NN_NN_MODEL_LOAD_H

#include "nn/model.h"

/* Reads path (a checkpoint or a .safetensors file written by nn), creates
 * the model its network describes, builds it for the stored input shape,
 * loads every parameter and buffer (batchnorm's moving statistics too) and
 * returns it in eval mode in *out; the caller frees it with nn_model_free.
 * Errors (*out is then NULL and nothing is left allocated): NULL arguments;
 * a file that cannot be read or is neither kind; a damaged file (the
 * message names the file, what is wrong and, where the format gives one,
 * the byte offset); a stored network that no longer parses or builds with
 * this version of the library (the message names the layer); parameters
 * that do not match the network. */
nn_status nn_model_load(const char *path, nn_model **out);

#endif
