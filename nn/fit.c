/* Training loop, evaluation and prediction over a data set (see fit.h).
 *
 * Every call converts one batch at a time into a buffer of its own
 * (fit_fill), then runs nn_model_train_step_loss or nn_model_evaluate_loss
 * on a tensor over that buffer. Sums over batches run in batch order in
 * double, so results depend only on the data, the seeds and the batch size.
 * Omitted: see fit.h.
 */
#include "nn/fit.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/random.h"

/* Key of the data-order stream, "order" (the stream of examples/mnist.c). */
#define FIT_ORDER_STREAM 0x6f72646572ull

/* ---- data sets ---- */

static nn_status fit_init_common(nn_dataset *d, const void *images, int n, int rank,
                                 const int *shape, const char *fn)
{
    if (!d) return nn_error(NN_ERR_ARG, "%s: d (the data set to fill) is NULL", fn);
    if (!images) return nn_error(NN_ERR_ARG, "%s: images is NULL", fn);
    if (n < 1) return nn_error(NN_ERR_ARG, "%s: n must be >= 1, but got %d", fn, n);
    if (rank < 1 || rank > TENSOR_MAX_RANK - 1)
        return nn_error(NN_ERR_ARG, "%s: rank must be in [1, %d] (the batch axis is added), but "
                        "got %d", fn, TENSOR_MAX_RANK - 1, rank);
    if (!shape) return nn_error(NN_ERR_ARG, "%s: shape is NULL", fn);
    size_t size = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 1)
            return nn_error(NN_ERR_ARG, "%s: shape[%d] must be >= 1, but got %d", fn, i, shape[i]);
        size *= (size_t)shape[i];
        if (size > ((size_t)1 << 40) / (size_t)n)
            return nn_error(NN_ERR_ARG, "%s: n %d times the shape's extents exceeds 2^40 values",
                            fn, n);
    }
    memset(d, 0, sizeof *d);
    d->n = n;
    d->rank = rank;
    memcpy(d->shape, shape, (size_t)rank * sizeof *shape);
    d->sample_size = size;
    d->scale = 1.0f;
    return NN_OK;
}

nn_status nn_dataset_init_u8(nn_dataset *d, const uint8_t *images, int n, int rank,
                             const int *shape, float scale, float shift)
{
    static const char fn[] = "nn_dataset_init_u8";
    if (!isfinite(scale)) return nn_error(NN_ERR_ARG, "%s: scale must be finite, but got %g", fn, (double)scale);
    if (!isfinite(shift)) return nn_error(NN_ERR_ARG, "%s: shift must be finite, but got %g", fn, (double)shift);
    NN_TRY(fit_init_common(d, images, n, rank, shape, fn));
    d->images_u8 = images;
    d->scale = scale;
    d->shift = shift;
    return NN_OK;
}

nn_status nn_dataset_init_f32(nn_dataset *d, const float *images, int n, int rank, const int *shape)
{
    NN_TRY(fit_init_common(d, images, n, rank, shape, "nn_dataset_init_f32"));
    d->images_f32 = images;
    return NN_OK;
}

static nn_status fit_check_dataset(const nn_dataset *d, const char *fn, const char *what)
{
    if (!d) return nn_error(NN_ERR_ARG, "%s: %s is NULL", fn, what);
    if (d->n < 1 || (!d->images_u8 == !d->images_f32))
        return nn_error(NN_ERR_ARG, "%s: %s is not initialised (use nn_dataset_init_u8 or _f32)", fn,
                        what);
    return NN_OK;
}

static void fit_clear_targets(nn_dataset *d)
{
    d->labels_u8 = NULL;
    d->labels_int = NULL;
    d->targets = NULL;
    d->target_size = 0;
}

nn_status nn_dataset_set_labels_u8(nn_dataset *d, const uint8_t *labels)
{
    NN_TRY(fit_check_dataset(d, "nn_dataset_set_labels_u8", "d"));
    if (!labels) return nn_error(NN_ERR_ARG, "nn_dataset_set_labels_u8: labels is NULL");
    fit_clear_targets(d);
    d->labels_u8 = labels;
    return NN_OK;
}

nn_status nn_dataset_set_labels_int(nn_dataset *d, const int *labels)
{
    NN_TRY(fit_check_dataset(d, "nn_dataset_set_labels_int", "d"));
    if (!labels) return nn_error(NN_ERR_ARG, "nn_dataset_set_labels_int: labels is NULL");
    for (int i = 0; i < d->n; i++)
        if (labels[i] < 0)
            return nn_error(NN_ERR_ARG, "nn_dataset_set_labels_int: labels[%d] is %d; class "
                            "indices are >= 0", i, labels[i]);
    fit_clear_targets(d);
    d->labels_int = labels;
    return NN_OK;
}

