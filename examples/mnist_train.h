/* The MNIST training loop, shared by examples/mnist.c and the test suite
 * tests/test_mnist_train.c (which runs it on a tiny synthetic set), so the
 * loop the test checks is the loop the program runs.
 *
 * One epoch: shuffle the training indices with the seeded tensor_rng, train
 * on batches (the last one may be smaller), then evaluate the test set in
 * eval mode (no dropout). After every epoch: a line of text, a JSON Lines
 * log record and a checkpoint, all optional.
 *
 * Learning rate: step decay, PyTorch's StepLR(step_size=step, gamma=decay):
 * lr_e = lr * decay^floor(e / step) in epoch e (0-based). It depends only on
 * the epoch number, so resuming at an epoch boundary continues the same
 * schedule whatever the total number of epochs.
 *
 * Resumable state: everything a run needs to continue bit for bit is in the
 * checkpoint: the model and optimizer (nn/io/checkpoint.h) and this loop's
 * mnist_state (epochs done, the data-order generator, the schedule and the
 * batch size), stored as the checkpoint's blob. Layers' call counters are in
 * the checkpoint, so dropout masks continue too.
 *
 * Augmentation: each training image is translated by (dy, dx), each uniform
 * in [-shift, shift], with zeros shifted in, while it is converted to float
 * (no extra pass over the batch). The offsets are a counter-based hash of
 * (seed, epoch, image index in the training set), so they depend neither on
 * the thread count, nor on the batch an image lands in, nor on a resume.
 * Optionally (flip) each image is also mirrored left to right with
 * probability 1/2, drawn the same way on a stream of its own and done in the
 * same conversion: a symmetric class (a shirt, a shoe) stays itself, which
 * a digit does not, so flips are off unless asked for.
 * Evaluation never shifts nor flips.
 *
 * Determinism: everything that the log records except the timings depends
 * only on the seed and the data: shuffling is sequential on one thread, the
 * losses are summed in a fixed order in double.
 *
 * Deliberately omitted: validation splits, early stopping, augmentations
 * other than translation and mirroring (rotation, scaling, elastic, vertical
 * flips), mid-epoch checkpoints.
 */
#ifndef NN_EXAMPLES_MNIST_TRAIN_H
#define NN_EXAMPLES_MNIST_TRAIN_H

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"

typedef struct mnist_config {
    int epochs;            /* total, counting epochs done before a resume */
    int batch;
    float lr, lr_decay;    /* base learning rate, factor every lr_step epochs */
    int lr_step;
    uint64_t seed;         /* model init, dropout, data order, shifts and flips */
    int shift;             /* max translation in pixels, 0..MNIST_SHIFT_MAX */
    int flip;              /* 1: mirror half the training images at random */
    int progress;          /* redraw a progress bar in place (a terminal) */
    int verbose;           /* one line per epoch */
    FILE *out;             /* where lines go */
    FILE *log;             /* JSON Lines, or NULL */
    const char *save_path; /* checkpoint after every epoch, or NULL */
} mnist_config;

/* The loop's own state, saved in the checkpoint's blob. */
typedef struct mnist_state {
    uint32_t epoch;        /* epochs completed */
    tensor_rng order;      /* data-order generator for the next epoch */
    float lr, lr_decay;
    uint32_t lr_step;
    uint32_t batch;
    uint32_t n_train;      /* training images used (after --limit) */
    uint64_t seed;
    uint32_t shift;        /* max translation in pixels */
    uint32_t flip;         /* 0 or 1 */
} mnist_state;

#define MNIST_STATE_MAGIC 0x4d4e5354u /* "MNST" */
/* Version 2 appends the shift, version 3 the flip. Older blobs still load,
 * version 1 (written before there was augmentation) with shift 0, versions 1
 * and 2 with flip 0, so they resume as they began. */
#define MNIST_STATE_VERSION 3u
#define MNIST_STATE_BYTES_V1 (4 + 4 + 4 + 4 * 8 + 4 + 4 + 4 + 4 + 4 + 8)
#define MNIST_STATE_BYTES_V2 (MNIST_STATE_BYTES_V1 + 4)
#define MNIST_STATE_BYTES (MNIST_STATE_BYTES_V2 + 4)

/* The largest --shift: 8 of 28 pixels already pushes most digits partly out
 * of the frame. */
