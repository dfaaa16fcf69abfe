/* The ONNX field numbers and enum values that nn's writer and reader use,
 * as the ONNX IR specification numbers them (checked against the onnx
 * Python package's descriptors). Only the fields nn reads or writes are
 * named; the reader skips every other field. Plumbing for
 * nn/io/onnx_save.c and nn/io/onnx_parse.c; not included by nn.h. */
#ifndef NN_IO_ONNX_SCHEMA_H
#define NN_IO_ONNX_SCHEMA_H

/* ModelProto */
enum { ONNX_MODEL_IR_VERSION = 1, ONNX_MODEL_PRODUCER_NAME = 2, ONNX_MODEL_PRODUCER_VERSION = 3,
       ONNX_MODEL_GRAPH = 7, ONNX_MODEL_OPSET_IMPORT = 8, ONNX_MODEL_FUNCTIONS = 25 };
/* OperatorSetIdProto */
enum { ONNX_OPSET_DOMAIN = 1, ONNX_OPSET_VERSION = 2 };
/* GraphProto */
enum { ONNX_GRAPH_NODE = 1, ONNX_GRAPH_NAME = 2, ONNX_GRAPH_INITIALIZER = 5,
       ONNX_GRAPH_INPUT = 11, ONNX_GRAPH_OUTPUT = 12, ONNX_GRAPH_SPARSE_INITIALIZER = 15 };
/* NodeProto */
enum { ONNX_NODE_INPUT = 1, ONNX_NODE_OUTPUT = 2, ONNX_NODE_NAME = 3, ONNX_NODE_OP_TYPE = 4,
       ONNX_NODE_ATTRIBUTE = 5, ONNX_NODE_DOMAIN = 7 };
/* AttributeProto and its AttributeType values */
enum { ONNX_ATTR_NAME = 1, ONNX_ATTR_F = 2, ONNX_ATTR_I = 3, ONNX_ATTR_S = 4, ONNX_ATTR_T = 5,
       ONNX_ATTR_G = 6, ONNX_ATTR_FLOATS = 7, ONNX_ATTR_INTS = 8, ONNX_ATTR_TYPE = 20 };
enum { ONNX_ATTR_TYPE_FLOAT = 1, ONNX_ATTR_TYPE_INT = 2, ONNX_ATTR_TYPE_STRING = 3,
       ONNX_ATTR_TYPE_TENSOR = 4, ONNX_ATTR_TYPE_GRAPH = 5, ONNX_ATTR_TYPE_FLOATS = 6,
       ONNX_ATTR_TYPE_INTS = 7 };
/* ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto, its Dimension */
enum { ONNX_VALUE_NAME = 1, ONNX_VALUE_TYPE = 2 };
enum { ONNX_TYPE_TENSOR = 1 };
enum { ONNX_TTYPE_ELEM_TYPE = 1, ONNX_TTYPE_SHAPE = 2 };
enum { ONNX_SHAPE_DIM = 1 };
enum { ONNX_DIM_VALUE = 1, ONNX_DIM_PARAM = 2 };
/* TensorProto and its DataType values */
enum { ONNX_TENSOR_DIMS = 1, ONNX_TENSOR_DATA_TYPE = 2, ONNX_TENSOR_FLOAT_DATA = 4,
       ONNX_TENSOR_INT64_DATA = 7, ONNX_TENSOR_NAME = 8, ONNX_TENSOR_RAW_DATA = 9,
       ONNX_TENSOR_DOUBLE_DATA = 10, ONNX_TENSOR_DATA_LOCATION = 14 };
enum { ONNX_DTYPE_FLOAT = 1, ONNX_DTYPE_INT64 = 7, ONNX_DTYPE_DOUBLE = 11 };

/* What nn writes: IR version 7 (ONNX 1.8), the default operator set at
 * version 13. */
#define NN_ONNX_IR_VERSION 7
#define NN_ONNX_OPSET 13

#endif
