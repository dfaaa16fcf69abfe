/* Training loop, evaluation and prediction over a data set in memory: what
 * Keras's model.fit, model.evaluate and model.predict do, on top of
 * nn_model_train_step_loss and nn_model_evaluate_loss (nn/model.h).
 *
 *   nn_dataset train;
 *   nn_dataset_init_u8(&train, images, n, 3, (int[]){28, 28, 1}, 1.0f / 255, 0.0f);
 *   nn_dataset_set_labels_u8(&train, labels);
 *   nn_fit_options o = nn_fit_defaults();      epochs 1, batch 32, shuffled
 *   nn_history h;
 *   nn_model_fit(m, opt, &train, &o, &h);
 *   nn_history_free(&h);
 *
 * A data set feeds one input, so these calls take a model with one input
 * (a model with several is refused with a message).
 *
 * A data set describes caller-owned arrays: images as bytes (converted to
 * x * scale + shift as they are copied into a batch) or floats, one
 * per-sample shape, labels as bytes or ints (softmax cross-entropy) or float
 * targets (binary cross-entropy, mean squared error). Nothing is copied up
 * front: each batch is converted into one batch-sized buffer, so memory does
 * not grow with the number of samples (besides one int per sample for the
 * shuffled order).
 *
 * Order: with shuffling on, epoch e trains on a permutation drawn by
 * Fisher-Yates from a xoshiro stream seeded with shuffle_seed, the e-th
 * permutation of that stream (nn_fit_order computes it). It depends only on
 * the seed, the epoch and the sample count, never on the thread count, so
 * the same seeds give bit-identical histories and weights with any number
 * of threads. (The stream and its use are those of examples/mnist.c.)
 *
 * Learning rate: epoch e (0-based) uses lr_e = lr * lr_decay^floor(e /
 * lr_step) (lr_step 0: a constant lr), PyTorch's StepLR, set on the
 * optimizer before the epoch; the callback may replace it. The optimizer
 * keeps the last epoch's rate afterwards.
 *
 * Ownership: an nn_dataset borrows its arrays; they must stay valid and
 * unchanged while a call that reads the data set runs, and the data set
 * needs no freeing. An nn_history's arrays are allocated by nn_model_fit and
 * released by nn_history_free.
 * Hooks, all optional, all given options.user: on_epoch before and after
 * every epoch (Keras's on_epoch_begin/end: stop, change the rate, save a
 * checkpoint), on_batch after every training batch (Keras's
 * on_train_batch_end: a progress bar, timings), transform on every training
 * sample as its batch is filled (a PyTorch transform: augmentation drawn
 * from the epoch and the sample index, so it does not depend on the batch
 * or the thread count).
 *
 * Resuming: initial_epoch (Keras's fit(initial_epoch=)) starts at that
 * epoch of the same schedule, so training 2 epochs, saving, and fitting
 * again with initial_epoch 2 and epochs 4 gives the 4 epochs of one run,
 * given the model and optimizer state of the checkpoint (nn/io/checkpoint.h)
 * and the data-order stream: either replayed from shuffle_seed, or the
 * state the epoch callback saw (nn_fit_epoch.order_state) passed back as
 * options.order_state.
 *
 * The library never prints: progress goes to options.progress when it is
 * not NULL.
 * Deliberately omitted: stopping mid-epoch, sample weights, metrics other
 * than accuracy.
 * Thread-safety: as the model's (one thread at a time per model).
 */
#ifndef NN_NN_FIT_H
#define NN_NN_FIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nn/model.h"
#include "nn/shard.h"
#include "optim/optim.h"
#include "tensor/loss.h"
#include "tensor/random.h"

/* Caller-owned samples. Fill it with an init function, never by hand; the
 * fields may be read. */
typedef struct nn_dataset {
    int n;                              /* samples */
    int rank, shape[TENSOR_MAX_RANK];   /* per-sample shape (no batch axis) */
    size_t sample_size;                 /* values per sample: product of shape */
    const uint8_t *images_u8;           /* n * sample_size bytes, or NULL */
    const float *images_f32;            /* n * sample_size floats, or NULL */
    float scale, shift;                 /* bytes become x * scale + shift */
    const uint8_t *labels_u8;           /* n labels, at most one of the three */
    const int *labels_int;
    const float *targets;               /* n * target_size floats */
    size_t target_size;
} nn_dataset;

/* *d = n byte images of the per-sample shape shape[0..rank) (rank 1 to
 * TENSOR_MAX_RANK - 1), read as images[i * sample_size + j] * scale + shift
 * (scale 1/255, shift 0 maps pixels to [0, 1] as nn_idx_to_float does), with
 * no labels. Errors name the argument: d or images NULL, n < 1, a rank or
 * extent out of range, scale or shift not finite. *d is untouched on error. */
