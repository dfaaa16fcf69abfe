/* An ONNX file as plain C data: the part of the ModelProto that
 * nn_onnx_load translates (nn/io/onnx_load.c), decoded and checked by
 * nn/io/onnx_parse.c from the protobuf wire format (nn/io/protobuf.h).
 *
 * Kept: the IR version, the default domain's opset, the main graph's nodes
 * (name, operator, domain, inputs, outputs, attributes of the scalar, ints,
 * floats, string and tensor kinds), its initializers (float32 as floats,
 * int64 as integers, every other dtype by its code only), and its inputs'
 * and outputs' element types and shapes. Skipped: doc strings, metadata,
 * value_info, training info. Refused: external tensor data, sparse
 * initializers, data whose size does not match its dims.
 *
 * Limits, so that a hostile file cannot ask for more memory than its own
 * size justifies: every array is allocated only as its fields are read,
 * and at most NN_ONNX_MAX_NODES nodes, NN_ONNX_MAX_TENSORS initializers,
 * NN_ONNX_MAX_IO inputs or outputs per node, NN_ONNX_MAX_ATTRS attributes
 * per node, NN_ONNX_MAX_RANK dimensions.
 *
 * Ownership: nn_onnx_graph_parse fills a caller's nn_onnx_graph, which
 * owns every string and array in it until nn_onnx_graph_free. Not part of
 * the public API (nn.h does not include it); the fuzz harness and the
 * tests use it.
 */
#ifndef NN_IO_ONNX_GRAPH_H
#define NN_IO_ONNX_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/status.h"

#define NN_ONNX_MAX_NODES 4096
#define NN_ONNX_MAX_TENSORS 4096
#define NN_ONNX_MAX_IO 16
#define NN_ONNX_MAX_ATTRS 16
#define NN_ONNX_MAX_INTS 16
#define NN_ONNX_MAX_RANK 8

typedef struct nn_onnx_tensor {
    char *name;
    int dtype; /* ONNX DataType: 1 float32, 7 int64, ... */
    int rank;
    int64_t dims[NN_ONNX_MAX_RANK];
    size_t count;   /* product of dims */
    float *f;       /* count floats when dtype is float32, else NULL */
    int64_t *i64;   /* count integers when dtype is int64, else NULL */
} nn_onnx_tensor;

typedef struct nn_onnx_attr {
    char *name;
    int type;       /* ONNX AttributeType (1 float, 2 int, 3 string, 4 tensor, 6 floats, 7 ints) */
    float f;
    int64_t i;
    char *s;
    int n_ints;     /* up to NN_ONNX_MAX_INTS kept; more is an error */
    int64_t ints[NN_ONNX_MAX_INTS];
    int n_floats;   /* counted, not kept: no supported operator takes floats */
    nn_onnx_tensor *t;
} nn_onnx_attr;

typedef struct nn_onnx_node {
    char *name, *op, *domain; /* never NULL ("" when absent) */
    int n_in, n_out, n_attrs;
    char *in[NN_ONNX_MAX_IO], *out[NN_ONNX_MAX_IO]; /* "" marks an omitted optional one */
    nn_onnx_attr attrs[NN_ONNX_MAX_ATTRS];
    size_t offset; /* of the node in the file */
} nn_onnx_node;

typedef struct nn_onnx_value {
    char *name;
    int elem;  /* element type, 0 when not given */
    int rank;  /* -1 when no shape is given */
    int64_t dims[NN_ONNX_MAX_RANK]; /* -1: symbolic or unknown */
} nn_onnx_value;

typedef struct nn_onnx_graph {
    const char *file; /* borrowed name, for messages */
    int64_t ir_version, opset; /* opset of the default domain, 0 when not imported */
    int n_nodes, n_inits, n_inputs, n_outputs;
    nn_onnx_node *nodes;
    nn_onnx_tensor *inits;
    nn_onnx_value *inputs, *outputs;
    int cap_nodes, cap_inits, cap_inputs, cap_outputs;
} nn_onnx_graph;

/* Decodes the ModelProto in buf[0..len) into *g (zeroed first); name is the
 * file's name for messages. Errors (NN_ERR_FORMAT, naming the file, the byte
 * offset and the field): damaged wire format, a field of the wrong wire
 * type, a limit above exceeded, tensor data that does not match its dims,
 * external data, no graph. On error *g holds nothing (freed). */
nn_status nn_onnx_graph_parse(const void *buf, size_t len, const char *name, nn_onnx_graph *g);
void nn_onnx_graph_free(nn_onnx_graph *g);

/* Decodes one serialized TensorProto (the test-data files of ONNX's node
 * tests) into *t; free it with nn_onnx_tensor_free. */
nn_status nn_onnx_tensor_parse(const void *buf, size_t len, const char *name, nn_onnx_tensor *t);
void nn_onnx_tensor_free(nn_onnx_tensor *t);

/* Translates a decoded graph into a new built model (what nn_onnx_parse
 * does after decoding; see nn/io/onnx.h). For tests that edit the graph
 * first, e.g. binding graph inputs to constants by adding initializers of
 * the same names (an input that is also an initializer is a constant). */
struct nn_model;
nn_status nn_onnx_graph_load(const nn_onnx_graph *g, struct nn_model **out);

/* The attribute called name of node n, or NULL. */
const nn_onnx_attr *nn_onnx_node_attr(const nn_onnx_node *n, const char *name);

#endif
