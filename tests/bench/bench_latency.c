/* bench_latency: batch-1 prediction latency, the case a program that serves
 * one request at a time sees. For examples/mnist_cnn.txt and
 * examples/fashion_resnet.txt (28x28x1 inputs, the weights of a fresh model:
 * latency does not depend on their values), 10,000 nn_model_predict calls
 * after 200 warm-up calls, timed one by one; p50 and p99 at 1 and 2
 * threads, on an otherwise idle machine and with one busy process beside
 * it (a forked child that spins until it is killed). One JSON line per
 * case, then one per model and load with p99(2 threads) / p99(1 thread);
 * the case lines carry the model's parameter count (batchnorm's statistics
 * included) and also go to build/bench/latency.jsonl, which
 * tests/bench/torch_latency.py reads to time the same networks in PyTorch
 * and print the ratios.
 * Omits: batches above 1 (bench_train times training), accuracy.
 * Usage: bench_latency [calls] [--idle-1] (calls default 10000; --idle-1:
 * only 1 thread on an idle machine, the case PyTorch is compared on). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

enum { WARMUP = 200 };

static FILE *jsonl;

/* A child that keeps one core busy until it is killed. */
static pid_t bench_latency_spin(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        volatile unsigned long x = 0;
        for (;;) x++;
    }
    return pid;
}

/* Percentile p (0..100) of the sorted v[0..n). */
static double bench_latency_pct(const double *v, int n, double p)
{
    int i = (int)(p / 100.0 * n);
    return v[i < n ? i : n - 1];
}

/* p50 and p99 in microseconds of `calls` batch-1 predictions; 0 on success. */
static int bench_latency_run(const char *spec, int threads, int calls, double *p50, double *p99,
                             size_t *params)
{
    nn_set_threads(threads);
    nn_model *m = nn_model_create(1);
    const int in[3] = {28, 28, 1}, xs[4] = {1, 28, 28, 1};
    tensor *x = tensor_create(4, xs), *y = NULL;
    double *t = malloc((size_t)calls * sizeof *t);
    int rc = 1;
    if (!m || !x || !t || nn_model_load_spec(m, spec) != NN_OK || nn_model_build(m, 3, in) != NN_OK)
        goto done;
    *params = m->n_params + m->n_buffers;
    for (size_t i = 0; i < x->size; i++) x->data[i] = (float)(i % 17) / 17.0f;
    for (int i = -WARMUP; i < calls; i++) {
        const double t0 = bench_now_ms();
        if (nn_model_predict(m, x, NULL, &y, NULL, NULL) != NN_OK) goto done;
        if (i >= 0) t[i] = (bench_now_ms() - t0) * 1e3;
    }
    bench_median(t, calls); /* sorts */
    *p50 = bench_latency_pct(t, calls, 50.0);
    *p99 = bench_latency_pct(t, calls, 99.0);
    rc = 0;
done:
    if (rc) fprintf(stderr, "bench_latency: %s: %s\n", spec, nn_last_error());
    free(t);
    tensor_free(x);
    nn_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    int calls = 10000, only_idle_1 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--idle-1")) only_idle_1 = 1;
        else if ((calls = atoi(argv[i])) < 1) {
            fprintf(stderr, "usage: bench_latency [calls >= 1] [--idle-1]\n");
            return 2;
        }
    }
    if (system("mkdir -p build/bench") == 0) jsonl = fopen("build/bench/latency.jsonl", "w");
    bench_print_machine();
    static const char *const specs[] = {"examples/mnist_cnn.txt", "examples/fashion_resnet.txt"};
    static const char *const loads[] = {"idle", "busy"};
    for (int s = 0; s < 2; s++)
        for (int l = 0; l < (only_idle_1 ? 1 : 2); l++) {
            double p50[2], p99[2];
            for (int th = 1; th <= (only_idle_1 ? 1 : 2); th++) {
                const pid_t child = l ? bench_latency_spin() : 0;
                size_t params = 0;
                const int rc = bench_latency_run(specs[s], th, calls, &p50[th - 1], &p99[th - 1],
                                                 &params);
                if (child > 0) {
                    kill(child, SIGKILL);
                    waitpid(child, NULL, 0);
                }
                if (rc) return 1;
                char line[320];
                snprintf(line, sizeof line,
                         "{\"bench\":\"latency\",\"model\":\"%s\",\"params\":%zu,\"batch\":1,"
                         "\"load\":\"%s\",\"threads\":%d,\"calls\":%d,\"p50_us\":%.1f,"
                         "\"p99_us\":%.1f}\n",
                         specs[s], params, loads[l], th, calls, p50[th - 1], p99[th - 1]);
                fputs(line, stdout);
                fflush(stdout);
                if (jsonl) {
                    fputs(line, jsonl);
                    fflush(jsonl);
                }
            }
            if (only_idle_1) continue;
            printf("{\"bench\":\"latency\",\"model\":\"%s\",\"load\":\"%s\","
                   "\"p99_2_over_1\":%.3f,\"p50_2_over_1\":%.3f}\n",
                   specs[s], loads[l], p99[1] / p99[0], p50[1] / p50[0]);
            fflush(stdout);
        }
    if (jsonl) fclose(jsonl);
    return 0;
}
