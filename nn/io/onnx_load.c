/* nn_onnx_load: not written yet. */
#include "nn/io/onnx.h"

nn_status nn_onnx_parse(const void *buf, size_t len, const char *name, nn_model **out)
{
    (void)buf, (void)len;
    if (out) *out = NULL;
    return nn_error(NN_ERR_STATE, "%s: ONNX import is not implemented yet", name ? name : "?");
}

nn_status nn_onnx_load(const char *path, nn_model **out)
{
    return nn_onnx_parse(NULL, 0, path, out);
}