nn_status nn_dataset_set_targets(nn_dataset *d, const float *targets, size_t target_size)
{
    NN_TRY(fit_check_dataset(d, "nn_dataset_set_targets", "d"));
    if (!targets) return nn_error(NN_ERR_ARG, "nn_dataset_set_targets: targets is NULL");
    if (target_size < 1 || target_size > ((size_t)1 << 40) / (size_t)d->n)
        return nn_error(NN_ERR_ARG, "nn_dataset_set_targets: target_size must be in [1, 2^40 / n], "
                        "but got %zu", target_size);
    fit_clear_targets(d);
    d->targets = targets;
    d->target_size = target_size;
    return NN_OK;
}

nn_status nn_dataset_subset(const nn_dataset *d, int start, int n, nn_dataset *out)
{
    NN_TRY(fit_check_dataset(d, "nn_dataset_subset", "d"));
    if (!out) return nn_error(NN_ERR_ARG, "nn_dataset_subset: out is NULL");
    if (start < 0 || start >= d->n)
        return nn_error(NN_ERR_ARG, "nn_dataset_subset: start must be in [0, %d), but got %d", d->n,
                        start);
    if (n < 1 || n > d->n - start)
        return nn_error(NN_ERR_ARG, "nn_dataset_subset: n must be in [1, %d] from start %d, but got "
                        "%d", d->n - start, start, n);
    nn_dataset s = *d;
    const size_t at = (size_t)start;
    s.n = n;
    if (s.images_u8) s.images_u8 += at * d->sample_size;
    if (s.images_f32) s.images_f32 += at * d->sample_size;
    if (s.labels_u8) s.labels_u8 += at;
    if (s.labels_int) s.labels_int += at;
    if (s.targets) s.targets += at * d->target_size;
    *out = s;
    return NN_OK;
}

/* ---- checks shared by fit, evaluate and predict ---- */

static const nn_layer *fit_output_layer(const nn_model *m) { return m->layers[m->n_layers - 1]; }

size_t nn_model_output_size(const nn_model *m)
{
    if (!m || !m->built || m->n_layers < 1) return 0;
    const nn_layer *l = fit_output_layer(m);
    size_t size = 1;
    for (int i = 0; i < l->out_rank; i++) size *= (size_t)l->out_shape[i];
    return size;
}

static nn_status fit_check_model(const nn_model *m, const char *fn)
{
    if (!m) return nn_error(NN_ERR_ARG, "%s: m (the model) is NULL", fn);
    if (!m->built) return nn_error(NN_ERR_STATE, "%s: build the model first", fn);
    if (nn_model_input_count(m) > 1)
        return nn_error(NN_ERR_STATE, "%s: the model has %d inputs; a data set feeds one, so "
                        "training and evaluation take a model with one input",
                        fn, nn_model_input_count(m));
    return NN_OK;
}

/* d's samples must have the model's per-sample input shape. */
static nn_status fit_check_shape(const nn_model *m, const nn_dataset *d, const char *fn,
                                 const char *what)
{
    NN_TRY(fit_check_dataset(d, fn, what));
    int same = d->rank == m->in_rank;
    for (int i = 0; same && i < d->rank; i++) same = d->shape[i] == m->in_shape[i];
    if (!same) {
        char a[64], b[64];
        return nn_error(NN_ERR_SHAPE, "%s: %s has samples of shape %s, the model takes %s", fn, what,
                        tensor_shape_str(d->rank, d->shape, a, sizeof a),
                        tensor_shape_str(m->in_rank, m->in_shape, b, sizeof b));
    }
    return NN_OK;
}

static nn_status fit_check_loss(const nn_loss *loss, const char *fn)
{
    if (loss->kind != NN_LOSS_SOFTMAX_CROSS_ENTROPY && loss->kind != NN_LOSS_BINARY_CROSS_ENTROPY &&
        loss->kind != NN_LOSS_MEAN_SQUARED_ERROR)
        return nn_error(NN_ERR_ARG, "%s: loss.kind %d is not an nn_loss_kind", fn, (int)loss->kind);
    char text[96];
    nn_status s = nn_loss_string(loss, text, sizeof text);
    if (s != NN_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        return nn_error(s, "%s: options.loss: %s", fn, msg);
    }
    return NN_OK;
}

/* d holds what the loss reads: labels within the model's classes, or
 * targets of the model's output size. */