#define MNIST_SHIFT_MAX 8
/* Key of the shift stream, "shift", apart from data order and dropout. */
#define MNIST_SHIFT_STREAM 0x7368696674ull
/* Key of the flip stream, "flip": flips do not follow the shifts. */
#define MNIST_FLIP_STREAM 0x666c6970ull

typedef struct mnist_metrics {
    double loss, acc;      /* mean loss per image, fraction correct */
    int correct, n;
    double seconds;
} mnist_metrics;

/* What a run did, for the final report. */
typedef struct mnist_result {
    int epoch;             /* last epoch completed (1-based count) */
    float lr;              /* its learning rate */
    mnist_metrics train, test; /* of the last epoch */
    double train_seconds, eval_seconds, wall_seconds;
    long long train_images, eval_images;
} mnist_result;

static double mnist_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void mnist_state_init(mnist_state *st, const mnist_config *cfg, int n_train)
{
    memset(st, 0, sizeof *st);
    /* A stream of its own, so the data order does not shift when the
     * model's initialisation draws change. */
    tensor_rng_seed(&st->order, tensor_hash3(cfg->seed, 0x6f72646572ull, 0));
    st->lr = cfg->lr;
    st->lr_decay = cfg->lr_decay;
    st->lr_step = (uint32_t)cfg->lr_step;
    st->batch = (uint32_t)cfg->batch;
    st->n_train = (uint32_t)n_train;
    st->seed = cfg->seed;
    st->shift = (uint32_t)cfg->shift;
    st->flip = cfg->flip ? 1u : 0u;
}

static void mnist_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t mnist_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t mnist_f2u(float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    return v;
}
static float mnist_u2f(uint32_t v)
{
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* Little-endian, fixed layout, so a checkpoint moves between machines. */
static void mnist_state_pack(const mnist_state *st, uint8_t buf[MNIST_STATE_BYTES])
{
    uint8_t *p = buf;
    mnist_put32(p, MNIST_STATE_MAGIC), p += 4;
    mnist_put32(p, MNIST_STATE_VERSION), p += 4;
    mnist_put32(p, st->epoch), p += 4;
    for (int i = 0; i < 4; i++) {
        mnist_put32(p, (uint32_t)st->order.s[i]), p += 4;
        mnist_put32(p, (uint32_t)(st->order.s[i] >> 32)), p += 4;
    }
    mnist_put32(p, mnist_f2u(st->lr)), p += 4;
    mnist_put32(p, mnist_f2u(st->lr_decay)), p += 4;
    mnist_put32(p, st->lr_step), p += 4;
    mnist_put32(p, st->batch), p += 4;
    mnist_put32(p, st->n_train), p += 4;
    mnist_put32(p, (uint32_t)st->seed), p += 4;
    mnist_put32(p, (uint32_t)(st->seed >> 32)), p += 4;
    mnist_put32(p, st->shift), p += 4;
    mnist_put32(p, st->flip), p += 4;
}

static nn_status mnist_state_unpack(mnist_state *st, const uint8_t *buf, size_t len,
                                    const char *path)
{
    if ((len != MNIST_STATE_BYTES && len != MNIST_STATE_BYTES_V2 && len != MNIST_STATE_BYTES_V1) ||
        mnist_get32(buf) != MNIST_STATE_MAGIC)
        return nn_error(NN_ERR_FORMAT, "%s: the checkpoint holds no MNIST training state (a "
                        "%zu-byte blob); use --load for weights only", path, len);
    const uint32_t version = mnist_get32(buf + 4);
    if (version < 1 || version > MNIST_STATE_VERSION ||
        len != (version == 1 ? MNIST_STATE_BYTES_V1
                             : version == 2 ? MNIST_STATE_BYTES_V2 : MNIST_STATE_BYTES))
        return nn_error(NN_ERR_FORMAT, "%s: MNIST training state version %u in %zu bytes, expected "
                        "version %u in %d bytes, 2 in %d or 1 in %d", path, version, len,
                        MNIST_STATE_VERSION, MNIST_STATE_BYTES, MNIST_STATE_BYTES_V2,
                        MNIST_STATE_BYTES_V1);
    const uint32_t shift = version == 1 ? 0 : mnist_get32(buf + MNIST_STATE_BYTES_V1);
    if (shift > MNIST_SHIFT_MAX)
        return nn_error(NN_ERR_FORMAT, "%s: MNIST training state has shift %u, at most %d", path,
                        shift, MNIST_SHIFT_MAX);
    const uint32_t flip = version < 3 ? 0 : mnist_get32(buf + MNIST_STATE_BYTES_V2);
    if (flip > 1)
        return nn_error(NN_ERR_FORMAT, "%s: MNIST training state has flip %u, expected 0 or 1",
                        path, flip);
    const uint8_t *p = buf + 8;
    st->epoch = mnist_get32(p), p += 4;
    for (int i = 0; i < 4; i++) {
        st->order.s[i] = mnist_get32(p) | (uint64_t)mnist_get32(p + 4) << 32;
        p += 8;
    }
    st->lr = mnist_u2f(mnist_get32(p)), p += 4;
    st->lr_decay = mnist_u2f(mnist_get32(p)), p += 4;
    st->lr_step = mnist_get32(p), p += 4;
    st->batch = mnist_get32(p), p += 4;
    st->n_train = mnist_get32(p), p += 4;
    st->seed = mnist_get32(p) | (uint64_t)mnist_get32(p + 4) << 32;
    st->shift = shift;
    st->flip = flip;
    return NN_OK;
}

static float mnist_epoch_lr(const mnist_state *st, int epoch)
{
    const int steps = st->lr_step ? epoch / (int)st->lr_step : 0;
    return (float)((double)st->lr * pow((double)st->lr_decay, (double)steps));
}

/* The first epoch (0-based) in [from, epochs) whose learning rate is below
 * FLT_MIN, or -1. Decayed that far the rate is subnormal or 0: the updates
 * vanish and optim_set_lr refuses 0 mid-run. The rate only changes every
 * lr_step epochs, so only those epochs are looked at. */
static int mnist_lr_underflow_epoch(const mnist_state *st, int from, int epochs)
{
    const int step = (int)st->lr_step;
    for (int e = from; e < epochs; e = step ? (e / step + 1) * step : epochs)
        if (!(mnist_epoch_lr(st, e) >= FLT_MIN)) return e;
    return -1;
}

/* Parses a --shift value: an integer in [0, MNIST_SHIFT_MAX]. */
static nn_status mnist_shift_parse(const char *v, int *out)
{
    char *end;
    errno = 0;
    const long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < 0 || x > MNIST_SHIFT_MAX)
        return nn_error(NN_ERR_ARG, "--shift needs an integer in [0, %d] (pixels), but got '%s'",
                        MNIST_SHIFT_MAX, v ? v : "(null)");
    *out = (int)x;
    return NN_OK;
}

