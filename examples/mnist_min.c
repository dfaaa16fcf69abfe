/* mnist_min: MNIST in a few lines with nn_model_fit (nn/fit.h): load the
 * data, build the CNN of examples/mnist_cnn.txt, train, evaluate, save,
 * reload it from the file alone and predict one test image.
 *
 *   build/examples/mnist_min [DIR] [--epochs=N]
 *
 * Run from the repository root (it reads examples/mnist_cnn.txt). DIR holds
 * the four MNIST files (default .cache/mnist, `make mnist-data`); any
 * argument other than --epochs=N is taken as DIR. Writes
 * mnist_min.safetensors into the current directory and reloads it with
 * nn_model_load, which rebuilds the network from the file. Deliberately omitted,
 * as examples/mnist.c has them: augmentation, a learning-rate schedule,
 * checkpoints to resume from, a command line that is checked. */
#include <stdio.h>

#include "nn/nn.h"

/* Every call that can fail returns an nn_status; the message says why. */
#define TRY(call) do if ((call) != NN_OK) { fprintf(stderr, "%s\n", nn_last_error()); return 1; } while (0)

int main(int argc, char **argv)
{
    const char *dir = ".cache/mnist", *spec = "examples/mnist_cnn.txt", *path = "mnist_min.safetensors";
    nn_fit_options o = nn_fit_defaults(); /* 1 epoch, shuffled, softmax cross-entropy */
    o.batch = 128, o.progress = stdout;   /* a line per epoch on stdout */
    for (int i = 1; i < argc; i++)
        if (!sscanf(argv[i], "--epochs=%d", &o.epochs)) dir = argv[i];
    nn_mnist data;
    TRY(nn_mnist_load(dir, &data));
    const int shape[3] = {data.rows, data.cols, 1}; /* per sample, channels last */
    nn_dataset train, test, first;
    TRY(nn_dataset_init_u8(&train, data.train_images, data.n_train, 3, shape, 1.0f / 255, 0));
    TRY(nn_dataset_set_labels_u8(&train, data.train_labels));
    TRY(nn_dataset_init_u8(&test, data.test_images, data.n_test, 3, shape, 1.0f / 255, 0));
    TRY(nn_dataset_set_labels_u8(&test, data.test_labels));

    nn_model *m = NULL, *m2 = NULL;
    TRY(nn_model_load_spec(m = nn_model_create(1), spec));
    TRY(nn_model_build(m, 3, shape));
    optim *adam = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    TRY(nn_model_fit(m, adam, &train, &o, NULL));
    double acc;
    TRY(nn_model_evaluate(m, &test, 256, NULL, NULL, &acc)); /* eval mode, batches of 256 */
    TRY(nn_safetensors_save(m, path));

    TRY(nn_model_load(path, &m2)); /* the network, its input shape and weights, in eval mode */
    float p[10]; int best = 0; /* class probabilities, the most likely class */
    TRY(nn_dataset_subset(&test, 0, 1, &first));
    TRY(nn_model_predict_dataset(m2, &first, 1, NN_OUTPUT_SOFTMAX, p, 10));
    for (int k = 1; k < 10; k++) best = p[k] > p[best] ? k : best;
    printf("test accuracy %.2f%%, image 0: label %d, predicted %d\n", 100 * acc, data.test_labels[0], best);
    nn_model_free(m2), nn_model_free(m), optim_free(adam), nn_mnist_free(&data);
    return 0;
}