static nn_status fit_check_labels(const nn_model *m, const nn_dataset *d, const nn_loss *loss,
                                  const char *fn, const char *what)
{
    const nn_layer *out = fit_output_layer(m);
    if (loss->kind != NN_LOSS_SOFTMAX_CROSS_ENTROPY) {
        const size_t size = nn_model_output_size(m);
        if (!d->targets)
            return nn_error(NN_ERR_ARG, "%s: %s has no targets, which loss %s needs "
                            "(nn_dataset_set_targets)", fn, what, nn_loss_name(loss->kind));
        if (d->target_size != size)
            return nn_error(NN_ERR_SHAPE, "%s: %s has %zu targets per sample, the model outputs %zu",
                            fn, what, d->target_size, size);
        return NN_OK;
    }
    if (!d->labels_u8 && !d->labels_int)
        return nn_error(NN_ERR_ARG, "%s: %s has no labels, which softmax cross-entropy needs "
                        "(nn_dataset_set_labels_u8 or _int)", fn, what);
    if (out->out_rank != 1) {
        char s[64];
        return nn_error(NN_ERR_SHAPE, "%s: softmax cross-entropy needs one axis of class scores per "
                        "sample, the model outputs %s", fn,
                        tensor_shape_str(out->out_rank, out->out_shape, s, sizeof s));
    }
    const int K = out->out_shape[0];
    for (int i = 0; i < d->n; i++) {
        const int y = d->labels_u8 ? d->labels_u8[i] : d->labels_int[i];
        if (y < 0 || y >= K)
            return nn_error(NN_ERR_ARG, "%s: %s label %d (sample %d) is outside [0, %d), the "
                            "model's classes", fn, what, y, i, K);
    }
    return NN_OK;
}

/* ---- batches ---- */

/* One batch's storage, for batch samples. */
typedef struct fit_buffers {
    float *x;       /* batch * sample_size */
    int *labels;    /* batch */
    float *targets; /* batch * target size, or NULL */
} fit_buffers;

static void fit_buffers_free(fit_buffers *b)
{
    tensor_aligned_free(b->x);
    free(b->labels);
    tensor_aligned_free(b->targets);
    memset(b, 0, sizeof *b);
}

static nn_status fit_buffers_alloc(fit_buffers *b, const nn_model *m, int batch, size_t sample_size,
                                   const char *fn)
{
    memset(b, 0, sizeof *b);
    const size_t out = nn_model_output_size(m);
    b->x = tensor_aligned_alloc((size_t)batch * sample_size * sizeof(float));
    b->labels = malloc((size_t)batch * sizeof *b->labels);
    b->targets = tensor_aligned_alloc((size_t)batch * out * sizeof(float));
    if (!b->x || !b->labels || !b->targets) {
        fit_buffers_free(b);
        return nn_error(NN_ERR_MEMORY, "%s: out of memory for a batch of %d", fn, batch);
    }
    return NN_OK;
}

/* Copies samples idx[0..b) of d (or start, start+1, ... when idx is NULL)
 * into the buffers, converting bytes to x * scale + shift. */
static void fit_fill(fit_buffers *buf, const nn_dataset *d, const int *idx, int start, int b)
{
    const size_t S = d->sample_size, T = d->target_size;
    for (int i = 0; i < b; i++) {
        const size_t k = (size_t)(idx ? idx[i] : start + i);
        float *dst = buf->x + (size_t)i * S;
        if (d->images_f32) {
            memcpy(dst, d->images_f32 + k * S, S * sizeof *dst);
        } else {
            const uint8_t *src = d->images_u8 + k * S;
            const float scale = d->scale, shift = d->shift;
            /* Without a shift, the product alone: nn_idx_to_float's bits. */
            if (shift == 0.0f)
                for (size_t j = 0; j < S; j++) dst[j] = (float)src[j] * scale;
            else
                for (size_t j = 0; j < S; j++) dst[j] = (float)src[j] * scale + shift;
        }
        if (d->labels_u8) buf->labels[i] = d->labels_u8[k];
        else if (d->labels_int) buf->labels[i] = d->labels_int[k];
        if (d->targets) memcpy(buf->targets + (size_t)i * T, d->targets + k * T, T * sizeof(float));
    }
}

/* The training batch: fit_fill, then o->transform on every sample. A
 * failing transform names the epoch and the sample. */
static nn_status fit_fill_train(fit_buffers *buf, const nn_dataset *d, const nn_fit_options *o,
                                const int *idx, int start, int b, int epoch)
{
    fit_fill(buf, d, idx, start, b);
    if (!o->transform) return NN_OK;
    for (int i = 0; i < b; i++) {
        const int k = idx ? idx[i] : start + i;
        const int r = o->transform(buf->x + (size_t)i * d->sample_size, d, k, epoch, o->user);
        if (r != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            return nn_error(NN_ERR_STATE, "nn_model_fit: the transform returned %d for sample %d "
                            "in epoch %d%s%s", r, k, epoch + 1, msg[0] ? ": " : "", msg);
        }
    }
    return NN_OK;
}

