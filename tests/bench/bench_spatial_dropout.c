/* Benchmark of the spatial dropout kernels (layers/spatial_dropout.h)
 * against memcpy of the same bytes, timed in the same run.
 *
 * For each shape (N, C, H, W), thread count (1, 2) and cache case, it
 * prints one JSON object per data format with the median over many
 * repetitions (taken in rounds that each time every operation of both
 * formats in turn) of:
 *   fwd_ms      nn_spatial_dropout_forward (mask drawn, y written), rate 0.25
 *   bwd_ms      backward with the forward's mask into a fresh gradient,
 *               dx = dy * mask * s (nn_spatial_dropout_apply), timed out of
 *               place into a dx of its own, as PyTorch's backward returns a
 *               new tensor; the layer's backward runs the same kernel over
 *               dy's storage when its input has no gradient yet
 *   bwd_acc_ms  backward adding into an existing gradient,
 *               dx += dy * mask * s (nn_spatial_dropout_backward); in
 *               channels_first it reads dx as well but neither reads nor
 *               writes the dropped maps (it only prefetches across them)
 *   copy_ms     memcpy of the same bytes split over the same threads
 *   copy1_ms    one plain memcpy call (one thread)
 * and two passes that are not dropout, to show where the time goes (on the
 * channels_first line; each thread takes a contiguous share, as in copy_ms):
 *   scale_all_ms   y = x * s over the whole tensor, one unbroken stream
 *   kept_only_ms   y = x * s over the kept maps of the forward's mask and
 *                  nothing else: less work than the forward, which also
 *                  writes the dropped maps' zeros. It skips the dropped
 *                  maps without prefetching across them, which from memory
 *                  costs more than it saves (the kernels do prefetch); with
 *                  the tensor in cache the prefetches make no difference
 * and, on the channels_last line, last_over_first_fwd/_bwd: its times over
 * channels_first's from the same rounds.
 * Cache cases: "warm" repeats each operation on the same buffers (whatever
 * fits stays in cache); "flushed" writes a 96 MiB buffer before every timed
 * repetition, so every operand starts in memory.
 * The lines also go to spatial_dropout.jsonl next to the binary (written to
 * a temporary file, then renamed), where tests/bench/torch_spatial_dropout.py
 * reads them to print PyTorch's times and ratios.
 *
 * Usage: bench_spatial_dropout [--reps R] [--out FILE|-] [--shape N,C,H,W]
 *            [--format channels_first|channels_last] [--threads T] [--cache warm|flushed]
 * The filters run one case (the PyTorch twin uses them to time nn right
 * before torch on each case); "--out -" writes no file.
 * Not measured here: the graph/layer overhead (a few allocations from the
 * arena per call) and the mask-less inference path (the identity). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "nn/nn.h"

#define FLUSH_BYTES ((size_t)96 << 20)
#define MAX_REPS 1000

static unsigned char *flush_buf;
static unsigned flush_round;

/* Evicts the operands: writing more than the last-level cache holds. */
static void flush_caches(void)
{
    memset(flush_buf, (int)(++flush_round & 0xff), FLUSH_BYTES);
}

/* The calling thread's contiguous share [*i0, *i1) of n items, split as
 * the kernels split their work. */
static void thread_share(size_t n, size_t *i0, size_t *i1)
{
    const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
    const size_t q = n / nt, rem = n % nt;
    *i0 = t * q + (t < rem ? t : rem);
    *i1 = *i0 + q + (t < rem);
}

/* memcpy split over the current OpenMP team. */
static void copy_parallel(float *dst, const float *src, size_t n)
{
    #pragma omp parallel
    {
        size_t i0, i1;
        thread_share(n, &i0, &i1);
        memcpy(dst + i0, src + i0, (i1 - i0) * sizeof(float));
    }
}

typedef struct {
    int N, C, H, W;
} shape4;

/* y = x * s over runs of kept (n, c) planes, each thread a contiguous share. */
static void scale_kept(float *y, const float *x, const uint8_t *mask, size_t nc, size_t sp,
                       float s)
{
    #pragma omp parallel
    {
        size_t i0, i1;
        thread_share(nc, &i0, &i1);
        for (size_t a = i0, b; a < i1; a = b) {
            for (b = a + 1; b < i1 && mask[b] == mask[a]; b++) {}
            if (!mask[a]) continue;
            float *yp = y + a * sp;
            const float *xp = x + a * sp;
            #pragma omp simd
            for (size_t p = 0; p < (b - a) * sp; p++) yp[p] = xp[p] * s;
        }
    }
}

static void scale_all(float *y, const float *x, size_t n, float s)
{
    #pragma omp parallel
    {
        size_t i0, i1;
        thread_share(n, &i0, &i1);
        #pragma omp simd
        for (size_t i = i0; i < i1; i++) y[i] = x[i] * s;
    }
}

/* The ops of format f (0 channels_first, 1 channels_last) are
 * OP_FWD + OP_PER_FMT * f, ...; the rest are shared. */
