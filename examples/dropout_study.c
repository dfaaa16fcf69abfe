/* dropout_study: why spatial dropout exists, measured on MNIST.
 *
 * The same small CNN
 *     conv2d 16 3x3 relu -> [A] -> conv2d 32 3x3 relu -> [B] -> maxpool 2
 *     -> flatten -> dense 64 relu -> dense 10
 * is trained with no dropout, element-wise dropout or spatial dropout at
 * place A ("after conv2d_1") or B ("after conv2d_2"), at the same rate, on
 * random training subsets small enough to overfit, and evaluated in eval
 * mode on the full 10,000-image test set. Every variant runs with the same
 * seeds, and a seed fixes the subset, the data order and the initial
 * weights for all variants (the program checks that the initial parameter
 * blocks are bit-identical), so variants are compared seed by seed.
 *
 * Besides accuracy and the train-test gap it measures the premise behind
 * spatial dropout -- that neighbouring activations of a convolution are
 * strongly correlated, so dropping single pixels removes little -- as the
 * Pearson correlation of horizontally adjacent activations per conv layer
 * on the test set, and how much each kind of dropout perturbs the weight
 * gradients at initialisation (same weights, same batch, many masks).
 *
 * Output (in --out, default build/study): results.jsonl (one object per
 * run), curves.dat (+ curves_titles.txt) for examples/plot_study.gp, and
 * maps.png (feature maps of one test digit with both masks applied). A
 * summary table and a plain reading of the numbers go to stdout.
 *
 * Deliberately omitted: data augmentation, learning-rate schedules, early
 * stopping, other architectures; the study is about one question.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nn/nn.h"

#include "dropout_study_maps.h"
#include "dropout_study_png.h"
#include "dropout_study_stats.h"
#include "dropout_study_util.h"

enum { V_NONE, V_ELEMENT, V_SPATIAL, N_VARIANTS };
static const char *const variant_name[N_VARIANTS] = {"none", "elementwise", "spatial"};
static const char *const placement_name[3] = {"none", "conv2d_1", "conv2d_2"};

#define IMG 28
#define PIXELS (IMG * IMG)
#define N_CORR 3   /* input, conv2d_1, conv2d_2 */
#define N_GROUPS 4 /* weighted layers: conv2d_1, conv2d_2, dense_1, dense_2 */
static const char *const corr_name[N_CORR] = {"input", "conv2d_1", "conv2d_2"};
static const char *const group_name[N_GROUPS] = {"conv2d_1", "conv2d_2", "dense_1", "dense_2"};

/* Tags that give each random stream of a seed its own key. */
#define TAG_ORDER 0x6f72646572ull    /* "order" */
#define TAG_MODEL 0x6d6f64656cull    /* "model" */
#define TAG_MAPS 0x6d617073ull       /* "maps" */

/* maps.png shows both masks at 0.5, where each drops half of what it can. */
#define MAPS_RATE 0.5f

typedef struct study_cfg {
    const char *data_dir, *out_dir;
    int quick;
    int seeds;
    int epochs_small, epochs_large; /* for subsets of <= 1000 images / larger ones */
    int batch;
    float lr;
    float rate;         /* the rate of the placement and subset-size comparisons */
    int curve_test;     /* test images evaluated after each epoch (final: all) */
    int curve_train;    /* at most this many subset images evaluated after each epoch */
    int grad_draws;     /* masks drawn for the gradient-perturbation measure */
    int grad_batch;
    int threads;
} study_cfg;

/* One cell of the grid: a subset size and a network. */
typedef struct study_setting {
    int n_train;
    int variant;
    int placement; /* 0 with V_NONE */
    float rate;    /* 0 with V_NONE */
} study_setting;

typedef struct study_run {
    study_setting st;
    uint64_t seed;
    int epochs;
    double train_loss, train_acc, test_loss, test_acc;
    double *curve; /* 4 x epochs: train loss, test loss, train acc, test acc */
    double corr[N_CORR];
    double grad_noise[2][N_GROUPS]; /* at initialisation, after training */
    int has_grad_noise;
    double seconds, train_seconds, eval_seconds;
} study_run;

typedef struct study_data {
    nn_mnist m;
    float *test; /* (n_test, 28, 28, 1) */
    int *test_labels;
} study_data;

/* Images to feed: pixels of a set, in the order idx (or 0..n-1). */
typedef struct study_set {
    const uint8_t *pixels, *labels;
    const int *idx;
    const float *fpixels; /* already converted, or NULL */
    const int *flabels;
    int n;
} study_set;

/* ------------------------------------------------------------------ model */

static nn_status study_spec(char *buf, size_t n, const study_setting *st)
{
    char drop[128] = "";
    if (st->variant == V_ELEMENT)
        snprintf(drop, sizeof drop, "dropout rate=%g\n", (double)st->rate);
    else if (st->variant == V_SPATIAL)
        snprintf(drop, sizeof drop, "spatial_dropout2d rate=%g data_format=channels_last\n",
                 (double)st->rate);
    int k = snprintf(buf, n,
                     "conv2d filters=16 kernel_size=3 activation=relu data_format=channels_last\n"
                     "%s"
                     "conv2d filters=32 kernel_size=3 activation=relu data_format=channels_last\n"
                     "%s"
                     "maxpool2d pool_size=2 data_format=channels_last\n"
                     "flatten\n"
                     "dense units=64 activation=relu\n"
                     "dense units=10\n",
                     st->placement == 1 ? drop : "", st->placement == 2 ? drop : "");
    if (k < 0 || (size_t)k >= n) return nn_error(NN_ERR_ARG, "study_spec: buffer too small");
    return NN_OK;
}

static nn_status study_model(nn_model **out, const study_setting *st, uint64_t model_seed)
{
    char spec[1024];
    NN_TRY(study_spec(spec, sizeof spec, st));
    nn_model *m = nn_model_create(model_seed);
    if (!m) return NN_ERR_MEMORY;
    const int shape[3] = {IMG, IMG, 1};
    nn_status s = nn_model_add_spec(m, spec);
    if (s == NN_OK) s = nn_model_build(m, 3, shape);
    if (s != NN_OK) {
        nn_model_free(m);
        return s;
    }
    *out = m;
    return NN_OK;
}

/* ------------------------------------------------------------------- data */