/* The translation of training image `index` in epoch `epoch` (0-based):
 * dy, dx each uniform in [-shift, shift], from the two 32-bit halves of one
 * hash (a multiply-shift map; its bias, below 2^-27, is far under the noise
 * of any run). A pure function, so any thread, batch or resume gets the same. */
static void mnist_shift_offsets(uint64_t seed, int epoch, int index, int shift, int *dy, int *dx)
{
    if (shift <= 0) {
        *dy = *dx = 0;
        return;
    }
    const uint64_t h = tensor_hash3(tensor_hash3(seed, MNIST_SHIFT_STREAM, 0), (uint64_t)epoch,
                                    (uint64_t)index);
    const uint64_t span = 2 * (uint64_t)shift + 1;
    *dy = (int)(((h & 0xffffffffu) * span) >> 32) - shift;
    *dx = (int)(((h >> 32) * span) >> 32) - shift;
}

/* Whether training image `index` is mirrored in epoch `epoch` (0-based):
 * the top bit of a hash on the flip stream, so half the images on average,
 * a pure function of (seed, epoch, index) like the shifts. 0 when flip is 0. */
static int mnist_flip_draw(uint64_t seed, int epoch, int index, int flip)
{
    if (!flip) return 0;
    return (int)(tensor_hash3(tensor_hash3(seed, MNIST_FLIP_STREAM, 0), (uint64_t)epoch,
                              (uint64_t)index) >> 63);
}

/* dst = src * scale, mirrored left to right if flip, then moved down by dy
 * and right by dx, zeros shifted in: dst[r][c] = m[r - dy][c - dx] * scale
 * where that pixel exists, else 0, with m[i][j] = src[i][flip ? cols-1-j : j].
 * dst: rows x cols floats, src: rows x cols bytes; any dy, dx. It is the
 * pixel conversion itself (with dy = dx = 0 and no flip it equals
 * nn_idx_to_float bit for bit), so the shift and flip cost no pass of their
 * own. */