enum { OP_FWD, OP_BWD, OP_BWD_ACC, OP_PER_FMT };
enum { OP_COPY = 2 * OP_PER_FMT, OP_COPY1, OP_SCALE_ALL, OP_KEPT_ONLY, N_OPS };

typedef struct {
    float *x, *y, *dy, *dx;
    uint8_t *mask[2]; /* per format */
    int N, C;
    long spatial;
    size_t total;
    int use_fmt[2]; /* which formats are timed */
    float rate;
    uint64_t call;
} bench_case;

static nn_data_format format_of(int f) { return f ? NN_CHANNELS_LAST : NN_CHANNELS_FIRST; }

static void run_op(bench_case *b, int op)
{
    nn_status s = NN_OK;
    const int f = op < OP_COPY ? op / OP_PER_FMT : 0;
    const nn_data_format fmt = format_of(f);
    switch (op < OP_COPY ? op % OP_PER_FMT : op) {
    case OP_FWD:
        s = nn_spatial_dropout_forward(b->y, b->mask[f], b->x, b->N, b->C, b->spatial, fmt,
                                       b->rate, 1234, b->call++);
        break;
    case OP_BWD:
        s = nn_spatial_dropout_apply(b->dx, b->mask[f], b->dy, b->N, b->C, b->spatial, fmt,
                                     b->rate);
        break;
    case OP_BWD_ACC:
        s = nn_spatial_dropout_backward(b->dx, b->mask[f], b->dy, b->N, b->C, b->spatial, fmt,
                                        b->rate);
        break;
    case OP_COPY: copy_parallel(b->y, b->x, b->total); break;
    case OP_COPY1: memcpy(b->y, b->x, b->total * sizeof(float)); break;
    case OP_SCALE_ALL: scale_all(b->y, b->x, b->total, nn_spatial_dropout_scale(b->rate)); break;
    case OP_KEPT_ONLY:
        scale_kept(b->y, b->x, b->mask[0], (size_t)b->N * (size_t)b->C, (size_t)b->spatial,
                   nn_spatial_dropout_scale(b->rate));
        break;
    }
    if (s != NN_OK) {
        fprintf(stderr, "bench_spatial_dropout: %s\n", nn_last_error());
        exit(1);
    }
}

/* The ops of untimed formats are skipped; the two reference passes are
 * printed with channels_first. */
static int timed(const bench_case *b, int op)
{
    if (op < OP_COPY) return b->use_fmt[op / OP_PER_FMT];
    return op < OP_SCALE_ALL || b->use_fmt[0];
}

/* ms[op] = median time of each op over reps, flushed or warm. The reps are
 * split into ROUNDS rounds and each round times every op in turn (warm: after
 * one untimed call), so a spell of load from elsewhere on the machine falls
 * on all ops alike instead of on whichever op was being timed. */
#define ROUNDS 5
static void time_ops(bench_case *b, int reps, int flushed, double *ms)
{
    static double t[N_OPS][MAX_REPS];
    const int rounds = reps < ROUNDS ? reps : ROUNDS;
    for (int rd = 0, done = 0; rd < rounds; rd++) {
        const int k = reps * (rd + 1) / rounds - done;
        for (int op = 0; op < N_OPS; op++) {
            if (!timed(b, op)) continue;
            if (!flushed) run_op(b, op);
            for (int r = done; r < done + k; r++) {
                if (flushed) flush_caches();
                double t0 = bench_now_ms();
                run_op(b, op);
                t[op][r] = bench_now_ms() - t0;
            }
        }
        done += k;
    }
    for (int op = 0; op < N_OPS; op++)
        ms[op] = timed(b, op) ? bench_median(t[op], reps) : 0.0;
}

