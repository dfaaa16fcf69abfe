/* MNIST training on nn_model_fit (nn/fit.h), shared by examples/mnist.c
 * and the test suite tests/test_mnist_train.c (which runs it on a tiny
 * synthetic set), so the run the test checks is the run the program makes.
 *
 * The loop is the library's: nn_model_fit shuffles the training images with
 * its seeded order stream, trains on batches (the last one may be smaller)
 * and evaluates the test set, its validation set, in eval mode (no
 * dropout). What is MNIST's own goes in through fit's hooks: the shifts and
 * flips are its per-sample transform, the progress bar and the timings its
 * batch callback, and after every epoch its epoch callback writes a line of
 * text, a JSON Lines log record and a checkpoint, all optional.
 *
 * Learning rate: step decay, PyTorch's StepLR(step_size=step, gamma=decay):
 * lr_e = lr * decay^floor(e / step) in epoch e (0-based). It depends only on
 * the epoch number, so resuming at an epoch boundary continues the same
 * schedule whatever the total number of epochs.
 *
 * Resumable state: everything a run needs to continue bit for bit is in the
 * checkpoint: the model and optimizer (nn/io/checkpoint.h) and this run's
 * mnist_state (epochs done, the data-order stream as fit's epoch callback
 * hands it over, the schedule and the batch size), stored as the
 * checkpoint's blob and given back to nn_model_fit as initial_epoch and
 * order_state. Layers' call counters are in the checkpoint, so dropout
 * masks continue too.
 *
 * Augmentation: each training image is translated by (dy, dx), each uniform
 * in [-shift, shift], with zeros shifted in, rebuilt from its bytes in one
 * pass by fit's transform. The offsets are a counter-based hash of
 * (seed, epoch, image index in the training set), so they depend neither on
 * the thread count, nor on the batch an image lands in, nor on a resume.
 * Optionally (flip) each image is also mirrored left to right with
 * probability 1/2, drawn the same way on a stream of its own and done in the
 * same conversion: a symmetric class (a shirt, a shoe) stays itself, which
 * a digit does not, so flips are off unless asked for.
 * Evaluation never shifts nor flips.
 *
 * Determinism: everything that the log records except the timings depends
 * only on the seed and the data, as nn_model_fit's results do.
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
    /* Over several processes (nn/shard.h), or NULL: every rank trains its
     * part of each batch; rank 0 alone writes the checkpoint, the others
     * wait for it. Lines and the log are the caller's to silence on the
     * other ranks. */
    const nn_comm *comm;
    nn_shard_mode shard_mode;
    int shard;             /* exact mode's micro-shard size, 0: the default */
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

/* A run of mnist_train: what its nn_model_fit hooks share (options.user). */
typedef struct mnist_run {
    const mnist_config *cfg;
    mnist_state *st;
    mnist_result *res;
    int rows, cols;         /* image size */
    double epoch_start, train_end, last_draw;
    nn_status save_status;  /* a failed checkpoint save, with its message */
    char save_error[400];
} mnist_run;

/* nn_model_fit's transform: training image `index` (x already converted
 * to [0, 1]) shifted and flipped as run->st says for `epoch`, rebuilt from
 * its bytes in one pass by mnist_shift_image. Unshifted, unflipped images
 * are left as converted, which is the same bits. */
static int mnist_transform(float *x, const nn_dataset *d, int index, int epoch, void *user)
{
    const mnist_run *r = user;
    const mnist_state *st = r->st;
    int dy, dx;
    mnist_shift_offsets(st->seed, epoch, index, (int)st->shift, &dy, &dx);
    const int flip = mnist_flip_draw(st->seed, epoch, index, (int)st->flip);
    if (dy || dx || flip)
        mnist_shift_image(x, d->images_u8 + (size_t)index * d->sample_size, r->rows, r->cols, dy,
                          dx, flip, d->scale);
    return 0;
}

/* *d = n images of m's per-sample input shape (rows x cols pixels in
 * either data format) with their labels, read as bytes / 255. */
static nn_status mnist_dataset(nn_dataset *d, const nn_model *m, const uint8_t *images,
                               const uint8_t *labels, int n)
{
    NN_TRY(nn_dataset_init_u8(d, images, n, m->in_rank, m->in_shape, 1.0f / 255.0f, 0.0f));
    return nn_dataset_set_labels_u8(d, labels);
}