static void mnist_shift_image(float *dst, const uint8_t *src, int rows, int cols, int dy, int dx,
                              int flip, float scale)
{
    /* Columns [c0, c1) of every row have a source pixel. */
    const int c0 = dx > 0 ? (dx < cols ? dx : cols) : 0;
    const int c1 = dx < 0 ? (-dx < cols ? cols + dx : 0) : cols;
    for (int r = 0; r < rows; r++) {
        float *d = dst + (size_t)r * cols;
        const int sr = r - dy;
        if (sr < 0 || sr >= rows || c0 >= c1) {
            memset(d, 0, (size_t)cols * sizeof *d);
            continue;
        }
        const uint8_t *s = src + (size_t)sr * cols;
        for (int c = 0; c < c0; c++) d[c] = 0.0f;
        if (flip)
            for (int c = c0; c < c1; c++) d[c] = (float)s[cols - 1 - (c - dx)] * scale;
        else
            for (int c = c0; c < c1; c++) d[c] = (float)s[c - dx] * scale;
        for (int c = c1; c < cols; c++) d[c] = 0.0f;
    }
}

/* Fills a training batch: images order[0..b) of data, scaled to [0, 1],
 * shifted and flipped as st and epoch say, into buf (b x rows x cols),
 * labels into lab. */
static void mnist_fill_batch(float *buf, int *lab, const nn_mnist *data, const int *order, int b,
                             const mnist_state *st, int epoch)
{
    const int rows = data->rows, cols = data->cols;
    const size_t pixels = (size_t)rows * (size_t)cols;
    for (int i = 0; i < b; i++) {
        const int idx = order[i];
        int dy, dx;
        mnist_shift_offsets(st->seed, epoch, idx, (int)st->shift, &dy, &dx);
        const int flip = mnist_flip_draw(st->seed, epoch, idx, (int)st->flip);
        mnist_shift_image(buf + (size_t)i * pixels, data->train_images + (size_t)idx * pixels, rows,
                          cols, dy, dx, flip, 1.0f / 255.0f);
        lab[i] = data->train_labels[idx];
    }
}

/* A batch tensor over buf: (n, per-sample input shape of m). */
static void mnist_batch_tensor(tensor *x, float *buf, const nn_model *m, int n)
{
    int shape[TENSOR_MAX_RANK];
    shape[0] = n;
    for (int i = 0; i < m->in_rank; i++) shape[i + 1] = m->in_shape[i];
    memset(x, 0, sizeof *x);
    x->data = buf;
    NN_ASSERT(tensor_set_shape(x, m->in_rank + 1, shape) == NN_OK);
}

/* Test-set loss and accuracy in eval mode, in batches of `batch`. */
static nn_status mnist_evaluate(nn_model *m, const uint8_t *images, const uint8_t *labels, int n,
                                int batch, mnist_metrics *res)
{
    size_t pixels = 1;
    for (int i = 0; i < m->in_rank; i++) pixels *= (size_t)m->in_shape[i];
    float *buf = tensor_aligned_alloc((size_t)batch * pixels * sizeof(float));
    int *lab = malloc((size_t)batch * sizeof *lab);
    if (!buf || !lab) {
        tensor_aligned_free(buf);
        free(lab);
        return nn_error(NN_ERR_MEMORY, "mnist_evaluate: out of memory");
    }
    const double t0 = mnist_now();
    double loss = 0.0;
    int correct = 0;
    nn_status s = NN_OK;
    for (int start = 0; start < n && s == NN_OK; start += batch) {
        const int b = n - start < batch ? n - start : batch;
        nn_idx_to_float(buf, images + (size_t)start * pixels, (size_t)b * pixels, 1.0f / 255.0f);
        for (int i = 0; i < b; i++) lab[i] = labels[start + i];
        tensor x;
        mnist_batch_tensor(&x, buf, m, b);
        double batch_loss;
        int batch_correct;
        s = nn_model_predict(m, &x, lab, NULL, &batch_loss, &batch_correct);
        loss += batch_loss;
        correct += batch_correct;
    }
    tensor_aligned_free(buf);
    free(lab);
    if (s != NN_OK) return s;
    res->n = n;
    res->correct = correct;
    res->loss = loss / n;
    res->acc = (double)correct / n;
    res->seconds = mnist_now() - t0;
    return NN_OK;
}