static void study_batch(const study_set *set, const int *pos, int b, float *buf, int *lab)
{
    for (int i = 0; i < b; i++) {
        const int k = set->idx ? set->idx[pos[i]] : pos[i];
        if (set->fpixels) {
            memcpy(buf + (size_t)i * PIXELS, set->fpixels + (size_t)k * PIXELS,
                   PIXELS * sizeof(float));
            lab[i] = set->flabels[k];
        } else {
            nn_idx_to_float(buf + (size_t)i * PIXELS, set->pixels + (size_t)k * PIXELS, PIXELS,
                            1.0f / 255.0f);
            lab[i] = set->labels[k];
        }
    }
}

static void study_tensor(tensor *x, float *buf, int b)
{
    const int shape[4] = {b, IMG, IMG, 1};
    memset(x, 0, sizeof *x);
    x->data = buf;
    NN_ASSERT(tensor_set_shape(x, 4, shape) == NN_OK);
}

/* ------------------------------------------------------------- evaluation */

/* Summed eval-mode loss and correct count over some images. */
typedef struct study_sums {
    double loss;
    long correct, n;
} study_sums;

/* Adds to *sum the eval-mode loss and accuracy of images first .. first+n-1
 * of set, run layer by layer so that, when corr is not NULL, the input and
 * the two conv outputs add their adjacent-pair sums (corr[0..2]). */
static nn_status study_eval(nn_model *m, const study_set *set, int first, int n, float *buf,
                            int *lab, int B, study_sums *sum, study_corr *corr)
{
    nn_graph *g = nn_model_graph(m);
    int *pos = malloc((size_t)B * sizeof *pos);
    if (!pos) return nn_error(NN_ERR_MEMORY, "study_eval: out of memory");
    nn_graph_set_grad_enabled(g, 0);
    double loss_sum = 0.0;
    long correct = 0;
    nn_status s = NN_OK;
    for (int start = 0; start < n && s == NN_OK; start += B) {
        const int b = n - start < B ? n - start : B;
        for (int i = 0; i < b; i++) pos[i] = first + start + i;
        study_batch(set, pos, b, buf, lab);
        nn_graph_reset(g);
        tensor x;
        study_tensor(&x, buf, b);
        if (corr) study_corr_add_nhwc(&corr[0], buf, b, IMG, IMG, 1);
        tensor *cur = &x;
        int conv = 0;
        for (int i = 0; i < m->n_layers && s == NN_OK; i++) {
            tensor *next = NULL;
            s = nn_layer_forward(m->layers[i], g, cur, &next, 0);
            if (s != NN_OK) break;
            if (corr && !strcmp(m->layers[i]->type->name, "conv2d") && conv + 1 < N_CORR) {
                conv++;
                study_corr_add_nhwc(&corr[conv], next->data, b, next->shape[1], next->shape[2],
                                    next->shape[3]);
            }
            cur = next;
        }
        if (s != NN_OK) break;
        tensor *l;
        int c = 0;
        s = nn_op_softmax_cross_entropy(g, cur, lab, &l, &c);
        if (s != NN_OK) break;
        loss_sum += (double)l->data[0] * b;
        correct += c;
    }
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    free(pos);
    if (s != NN_OK) return s;
    sum->loss += loss_sum;
    sum->correct += correct;
    sum->n += n;
    return NN_OK;
}

/* Gradients of the mean loss on batch x into m->grads, forward in `mode`. */
static nn_status study_grad(nn_model *m, tensor *x, const int *lab, nn_mode mode)
{
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    nn_model_zero_grad(m);
    tensor *y, *l;
    NN_TRY(nn_model_forward(m, x, &y, mode));
    NN_TRY(nn_op_softmax_cross_entropy(g, y, lab, &l, NULL));
    return nn_graph_backward(g, l);
}

/* How much dropout perturbs the weight gradients, per weighted layer k:
 *   noise[k] = sqrt( mean_j ||g_j - g_0||^2 / ||g_0||^2 )
 * g_0: gradient without dropout (eval-mode forward), g_j: with the j-th
 * mask, all on the same batch and the same (initial) weights. The dropout
 * layers' call counters are restored afterwards, so training sees the
 * masks it would have seen without this measurement. */
static nn_status study_grad_noise(nn_model *m, const study_set *set, const study_cfg *cfg,
                                  double noise[N_GROUPS])
{
    const int B = cfg->grad_batch;
    float *buf = tensor_aligned_alloc((size_t)B * PIXELS * sizeof(float));
    int *lab = malloc((size_t)B * sizeof *lab), *pos = malloc((size_t)B * sizeof *pos);
    float *g0 = malloc(m->n_params * sizeof *g0);
    if (!buf || !lab || !pos || !g0) {
        tensor_aligned_free(buf);
        free(lab);
        free(pos);
        free(g0);
        return nn_error(NN_ERR_MEMORY, "study_grad_noise: out of memory");
    }
    for (int i = 0; i < B; i++) pos[i] = i;
    study_batch(set, pos, B, buf, lab);
    tensor x;
    study_tensor(&x, buf, B);
    /* Offsets of each weighted layer's parameters in the gradient block. */
    size_t lo[N_GROUPS], hi[N_GROUPS];
    int groups = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = m->layers[i];
        if (!l->n_params) continue;
        NN_ASSERT(groups < N_GROUPS);
        lo[groups] = (size_t)(l->params[0].t->grad - m->grads);
        hi[groups] = lo[groups] + nn_layer_param_count(l, 1);
        groups++;
    }
    NN_ASSERT(groups == N_GROUPS);
    uint64_t calls[NN_MODEL_MAX_LAYERS];
    for (int i = 0; i < m->n_layers; i++) calls[i] = m->layers[i]->calls;
    nn_status s = study_grad(m, &x, lab, NN_MODE_EVAL);
    if (s == NN_OK) memcpy(g0, m->grads, m->n_params * sizeof *g0);
    double dev[N_GROUPS] = {0};
    for (int j = 0; s == NN_OK && j < cfg->grad_draws; j++) {
        s = study_grad(m, &x, lab, NN_MODE_TRAIN);
        for (int k = 0; s == NN_OK && k < N_GROUPS; k++)
            for (size_t i = lo[k]; i < hi[k]; i++) {
                const double d = (double)m->grads[i] - g0[i];
                dev[k] += d * d;
            }
    }
    for (int k = 0; s == NN_OK && k < N_GROUPS; k++) {
        double ref = 0.0;
        for (size_t i = lo[k]; i < hi[k]; i++) ref += (double)g0[i] * g0[i];
        noise[k] = ref > 0.0 ? sqrt(dev[k] / cfg->grad_draws / ref) : NAN;
    }
    for (int i = 0; i < m->n_layers; i++) m->layers[i]->calls = calls[i];
    nn_model_zero_grad(m);
    nn_graph_reset(nn_model_graph(m));
    tensor_aligned_free(buf);
    free(lab);
    free(pos);
    free(g0);
    return s;
}

