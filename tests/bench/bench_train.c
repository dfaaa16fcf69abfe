/* Training-step benchmark of two networks: the default MNIST network
 * (examples/mnist_cnn.txt) and the residual network of
 * examples/fashion_resnet.txt (batchnorm, spatial dropout, add skips).
 *
 * For each network and for 1 and 2 threads: training images/s (forward,
 * loss, backward, Adam step at batch 128) and evaluation images/s (eval-mode
 * forward without gradient recording), medians over repetitions; achieved
 * GFLOP/s from the network's multiply-adds (a training step counted as 3x the
 * forward's FLOPs, as is usual); and, in the same run, cblas_sgemm's rate on
 * a 2048^3 product as the machine's reference. Each thread count runs in a
 * child process whose peak resident memory is read after its training and
 * evaluation runs.
 * Data: the MNIST network trains on the real MNIST training images when
 * .cache/mnist holds them (so the ReLU sparsity is realistic), else seeded
 * noise; the residual network on Fashion-MNIST's training images when
 * /usr/share/datasets/fashion-mnist has them, else on the same as the MNIST
 * network. Images are kept as bytes and converted a batch at a time, inside
 * the timed loop, as in training. One JSON object per line, with a "network"
 * field, also appended to build/bench/train.jsonl for
 * tests/bench/torch_train.py.
 * With a spec path as argument only that network runs, named after the file
 * (`build/bench/bench_train examples/fashion_resnet.txt`, then
 * `tests/bench/torch_train.py fashion_resnet`, gives the residual network's
 * rows alone, on Fashion-MNIST as in the full run); a thread count (1 or 2)
 * after the path runs only that one, without the sgemm reference, for
 * profiling.
 * The image layers take the framework's default data format, so
 * NN_IMAGE_DATA_FORMAT=channels_first trains the same networks in NCHW (the
 * 28x28x1 images are the same bytes in both layouts); the "data_format"
 * field says which ran. */
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

/* A training set as bytes: n images of 28x28 and their labels. */
typedef struct bench_train_data {
    uint8_t *bytes;
    int *labels;
    int n;
    const char *name; /* "mnist", "fashion-mnist" or "noise" */
} bench_train_data;

/* 1 or 2 when the command line asks for one thread count only, else 0. */
static int bench_train_only_threads;

/* Times one network for 1 and 2 threads, each in a child process; prints
 * and logs one line per thread count. Returns 0, or 1 when a child failed. */
static int bench_train_network(const char *network, const char *spec, const bench_train_data *d,
                               nn_data_format fmt, FILE *log)
{
    const int cf = fmt == NN_CHANNELS_FIRST;
    int in_shape[3] = {cf ? 1 : 28, 28, cf ? 28 : 1};
    float *batch = malloc(sizeof(float) * BATCH * 784);
    if (!batch) return 1;
    for (int threads = 1; threads <= 2; threads++) {
        if (bench_train_only_threads && threads != bench_train_only_threads) continue;
        /* Each thread count trains in its own process, so each peak
         * resident memory is its own (the twin script does the same). */
        fflush(NULL);
        pid_t child = fork();
        if (child < 0) {
            perror("bench_train: fork");
            free(batch);
            return 1;
        }
        if (child > 0) {
            int status;
            if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
                free(batch);
                return 1;
            }
            continue;
        }
        if (nn_set_threads(threads) != NN_OK) _exit(1);
        nn_model *m = nn_model_create(42);
        optim *opt = optim_adam_create(1e-3f, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
        if (!m || !opt || nn_model_load_spec(m, spec) != NN_OK || nn_model_build(m, 3, in_shape) != NN_OK) {
            fprintf(stderr, "bench_train: %s\n", nn_last_error());
            _exit(1);
        }
        const double flops = forward_flops(m);
        int shape[4] = {BATCH, in_shape[0], in_shape[1], in_shape[2]};
        long offset = 0;
        double train_t[REPS], eval_t[REPS];
        for (int r = -1; r < REPS; r++) { /* r = -1 warms up */
            double t0 = bench_now_ms();
            for (int s = 0; s < STEPS; s++) {
                if (offset + BATCH > d->n) offset = 0;
                nn_idx_to_float(batch, d->bytes + offset * 784, (size_t)BATCH * 784, 1.0f / 255.0f);
                tensor *x = tensor_wrap(batch, 4, shape);
                float loss;
                if (nn_model_train_step(m, opt, x, d->labels + offset, &loss, NULL) != NN_OK) {
                    fprintf(stderr, "bench_train: %s\n", nn_last_error());
                    _exit(1);
                }
                tensor_free(x);
                offset += BATCH;
            }
            if (r >= 0) train_t[r] = bench_now_ms() - t0;
            t0 = bench_now_ms();
            for (int s = 0; s < STEPS; s++) {
                nn_idx_to_float(batch, d->bytes + (long)s * BATCH * 784, (size_t)BATCH * 784, 1.0f / 255.0f);
                tensor *x = tensor_wrap(batch, 4, shape);
                tensor *logits;
                if (nn_model_predict(m, x, NULL, &logits, NULL, NULL) != NN_OK) _exit(1);
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
                 "{\"side\":\"nn\",\"network\":\"%s\",\"data_format\":\"%s\",\"threads\":%d,"
                 "\"batch\":%d,\"data\":\"%s\","
                 "\"train_images_per_sec\":%.1f,\"eval_images_per_sec\":%.1f,\"train_gflops\":%.2f,"
                 "\"peak_rss_mb\":%.1f,\"mflop_per_train_image\":%.1f,\"params\":%zu}",
                 network, nn_data_format_name(fmt), threads, BATCH, d->name, train_ips, eval_ips, train_ips * 3 * flops * 1e-9,
                 ru.ru_maxrss / 1024.0, 3 * flops * 1e-6, m->n_params + m->n_buffers);
        puts(line);
        if (log) fprintf(log, "%s\n", line);
        fflush(stdout);
        optim_free(opt);
        nn_model_free(m);
        if (log) fclose(log);
        _exit(0);
    }
    free(batch);
    return 0;
}

/* Fashion-MNIST's training set from dir into *d; 0 when it is there. The
 * images decide, as they are what is timed; the labels must come with them. */
static int bench_train_load_fashion(const char *dir, bench_train_data *d)
{
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(path, R_OK) != 0) return 1;
    uint8_t *pixels = NULL, *labels = NULL;
    int n = 0, rows = 0, cols = 0, n_labels = 0;
    if (nn_idx_load_images(path, &pixels, &n, &rows, &cols) != NN_OK) {
        fprintf(stderr, "bench_train: %s\n", nn_last_error());
        return 1;
    }
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", dir);
    if (rows != 28 || cols != 28 || nn_idx_load_labels(path, &labels, &n_labels) != NN_OK || n_labels != n) {
        fprintf(stderr, "bench_train: %s: not 28x28 images with one label each\n", dir);
        free(pixels);
        free(labels);
        return 1;
    }
    d->bytes = pixels;
    d->labels = malloc(sizeof(int) * (size_t)n);
    if (!d->labels) {
        free(pixels);
        free(labels);
        return 1;
    }
    for (int i = 0; i < n; i++) d->labels[i] = labels[i];
    free(labels);
    d->n = n;
    d->name = "fashion-mnist";
    return 0;
}