static void mnist_progress(const mnist_config *cfg, int epoch, int done, int total, double loss,
                           int correct, int seen, double elapsed)
{
    char bar[31];
    const int width = 30, fill = total ? (int)((long long)done * width / total) : width;
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    const double rate = elapsed > 0 ? seen / elapsed : 0.0;
    const double eta = done ? elapsed * (total - done) / done : 0.0;
    fprintf(cfg->out, "\r\033[Kepoch %d/%d [%s] %d/%d  loss %.4f  acc %.4f  %.0f img/s  ETA %d:%02d",
            epoch, cfg->epochs, bar, done, total, seen ? loss / seen : 0.0,
            seen ? (double)correct / seen : 0.0, rate, (int)eta / 60, (int)eta % 60);
    fflush(cfg->out);
}

/* One JSON object per line; the timing keys come last. A run with flips
 * says so on every line ("flip": true); without, the key is left out, so
 * the lines are those of the runs before there were flips. */
static void mnist_log_line(FILE *log, int final, int epoch, float lr, int flip,
                           const mnist_metrics *train, const mnist_metrics *test, double seconds,
                           double train_ips, double eval_ips)
{
    if (!log) return;
    fprintf(log, "{%s\"epoch\": %d, \"lr\": %.9g, %s\"train_loss\": %.9g, \"train_acc\": %.9g, "
            "\"test_loss\": %.9g, \"test_acc\": %.9g, \"seconds\": %.3f, \"images_per_sec\": %.1f, "
            "\"eval_images_per_sec\": %.1f}\n", final ? "\"final\": true, " : "", epoch,
            (double)lr, flip ? "\"flip\": true, " : "", train->loss, train->acc, test->loss,
            test->acc, seconds, train_ips, eval_ips);
    fflush(log);
}

/* Trains epochs st->epoch .. cfg->epochs-1 on the first st->n_train images
 * of data, evaluating on the whole test set after each. A non-finite loss
 * stops the run with NN_ERR_NUMERIC and a message naming the epoch and the
 * batch; the checkpoint of the last completed epoch is left as it was. */