/* -------------------------------------------------------------- the maps */

/* maps.png: for test image `img`, the `shown` most active feature maps of
 * conv2d_1 of model m in three rows -- the activation, element-wise dropout
 * applied to it, spatial dropout applied to it (dropped values blue) -- with
 * the digit at the top left. Upscaled nearest-neighbour. */
static nn_status study_maps(nn_model *m, const float *img, float rate, uint64_t seed,
                            const char *path, int *shown_channels, int *n_shown)
{
    enum { SHOWN = 8, TILE = 156, GAP = 8 };
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    const int shape[4] = {1, IMG, IMG, 1};
    tensor *x = tensor_wrap((float *)img, 4, shape), *a = NULL;
    if (!x) return NN_ERR_MEMORY;
    nn_status s = nn_layer_forward(m->layers[0], g, x, &a, 0);
    tensor_free(x);
    nn_graph_set_grad_enabled(g, 1);
    if (s != NN_OK) return s;
    const int H = a->shape[1], W = a->shape[2], C = a->shape[3];
    const int shown = C < SHOWN ? C : SHOWN;
    float *act = malloc((size_t)H * W * C * sizeof *act);
    study_canvas cv = {0, 0, NULL};
    if (!act) s = nn_error(NN_ERR_MEMORY, "study_maps: out of memory");
    if (s == NN_OK) {
        memcpy(act, a->data, (size_t)H * W * C * sizeof *act);
        nn_graph_reset(g);
        s = study_canvas_init(&cv, GAP + (shown + 1) * (TILE + GAP), GAP + 3 * (TILE + GAP), 255,
                              255, 255);
    }
    if (s == NN_OK) {
        const maps_block b = {GAP, GAP, TILE, GAP, SHOWN};
        s = maps_draw(&cv, &b, img, IMG, IMG, act, H, W, C, rate, seed, shown_channels);
    }
    if (s == NN_OK) {
        *n_shown = shown;
        s = study_canvas_write_png(&cv, path);
    }
    study_canvas_free(&cv);
    free(act);
    return s;
}

/* ------------------------------------------------------------- one run */

typedef struct study_ctx {
    const study_cfg *cfg;
    const study_data *data;
    float *buf;    /* (max batch, 28, 28, 1) */
    int *lab;
    int buf_images;
} study_ctx;

/* Trains one network of setting run->st from seed run->seed and fills run.
 * ref_params: the initial parameters of the no-dropout network of this
 * seed (n_ref floats), which this network's must equal bit for bit. */
