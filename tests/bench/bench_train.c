/* Training-step benchmark of the default MNIST network (examples/mnist_cnn.txt).
 *
 * For 1 and 2 threads: training images/s (forward, loss, backward, Adam step
 * at batch 128) and evaluation images/s (eval-mode forward without gradient
 * recording), medians over repetitions; achieved GFLOP/s from the network's
 * multiply-adds (a training step counted as 3x the forward's FLOPs, as is
 * usual); and, in the same run, cblas_sgemm's rate on a 2048^3 product as the
 * machine's reference. Each thread count runs in a child process whose peak
 * resident memory is read after its training and evaluation runs.
 * Data: the real MNIST training images when .cache/mnist holds them (so the
 * ReLU sparsity is realistic), else seeded noise; kept as bytes and
 * converted a batch at a time, inside the timed loop, as in training. One JSON object per line,
 * also appended to build/bench/train.jsonl for tests/bench/torch_train.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "nn/io/idx.h"
#include "nn/nn.h"

#define BATCH 128
#define STEPS 8   /* training steps per repetition */
#define REPS 7

/* Forward FLOPs per sample: 2 * kernel elements * output positions for every
 * layer with a "kernel" parameter (dense and conv2d). */
static double forward_flops(const nn_model *m)
{
    double total = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        for (int k = 0; k < l->n_params; k++) {
            if (strcmp(l->params[k].name, "kernel")) continue;
            const nn_param *p = &l->params[k];
            double kernel = (double)p->t->size;
            int units = p->shape[p->rank - 1];
            double out = 1;
            for (int d = 0; d < l->out_rank; d++) out *= l->out_shape[d];
            total += 2.0 * kernel * (out / units);
        }
    }
    return total;
}

/* cblas_sgemm's GFLOP/s on 2048^3, the median of 5 runs; 0 if it could not run. */
static double sgemm_gflops(void)
{
    const int n = 2048;
    const double ms = bench_sgemm_ms(n, 5);
    return ms > 0 ? 2.0 * n * n * n / (ms * 1e6) : 0.0;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "examples/mnist_cnn.txt";
    nn_mnist data = {0};
    int real = nn_mnist_load(".cache/mnist", &data) == NN_OK;
    /* Images stay bytes, as the MNIST example keeps them, and each batch is
     * converted to floats when it is used: a float copy of the training set
     * would be 188 MB of the peak resident memory. */
    const int n_images = real ? data.n_train : 4096;
    uint8_t *bytes = real ? data.train_images : malloc((size_t)n_images * 784);
    int *labels = malloc(sizeof(int) * (size_t)n_images);
    float *batch = malloc(sizeof(float) * BATCH * 784);
    tensor_rng rng;
    tensor_rng_seed(&rng, 1);
    if (!real)
        for (long i = 0; i < (long)n_images * 784; i++) bytes[i] = (uint8_t)tensor_rng_below(&rng, 256);
    for (int i = 0; i < n_images; i++) labels[i] = real ? data.train_labels[i] : (int)tensor_rng_below(&rng, 10);

    FILE *log = NULL;
    if (system("mkdir -p build/bench") == 0) log = fopen("build/bench/train.jsonl", "w");
    int in_shape[3] = {28, 28, 1};
    for (int threads = 1; threads <= 2; threads++) {
        /* Each thread count trains in its own process, so each peak
         * resident memory is its own (the twin script does the same). */
        fflush(NULL);
        pid_t child = fork();
        if (child < 0) {
            perror("bench_train: fork");
            return 1;
        }
        if (child > 0) {
            int status;
            if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
                return 1;
            continue;
        }
        if (nn_set_threads(threads) != NN_OK) return 1;
        nn_model *m = nn_model_create(42);
        optim *opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
        if (!m || !opt || nn_model_load_spec(m, spec) != NN_OK || nn_model_build(m, 3, in_shape) != NN_OK) {
            fprintf(stderr, "bench_train: %s\n", nn_last_error());
            return 1;
        }
        const double flops = forward_flops(m);
        int shape[4] = {BATCH, 28, 28, 1};
        long offset = 0;
        double train_t[REPS], eval_t[REPS];
        for (int r = -1; r < REPS; r++) { /* r = -1 warms up */
            double t0 = bench_now_ms();
            for (int s = 0; s < STEPS; s++) {
                if (offset + BATCH > n_images) offset = 0;
                nn_idx_to_float(batch, bytes + offset * 784, (size_t)BATCH * 784, 1.0f / 255.0f);
                tensor *x = tensor_wrap(batch, 4, shape);
                float loss;
                if (nn_model_train_step(m, opt, x, labels + offset, &loss, NULL) != NN_OK) {
                    fprintf(stderr, "bench_train: %s\n", nn_last_error());
                    return 1;
                }
                tensor_free(x);
                offset += BATCH;
            }
            if (r >= 0) train_t[r] = bench_now_ms() - t0;
            t0 = bench_now_ms();
            for (int s = 0; s < STEPS; s++) {
                nn_idx_to_float(batch, bytes + (long)s * BATCH * 784, (size_t)BATCH * 784, 1.0f / 255.0f);
                tensor *x = tensor_wrap(batch, 4, shape);
                tensor *logits;
                if (nn_model_predict(m, x, NULL, &logits, NULL, NULL) != NN_OK) return 1;
                tensor_free(x);
            }
            if (r >= 0) eval_t[r] = bench_now_ms() - t0;
        }
        double train_ips = STEPS * BATCH / (bench_median(train_t, REPS) * 1e-3);
        double eval_ips = STEPS * BATCH / (bench_median(eval_t, REPS) * 1e-3);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char line[512];
        snprintf(line, sizeof line,
                 "{\"side\":\"nn\",\"threads\":%d,\"batch\":%d,\"data\":\"%s\",\"train_images_per_sec\":%.1f,"
                 "\"eval_images_per_sec\":%.1f,\"train_gflops\":%.2f,\"peak_rss_mb\":%.1f,"
                 "\"mflop_per_train_image\":%.1f}",
                 threads, BATCH, real ? "mnist" : "noise", train_ips, eval_ips,
                 train_ips * 3 * flops * 1e-9, ru.ru_maxrss / 1024.0, 3 * flops * 1e-6);
        puts(line);
        if (log) fprintf(log, "%s\n", line);
        fflush(stdout);
        optim_free(opt);
        nn_model_free(m);
        if (log) fclose(log);
        _exit(0);
    }
    for (int threads = 1; threads <= 2; threads++) {
        nn_set_threads(threads);
        char line[256];
        snprintf(line, sizeof line, "{\"side\":\"nn\",\"op\":\"sgemm\",\"n\":2048,\"threads\":%d,\"gflops\":%.1f}",
                 threads, sgemm_gflops());
        puts(line);
        if (log) fprintf(log, "%s\n", line);
    }
    if (log) fclose(log);
    if (real)
        nn_mnist_free(&data);
    else
        free(bytes);
    free(batch);
    free(labels);
    return 0;
}