/* Tensors over the buffers for a batch of b: x (b, input shape) and, for
 * the losses with targets, t (b, output shape). */
static void fit_tensors(const nn_model *m, fit_buffers *buf, int b, tensor *x, tensor *t)
{
    int shape[TENSOR_MAX_RANK];
    shape[0] = b;
    memcpy(shape + 1, m->in_shape, (size_t)m->in_rank * sizeof *shape);
    memset(x, 0, sizeof *x);
    x->data = buf->x;
    NN_ASSERT(tensor_set_shape(x, m->in_rank + 1, shape) == NN_OK);
    const nn_layer *out = fit_output_layer(m);
    memcpy(shape + 1, out->out_shape, (size_t)out->out_rank * sizeof *shape);
    memset(t, 0, sizeof *t);
    t->data = buf->targets;
    NN_ASSERT(tensor_set_shape(t, out->out_rank + 1, shape) == NN_OK);
}

/* Denominator of accuracy for n samples: rows, elements, or 0 (none). */
static double fit_accuracy_count(const nn_model *m, const nn_loss *loss, int n)
{
    if (loss->kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY) return n;
    if (loss->kind == NN_LOSS_BINARY_CROSS_ENTROPY) return (double)n * (double)nn_model_output_size(m);
    return 0.0;
}

/* Loss sum and correct count of samples [start, start + b) of d in eval
 * mode, with the given buffers. */
static nn_status fit_evaluate_batch(nn_model *m, const nn_dataset *d, int start, int b,
                                    const nn_loss *loss, fit_buffers *buf, double *batch_sum,
                                    int *correct)
{
    fit_fill(buf, d, NULL, start, b);
    tensor x, t;
    fit_tensors(m, buf, b, &x, &t);
    const int sce = loss->kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY;
    return nn_model_evaluate_loss(m, &x, loss, sce ? buf->labels : NULL, sce ? NULL : &t, NULL,
                                  batch_sum, correct);
}

/* Loss and accuracy over d in eval mode with the given buffers. */
static nn_status fit_evaluate(nn_model *m, const nn_dataset *d, int batch, const nn_loss *loss,
                              fit_buffers *buf, double *loss_value, double *accuracy)
{
    double sum = 0.0;
    long long correct = 0;
    for (int start = 0; start < d->n; start += batch) {
        const int b = d->n - start < batch ? d->n - start : batch;
        double batch_sum = 0.0;
        int c = 0;
        NN_TRY(fit_evaluate_batch(m, d, start, b, loss, buf, &batch_sum, &c));
        sum += batch_sum;
        correct += c;
    }
    const double count = fit_accuracy_count(m, loss, d->n);
    if (loss_value) *loss_value = sum / d->n;
    if (accuracy) *accuracy = count > 0 ? (double)correct / count : NAN;
    return NN_OK;
}

/* fit_evaluate over ranks: each evaluates its share of the batches, the
 * per-batch sums are shared and added in batch order as fit_evaluate adds
 * them, so every rank gets one process's result. */
static nn_status fit_evaluate_ranks(nn_model *m, const nn_dataset *d, int batch,
                                    const nn_loss *loss, const nn_comm *comm, fit_buffers *buf,
                                    double *loss_value, double *accuracy)
{
    const int batches = (d->n + batch - 1) / batch;
    double *part = calloc((size_t)batches * 2, sizeof *part);
    if (!part) return nn_error(NN_ERR_MEMORY, "nn_model_fit: out of memory for %d batch sums", batches);
    int lo, hi;
    nn_shard_split(batches, comm->size, comm->rank, &lo, &hi);
    nn_status s = NN_OK;
    for (int k = lo; k < hi && s == NN_OK; k++) {
        const int start = k * batch, b = d->n - start < batch ? d->n - start : batch;
        int c = 0;
        s = fit_evaluate_batch(m, d, start, b, loss, buf, &part[2 * k], &c);
        part[2 * k + 1] = c;
    }
    if (s == NN_OK) s = nn_comm_share(comm, part, 2 * sizeof *part, batches);
    double sum = 0.0;
    long long correct = 0;
    for (int k = 0; k < batches; k++) {
        sum += part[2 * k];
        correct += (long long)part[2 * k + 1];
    }
    free(part);
    NN_TRY(s);
    const double count = fit_accuracy_count(m, loss, d->n);
    if (loss_value) *loss_value = sum / d->n;
    if (accuracy) *accuracy = count > 0 ? (double)correct / count : NAN;
    return NN_OK;
}