/* Test-set loss and accuracy in eval mode, in batches of `batch`. */
static nn_status mnist_evaluate(nn_model *m, const uint8_t *images, const uint8_t *labels, int n,
                                int batch, mnist_metrics *res)
{
    nn_dataset d;
    NN_TRY(mnist_dataset(&d, m, images, labels, n));
    const double t0 = mnist_now();
    double loss, acc;
    NN_TRY(nn_model_evaluate(m, &d, batch, NULL, &loss, &acc));
    res->n = n;
    res->correct = (int)llround(acc * n); /* acc is correct / n: exact */
    res->loss = loss;
    res->acc = acc;
    res->seconds = mnist_now() - t0;
    return NN_OK;
}

static void mnist_progress(const mnist_config *cfg, const nn_fit_batch *ev, double elapsed)
{
    char bar[31];
    const int width = 30, done = ev->batch + 1, total = ev->batches;
    const int fill = total ? (int)((long long)done * width / total) : width;
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    const double rate = elapsed > 0 ? ev->seen / elapsed : 0.0;
    const double eta = elapsed * (total - done) / done;
    fprintf(cfg->out, "\r\033[Kepoch %d/%d [%s] %d/%d  loss %.4f  acc %.4f  %.0f img/s  ETA %d:%02d",
            ev->epoch + 1, cfg->epochs, bar, done, total, ev->loss_mean, ev->accuracy, rate,
            (int)eta / 60, (int)eta % 60);
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

/* nn_model_fit's batch callback: the progress bar, at most every 0.1 s,
 * and the end of training for the epoch's timings. */
static int mnist_on_batch(const nn_fit_batch *ev, void *user)
{
    mnist_run *r = user;
    const double now = mnist_now();
    if (ev->batch + 1 == ev->batches) r->train_end = now;
    if (r->cfg->progress && (now - r->last_draw > 0.1 || ev->batch + 1 == ev->batches)) {
        mnist_progress(r->cfg, ev, now - r->epoch_start);
        r->last_draw = now;
    }
    return NN_FIT_CONTINUE;
}

/* nn_model_fit's epoch callback: before, the clock; after, the state that
 * a resume needs, the result, the line, the log record and the checkpoint. */
static int mnist_on_epoch(nn_fit_epoch *ev, void *user)
{
    mnist_run *r = user;
    const mnist_config *cfg = r->cfg;
    mnist_state *st = r->st;
    mnist_result *res = r->res;
    if (!ev->end) {
        r->epoch_start = mnist_now();
        r->train_end = r->epoch_start;
        r->last_draw = 0.0;
        return NN_FIT_CONTINUE;
    }
    const nn_history *h = ev->history;
    const int i = h->epochs - 1;
    const double now = mnist_now();
    const int n = (int)st->n_train, n_test = res->test.n;
    const double train_seconds = r->train_end - r->epoch_start, eval_seconds = now - r->train_end;
    const mnist_metrics train = {h->train_loss[i], h->train_accuracy[i],
                                 (int)llround(h->train_accuracy[i] * n), n, train_seconds};
    const mnist_metrics test = {h->val_loss[i], h->val_accuracy[i],
                                (int)llround(h->val_accuracy[i] * n_test), n_test, eval_seconds};
    st->epoch = (uint32_t)ev->epoch + 1;
    st->order = ev->order_state;
    res->epoch = ev->epoch + 1;
    res->lr = ev->lr;
    res->train = train;
    res->test = test;
    res->train_seconds += train_seconds;
    res->eval_seconds += eval_seconds;
    res->train_images += n;
    res->eval_images += n_test;
    const double train_ips = n / train_seconds, eval_ips = n_test / eval_seconds;
    if (cfg->progress) fprintf(cfg->out, "\r\033[K");
    if (cfg->verbose) {
        fprintf(cfg->out, "epoch %2d/%d  lr %.3g  loss %.4f  acc %.2f%%  test_loss %.4f  "
                "test_acc %.2f%%  %.1f s  train %.0f img/s  eval %.0f img/s\n", ev->epoch + 1,
                cfg->epochs, (double)ev->lr, train.loss, 100.0 * train.acc, test.loss,
                100.0 * test.acc, train_seconds + eval_seconds, train_ips, eval_ips);
        fflush(cfg->out);
    }
    mnist_log_line(cfg->log, 0, ev->epoch + 1, ev->lr, (int)st->flip, &train, &test,
                   train_seconds + eval_seconds, train_ips, eval_ips);
    if (cfg->save_path && (!cfg->comm || cfg->comm->rank == 0)) {
        uint8_t blob[MNIST_STATE_BYTES];
        mnist_state_pack(st, blob);
        r->save_status = nn_checkpoint_save(cfg->save_path, ev->model, ev->optim, blob, sizeof blob);
        if (r->save_status != NN_OK) {
            snprintf(r->save_error, sizeof r->save_error, "%s", nn_last_error());
            return -1;
        }
    }
    /* The other ranks go on once the checkpoint is whole. */
    if (cfg->save_path && cfg->comm && nn_comm_barrier(cfg->comm) != NN_OK) {
        r->save_status = NN_ERR_IO;
        snprintf(r->save_error, sizeof r->save_error, "%s", nn_last_error());
        return -1;
    }
    return NN_FIT_CONTINUE;
}

/* Trains epochs st->epoch .. cfg->epochs-1 on the first st->n_train images
 * of data with nn_model_fit, evaluating on the whole test set after each
 * (its validation set). A non-finite loss stops the run with NN_ERR_NUMERIC
 * and a message naming the epoch and the batch; the checkpoint of the last
 * completed epoch is left as it was. */
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
    /* Checked here, before nn_model_fit does, to name the flags. */
    const int low = mnist_lr_underflow_epoch(st, (int)st->epoch, cfg->epochs);
    if (low >= 0)
        return nn_error(NN_ERR_ARG, "mnist_train: with --lr %g --lr-decay %g --lr-step %u the "
                        "learning rate falls below the smallest normal float (FLT_MIN = %g) at "
                        "epoch %d, before --epochs %d ends; use fewer epochs, or a larger "
                        "--lr-decay or --lr-step", (double)st->lr, (double)st->lr_decay,
                        st->lr_step, (double)FLT_MIN, low + 1, cfg->epochs);
    memset(res, 0, sizeof *res);
    if ((int)st->epoch >= cfg->epochs) return NN_OK;
    nn_dataset train, test;
    NN_TRY(mnist_dataset(&train, m, data->train_images, data->train_labels, n));
    NN_TRY(mnist_dataset(&test, m, data->test_images, data->test_labels, data->n_test));
    res->test.n = data->n_test;
    mnist_run run = {.cfg = cfg, .st = st, .res = res, .rows = data->rows, .cols = data->cols};
    const tensor_rng order = st->order;
    nn_fit_options o = nn_fit_defaults();
    o.epochs = cfg->epochs;
    o.initial_epoch = (int)st->epoch;
    o.order_state = &order;
    o.batch = B;
    o.validation = &test;
    o.lr = st->lr;
    o.lr_decay = st->lr_decay;
    o.lr_step = (int)st->lr_step;
    o.on_epoch = mnist_on_epoch;
    o.on_batch = mnist_on_batch;
    o.transform = st->shift || st->flip ? mnist_transform : NULL;
    o.comm = cfg->comm;
    o.shard_mode = cfg->shard_mode;
    o.shard = cfg->shard;
    o.user = &run;
    const double run_start = mnist_now();
    nn_status s = nn_model_fit(m, opt, &train, &o, NULL);
    res->wall_seconds = mnist_now() - run_start;
    if (s != NN_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        const char *what = strncmp(msg, "nn_model_fit: ", 14) ? msg : msg + 14;
        if (cfg->progress) fprintf(cfg->out, "\n");
        if (run.save_status != NN_OK) return nn_error(run.save_status, "%s", run.save_error);
        if (s == NN_ERR_NUMERIC)
            return nn_error(s, "%s.%s", what, cfg->save_path ? " The checkpoint of the last "
                            "completed epoch is kept." : "");
        return nn_error(s, "%s", what);
    }
    if (res->epoch)
        mnist_log_line(cfg->log, 1, res->epoch, res->lr, (int)st->flip, &res->train, &res->test,
                       res->wall_seconds, res->train_images / res->train_seconds,
                       res->eval_images / res->eval_seconds);
    return NN_OK;
}

#endif
