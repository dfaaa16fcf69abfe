/* Models in and out of ONNX, the graph format that runtimes (ONNX Runtime,
 * TensorRT, OpenVINO) and other frameworks (PyTorch's torch.onnx) share.
 *
 * nn_onnx_save writes an inference graph at opset 13 (IR version 7):
 *   nn layer             ONNX nodes
 *   conv2d               Conv (kernel (KH,KW,C,F) stored as (F,C,KH,KW);
 *                        padding=same as explicit pads, the odd one at the
 *                        bottom/right as TensorFlow pads)
 *   dense                Gemm (B = kernel (in, units), C = bias)
 *   maxpool2d            MaxPool
 *   avgpool2d            AveragePool (count_include_pad=0, as Keras counts)
 *   global_avgpool2d     GlobalAveragePool, Flatten
 *   batchnorm            BatchNormalization (the moving statistics)
 *   flatten              Flatten (axis 1)
 *   add, concatenate     Add (a chain for 3+ inputs), Concat
 *   relu sigmoid tanh    Relu, Sigmoid, Tanh
 *   leaky_relu elu       LeakyRelu, Elu (alpha)
 *   gelu                 Div(x, sqrt 2), Erf, Add 1, Mul x, Mul 0.5 (Gelu is
 *                        an operator only from opset 20)
 *   softmax              Softmax (nn's last axis)
 *   dropout, spatial_dropout1d/2d/3d   nothing: the identity at inference
 *   activation= on conv2d, dense, batchnorm, add: a separate node after it
 * The graph input is "input", (N, per-sample shape) with N symbolic, in the
 * model's own layout, followed by the model's further inputs under their
 * names; the output is named after the last layer. ONNX's
 * Conv, pooling and BatchNormalization read NCHW, so a channels_last model
 * gets a Transpose into NCHW before the first of them and one back where the
 * nn layout is needed again (flatten, the output); channels_first models
 * need none. Initializers are named "<layer>.<parameter>".
 *
 * nn_onnx_load builds a model from an ONNX file that uses only these
 * operators (and Identity, Dropout, Transpose between NHWC and NCHW, MatMul
 * followed by Add of a bias, Constant, Pad that pads nothing, and Reshape
 * as a flatten: to a constant (0, -1), (-1, K), (B, -1) with B the graph
 * input's fixed batch, or to (N, -1) / (N, K) computed from the input by
 * Shape, Gather of element 0, Unsqueeze and Concat, as PyTorch exports
 * x.view(x.size(0), -1), K being all but the batch axis; opsets 1 to
 * 17 of the default domain, where these operators mean what they mean at
 * 13 (Softmax before 13 only over the last axis); float32 tensors).
 * PyTorch's NCHW models become channels_first layers; a Transpose(0,3,1,2) of an NHWC value (what nn_onnx_save writes)
 * makes the layers after it channels_last. Padding must be none or
 * TensorFlow's same for the layer's input size. Anything else is an error
 * naming the node, its operator and what nn cannot do; no model is returned
 * then and nothing is left allocated. Every graph input that is not an
 * initializer is a model input (at most NN_MODEL_MAX_INPUTS, one batch
 * size), in the graph's order: the first is nn's "input", the others keep
 * their ONNX names where those are valid layer names ("input_<q>"
 * otherwise, q counting from 1); run such a model with
 * nn_model_forward_inputs.
 *
 * Deliberately omitted: training graphs, external tensor data, dtypes other
 * than float32, symbolic per-sample dimensions (only the batch may be
 * symbolic), ONNX functions and other domains, any Reshape other than a
 * flatten, and Shape, Gather, Unsqueeze and Concat of shapes outside the
 * flatten's target.
 * Thread-safety: the model must not be used by another thread during a call.
 */
#ifndef NN_IO_ONNX_H
#define NN_IO_ONNX_H

#include <stddef.h>

#include "nn/model.h"

/* Writes the built model m as an ONNX inference graph to path, atomically.
 * Errors: NULL arguments, a model that is not built, a layer type with no
 * ONNX form (the message names the layer), the file cannot be written. */
nn_status nn_onnx_save(const nn_model *m, const char *path);

/* As nn_onnx_save, into a malloc'ed buffer (*data, *len; the caller frees). */
nn_status nn_onnx_encode(const nn_model *m, unsigned char **data, size_t *len);

/* Reads the ONNX file at path into a new built model in eval mode (*out;
 * the caller frees it with nn_model_free). On error *out is NULL and the
 * message names the file and the node, operator or field that is wrong. */
nn_status nn_onnx_load(const char *path, nn_model **out);

/* As nn_onnx_load, from the complete file contents buf[0..len); name is
 * used in messages. For fuzzing and for callers with their own I/O. */
nn_status nn_onnx_parse(const void *buf, size_t len, const char *name, nn_model **out);

#endif