nn_status nn_model_evaluate(nn_model *m, const nn_dataset *d, int batch, const nn_loss *loss,
                            double *loss_value, double *accuracy)
{
    static const char fn[] = "nn_model_evaluate";
    const nn_loss plain = {NN_LOSS_SOFTMAX_CROSS_ENTROPY, 0.0f};
    if (!loss) loss = &plain;
    NN_TRY(fit_check_model(m, fn));
    NN_TRY(fit_check_shape(m, d, fn, "d"));
    if (batch < 1) return nn_error(NN_ERR_ARG, "%s: batch must be >= 1, but got %d", fn, batch);
    NN_TRY(fit_check_loss(loss, fn));
    NN_TRY(fit_check_labels(m, d, loss, fn, "d"));
    fit_buffers buf;
    NN_TRY(fit_buffers_alloc(&buf, m, batch, d->sample_size, fn));
    nn_status s = fit_evaluate(m, d, batch, loss, &buf, loss_value, accuracy);
    fit_buffers_free(&buf);
    return s;
}

/* ---- prediction ---- */

/* y = softmax(z) over rows of k, in place; exp of z - max, summed in double. */
static void fit_softmax_rows(float *z, size_t rows, size_t k)
{
    for (size_t r = 0; r < rows; r++) {
        float *v = z + r * k;
        float max = v[0];
        for (size_t j = 1; j < k; j++) max = v[j] > max ? v[j] : max;
        double sum = 0.0;
        for (size_t j = 0; j < k; j++) {
            v[j] = expf(v[j] - max);
            sum += v[j];
        }
        const float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < k; j++) v[j] *= inv;
    }
}

nn_status nn_model_predict_dataset(nn_model *m, const nn_dataset *d, int batch, nn_output kind,
                                   float *out, size_t out_count)
{
    static const char fn[] = "nn_model_predict_dataset";
    NN_TRY(fit_check_model(m, fn));
    NN_TRY(fit_check_shape(m, d, fn, "d"));
    if (batch < 1) return nn_error(NN_ERR_ARG, "%s: batch must be >= 1, but got %d", fn, batch);
    if (kind != NN_OUTPUT_RAW && kind != NN_OUTPUT_SOFTMAX && kind != NN_OUTPUT_SIGMOID)
        return nn_error(NN_ERR_ARG, "%s: kind must be NN_OUTPUT_RAW, _SOFTMAX or _SIGMOID (0, 1, 2), "
                        "but got %d", fn, (int)kind);
    if (!out) return nn_error(NN_ERR_ARG, "%s: out is NULL", fn);
    const size_t size = nn_model_output_size(m);
    if (out_count != (size_t)d->n * size)
        return nn_error(NN_ERR_ARG, "%s: out_count must be %d samples x %zu outputs = %zu, but got "
                        "%zu", fn, d->n, size, (size_t)d->n * size, out_count);
    const nn_layer *ol = fit_output_layer(m);
    const size_t k = (size_t)ol->out_shape[ol->out_rank - 1];
    nn_dataset plain = *d; /* the labels are not read */
    fit_clear_targets(&plain);
    fit_buffers buf;
    NN_TRY(fit_buffers_alloc(&buf, m, batch, d->sample_size, fn));
    nn_status s = NN_OK;
    for (int start = 0; start < d->n && s == NN_OK; start += batch) {
        const int b = d->n - start < batch ? d->n - start : batch;
        fit_fill(&buf, &plain, NULL, start, b);
        tensor x, t, *y;
        fit_tensors(m, &buf, b, &x, &t);
        s = nn_model_evaluate_loss(m, &x, NULL, NULL, NULL, &y, NULL, NULL);
        if (s != NN_OK) break;
        float *dst = out + (size_t)start * size;
        const size_t count = (size_t)b * size;
        memcpy(dst, y->data, count * sizeof *dst);
        if (kind == NN_OUTPUT_SOFTMAX) fit_softmax_rows(dst, count / k, k);
        if (kind == NN_OUTPUT_SIGMOID)
            for (size_t j = 0; j < count; j++) dst[j] = 1.0f / (1.0f + expf(-dst[j]));
    }
    fit_buffers_free(&buf);
    return s;
}

/* ---- training ---- */

nn_fit_options nn_fit_defaults(void)
{
    nn_fit_options o;
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = 32;
    o.shuffle = 1;
    o.lr_decay = 1.0f;
    return o;
}

void nn_history_free(nn_history *h)
{
    if (!h) return;
    free(h->lr);
    free(h->train_loss);
    free(h->train_accuracy);
    free(h->val_loss);
    free(h->val_accuracy);
    memset(h, 0, sizeof *h);
}