static nn_status mnist_train(nn_model *m, optim *opt, const nn_mnist *data,
                             const mnist_config *cfg, mnist_state *st, mnist_result *res)
{
    const int n = (int)st->n_train, B = (int)st->batch;
    size_t pixels = 1;
    for (int i = 0; i < m->in_rank; i++) pixels *= (size_t)m->in_shape[i];
    if (pixels != (size_t)data->rows * (size_t)data->cols)
        return nn_error(NN_ERR_SHAPE, "mnist_train: the model takes %zu values per sample, the "
                        "images have %dx%d", pixels, data->rows, data->cols);
    if (n < 1 || n > data->n_train || B < 1)
        return nn_error(NN_ERR_ARG, "mnist_train: %d training images of %d, batch %d", n,
                        data->n_train, B);
    if (st->shift > MNIST_SHIFT_MAX)
        return nn_error(NN_ERR_ARG, "mnist_train: shift %u, at most %d", st->shift,
                        MNIST_SHIFT_MAX);
    if (st->flip > 1)
        return nn_error(NN_ERR_ARG, "mnist_train: flip %u, expected 0 or 1", st->flip);
    const int low = mnist_lr_underflow_epoch(st, (int)st->epoch, cfg->epochs);
    if (low >= 0)
        return nn_error(NN_ERR_ARG, "mnist_train: with --lr %g --lr-decay %g --lr-step %u the "
                        "learning rate falls below the smallest normal float (FLT_MIN = %g) at "
                        "epoch %d, before --epochs %d ends; use fewer epochs, or a larger "
                        "--lr-decay or --lr-step", (double)st->lr, (double)st->lr_decay,
                        st->lr_step, (double)FLT_MIN, low + 1, cfg->epochs);
    int *order = malloc((size_t)n * sizeof *order);
    int *lab = malloc((size_t)B * sizeof *lab);
    float *buf = tensor_aligned_alloc((size_t)B * pixels * sizeof(float));
    nn_status s = NN_OK;
    if (!order || !lab || !buf) s = nn_error(NN_ERR_MEMORY, "mnist_train: out of memory");
    memset(res, 0, sizeof *res);
    const double run_start = mnist_now();
    const int batches = (n + B - 1) / B;
    for (int epoch = (int)st->epoch; s == NN_OK && epoch < cfg->epochs; epoch++) {
        const float lr = mnist_epoch_lr(st, epoch);
        s = optim_set_lr(opt, lr);
        if (s != NN_OK) break;
        /* A fresh permutation each epoch from the running generator: the
         * generator's state is all a resume needs to continue the order. */
        for (int i = 0; i < n; i++) order[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)tensor_rng_below(&st->order, (uint32_t)i + 1);
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        const double t0 = mnist_now();
        double loss_sum = 0.0, last_draw = 0.0;
        int correct = 0, seen = 0;
        for (int k = 0; k < batches; k++) {
            const int start = k * B, b = n - start < B ? n - start : B;
            mnist_fill_batch(buf, lab, data, order + start, b, st, epoch);
            tensor x;
            mnist_batch_tensor(&x, buf, m, b);
            float loss = 0.0f;
            int right = 0;
            s = nn_model_train_step(m, opt, &x, lab, &loss, &right);
            if (s == NN_OK && !isfinite(loss)) s = NN_ERR_NUMERIC;
            if (s != NN_OK) {
                char msg[400];
                snprintf(msg, sizeof msg, "%s", nn_last_error());
                if (cfg->progress) fprintf(cfg->out, "\n");
                if (s == NN_ERR_NUMERIC)
                    nn_error(s, "epoch %d, batch %d of %d: the loss is not finite (%s); stopped. %s",
                             epoch + 1, k + 1, batches, msg[0] ? msg : "NaN or Inf",
                             cfg->save_path ? "The checkpoint of the last completed epoch is kept."
                                            : "");
                else
                    nn_error(s, "epoch %d, batch %d: %s", epoch + 1, k + 1, msg);
                break;
            }
            loss_sum += (double)loss * b;
            correct += right;
            seen += b;
            if (cfg->progress) {
                const double now = mnist_now();
                if (now - last_draw > 0.1 || k + 1 == batches) {
                    mnist_progress(cfg, epoch + 1, k + 1, batches, loss_sum, correct, seen, now - t0);
                    last_draw = now;
                }
            }
        }
        if (s != NN_OK) break;
        const double train_seconds = mnist_now() - t0;
        mnist_metrics train = {loss_sum / n, (double)correct / n, correct, n, train_seconds};
        mnist_metrics test;
        s = mnist_evaluate(m, data->test_images, data->test_labels, data->n_test, B, &test);
        if (s != NN_OK) break;
        st->epoch = (uint32_t)epoch + 1;
        res->epoch = epoch + 1;
        res->lr = lr;
        res->train = train;
        res->test = test;
        res->train_seconds += train_seconds;
        res->eval_seconds += test.seconds;
        res->train_images += n;
        res->eval_images += test.n;
        const double train_ips = n / train_seconds, eval_ips = test.n / test.seconds;
        if (cfg->progress) fprintf(cfg->out, "\r\033[K");
        if (cfg->verbose) {
            fprintf(cfg->out, "epoch %2d/%d  lr %.3g  loss %.4f  acc %.2f%%  test_loss %.4f  "
                    "test_acc %.2f%%  %.1f s  train %.0f img/s  eval %.0f img/s\n", epoch + 1,
                    cfg->epochs, (double)lr, train.loss, 100.0 * train.acc, test.loss,
                    100.0 * test.acc, train_seconds + test.seconds, train_ips, eval_ips);
            fflush(cfg->out);
        }
        mnist_log_line(cfg->log, 0, epoch + 1, lr, (int)st->flip, &train, &test,
                       train_seconds + test.seconds, train_ips, eval_ips);
        if (cfg->save_path) {
            uint8_t blob[MNIST_STATE_BYTES];
            mnist_state_pack(st, blob);
            s = nn_checkpoint_save(cfg->save_path, m, opt, blob, sizeof blob);
        }
    }
    res->wall_seconds = mnist_now() - run_start;
    if (s == NN_OK && res->epoch)
        mnist_log_line(cfg->log, 1, res->epoch, res->lr, (int)st->flip, &res->train, &res->test,
                       res->wall_seconds, res->train_images / res->train_seconds,
                       res->eval_images / res->eval_seconds);
    free(order);
    free(lab);
    tensor_aligned_free(buf);
    return s;
}

#endif
