/* ONNX in and out: reads an ONNX model (for instance one that PyTorch's
 * torch.onnx.export wrote), runs it in nn, prints the network and the
 * first sample's outputs, and writes nn's own ONNX export of it, which any
 * ONNX runtime can run.
 *     build/examples/onnx_round_trip IN.onnx OUT.onnx
 * The input batch is 2 samples of a fixed pattern in the model's input
 * shape. The README's "ONNX" section walks through the whole round trip,
 * PyTorch -> ONNX -> nn -> ONNX -> ONNX Runtime. */
#include <stdio.h>

#include "nn/nn.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN.onnx OUT.onnx\n", argv[0]);
        return 2;
    }
    nn_model *m = NULL;
    if (nn_onnx_load(argv[1], &m) != NN_OK) { /* built, in eval mode */
        fprintf(stderr, "onnx_round_trip: %s\n", nn_last_error());
        return 1;
    }
    nn_model_summary(m, stdout);

    int shape[TENSOR_MAX_RANK + 1] = {2};
    for (int i = 0; i < m->in_rank; i++) shape[i + 1] = m->in_shape[i];
    tensor *x = tensor_create(m->in_rank + 1, shape);
    for (size_t i = 0; i < x->size; i++) x->data[i] = (float)(i % 11) / 10.0f;
    tensor *y;
    int rc = 1;
    if (nn_model_predict(m, x, NULL, &y, NULL, NULL) == NN_OK) {
        printf("outputs of sample 0:");
        for (size_t j = 0; j < y->size / 2; j++) printf(" %.6g", (double)y->data[j]);
        printf("\n");
        if (nn_onnx_save(m, argv[2]) == NN_OK) { /* opset 13, written atomically */
            printf("wrote %s\n", argv[2]);
            rc = 0;
        }
    }
    if (rc) fprintf(stderr, "onnx_round_trip: %s\n", nn_last_error());
    tensor_free(x);
    nn_model_free(m);
    return rc;
}