/* The next epoch's order from the running stream r: Fisher-Yates over the
 * identity, as examples/mnist.c draws it. */
static void fit_shuffle(tensor_rng *r, int *order, int n)
{
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        const int j = (int)tensor_rng_below(r, (uint32_t)i + 1);
        const int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* *r = the order stream of seed after `epochs` epochs' permutations (of n,
 * drawn into order). */
static void fit_order_stream(tensor_rng *r, uint64_t seed, int epochs, int *order, int n)
{
    tensor_rng_seed(r, tensor_hash3(seed, FIT_ORDER_STREAM, 0));
    for (int e = 0; e < epochs; e++) fit_shuffle(r, order, n);
}

nn_status nn_fit_order(uint64_t seed, int epoch, int n, int *order)
{
    if (!order) return nn_error(NN_ERR_ARG, "nn_fit_order: order is NULL");
    if (n < 1) return nn_error(NN_ERR_ARG, "nn_fit_order: n must be >= 1, but got %d", n);
    if (epoch < 0) return nn_error(NN_ERR_ARG, "nn_fit_order: epoch must be >= 0, but got %d", epoch);
    tensor_rng r;
    fit_order_stream(&r, seed, epoch + 1, order, n);
    return NN_OK;
}

/* StepLR: base * decay^floor(epoch / step), in double as examples/mnist.c. */
static float fit_schedule_lr(float base, float decay, int step, int epoch)
{
    const int k = step ? epoch / step : 0;
    return (float)((double)base * pow((double)decay, (double)k));
}

static nn_status fit_check_options(const nn_fit_options *o, const char *fn)
{
    if (o->epochs < 1) return nn_error(NN_ERR_ARG, "%s: options.epochs must be >= 1, but got %d", fn, o->epochs);
    if (o->batch < 1) return nn_error(NN_ERR_ARG, "%s: options.batch must be >= 1, but got %d", fn, o->batch);
    if (o->shuffle != 0 && o->shuffle != 1)
        return nn_error(NN_ERR_ARG, "%s: options.shuffle must be 0 or 1, but got %d", fn, o->shuffle);
    if (!(isfinite(o->lr) && o->lr >= 0.0f))
        return nn_error(NN_ERR_ARG, "%s: options.lr must be a finite number > 0, or 0 for the "
                        "optimizer's rate, but got %g", fn, (double)o->lr);
    if (!(isfinite(o->lr_decay) && o->lr_decay > 0.0f))
        return nn_error(NN_ERR_ARG, "%s: options.lr_decay must be a finite number > 0, but got %g",
                        fn, (double)o->lr_decay);
    if (o->lr_step < 0)
        return nn_error(NN_ERR_ARG, "%s: options.lr_step must be >= 0 (0: a constant rate), but got "
                        "%d", fn, o->lr_step);
    if (o->comm && o->shard_mode != NN_SHARD_EXACT && o->shard_mode != NN_SHARD_FAST)
        return nn_error(NN_ERR_ARG, "%s: options.shard_mode must be NN_SHARD_EXACT or "
                        "NN_SHARD_FAST, but got %d", fn, (int)o->shard_mode);
    if (o->shard < 0)
        return nn_error(NN_ERR_ARG, "%s: options.shard must be >= 1, or 0 for %d, but got %d", fn,
                        NN_SHARD_DEFAULT, o->shard);
    if (o->initial_epoch < 0 || o->initial_epoch >= o->epochs)
        return nn_error(NN_ERR_ARG, "%s: options.initial_epoch must be in [0, options.epochs = %d), "
                        "but got %d", fn, o->epochs, o->initial_epoch);
    return fit_check_loss(&o->loss, fn);
}

static double fit_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static nn_status fit_history_alloc(nn_history *h, int epochs, int initial_epoch)
{
    memset(h, 0, sizeof *h);
    const size_t n = (size_t)epochs;
    h->lr = malloc(n * sizeof *h->lr);
    h->train_loss = malloc(n * sizeof(double));
    h->train_accuracy = malloc(n * sizeof(double));
    h->val_loss = malloc(n * sizeof(double));
    h->val_accuracy = malloc(n * sizeof(double));
    if (!h->lr || !h->train_loss || !h->train_accuracy || !h->val_loss || !h->val_accuracy) {
        nn_history_free(h);
        return nn_error(NN_ERR_MEMORY, "nn_model_fit: out of memory for a history of %d epochs", epochs);
    }
    h->initial_epoch = initial_epoch;
    return NN_OK;
}

/* Runs the callback; a value other than continue or stop becomes an error
 * that keeps the callback's own last message. */