nn_status nn_dataset_init_u8(nn_dataset *d, const uint8_t *images, int n, int rank,
                             const int *shape, float scale, float shift);
/* As nn_dataset_init_u8 for float images, used as they are. */
nn_status nn_dataset_init_f32(nn_dataset *d, const float *images, int n, int rank,
                              const int *shape);
/* Sets labels[0..n) (class indices), replacing any labels or targets. The
 * int form checks that none is negative (the upper bound is the model's
 * output count, checked when a model reads them). Errors: d not initialised,
 * labels NULL, a negative label (its index and value). */
nn_status nn_dataset_set_labels_u8(nn_dataset *d, const uint8_t *labels);
nn_status nn_dataset_set_labels_int(nn_dataset *d, const int *labels);
/* Sets float targets, target_size per sample (the model's output size), for
 * binary cross-entropy and mean squared error; replaces any labels. */
nn_status nn_dataset_set_targets(nn_dataset *d, const float *targets, size_t target_size);
/* *out = samples [start, start + n) of d, sharing its arrays (a validation
 * split, or the first n samples). Errors: a range outside [0, d->n). */
nn_status nn_dataset_subset(const nn_dataset *d, int start, int n, nn_dataset *out);

/* What the epoch callback sees, before and after every epoch. */
typedef struct nn_fit_epoch {
    int epoch;            /* 0-based */
    int end;              /* 0: before the epoch; 1: after it */
    float lr;             /* before: the schedule's rate, which the callback
                           * may change (finite, > 0); after: the rate used */
    const struct nn_history *history; /* epochs done so far (this one too, after) */
    nn_model *model;
    optim *optim;
    tensor_rng order_state; /* the data-order stream that draws the next
                             * epoch's order: before, this epoch's; after,
                             * the following one's (save it to resume) */
} nn_fit_epoch;

/* Called with ev->end = 0 before each epoch and 1 after it. Returns
 * NN_FIT_CONTINUE, NN_FIT_STOP (before: the epoch does not run; after: no
 * further epoch runs; nn_model_fit returns NN_OK either way), or any other
 * value to fail nn_model_fit with NN_ERR_STATE (e.g. a checkpoint save that
 * failed; the message keeps the callback's last error). */
typedef int (*nn_fit_callback)(nn_fit_epoch *ev, void *user);
#define NN_FIT_CONTINUE 0
#define NN_FIT_STOP 1

/* What the batch callback sees after every training batch. */
typedef struct nn_fit_batch {
    int epoch;        /* 0-based */
    int batch;        /* 0-based, of batches in this epoch */
    int batches;
    int size;         /* samples in this batch */
    int seen;         /* samples of this epoch so far, this batch's included */
    float loss;       /* this batch's mean loss */
    int correct;      /* counted correct in this batch (see nn_history) */
    double loss_mean; /* mean loss per sample over the epoch so far */
    double accuracy;  /* accuracy over the epoch so far (NaN: mean squared error) */
} nn_fit_batch;

/* Returns NN_FIT_CONTINUE, or any other value to fail nn_model_fit with
 * NN_ERR_STATE (the message keeps the callback's last error); the epoch is
 * then not recorded. */
typedef int (*nn_fit_batch_callback)(const nn_fit_batch *ev, void *user);

/* Called for every training sample as its batch is filled (never for
 * validation, evaluation or prediction): x holds sample `index` of d (the
 * training set), d->sample_size floats already converted; the transform
 * changes it in place (it may also rebuild it from d's own arrays). epoch
 * is 0-based. Returns 0, or nonzero to fail nn_model_fit with NN_ERR_STATE. */
typedef int (*nn_fit_transform)(float *x, const nn_dataset *d, int index, int epoch, void *user);

