/* Convolution speed: conv2d forward and forward+backward for the MNIST
 * network's two convolutions and a larger same-padded one, in both data
 * formats, on 1 and 2 threads, next to OpenBLAS's sgemm rate on
 * 2048x2048x2048. One JSON object per line.
 *
 *   make bench-conv                      everything
 *   build/bench/bench_conv --threads 2 --format channels_last --reps 20
 *
 * Each timing is the median of --reps (default 10) runs after two warm-ups.
 * fwd is one forward in training mode (the graph records, as in training);
 * fwd_bwd adds the layer's backward, called on its graph node with a fixed
 * upstream gradient (so no loss operation is timed). The first layer's
 * input needs no gradient (as in a network), so its backward computes the
 * kernel and bias gradients only; the others compute dx too. GFLOP/s count
 * 2*N*OH*OW*KH*KW*C*F per GEMM-shaped product (forward, dkernel, dx). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "nn/nn.h"

typedef struct {
    const char *name, *config;
    int N, H, W, C, x_grad;
} bench_case;

static const bench_case cases[] = {
    {"1->32 3x3 valid, 28x28 -> 26x26", "filters=32 kernel_size=3 activation=relu", 128, 28, 28, 1, 0},
    {"32->64 3x3 valid, 26x26 -> 24x24", "filters=64 kernel_size=3 activation=relu", 128, 26, 26, 32, 1},
    {"64->128 3x3 same, 56x56 -> 56x56", "filters=128 kernel_size=3 padding=same activation=relu", 32,
     56, 56, 64, 1},
};

static void die(const char *what)
{
    fprintf(stderr, "bench_conv: %s: %s\n", what, nn_last_error());
    exit(1);
}

static double bench_sgemm(int threads, int reps)
{
    const int n = 2048;
    const double ms = bench_sgemm_ms(n, reps);
    if (ms < 0) die("sgemm buffers");
    const double gflops = 2.0 * n * n * n / (ms * 1e6);
    printf("{\"op\":\"sgemm\",\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":%d,\"ms\":%.2f,\"gflops\":%.1f}\n", n,
           n, n, threads, ms, gflops);
    fflush(stdout);
    return gflops;
}

static void bench_conv(const bench_case *bc, int cf, int threads, int reps, double sgemm_gflops)
{
    char config[256];
    snprintf(config, sizeof config, "%s data_format=%s", bc->config,
             cf ? "channels_first" : "channels_last");
    nn_layer *l = nn_layer_create("conv2d", config);
    if (!l) die("create");
    int in[3] = {bc->H, bc->W, bc->C};
    if (cf) {
        in[0] = bc->C;
        in[1] = bc->H;
        in[2] = bc->W;
    }
    if (nn_layer_build(l, 3, in) || nn_layer_alloc_params(l, 1)) die("build");
    int shape[4] = {bc->N, in[0], in[1], in[2]};
    tensor *x = tensor_create(4, shape);
    if (!x) die("input");
    tensor_rng rng;
    tensor_rng_seed(&rng, 3);
    tensor_init_normal(x, &rng, 0.0f, 1.0f);
    if (bc->x_grad) {
        x->grad = tensor_aligned_alloc(x->size * sizeof(float));
        if (!x->grad) die("grad");
        memset(x->grad, 0, x->size * sizeof(float));
        x->flags |= TENSOR_OWNS_GRAD | TENSOR_REQUIRES_GRAD;
    }
    int out[4] = {bc->N, l->out_shape[0], l->out_shape[1], l->out_shape[2]};
    tensor *w = tensor_create(4, out);
    if (!w) die("weights");
    tensor_init_normal(w, &rng, 0.0f, 1.0f);
    nn_graph *g = nn_graph_create(0);
    if (!g) die("graph");
    float *dy = tensor_aligned_alloc(w->size * sizeof(float));
    if (!dy) die("dy");
    double tf[64], tb[64];
    if (reps > 64) reps = 64;
    for (int r = -2; r < reps; r++) {
        tensor *y;
        nn_graph_reset(g);
        const double t0 = bench_now_ms();
        if (nn_layer_forward(l, g, x, &y, 1)) die("forward");
        const double t1 = bench_now_ms();
        if (!y->node) die("forward recorded no node");
        /* The ReLU backward masks dy in place: a fresh copy every run. */
        memcpy(dy, w->data, w->size * sizeof(float));
        y->grad = dy;
        const double t2 = bench_now_ms();
        y->node->backward(y->node);
        const double t3 = bench_now_ms();
        if (r >= 0) {
            tf[r] = t1 - t0;
            tb[r] = (t1 - t0) + (t3 - t2);
        }
    }
    tensor_aligned_free(dy);
    const int OH = cf ? out[2] : out[1], OW = cf ? out[3] : out[2], F = cf ? out[1] : out[3];
    const double gemm = 2.0 * bc->N * OH * OW * 9.0 * bc->C * F;
    const double fwd = bench_median(tf, reps), fb = bench_median(tb, reps);
    const double gf = gemm / (fwd * 1e6), gfb = gemm * (bc->x_grad ? 3 : 2) / (fb * 1e6);
    printf("{\"layer\":\"conv2d\",\"shape\":\"%s\",\"batch\":%d,\"x_grad\":%s,\"data_format\":\"%s\","
           "\"threads\":%d,\"fwd_ms\":%.2f,\"fwd_bwd_ms\":%.2f,\"fwd_gflops\":%.1f,"
           "\"fwd_bwd_gflops\":%.1f,\"sgemm_gflops\":%.1f,\"fwd_bwd_vs_sgemm\":%.2f}\n",
           bc->name, bc->N, bc->x_grad ? "true" : "false", cf ? "channels_first" : "channels_last",
           threads, fwd, fb, gf, gfb, sgemm_gflops, gfb / sgemm_gflops);
    fflush(stdout);
    nn_graph_free(g);
    tensor_free(w);
    tensor_free(x);
    nn_layer_free(l);
}

int main(int argc, char **argv)
{
    int reps = 10, only_threads = 0, only_format = -1, only_case = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) only_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only_case = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            ++i;
            only_format = !strcmp(argv[i], "channels_first");
        } else {
            fprintf(stderr, "usage: %s [--reps N] [--threads 1|2] [--case 0|1|2] "
                            "[--format channels_last|channels_first]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads && threads != only_threads) continue;
        if (nn_set_threads(threads)) die("threads");
        const double sg = bench_sgemm(threads, reps);
        for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
            if (only_case >= 0 && c != only_case) continue;
            for (int cf = 0; cf <= 1; cf++)
                if (only_format < 0 || only_format == cf) bench_conv(&cases[c], cf, threads, reps, sg);
        }
    }
    return 0;
}
