/* Model parameters in the .safetensors format, readable by PyTorch, JAX or
 * plain Python (json + struct) without running any code from the file.
 *
 * File layout (all integers and floats little-endian):
 *   0     u64    N, the length of the JSON header in bytes
 *   8     char[N] JSON header, padded at the end with spaces so that the
 *                data starts at a multiple of 8 bytes
 *   8+N   data   every tensor's raw float32 values, back to back, no gaps
 * The header maps each tensor name to
 *   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * with byte offsets relative to the start of the data (end - begin =
 * 4 * product(shape)), plus "__metadata__", a map of strings:
 *   "format"          "nn"
 *   "nn_version"      the library version that wrote the file
 *   "nn_input_shape"  the per-sample input shape the model was built for,
 *                     e.g. "28,28,1" (its first input's)
 *   "nn_spec"         the model spec text (nn_model_spec_string), from which
 *                     the same network can be rebuilt; a model's further
 *                     inputs are its "input name=... shape=..." lines
 *   "nn_layout"       a one-line reminder of the layouts below
 *
 * Tensor names are "<layer name>.<parameter name>", where the layer name is
 * the one nn_model_add gives ("<type>_<k>", k counting layers of that type
 * from 1): "conv2d_1.kernel", "conv2d_1.bias", "dense_2.kernel". Every
 * parameter is stored, trainable or not (a batch norm's moving statistics
 * too). Layouts, C order, as Keras stores them:
 *   dense.kernel   (in, units)           y = x W + b; PyTorch's Linear.weight
 *                                        is the transpose (units, in)
 *   dense.bias     (units)
 *   conv2d.kernel  (KH, KW, Cin, Cout)   whatever the layer's data_format;
 *                                        PyTorch's Conv2d.weight is
 *                                        (Cout, Cin, KH, KW): permute (3,2,0,1)
 *   conv2d.bias    (Cout)
 * A flatten after channels_last feature maps orders features (H, W, C), as
 * Keras does; a PyTorch model that reads these weights must permute NCHW to
 * NHWC before its flatten (tests/torch_roundtrip.py does exactly that).
 *
 * Saving is atomic (a temporary file renamed over path). Loading checks the
 * whole file before it changes the model: header length and bounds, JSON,
 * every entry's dtype, shape and offsets (integers, inside the data, sizes
 * that match the shape, no overlaps, no gaps), and that the file holds
 * exactly the model's parameters with the model's shapes. On any error the
 * model is unchanged and the message names the file, the tensor and the
 * offset or shape that is wrong.
 *
 * Loading compares tensor names and shapes only, so settings that hold no
 * parameter (a dropout rate, an activation) may differ between the file's
 * nn_spec and the model. To rebuild the saved network itself from nn_spec
 * and nn_input_shape, use nn_model_load (nn/model_load.h).
 *
 * Deliberately omitted: dtypes other than F32 (F16, BF16, integers),
 * partial loads, memory mapping. Optimizer state and RNG counters are not
 * stored: use nn/io/checkpoint.h to resume training.
 *
 * Thread-safety: the model must not be used by another thread during a call.
 */
#ifndef NN_IO_SAFETENSORS_H
#define NN_IO_SAFETENSORS_H

#include <stddef.h>

#include "nn/model.h"

/* Writes every parameter of the built model m to path. Errors: NULL
 * arguments, model not built, the file cannot be written. */
nn_status nn_safetensors_save(const nn_model *m, const char *path);

/* Reads path into the parameters of the built model m, which must have the
 * same tensor names and shapes (see above for what is checked). */
nn_status nn_safetensors_load(nn_model *m, const char *path);

/* As nn_safetensors_load, from the complete file contents in memory (len
 * bytes); name is used in messages. For fuzzing and for callers with their
 * own I/O. */
nn_status nn_safetensors_parse(nn_model *m, const void *buf, size_t len, const char *name);

/* A string of the header's __metadata__ ("nn_spec", "nn_input_shape", ...)
 * from the complete file contents buf[0..len); name is used in messages.
 * *value gets a malloc'ed copy (the caller frees it), or NULL on error: a
 * malformed header, no __metadata__, no such key, a value that is not a
 * string. Only the header is read; the tensors are not checked. */
nn_status nn_safetensors_metadata(const void *buf, size_t len, const char *name, const char *key,
                                  char **value);

#endif