static nn_status fit_callback(const nn_fit_options *o, nn_fit_epoch *ev, int *stop)
{
    *stop = 0;
    if (!o->on_epoch) return NN_OK;
    const int r = o->on_epoch(ev, o->user);
    if (r == NN_FIT_STOP) *stop = 1;
    else if (r != NN_FIT_CONTINUE) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", nn_last_error());
        return nn_error(NN_ERR_STATE, "nn_model_fit: the epoch callback returned %d %s epoch %d%s%s",
                        r, ev->end ? "after" : "before", ev->epoch + 1, msg[0] ? ": " : "", msg);
    }
    return NN_OK;
}

/* One epoch over train in the given order (NULL: data set order); *loss_mean
 * and *accuracy as the history records them. */
static nn_status fit_epoch(nn_model *m, optim *opt, const nn_dataset *train, const nn_fit_options *o,
                           fit_buffers *buf, nn_shard_trainer *ranks, const int *order, int epoch,
                           double *loss_mean, double *accuracy)
{
    const int n = train->n, B = o->batch, batches = (n + B - 1) / B;
    const int sce = o->loss.kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY;
    double sum = 0.0;
    long long correct = 0;
    for (int k = 0; k < batches; k++) {
        const int start = k * B, b = n - start < B ? n - start : B;
        float loss = 0.0f;
        int c = 0;
        nn_status s;
        if (ranks) {
            /* This rank's rows only, in place in the batch's buffers. */
            int first, count;
            nn_shard_rows(ranks, b, &first, &count);
            const size_t S = train->sample_size, T = nn_model_output_size(m);
            fit_buffers part = {buf->x + (size_t)first * S, buf->labels + first,
                                buf->targets + (size_t)first * T};
            if (count > 0)
                NN_TRY(fit_fill_train(&part, train, o, order ? order + start + first : NULL,
                                      start + first, count, epoch));
            tensor x, t;
            fit_tensors(m, buf, b, &x, &t);
            long long right = 0;
            s = nn_shard_step(ranks, opt, &x, &o->loss, sce ? buf->labels : NULL, sce ? NULL : &t,
                              &loss, &right);
            c = (int)right;
        } else {
            NN_TRY(fit_fill_train(buf, train, o, order ? order + start : NULL, start, b, epoch));
            tensor x, t;
            fit_tensors(m, buf, b, &x, &t);
            s = nn_model_train_step_loss(m, opt, &x, &o->loss, sce ? buf->labels : NULL,
                                         sce ? NULL : &t, &loss, &c);
        }
        if (s == NN_OK && !isfinite(loss)) {
            s = NN_ERR_NUMERIC;
            nn_error(s, "%g", (double)loss);
        }
        if (s != NN_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", nn_last_error());
            if (s == NN_ERR_NUMERIC)
                return nn_error(s, "nn_model_fit: epoch %d, batch %d of %d: the loss is not finite "
                                "(%s); stopped", epoch + 1, k + 1, batches, msg);
            return nn_error(s, "nn_model_fit: epoch %d, batch %d of %d: %s", epoch + 1, k + 1,
                            batches, msg);
        }
        sum += (double)loss * b;
        correct += c;
        if (o->on_batch) {
            const int seen = start + b;
            const double count = fit_accuracy_count(m, &o->loss, seen);
            const nn_fit_batch ev = {epoch, k, batches, b, seen, loss, c, sum / seen,
                                     count > 0 ? (double)correct / count : NAN};
            const int r = o->on_batch(&ev, o->user);
            if (r != NN_FIT_CONTINUE) {
                char msg[300];
                snprintf(msg, sizeof msg, "%s", nn_last_error());
                return nn_error(NN_ERR_STATE, "nn_model_fit: the batch callback returned %d after "
                                "epoch %d, batch %d of %d%s%s", r, epoch + 1, k + 1, batches,
                                msg[0] ? ": " : "", msg);
            }
        }
    }
    const double count = fit_accuracy_count(m, &o->loss, n);
    *loss_mean = sum / n;
    *accuracy = count > 0 ? (double)correct / count : NAN;
    return NN_OK;
}