static nn_status study_train(study_ctx *cx, study_run *run, const float *ref_params, size_t n_ref,
                             int want_grad_noise, const char *maps_path, int *maps_ch,
                             int *maps_n)
{
    const study_cfg *cfg = cx->cfg;
    const study_data *d = cx->data;
    const int n = run->st.n_train, B = cfg->batch;
    const double t0 = study_now();
    nn_model *m = NULL;
    NN_TRY(study_model(&m, &run->st, tensor_hash3(run->seed, TAG_MODEL, 0)));
    if (m->n_params != n_ref || memcmp(m->params, ref_params, n_ref * sizeof(float)) != 0) {
        nn_model_free(m);
        return nn_error(NN_ERR_STATE, "seed %llu, %s dropout after %s: the initial parameters "
                        "differ from the no-dropout network's, so the variants are not paired",
                        (unsigned long long)run->seed, variant_name[run->st.variant],
                        placement_name[run->st.placement]);
    }
    int *subset = study_subset(d->m.n_train, n, run->seed);
    int *order = malloc((size_t)n * sizeof *order);
    optim *opt = optim_adam_create(cfg->lr, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    run->curve = calloc((size_t)4 * run->epochs, sizeof *run->curve);
    nn_status s = NN_OK;
    if (!subset || !order || !opt || !run->curve)
        s = nn_error(NN_ERR_MEMORY, "study_train: out of memory");
    const study_set train = {d->m.train_images, d->m.train_labels, subset, NULL, NULL, n};
    const study_set test = {NULL, NULL, NULL, d->test, d->test_labels, d->m.n_test};
    if (s == NN_OK && want_grad_noise) s = study_grad_noise(m, &train, cfg, run->grad_noise[0]);
    tensor_rng ord;
    tensor_rng_seed(&ord, tensor_hash3(run->seed, TAG_ORDER, (uint64_t)n));
    for (int e = 0; s == NN_OK && e < run->epochs; e++) {
        for (int i = 0; i < n; i++) order[i] = i;
        for (int i = n - 1; i > 0; i--) {
            const int j = (int)tensor_rng_below(&ord, (uint32_t)i + 1);
            const int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        double t1 = study_now();
        for (int start = 0; s == NN_OK && start < n; start += B) {
            const int b = n - start < B ? n - start : B;
            study_batch(&train, order + start, b, cx->buf, cx->lab);
            tensor x;
            study_tensor(&x, cx->buf, b);
            float loss = 0.0f;
            s = nn_model_train_step(m, opt, &x, cx->lab, &loss, NULL);
            if (s == NN_OK && !isfinite(loss))
                s = nn_error(NN_ERR_NUMERIC, "seed %llu, %s: epoch %d: the loss is not finite",
                             (unsigned long long)run->seed, variant_name[run->st.variant], e + 1);
        }
        if (s != NN_OK) break;
        run->train_seconds += study_now() - t1;
        t1 = study_now();
        const int last = e + 1 == run->epochs;
        /* The curves use the same images every epoch (the first curve_train
         * of the subset, the first curve_test of the test set); the last
         * epoch goes on to the rest for the final numbers. */
        const int n_tr = n < cfg->curve_train ? n : cfg->curve_train;
        const int n_te = d->m.n_test < cfg->curve_test ? d->m.n_test : cfg->curve_test;
        double *c = run->curve;
        study_corr corr[N_CORR];
        memset(corr, 0, sizeof corr);
        study_sums tr = {0, 0, 0}, te = {0, 0, 0};
        s = study_eval(m, &train, 0, n_tr, cx->buf, cx->lab, cx->buf_images, &tr, NULL);
        if (s == NN_OK)
            s = study_eval(m, &test, 0, n_te, cx->buf, cx->lab, cx->buf_images, &te,
                           last ? corr : NULL);
        if (s != NN_OK) break;
        c[e] = tr.loss / tr.n;
        c[run->epochs + e] = te.loss / te.n;
        c[2 * run->epochs + e] = (double)tr.correct / tr.n;
        c[3 * run->epochs + e] = (double)te.correct / te.n;
        if (last) {
            s = study_eval(m, &train, n_tr, n - n_tr, cx->buf, cx->lab, cx->buf_images, &tr, NULL);
            if (s == NN_OK)
                s = study_eval(m, &test, n_te, d->m.n_test - n_te, cx->buf, cx->lab,
                               cx->buf_images, &te, corr);
            if (s != NN_OK) break;
            run->train_loss = tr.loss / tr.n;
            run->train_acc = (double)tr.correct / tr.n;
            run->test_loss = te.loss / te.n;
            run->test_acc = (double)te.correct / te.n;
            for (int k = 0; k < N_CORR; k++) run->corr[k] = study_corr_value(&corr[k]);
        }
        run->eval_seconds += study_now() - t1;
    }
    if (s == NN_OK && want_grad_noise) {
        s = study_grad_noise(m, &train, cfg, run->grad_noise[1]);
        run->has_grad_noise = s == NN_OK;
    }
    if (s == NN_OK && maps_path)
        s = study_maps(m, d->test, MAPS_RATE, tensor_hash3(run->seed, TAG_MAPS, 0),
                       maps_path, maps_ch, maps_n);
    run->seconds = study_now() - t0;
    optim_free(opt);
    nn_model_free(m);
    free(subset);
    free(order);
    return s;
}

/* ------------------------------------------------------------- output */

static void json_array(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        json_num(f, v[i]);
    }
    fputc(']', f);
}

static void study_json(FILE *f, const study_run *r, const study_cfg *cfg)
{
    fprintf(f, "{\"variant\": \"%s\", \"rate\": %g, \"placement\": \"%s\", \"n_train\": %d, "
            "\"seed\": %llu, \"epochs\": %d, \"batch\": %d, \"lr\": %g, ",
            variant_name[r->st.variant], (double)r->st.rate, placement_name[r->st.placement],
            r->st.n_train, (unsigned long long)r->seed, r->epochs, cfg->batch, (double)cfg->lr);
    fprintf(f, "\"curve_images\": {\"train\": %d, \"test\": %d}, ",
            r->st.n_train < cfg->curve_train ? r->st.n_train : cfg->curve_train, cfg->curve_test);
    fputs("\"train_acc\": ", f), json_num(f, r->train_acc);
    fputs(", \"train_loss\": ", f), json_num(f, r->train_loss);
    fputs(", \"test_acc\": ", f), json_num(f, r->test_acc);
    fputs(", \"test_loss\": ", f), json_num(f, r->test_loss);
    fputs(", \"gap_acc\": ", f), json_num(f, r->train_acc - r->test_acc);
    fputs(", \"adjacent_corr\": {", f);
    for (int k = 0; k < N_CORR; k++) {
        fprintf(f, "%s\"%s\": ", k ? ", " : "", corr_name[k]);
        json_num(f, r->corr[k]);
    }
    fputs("}", f);
    for (int w = 0; r->has_grad_noise && w < 2; w++) {
        fprintf(f, ", \"grad_noise_%s\": {", w ? "trained" : "init");
        for (int k = 0; k < N_GROUPS; k++) {
            fprintf(f, "%s\"%s\": ", k ? ", " : "", group_name[k]);
            json_num(f, r->grad_noise[w][k]);
        }
        fputs("}", f);
    }
    fprintf(f, ", \"curves\": {\"train_loss\": ");
    json_array(f, r->curve, r->epochs);
    fputs(", \"test_loss\": ", f);
    json_array(f, r->curve + r->epochs, r->epochs);
    fputs(", \"train_acc\": ", f);
    json_array(f, r->curve + 2 * r->epochs, r->epochs);
    fputs(", \"test_acc\": ", f);
    json_array(f, r->curve + 3 * r->epochs, r->epochs);
    fprintf(f, "}, \"seconds\": %.2f, \"train_seconds\": %.2f, \"eval_seconds\": %.2f}\n",
            r->seconds, r->train_seconds, r->eval_seconds);
}

/* ------------------------------------------------------------- summary */

typedef struct study_grid {
    study_setting *st;
    int n_settings, seeds;
    study_run *runs; /* runs[seed * n_settings + k] */
} study_grid;

static const study_run *grid_run(const study_grid *g, int seed, int k)
{
    return &g->runs[(size_t)seed * g->n_settings + k];
}

/* The no-dropout setting with the same subset size as setting k. */
static int grid_none(const study_grid *g, int k)
{
    for (int i = 0; i < g->n_settings; i++)
        if (g->st[i].variant == V_NONE && g->st[i].n_train == g->st[k].n_train) return i;
    return -1;
}

/* The setting with these fields, or -1. */
static int grid_find(const study_grid *g, int n, int variant, int placement, float rate)
{
    for (int i = 0; i < g->n_settings; i++) {
        const study_setting *s = &g->st[i];
        if (s->n_train == n && s->variant == variant && s->placement == placement &&
            s->rate == rate)
            return i;
    }
    return -1;
}

enum { F_TEST_ACC, F_TRAIN_ACC, F_GAP, F_TEST_LOSS, F_TRAIN_LOSS };
static double run_field(const study_run *r, int f)
{
    switch (f) {
    case F_TEST_ACC: return 100.0 * r->test_acc;
    case F_TRAIN_ACC: return 100.0 * r->train_acc;
    case F_GAP: return 100.0 * (r->train_acc - r->test_acc);
    case F_TEST_LOSS: return r->test_loss;
    default: return r->train_loss;
    }
}

static void grid_values(const study_grid *g, int k, int f, double *v)
{
    for (int s = 0; s < g->seeds; s++) v[s] = run_field(grid_run(g, s, k), f);
}

/* Paired differences a - b of field f. */
static void grid_diff(const study_grid *g, int a, int b, int f, double *d)
{
    for (int s = 0; s < g->seeds; s++) d[s] = run_field(grid_run(g, s, a), f) - run_field(grid_run(g, s, b), f);
}

static void setting_label(const study_setting *s, char *buf, size_t n)
{
    if (s->variant == V_NONE)
        snprintf(buf, n, "| %d | none | - | - ", s->n_train);
    else
        snprintf(buf, n, "| %d | %s | %s | %g ", s->n_train, variant_name[s->variant],
                 placement_name[s->placement], (double)s->rate);
}

static void print_table(const study_grid *g)
{
    double v[64];
    printf("\nMean ± standard deviation over %d seeds; accuracies in %%, the gap is train accuracy "
           "minus test accuracy in percentage points (train: eval mode on the training subset; "
           "test: all 10,000 test images).\n\n", g->seeds);
    printf("| train images | dropout | after | rate | test acc | train acc | gap (pp) | test loss "
           "| train loss |\n|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < g->n_settings; k++) {
        char lab[128];
        setting_label(&g->st[k], lab, sizeof lab);
        printf("%s", lab);
        for (int f = F_TEST_ACC; f <= F_TRAIN_LOSS; f++) {
            grid_values(g, k, f, v);
            if (f >= F_TEST_LOSS)
                printf("| %.3f ± %.3f ", study_mean(v, g->seeds), study_sd(v, g->seeds));
            else
                printf("| %.2f ± %.2f ", study_mean(v, g->seeds), study_sd(v, g->seeds));
        }
        printf("|\n");
    }
}

static void print_paired(const study_grid *g)
{
    printf("\nPaired differences (same seed: same subset, data order and initial weights), mean ± "
           "sd over seeds in percentage points of test accuracy; t is the paired t statistic, "
           "* marks |t| > %.3f (two-sided 95 %%, %d degrees of freedom).\n\n",
           study_t_crit(g->seeds - 1), g->seeds - 1);
    printf("| train images | after | rate | elementwise − none | spatial − none | spatial − "
           "elementwise | gap: spatial − elementwise |\n|---:|---|---:|---:|---:|---:|---:|\n");
    double d[64];
    char a[80], b[80], c[80], e[80];
    for (int k = 0; k < g->n_settings; k++) {
        const study_setting *s = &g->st[k];
        if (s->variant != V_ELEMENT) continue;
        const int sp = grid_find(g, s->n_train, V_SPATIAL, s->placement, s->rate);
        const int no = grid_none(g, k);
        if (sp < 0 || no < 0) continue;
        grid_diff(g, k, no, F_TEST_ACC, d), study_fmt_diff(a, sizeof a, d, g->seeds, 2);
        grid_diff(g, sp, no, F_TEST_ACC, d), study_fmt_diff(b, sizeof b, d, g->seeds, 2);
        grid_diff(g, sp, k, F_TEST_ACC, d), study_fmt_diff(c, sizeof c, d, g->seeds, 2);
        grid_diff(g, sp, k, F_GAP, d), study_fmt_diff(e, sizeof e, d, g->seeds, 2);
        printf("| %d | %s | %g | %s | %s | %s | %s |\n", s->n_train, placement_name[s->placement],
               (double)s->rate, a, b, c, e);
    }
}

/* Correlations of adjacent activations: one row per variant of the
 * headline setting, mean ± sd over seeds. */
static void print_corr(const study_grid *g, int n, float rate)
{
    printf("\nPearson correlation of horizontally adjacent values (x[h][w], x[h][w+1]) over the "
           "10,000 test images and all channels, trained networks (%d training images; dropout "
           "after conv2d_1 at rate %g), mean ± sd over seeds. Conv outputs are after ReLU.\n\n",
           n, (double)rate);
    printf("| network | input pixels | conv2d_1 | conv2d_2 |\n|---|---:|---:|---:|\n");
    const int ks[3] = {grid_find(g, n, V_NONE, 0, 0.0f), grid_find(g, n, V_ELEMENT, 1, rate),
                       grid_find(g, n, V_SPATIAL, 1, rate)};
    double v[64];
    for (int i = 0; i < 3; i++) {
        if (ks[i] < 0) continue;
        printf("| %s ", variant_name[g->st[ks[i]].variant]);
        for (int c = 0; c < N_CORR; c++) {
            for (int s = 0; s < g->seeds; s++) v[s] = grid_run(g, s, ks[i])->corr[c];
            printf("| %.3f ± %.3f ", study_mean(v, g->seeds), study_sd(v, g->seeds));
        }
        printf("|\n");
    }
}

/* Gradient perturbation, element-wise against spatial: at initialisation
 * (the same weights for both, so a paired comparison) and after training
 * (each network's own weights). */
static void print_grad_noise(const study_grid *g, int n, float rate, int draws, int batch)
{
    printf("\nGradient perturbation: sqrt(mean over %d masks of ||g_mask - g_no_dropout||² / "
           "||g_no_dropout||²) per weighted layer, on one batch of %d training images (the "
           "subset's first), mean ± sd over seeds (rate %g, %d training images). At "
           "initialisation both variants have the same weights; after training each has its "
           "own.\n\n", draws, batch, (double)rate, n);
    printf("| dropout after | layer | init: elementwise | init: spatial | init: spatial / "
           "elementwise | trained: elementwise | trained: spatial |\n"
           "|---|---|---:|---:|---:|---:|---:|\n");
    double ve[64], vs[64], ratio[64];
    for (int p = 1; p <= 2; p++) {
        const int ke = grid_find(g, n, V_ELEMENT, p, rate), ks = grid_find(g, n, V_SPATIAL, p, rate);
        if (ke < 0 || ks < 0 || !grid_run(g, 0, ke)->has_grad_noise) continue;
        for (int k = 0; k < N_GROUPS; k++) {
            printf("| %s | %s ", placement_name[p], group_name[k]);
            for (int w = 0; w < 2; w++) {
                for (int s = 0; s < g->seeds; s++) {
                    ve[s] = grid_run(g, s, ke)->grad_noise[w][k];
                    vs[s] = grid_run(g, s, ks)->grad_noise[w][k];
                    ratio[s] = vs[s] / ve[s];
                }
                printf("| %.3f ± %.3f | %.3f ± %.3f ", study_mean(ve, g->seeds),
                       study_sd(ve, g->seeds), study_mean(vs, g->seeds), study_sd(vs, g->seeds));
                if (!w) printf("| %.2f ± %.2f ", study_mean(ratio, g->seeds), study_sd(ratio, g->seeds));
            }
            printf("|\n");
        }
    }
}

/* What the numbers say, setting by setting, then overall. Every sentence
 * is computed from the table; none is fixed in advance. */
static void print_reading(const study_grid *g, int n_head, float rate)
{
    const double tc = study_t_crit(g->seeds - 1);
    double d[64], v[64];
    int n_cmp = 0, sp_better = 0, sp_sig = 0, el_sig = 0, drop_helps = 0, drop_hurts = 0,
        n_drop = 0, gap_smaller = 0, gap_larger = 0;
    printf("\nWhat the numbers say (a difference counts as larger than the seed spread when the "
           "paired |t| > %.3f):\n", tc);
    for (int k = 0; k < g->n_settings; k++) {
        const study_setting *s = &g->st[k];
        if (s->variant != V_ELEMENT) continue;
        const int sp = grid_find(g, s->n_train, V_SPATIAL, s->placement, s->rate);
        const int no = grid_none(g, k);
        if (sp < 0 || no < 0) continue;
        const int ks[3] = {no, k, sp};
        int best = 0, tight = 0;
        double acc[3], gap[3];
        for (int i = 0; i < 3; i++) {
            grid_values(g, ks[i], F_TEST_ACC, v), acc[i] = study_mean(v, g->seeds);
            grid_values(g, ks[i], F_GAP, v), gap[i] = study_mean(v, g->seeds);
            if (acc[i] > acc[best]) best = i;
            if (gap[i] < gap[tight]) tight = i;
        }
        grid_diff(g, sp, k, F_TEST_ACC, d);
        const double md = study_mean(d, g->seeds), t = study_paired_t(d, g->seeds);
        n_cmp++;
        sp_better += md > 0.0;
        sp_sig += md > 0.0 && fabs(t) > tc;
        el_sig += md < 0.0 && fabs(t) > tc;
        for (int i = 1; i < 3; i++) {
            grid_diff(g, ks[i], no, F_TEST_ACC, v);
            const double ti = study_paired_t(v, g->seeds), mi = study_mean(v, g->seeds);
            n_drop++;
            drop_helps += mi > 0.0 && fabs(ti) > tc;
            drop_hurts += mi < 0.0 && fabs(ti) > tc;
            grid_diff(g, ks[i], no, F_GAP, v);
            const double tg = study_paired_t(v, g->seeds), mg = study_mean(v, g->seeds);
            gap_smaller += mg < 0.0 && fabs(tg) > tc;
            gap_larger += mg > 0.0 && fabs(tg) > tc;
        }
        char gap_text[96];
        if (tight == 0)
            snprintf(gap_text, sizeof gap_text, "none (%.2f pp)", gap[0]);
        else
            snprintf(gap_text, sizeof gap_text, "%s (%.2f pp; none %.2f)",
                     variant_name[tight == 1 ? V_ELEMENT : V_SPATIAL], gap[tight], gap[0]);
        printf("- %d images, after %s, rate %g: highest mean test accuracy: %s (none %.2f %%, "
               "elementwise %.2f, spatial %.2f); spatial − elementwise %+.2f ± %.2f pp, paired "
               "t = %.1f: %s. Smallest mean train−test gap: %s.\n",
               s->n_train, placement_name[s->placement], (double)s->rate,
               variant_name[ks[best] == no ? V_NONE : g->st[ks[best]].variant], acc[0], acc[1],
               acc[2], md, study_sd(d, g->seeds), t,
               fabs(t) > tc ? "larger than the seed spread" : "within the seed spread", gap_text);
    }
    printf("- Overall: spatial had the higher mean test accuracy than element-wise in %d of %d "
           "settings; the difference was larger than the seed spread in %d (spatial ahead) and "
           "%d (element-wise ahead).\n", sp_better, n_cmp, sp_sig, el_sig);
    printf("- Against no dropout (paired, beyond the seed spread), over %d dropout networks: test "
           "accuracy higher in %d, lower in %d; train−test gap smaller in %d, larger in %d; the "
           "rest within the spread.\n", n_drop, drop_helps, drop_hurts, gap_smaller, gap_larger);
    const int kn = grid_find(g, n_head, V_NONE, 0, 0.0f);
    if (kn >= 0) {
        double c[N_CORR];
        for (int i = 0; i < N_CORR; i++) {
            for (int s = 0; s < g->seeds; s++) v[s] = grid_run(g, s, kn)->corr[i];
            c[i] = study_mean(v, g->seeds);
        }
        printf("- Premise: adjacent activations correlate at r = %.2f (conv2d_1) and %.2f "
               "(conv2d_2) in the network trained without dropout (input pixels: %.2f). %s\n",
               c[1], c[2], c[0],
               c[1] > 0.5 && c[2] > 0.5
                   ? "Neighbouring values are largely redundant, so much of what element-wise "
                     "dropout zeroes is still present next to it, while spatial dropout removes "
                     "the whole map (how much other channels carry was not measured). This "
                     "shows the redundancy only; whether it makes element-wise dropout the "
                     "weaker regulariser is what the accuracy rows above test."
                   : "The correlation is not high, so the premise holds only weakly here.");
    }
    for (int p = 1; p <= 2; p++) {
        const int ke = grid_find(g, n_head, V_ELEMENT, p, rate);
        const int ksp = grid_find(g, n_head, V_SPATIAL, p, rate);
        if (ke < 0 || ksp < 0 || !grid_run(g, 0, ke)->has_grad_noise) continue;
        for (int w = 0; w < 2; w++) {
            int more = 0, less = 0;
            for (int k = 0; k < N_GROUPS; k++) {
                for (int s = 0; s < g->seeds; s++)
                    d[s] = grid_run(g, s, ksp)->grad_noise[w][k] - grid_run(g, s, ke)->grad_noise[w][k];
                const double t = study_paired_t(d, g->seeds), md = study_mean(d, g->seeds);
                more += md > 0.0 && fabs(t) > tc;
                less += md < 0.0 && fabs(t) > tc;
            }
            printf("- Gradients %s (dropout after %s, rate %g): spatial dropout perturbed "
                   "them more than element-wise dropout, beyond the seed spread, in %d of %d "
                   "weighted layers, and less in %d.\n",
                   w ? "after training" : "at initialisation", placement_name[p], (double)rate,
                   more, N_GROUPS, less);
        }
    }
}

/* curves.dat: one gnuplot data block per subset size (dropout after
 * conv2d_1 at the headline rate), columns epoch and, per variant, the mean
 * over seeds of train loss and test loss. curves_titles.txt: one panel
 * title per block. */
static nn_status write_curves(const study_grid *g, const study_cfg *cfg, float rate)
{
    char path[1024], tmp[1040], tpath[1024], ttmp[1040];
    snprintf(path, sizeof path, "%s/curves.dat", cfg->out_dir);
    snprintf(tpath, sizeof tpath, "%s/curves_titles.txt", cfg->out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(ttmp, sizeof ttmp, "%s.tmp", tpath);
    FILE *f = fopen(tmp, "w"), *t = fopen(ttmp, "w");
    if (!f || !t) {
        if (f) fclose(f);
        if (t) fclose(t);
        return nn_error(NN_ERR_IO, "%s: cannot create: %s", cfg->out_dir, strerror(errno));
    }
    int blocks = 0;
    for (int k = 0; k < g->n_settings; k++) {
        if (g->st[k].variant != V_NONE) continue;
        const int n = g->st[k].n_train;
        const int ks[3] = {k, grid_find(g, n, V_ELEMENT, 1, rate), grid_find(g, n, V_SPATIAL, 1, rate)};
        if (ks[1] < 0 || ks[2] < 0) continue;
        const int E = grid_run(g, 0, k)->epochs;
        if (blocks++) fputs("\n\n", f);
        fprintf(f, "# %d training images, dropout after conv2d_1 at rate %g; mean over %d seeds\n"
                "# epoch none_train none_test elementwise_train elementwise_test spatial_train "
                "spatial_test\n", n, (double)rate, g->seeds);
        fprintf(t, "%d training images, dropout after conv2d\\_1, rate %g (mean of %d seeds)\n", n,
                (double)rate, g->seeds);
        for (int e = 0; e < E; e++) {
            fprintf(f, "%d", e + 1);
            for (int i = 0; i < 3; i++)
                for (int which = 0; which < 2; which++) {
                    double v[64];
                    for (int s = 0; s < g->seeds; s++) v[s] = grid_run(g, s, ks[i])->curve[which * E + e];
                    fprintf(f, " %.6g", study_mean(v, g->seeds));
                }
            fputc('\n', f);
        }
    }
    const int bad = ferror(f) | ferror(t);
    if ((fclose(f) != 0) | (fclose(t) != 0) || bad)
        return nn_error(NN_ERR_IO, "%s: write error", cfg->out_dir);
    NN_TRY(study_rename(tmp, path));
    return study_rename(ttmp, tpath);
}

/* ------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dropout_study [--quick] [--data DIR] [--out DIR] [--seeds N] [--epochs N]\n"
            "                     [--epochs-large N] [--rate R] [--threads N]\n"
            "  --quick          a reduced grid (one setting, 3 seeds, fewer epochs): ~2 min\n"
            "  --data DIR       MNIST files (default .cache/mnist)\n"
            "  --out DIR        results (default build/study)\n"
            "  --seeds N        seeds per variant (default 5; quick 3)\n"
            "  --epochs N       epochs on the 1,000-image subset (default 15; quick 10)\n"
            "  --epochs-large N epochs on the 5,000-image subset (default 5)\n"
            "  --rate R         rate of the placement and subset comparisons (default 0.3)\n"
            "  --threads N      threads (default: OpenMP's)\n");
}

int main(int argc, char **argv)
{
    study_cfg cfg = {.data_dir = ".cache/mnist", .out_dir = "build/study", .seeds = -1,
                     .epochs_small = -1, .epochs_large = 5, .batch = 32, .lr = 1e-3f,
                     .rate = 0.3f, .curve_test = 1000, .curve_train = 1000, .grad_draws = 16,
                     .grad_batch = 64, .threads = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--quick")) cfg.quick = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!v) ok = 0;
        else if (!strcmp(a, "--data")) cfg.data_dir = v, i++;
        else if (!strcmp(a, "--out")) cfg.out_dir = v, i++;
        else if (!strcmp(a, "--seeds")) ok = parse_int(v, 2, 64, &cfg.seeds), i++;
        else if (!strcmp(a, "--epochs")) ok = parse_int(v, 1, 1000, &cfg.epochs_small), i++;
        else if (!strcmp(a, "--epochs-large")) ok = parse_int(v, 1, 1000, &cfg.epochs_large), i++;
        else if (!strcmp(a, "--threads")) ok = parse_int(v, 1, 256, &cfg.threads), i++;
        else if (!strcmp(a, "--rate")) {
            char *end;
            cfg.rate = strtof(v, &end);
            ok = *end == '\0' && end != v && cfg.rate > 0.0f && cfg.rate < 1.0f;
            i++;
        } else ok = 0;
        if (!ok) {
            fprintf(stderr, "dropout_study: bad or incomplete option '%s%s%s'\n", a, v ? " " : "",
                    v ? v : "");
            usage(stderr);
            return 2;
        }
    }
    if (cfg.seeds < 0) cfg.seeds = cfg.quick ? 3 : 5;
    if (cfg.epochs_small < 0) cfg.epochs_small = cfg.quick ? 10 : 15;
    if (cfg.threads && nn_set_threads(cfg.threads) != NN_OK) {
        fprintf(stderr, "dropout_study: %s\n", nn_last_error());
        return 2;
    }

    /* The grid. Full: a rate sweep on 1,000 images with dropout after
     * conv2d_1; both placements at the headline rate; 5,000 images at the
     * headline rate. Quick: the headline setting on 1,000 images only. */
    static const float sweep[] = {0.1f, 0.2f, 0.3f, 0.5f};
    study_setting settings[32];
    int ns = 0;
    settings[ns++] = (study_setting){1000, V_NONE, 0, 0.0f};
    if (cfg.quick) {
        settings[ns++] = (study_setting){1000, V_ELEMENT, 1, cfg.rate};
        settings[ns++] = (study_setting){1000, V_SPATIAL, 1, cfg.rate};
    } else {
        int has_rate = 0;
        for (size_t r = 0; r < sizeof sweep / sizeof sweep[0]; r++) {
            settings[ns++] = (study_setting){1000, V_ELEMENT, 1, sweep[r]};
            settings[ns++] = (study_setting){1000, V_SPATIAL, 1, sweep[r]};
            has_rate |= sweep[r] == cfg.rate;
        }
        if (!has_rate) {
            settings[ns++] = (study_setting){1000, V_ELEMENT, 1, cfg.rate};
            settings[ns++] = (study_setting){1000, V_SPATIAL, 1, cfg.rate};
        }
        settings[ns++] = (study_setting){1000, V_ELEMENT, 2, cfg.rate};
        settings[ns++] = (study_setting){1000, V_SPATIAL, 2, cfg.rate};
        settings[ns++] = (study_setting){5000, V_NONE, 0, 0.0f};
        settings[ns++] = (study_setting){5000, V_ELEMENT, 1, cfg.rate};
        settings[ns++] = (study_setting){5000, V_SPATIAL, 1, cfg.rate};
    }

    study_data data;
    memset(&data, 0, sizeof data);
    if (nn_mnist_load(cfg.data_dir, &data.m) != NN_OK) {
        fprintf(stderr, "dropout_study: %s\n(run `make mnist-data` first)\n", nn_last_error());
        return 1;
    }
    nn_status s = study_mkdirs(cfg.out_dir);
    const int buf_images = 500;
    study_ctx cx = {&cfg, &data, NULL, NULL, buf_images};
    const size_t n_runs = (size_t)cfg.seeds * ns;
    study_grid grid = {settings, ns, cfg.seeds, calloc(n_runs, sizeof(study_run))};
    data.test = tensor_aligned_alloc((size_t)data.m.n_test * PIXELS * sizeof(float));
    data.test_labels = malloc((size_t)data.m.n_test * sizeof(int));
    cx.buf = tensor_aligned_alloc((size_t)buf_images * PIXELS * sizeof(float));
    cx.lab = malloc((size_t)buf_images * sizeof(int));
    if (s == NN_OK && (!grid.runs || !data.test || !data.test_labels || !cx.buf || !cx.lab))
        s = nn_error(NN_ERR_MEMORY, "dropout_study: out of memory");
    if (s == NN_OK) {
        nn_idx_to_float(data.test, data.m.test_images, (size_t)data.m.n_test * PIXELS,
                        1.0f / 255.0f);
        for (int i = 0; i < data.m.n_test; i++) data.test_labels[i] = data.m.test_labels[i];
    }
    char jpath[1024], jtmp[1040], mpath[1024];
    snprintf(jpath, sizeof jpath, "%s/results.jsonl", cfg.out_dir);
    snprintf(jtmp, sizeof jtmp, "%s.tmp", jpath);
    snprintf(mpath, sizeof mpath, "%s/maps.png", cfg.out_dir);
    FILE *jf = s == NN_OK ? fopen(jtmp, "w") : NULL;
    if (s == NN_OK && !jf) s = nn_error(NN_ERR_IO, "%s: cannot create: %s", jtmp, strerror(errno));

    if (s == NN_OK) {
        printf("dropout study: %d settings x %d seeds = %zu runs; Adam lr %g, batch %d, %d epochs "
               "on 1,000 images, %d on 5,000; test curves on the first %d test images, final "
               "numbers on all %d\n", ns, cfg.seeds, n_runs, (double)cfg.lr, cfg.batch,
               cfg.epochs_small, cfg.epochs_large, cfg.curve_test, data.m.n_test);
        fflush(stdout);
    }
    const double t_start = study_now();
    int maps_ch[8], maps_n = 0;
    size_t done = 0;
    for (int sd = 0; s == NN_OK && sd < cfg.seeds; sd++) {
        const uint64_t seed = (uint64_t)sd + 1;
        /* The reference initial weights: the network without dropout. */
        const study_setting plain = {1000, V_NONE, 0, 0.0f};
        nn_model *ref = NULL;
        s = study_model(&ref, &plain, tensor_hash3(seed, TAG_MODEL, 0));
        for (int k = 0; s == NN_OK && k < ns; k++) {
            study_run *r = &grid.runs[(size_t)sd * ns + k];
            r->st = settings[k];
            r->seed = seed;
            r->epochs = settings[k].n_train <= 1000 ? cfg.epochs_small : cfg.epochs_large;
            const int maps = sd == 0 && k == 0;
            s = study_train(&cx, r, ref->params, ref->n_params,
                            settings[k].variant != V_NONE && settings[k].n_train == 1000, maps ? mpath : NULL,
                            maps_ch, &maps_n);
            if (s != NN_OK) break;
            study_json(jf, r, &cfg);
            fflush(jf);
            done++;
            const double el = study_now() - t_start;
            printf("[%3zu/%zu] %5d images  %-11s after %-8s rate %-4g seed %llu: train %6.2f%%  "
                   "test %6.2f%%  gap %5.2f pp  test loss %.4f  (%.1f s, ETA %.0f s)\n",
                   done, n_runs, r->st.n_train, variant_name[r->st.variant],
                   placement_name[r->st.placement], (double)r->st.rate,
                   (unsigned long long)seed, 100.0 * r->train_acc, 100.0 * r->test_acc,
                   100.0 * (r->train_acc - r->test_acc), r->test_loss, r->seconds,
                   el / done * (n_runs - done));
            fflush(stdout);
        }
        nn_model_free(ref);
    }
    if (jf) {
        const int bad = ferror(jf);
        if ((fclose(jf) != 0 || bad) && s == NN_OK) s = nn_error(NN_ERR_IO, "%s: write error", jtmp);
        if (s == NN_OK) s = study_rename(jtmp, jpath);
    }
    if (s == NN_OK) s = write_curves(&grid, &cfg, cfg.rate);
    if (s == NN_OK) {
        printf("\nAll %zu runs in %.0f s. Initial parameters were bit-identical across the three "
               "variants for every seed (checked).\n", n_runs, study_now() - t_start);
        print_table(&grid);
        print_paired(&grid);
        print_corr(&grid, 1000, cfg.rate);
        print_grad_noise(&grid, 1000, cfg.rate, cfg.grad_draws, cfg.grad_batch);
        print_reading(&grid, 1000, cfg.rate);
        printf("\nmaps.png: test image 0; conv2d_1 maps");
        for (int i = 0; i < maps_n; i++) printf(" %d", maps_ch[i]);
        printf(" (the %d most active) of the network trained without dropout (seed 1); rows: "
               "activation, element-wise dropout (rate 0.5) applied, spatial dropout (rate 0.5) "
               "applied; dropped values in blue.\n", maps_n);
        printf("Wrote %s, %s/curves.dat, %s\n", jpath, cfg.out_dir, mpath);
    }
    for (size_t i = 0; grid.runs && i < n_runs; i++) free(grid.runs[i].curve);
    free(grid.runs);
    tensor_aligned_free(data.test);
    free(data.test_labels);
    tensor_aligned_free(cx.buf);
    free(cx.lab);
    nn_mnist_free(&data.m);
    if (s != NN_OK) {
        fprintf(stderr, "dropout_study: %s\n", nn_last_error());
        return 1;
    }
    return 0;
}