typedef struct nn_fit_options {
    int epochs;                   /* >= 1 */
    int batch;                    /* >= 1; the last batch of an epoch may be smaller */
    int shuffle;                  /* 0: data set order; 1: a permutation per epoch */
    uint64_t shuffle_seed;
    const nn_dataset *validation; /* evaluated after every epoch in batches of
                                   * `batch`, or NULL */
    float lr;                     /* base rate; 0: the optimizer's current rate
                                   * (with initial_epoch > 0 and a decay, give
                                   * it: the optimizer holds a decayed rate) */
    float lr_decay;               /* step decay factor, finite, > 0 */
    int lr_step;                  /* decay every lr_step epochs; 0: constant rate */
    nn_fit_callback on_epoch;     /* or NULL */
    void *user;                   /* passed to on_epoch, on_batch and transform */
    FILE *progress;               /* one line per epoch, or NULL: silent */
    nn_loss loss;                 /* zeroed: softmax cross-entropy */
    int initial_epoch;            /* first epoch to run, in [0, epochs) */
    const tensor_rng *order_state; /* the data-order stream at initial_epoch,
                                   * as nn_fit_epoch.order_state held it after
                                   * the epoch before; NULL: replayed from
                                   * shuffle_seed */
    nn_fit_batch_callback on_batch; /* or NULL */
    nn_fit_transform transform;   /* or NULL: samples as they are */
    /* Data-parallel training (nn/shard.h): every rank calls nn_model_fit
     * with the same model, data and options and its own comm; each fills
     * and trains on its part of every batch, and evaluates its part of the
     * validation batches (per-batch sums shared, added in batch order, so
     * validation results are those of one process). Callbacks run on every
     * rank with the same values. NULL: one process, the plain steps. */
    const nn_comm *comm;
    nn_shard_mode shard_mode;     /* with comm: NN_SHARD_EXACT (default) or _FAST */
    int shard;                    /* exact mode's micro-shard size; 0: NN_SHARD_DEFAULT */
} nn_fit_options;

/* epochs 1, batch 32, shuffle on with seed 0, no validation, the
 * optimizer's rate, constant (lr_decay 1, lr_step 0), no callback, silent,
 * softmax cross-entropy, from epoch 0, no transform. */
nn_fit_options nn_fit_defaults(void);

/* Per-epoch results, epochs entries each. Losses are means per sample (the
 * batch means weighted by batch size, summed in order in double); accuracy
 * is the fraction nn_op_loss counts correct (rows for softmax cross-entropy,
 * output elements for binary cross-entropy) and NaN for mean squared error.
 * val_loss and val_accuracy are NaN without a validation set. */
typedef struct nn_history {
    int epochs;           /* epochs completed (entries) */
    int initial_epoch;    /* the epoch of entry 0: options.initial_epoch */
    float *lr;
    double *train_loss, *train_accuracy;
    double *val_loss, *val_accuracy;
} nn_history;

/* Frees the arrays and zeroes *h (not h itself); NULL is a no-op. */
void nn_history_free(nn_history *h);

/* Trains m (built) with opt on train for options->epochs epochs (see the
 * top of this file); options NULL means nn_fit_defaults(). history may be
 * NULL; otherwise it is overwritten (free an earlier one first) and holds
 * the completed epochs even when an error stops the run (then free it too):
 * epochs initial_epoch .. epochs - 1, entry 0 the first.
 * Errors name the argument: NULL model, optimizer or data, an options field
 * out of range, a data set whose per-sample shape is not the model's input
 * shape, labels outside the model's classes, a missing label or target kind
 * for the loss, a learning rate that decays below FLT_MIN in the epochs to
 * run; a non-finite loss stops with NN_ERR_NUMERIC naming the epoch and
 * batch ("the loss is not finite"). */
nn_status nn_model_fit(nn_model *m, optim *opt, const nn_dataset *train,
                       const nn_fit_options *options, nn_history *history);

/* Mean loss per sample and accuracy of m on d in eval mode, in batches of
 * `batch`; loss NULL means softmax cross-entropy. Either output may be NULL.
 * Errors as nn_model_fit's for the model, data and batch. */
nn_status nn_model_evaluate(nn_model *m, const nn_dataset *d, int batch, const nn_loss *loss,
                            double *loss_value, double *accuracy);

typedef enum nn_output {
    NN_OUTPUT_RAW = 0,     /* the network's output (logits) */
    NN_OUTPUT_SOFTMAX = 1, /* softmax over the last axis: probabilities */
    NN_OUTPUT_SIGMOID = 2  /* sigmoid of every element */
} nn_output;

/* Values per sample that m produces (the product of its output shape); 0
 * for NULL or a model not built. */
size_t nn_model_output_size(const nn_model *m);
/* Eval-mode outputs for every sample of d (labels, if any, are not read),
 * in batches of `batch`: out[i * nn_model_output_size(m) + j] for sample i.
 * out_count must be d->n * nn_model_output_size(m). (nn_model_predict runs
 * one batch tensor and leaves its logits in the arena.) */
nn_status nn_model_predict_dataset(nn_model *m, const nn_dataset *d, int batch, nn_output kind,
                                   float *out, size_t out_count);

/* order[0..n) = the sample order of epoch `epoch` for a shuffle seed, as
 * nn_model_fit uses it with shuffling on (it replays epochs 0..epoch of the
 * stream). Errors: order NULL, n < 1, epoch < 0. */
nn_status nn_fit_order(uint64_t seed, int epoch, int n, int *order);

#endif