static float *alloc_floats(size_t n)
{
    float *p = tensor_aligned_alloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_spatial_dropout: %s\n", nn_last_error());
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    bench_print_machine();
    int reps = 60, only_threads = 0, only_cache = -1, only_fmt = -1;
    shape4 only_shape = {0, 0, 0, 0};
    char out_path[1024];
    const char *slash = strrchr(argv[0], '/');
    snprintf(out_path, sizeof out_path, "%.*sspatial_dropout.jsonl",
             slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) snprintf(out_path, sizeof out_path, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc &&
                 sscanf(argv[++i], "%d,%d,%d,%d", &only_shape.N, &only_shape.C, &only_shape.H, &only_shape.W) == 4) {}
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            nn_data_format f;
            if (nn_data_format_parse(argv[++i], &f) != NN_OK) {
                fprintf(stderr, "bench_spatial_dropout: %s\n", nn_last_error());
                return 2;
            }
            only_fmt = (int)f;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) only_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) {
            i++;
            only_cache = !strcmp(argv[i], "warm") ? 0 : !strcmp(argv[i], "flushed") ? 1 : -2;
            if (only_cache < 0) {
                fprintf(stderr, "bench_spatial_dropout: --cache must be warm or flushed\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--reps R] [--out FILE|-] [--shape N,C,H,W] [--format F] "
                            "[--threads T] [--cache warm|flushed]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_spatial_dropout: --reps must be between 1 and %d\n", MAX_REPS);
        return 2;
    }
    const int to_file = strcmp(out_path, "-") != 0;
    char tmp_path[1100];
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", out_path);
    FILE *out = to_file ? fopen(tmp_path, "w") : NULL;
    if (to_file && !out) {
        perror(tmp_path);
        return 1;
    }
    flush_buf = malloc(FLUSH_BYTES);
    if (!flush_buf) return 1;
    memset(flush_buf, 1, FLUSH_BYTES);

    static const shape4 shapes[] = {{128, 32, 26, 26}, {128, 64, 24, 24}, {32, 256, 14, 14}, {8, 64, 112, 112}};
    static const int threads[] = {1, 2};
    const float rate = 0.25f;
    tensor_rng rng;
    tensor_rng_seed(&rng, 1);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape4 sh = shapes[si];
        if (only_shape.N && memcmp(&sh, &only_shape, sizeof sh)) continue;
        bench_case b = {0};
        b.N = sh.N;
        b.C = sh.C;
        b.spatial = (long)sh.H * sh.W;
        b.total = (size_t)sh.N * sh.C * (size_t)b.spatial;
        b.rate = rate;
        b.x = alloc_floats(b.total);
        b.y = alloc_floats(b.total);
        b.dy = alloc_floats(b.total);
        b.dx = alloc_floats(b.total);
        for (size_t i = 0; i < b.total; i++) {
            b.x[i] = 2.0f * tensor_rng_uniform(&rng) - 1.0f;
            b.dy[i] = 2.0f * tensor_rng_uniform(&rng) - 1.0f;
            b.dx[i] = 0.0f;
            b.y[i] = 0.0f;
        }
        for (int f = 0; f < 2; f++) {
            b.use_fmt[f] = only_fmt < 0 || (int)format_of(f) == only_fmt;
            b.mask[f] = malloc((size_t)sh.N * sh.C);
            if (!b.mask[f]) return 1;
            /* The backward's mask before the first forward has run. */
            if (nn_spatial_dropout_mask(b.mask[f], sh.N, sh.C, rate, 1234, 0) != NN_OK) return 1;
        }
        for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
            if (only_threads && threads[ti] != only_threads) continue;
            if (nn_set_threads(threads[ti]) != NN_OK) return 1;
            for (int flushed = 0; flushed < 2; flushed++) {
                if (only_cache >= 0 && flushed != only_cache) continue;
                double ms[N_OPS];
                const int r = flushed ? (reps + 1) / 2 : reps;
                time_ops(&b, r, flushed, ms);
                for (int f = 0; f < 2; f++) {
                    if (!b.use_fmt[f]) continue;
                    const double fwd = ms[OP_FWD + OP_PER_FMT * f], bwd = ms[OP_BWD + OP_PER_FMT * f];
                    char line[768], ratio[160] = "";
                    if (f == 0)
                        snprintf(ratio, sizeof ratio, ", \"scale_all_ms\": %.4f, "
                                 "\"kept_only_ms\": %.4f", ms[OP_SCALE_ALL], ms[OP_KEPT_ONLY]);
                    if (f == 1 && b.use_fmt[0])
                        snprintf(ratio, sizeof ratio, ", \"last_over_first_fwd\": %.3f, "
                                 "\"last_over_first_bwd\": %.3f", fwd / ms[OP_FWD],
                                 bwd / ms[OP_BWD]);
                    snprintf(line, sizeof line,
                             "{\"op\": \"spatial_dropout\", \"shape\": [%d, %d, %d, %d], "
                             "\"data_format\": \"%s\", \"threads\": %d, \"rate\": %.2f, "
                             "\"cache\": \"%s\", \"reps\": %d, \"bytes\": %zu, "
                             "\"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"bwd_acc_ms\": %.4f, "
                             "\"copy_ms\": %.4f, \"copy1_ms\": %.4f, \"fwd_over_copy\": %.3f, "
                             "\"bwd_over_copy\": %.3f%s}",
                             sh.N, sh.C, sh.H, sh.W, nn_data_format_name(format_of(f)),
                             threads[ti], (double)rate, flushed ? "flushed" : "warm", r,
                             b.total * sizeof(float), fwd, bwd, ms[OP_BWD_ACC + OP_PER_FMT * f],
                             ms[OP_COPY], ms[OP_COPY1], fwd / ms[OP_COPY], bwd / ms[OP_COPY],
                             ratio);
                    puts(line);
                    fflush(stdout);
                    if (out) fprintf(out, "%s\n", line);
                }
            }
        }
        tensor_aligned_free(b.x);
        tensor_aligned_free(b.y);
        tensor_aligned_free(b.dy);
        tensor_aligned_free(b.dx);
        free(b.mask[0]);
        free(b.mask[1]);
    }
    free(flush_buf);
    if (!out) return 0;
    if (fclose(out) != 0 || rename(tmp_path, out_path) != 0) {
        perror(out_path);
        return 1;
    }
    fprintf(stderr, "bench_spatial_dropout: wrote %s\n", out_path);
    return 0;
}
