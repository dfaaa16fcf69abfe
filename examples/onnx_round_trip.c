/* ONNX in and out: reads an ONNX model (for instance one that PyTorch's
 * torch.onnx.export wrote), runs it in nn, prints the network and the
 * first sample's outputs, and writes nn's own ONNX export of it, which any
 * ONNX runtime can run.
 *     build/examples/onnx_round_trip IN.onnx OUT.onnx
 * The input batch is 2 samples of a fixed pattern in the shape of each of
 * the model's inputs. The README's "ONNX" section walks through the whole round trip,
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

    /* One batch per model input (a graph may have several). */
    const int n_in = nn_model_input_count(m);
    tensor *xs[NN_MODEL_MAX_INPUTS];
    for (int q = 0; q < n_in; q++) {
        const int rank = q ? m->extra_inputs[q - 1].rank : m->in_rank;
        const int *dims = q ? m->extra_inputs[q - 1].shape : m->in_shape;
        int shape[TENSOR_MAX_RANK + 1] = {2};
        for (int i = 0; i < rank; i++) shape[i + 1] = dims[i];
        xs[q] = tensor_create(rank + 1, shape);
        for (size_t i = 0; i < xs[q]->size; i++) xs[q]->data[i] = (float)(i % 11) / 10.0f;
    }
    tensor *y;
    int rc = 1;
    if (nn_model_forward_inputs(m, n_in, xs, &y, NN_MODE_EVAL) == NN_OK) {
        printf("outputs of sample 0:");
        for (size_t j = 0; j < y->size / 2; j++) printf(" %.6g", (double)y->data[j]);
        printf("\n");
        if (nn_onnx_save(m, argv[2]) == NN_OK) { /* opset 13, written atomically */
            printf("wrote %s\n", argv[2]);
            rc = 0;
        }
    }
    if (rc) fprintf(stderr, "onnx_round_trip: %s\n", nn_last_error());
    for (int q = 0; q < n_in; q++) tensor_free(xs[q]);
    nn_model_free(m);
    return rc;
}