/* The network's name from its spec path: the file name without ".txt". */
static void bench_train_network_name(char *name, size_t size, const char *spec)
{
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    snprintf(name, size, "%s", base);
    char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".txt")) *dot = '\0';
}

int main(int argc, char **argv)
{
    nn_mnist data = {0};
    nn_data_format fmt;
    if (nn_image_data_format(&fmt) != NN_OK) {
        fprintf(stderr, "bench_train: %s\n", nn_last_error());
        return 2;
    }
    bench_print_machine();
    int real = nn_mnist_load(".cache/mnist", &data) == NN_OK;
    /* Images stay bytes, as the MNIST example keeps them, and each batch is
     * converted to floats when it is used: a float copy of the training set
     * would be 188 MB of the peak resident memory. */
    bench_train_data mnist = {0};
    mnist.n = real ? data.n_train : 4096;
    mnist.bytes = real ? data.train_images : malloc((size_t)mnist.n * 784);
    mnist.labels = malloc(sizeof(int) * (size_t)mnist.n);
    mnist.name = real ? "mnist" : "noise";
    if (!mnist.bytes || !mnist.labels) return 1;
    tensor_rng rng;
    tensor_rng_seed(&rng, 1);
    if (!real)
        for (long i = 0; i < (long)mnist.n * 784; i++) mnist.bytes[i] = (uint8_t)tensor_rng_below(&rng, 256);
    for (int i = 0; i < mnist.n; i++) mnist.labels[i] = real ? data.train_labels[i] : (int)tensor_rng_below(&rng, 10);

    FILE *log = NULL;
    if (system("mkdir -p build/bench") == 0) log = fopen("build/bench/train.jsonl", "w");
    bench_train_data fashion = {0};
    int failed = 0;
    char name[256] = "";
    if (argc > 1) bench_train_network_name(name, sizeof name, argv[1]);
    if (argc > 2) bench_train_only_threads = atoi(argv[2]) == 2 ? 2 : 1;
    if (argc > 1 && strcmp(name, "fashion_resnet"))
        failed = bench_train_network(name, argv[1], &mnist, fmt, log);
    else {
        if (argc == 1) failed = bench_train_network("mnist_cnn", "examples/mnist_cnn.txt", &mnist, fmt, log);
        /* A forked child's peak resident memory starts from the pages it
         * shares with its parent, so each network's training set is loaded
         * only after the other's children are done, and MNIST's is freed
         * before the residual network runs on Fashion-MNIST (alone, too, so
         * its rows match the full run's). */
        if (!failed && bench_train_load_fashion("/usr/share/datasets/fashion-mnist", &fashion) == 0) {
            if (real)
                nn_mnist_free(&data);
            else
                free(mnist.bytes);
            real = 0;
            mnist.bytes = NULL;
            free(mnist.labels);
            mnist.labels = NULL;
        }
        if (!failed)
            failed = bench_train_network("fashion_resnet", "examples/fashion_resnet.txt",
                                         fashion.bytes ? &fashion : &mnist, fmt, log);
    }
    /* The reference rate is left out when one thread count is profiled. */
    for (int threads = 1; threads <= 2 && !failed && !bench_train_only_threads; threads++) {
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
        free(mnist.bytes);
    free(mnist.labels);
    free(fashion.bytes);
    free(fashion.labels);
    return failed;
}
