/* Convolution speed: conv2d (with bias and ReLU) forward and
 * forward+backward over a suite of the shapes small CNNs use, in both data
 * formats, on 1 and 2 threads, next to OpenBLAS's sgemm rate on
 * 2048x2048x2048. One JSON object per line, also written to
 * build/bench/conv.jsonl, which tests/bench/torch_conv.py reads to time the
 * same convolutions in PyTorch and print the ratios.
 *
 *   make bench-conv                      everything, then PyTorch and ratios
 *   build/bench/bench_conv --threads 2 --format channels_last --reps 20 --case 3
 *
 * Each timing is the median of --reps (default 10) runs after two warm-ups.
 * fwd is one forward in training mode (the graph records, as in training);
 * fwd_bwd adds the layer's backward, called on its graph node with a fixed
 * upstream gradient (so no loss operation is timed). A first layer's input
 * needs no gradient (as in a network), so its backward computes the kernel
 * and bias gradients only; the others compute dx too. GFLOP/s count
 * 2*N*OH*OW*KH*KW*C*F per GEMM-shaped product (forward, dkernel, dx). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "nn/nn.h"

typedef struct {
    const char *name;
    int N, H, W, C, F, K, S, D, same, x_grad;
} bench_case;

/* Where each occurs: the MNIST network's two convolutions; the residual
 * network's blocks (14x14, 7x7) and projection; a strided downsampling;
 * LeNet-style 5x5; a 7x7 stride-2 stem on RGB; a dilated layer; a first
 * layer on RGB with few filters; a large same-padded layer. */
static const bench_case cases[] = {
    {"3x3 valid 1->32 28x28", 128, 28, 28, 1, 32, 3, 1, 1, 0, 0},
    {"3x3 valid 32->64 26x26", 128, 26, 26, 32, 64, 3, 1, 1, 0, 1},
    {"3x3 same 64->64 14x14", 128, 14, 14, 64, 64, 3, 1, 1, 1, 1},
    {"3x3 same 128->128 7x7", 128, 7, 7, 128, 128, 3, 1, 1, 1, 1},
    {"3x3 stride 2 32->64 28x28", 128, 28, 28, 32, 64, 3, 2, 1, 1, 1},
    {"5x5 same 32->64 14x14", 128, 14, 14, 32, 64, 5, 1, 1, 1, 1},
    {"1x1 64->128 14x14", 128, 14, 14, 64, 128, 1, 1, 1, 0, 1},
    {"7x7 stride 2 stem 3->32 64x64", 64, 64, 64, 3, 32, 7, 2, 1, 1, 0},
    {"3x3 dilation 2 32->32 28x28", 64, 28, 28, 32, 32, 3, 1, 2, 1, 1},
    {"3x3 same 3->16 32x32", 128, 32, 32, 3, 16, 3, 1, 1, 1, 0},
    {"3x3 same 64->128 56x56", 32, 56, 56, 64, 128, 3, 1, 1, 1, 1},
};
enum { NCASES = (int)(sizeof cases / sizeof cases[0]) };

static FILE *jsonl;

static void die(const char *what)
{
    fprintf(stderr, "bench_conv: %s: %s\n", what, nn_last_error());
    exit(1);
}

static void emit(const char *line)
{
    fputs(line, stdout);
    fflush(stdout);
    if (jsonl) {
        fputs(line, jsonl);
        fflush(jsonl);
    }
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

static void bench_conv(int ci, int cf, int threads, int reps, double sgemm_gflops)
{
    const bench_case *bc = &cases[ci];
    char config[256];
    snprintf(config, sizeof config,
             "filters=%d kernel_size=%d strides=%d dilation_rate=%d padding=%s activation=relu "
             "data_format=%s",
             bc->F, bc->K, bc->S, bc->D, bc->same ? "same" : "valid",
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
    const int OH = cf ? out[2] : out[1], OW = cf ? out[3] : out[2];
    const double gemm = 2.0 * bc->N * OH * OW * (double)bc->K * bc->K * bc->C * bc->F;
    const double fwd = bench_median(tf, reps), fb = bench_median(tb, reps);
    const double gf = gemm / (fwd * 1e6), gfb = gemm * (bc->x_grad ? 3 : 2) / (fb * 1e6);
    char line[1024];
    snprintf(line, sizeof line,
             "{\"layer\":\"conv2d\",\"case\":%d,\"shape\":\"%s\",\"batch\":%d,\"height\":%d,\"width\":%d,"
             "\"in_channels\":%d,\"filters\":%d,\"kernel\":%d,\"stride\":%d,\"dilation\":%d,"
             "\"padding\":\"%s\",\"out_height\":%d,\"out_width\":%d,\"x_grad\":%s,\"data_format\":\"%s\","
             "\"threads\":%d,\"fwd_ms\":%.3f,\"fwd_bwd_ms\":%.3f,\"fwd_gflops\":%.1f,"
             "\"fwd_bwd_gflops\":%.1f,\"sgemm_gflops\":%.1f,\"fwd_bwd_vs_sgemm\":%.2f}\n",
             ci, bc->name, bc->N, bc->H, bc->W, bc->C, bc->F, bc->K, bc->S, bc->D,
             bc->same ? "same" : "valid", OH, OW, bc->x_grad ? "true" : "false",
             cf ? "channels_first" : "channels_last", threads, fwd, fb, gf, gfb, sgemm_gflops,
             gfb / sgemm_gflops);
    emit(line);
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
            fprintf(stderr, "usage: %s [--reps N] [--threads 1|2] [--case 0..%d] "
                            "[--format channels_last|channels_first]\n", argv[0], NCASES - 1);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (system("mkdir -p build/bench") == 0) jsonl = fopen("build/bench/conv.jsonl", "w");
    bench_print_machine();
    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads && threads != only_threads) continue;
        if (nn_set_threads(threads)) die("threads");
        const double sg = bench_sgemm(threads, reps);
        for (int c = 0; c < NCASES; c++) {
            if (only_case >= 0 && c != only_case) continue;
            for (int cf = 0; cf <= 1; cf++)
                if (only_format < 0 || only_format == cf) bench_conv(c, cf, threads, reps, sg);
        }
    }
    if (jsonl) fclose(jsonl);
    return 0;
}