nn_status nn_model_fit(nn_model *m, optim *opt, const nn_dataset *train,
                       const nn_fit_options *options, nn_history *history)
{
    static const char fn[] = "nn_model_fit";
    if (history) memset(history, 0, sizeof *history);
    const nn_fit_options defaults = nn_fit_defaults();
    const nn_fit_options *o = options ? options : &defaults;
    NN_TRY(fit_check_model(m, fn));
    if (!opt) return nn_error(NN_ERR_ARG, "%s: opt (the optimizer) is NULL", fn);
    NN_TRY(fit_check_options(o, fn));
    NN_TRY(fit_check_shape(m, train, fn, "train"));
    NN_TRY(fit_check_labels(m, train, &o->loss, fn, "train"));
    if (o->validation) {
        NN_TRY(fit_check_shape(m, o->validation, fn, "options.validation"));
        NN_TRY(fit_check_labels(m, o->validation, &o->loss, fn, "options.validation"));
    }
    const float base = o->lr > 0.0f ? o->lr : optim_get_lr(opt);
    /* The rate changes only every lr_step epochs: look at those. */
    for (int e = o->initial_epoch; e < o->epochs;
         e = o->lr_step ? (e / o->lr_step + 1) * o->lr_step : o->epochs)
        if (!(fit_schedule_lr(base, o->lr_decay, o->lr_step, e) >= FLT_MIN))
            return nn_error(NN_ERR_ARG, "%s: the learning rate %g with options.lr_decay %g every "
                            "options.lr_step %d epochs falls below FLT_MIN at epoch %d of %d", fn,
                            (double)base, (double)o->lr_decay, o->lr_step, e + 1, o->epochs);

    nn_history local, *h = history ? history : &local;
    NN_TRY(fit_history_alloc(h, o->epochs - o->initial_epoch, o->initial_epoch));
    fit_buffers buf;
    nn_status s = fit_buffers_alloc(&buf, m, o->batch, train->sample_size, fn);
    nn_shard_trainer *ranks = NULL;
    if (s == NN_OK && o->comm) {
        ranks = nn_shard_trainer_create(m, o->comm, o->shard_mode,
                                        o->shard ? o->shard : NN_SHARD_DEFAULT, o->batch);
        if (!ranks) s = NN_ERR_ARG;
    }
    int *order = NULL;
    if (s == NN_OK && o->shuffle) {
        order = malloc((size_t)train->n * sizeof *order);
        if (!order) s = nn_error(NN_ERR_MEMORY, "%s: out of memory for the order of %d samples", fn, train->n);
    }
    tensor_rng rng = {{0}};
    if (o->order_state) rng = *o->order_state;
    else if (s == NN_OK) fit_order_stream(&rng, o->shuffle_seed, order ? o->initial_epoch : 0, order,
                                          train->n);
    for (int e = o->initial_epoch; s == NN_OK && e < o->epochs; e++) {
        nn_fit_epoch ev = {e, 0, fit_schedule_lr(base, o->lr_decay, o->lr_step, e), h, m, opt, rng};
        int stop;
        s = fit_callback(o, &ev, &stop);
        if (s != NN_OK || stop) break;
        if (!(isfinite(ev.lr) && ev.lr > 0.0f)) {
            s = nn_error(NN_ERR_ARG, "%s: the epoch callback set lr to %g before epoch %d; it must be "
                         "a finite number > 0", fn, (double)ev.lr, e + 1);
            break;
        }
        s = optim_set_lr(opt, ev.lr);
        if (s != NN_OK) break;
        if (order) fit_shuffle(&rng, order, train->n);
        ev.order_state = rng;
        const double t0 = fit_now();
        double loss = 0.0, acc = 0.0, val_loss = NAN, val_acc = NAN;
        s = fit_epoch(m, opt, train, o, &buf, ranks, order, e, &loss, &acc);
        if (s == NN_OK && o->validation)
            s = o->comm ? fit_evaluate_ranks(m, o->validation, o->batch, &o->loss, o->comm, &buf,
                                             &val_loss, &val_acc)
                        : fit_evaluate(m, o->validation, o->batch, &o->loss, &buf, &val_loss,
                                       &val_acc);
        if (s != NN_OK) break;
        const int i = e - o->initial_epoch;
        h->lr[i] = ev.lr;
        h->train_loss[i] = loss;
        h->train_accuracy[i] = acc;
        h->val_loss[i] = val_loss;
        h->val_accuracy[i] = val_acc;
        h->epochs = i + 1;
        if (o->progress) {
            fprintf(o->progress, "epoch %d/%d  lr %.3g  loss %.4f  acc %.4f", e + 1, o->epochs,
                    (double)ev.lr, loss, acc);
            if (o->validation) fprintf(o->progress, "  val_loss %.4f  val_acc %.4f", val_loss, val_acc);
            fprintf(o->progress, "  %.1f s\n", fit_now() - t0);
            fflush(o->progress);
        }
        ev.end = 1;
        s = fit_callback(o, &ev, &stop);
        if (stop) break;
    }
    free(order);
    nn_shard_trainer_free(ranks);
    fit_buffers_free(&buf);
    if (!history) nn_history_free(&local);
    return s;
}
