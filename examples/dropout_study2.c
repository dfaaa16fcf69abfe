/* dropout_study2: where spatial dropout beats element-wise dropout, and why.
 *
 * The first study (examples/dropout_study.c) found both kinds of dropout
 * regularising alike on 28x28 MNIST. The argument for spatial dropout
 * (Tompson et al., 2015) is narrower: when neighbouring activations are
 * strongly correlated, the next convolution averages a dropped value back in
 * from its neighbours, so element-wise dropout's noise fades while spatial
 * dropout's does not. This program varies that correlation by resolution:
 * the same images upsampled x1, x2, x4 (bilinear, 28, 56, 112 px) and fed to
 *     conv2d C1 3x3 same relu -> [dropout] -> conv2d C2 3x3 same, stride 2,
 *     relu -> maxpool s (not at x1) -> flatten -> dense 64 relu -> dense 10
 * whose 3x3 kernels stay 3x3 at every resolution (so at x4 they see
 * smoother maps) while the pooling brings every resolution to 14x14 before
 * the dense layers.
 *
 * 1. The mechanism. On each trained network without dropout, for a batch
 *    of test images: a = conv2d_1's output, m a mask of either kind at the
 *    study's rate, W conv2d_2's kernel without bias or ReLU. Over many masks
 *        noise in  = E ||m.a - a||^2     / ||a||^2
 *        noise out = E ||W(m.a) - W a||^2 / ||W a||^2
 *    and the same at the logits (the rest of the network run on m.a), next
 *    to the Pearson correlation of horizontally adjacent values of a.
 *    "Surviving" is noise out / noise in.
 * 2. The outcome. No dropout, element-wise and spatial dropout after
 *    conv2d_1 at the same rate, trained with nn_model_fit on a random subset
 *    of the training images at each resolution, paired by seed (a seed
 *    fixes the subset, the data order and the initial weights of all three
 *    variants; the program checks the initial parameters are bit-identical),
 *    on MNIST and Fashion-MNIST; test accuracy and the train-test gap,
 *    evaluated in eval mode.
 *
 * Output (in --out, default build/study2): results.jsonl (one object per
 * training run and per probe), noise.dat and accuracy.dat for
 * examples/plot_study2.gp, maps.png (conv2d_1 maps of one test digit at the
 * three resolutions with both masks applied). Tables and a plain reading go
 * to stdout.
 *
 * Deliberately omitted: other rates and placements (the first study swept
 * those), augmentation, schedules; the study is about one question.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

#include "dropout_study_maps.h"
#include "dropout_study_png.h"
#include "dropout_study_stats.h"
#include "dropout_study_util.h"

enum { V_NONE, V_ELEMENT, V_SPATIAL, N_VARIANTS };
static const char *const variant_name[N_VARIANTS] = {"none", "elementwise", "spatial"};
enum { D_MNIST, D_FASHION, N_DATA };
static const char *const data_name[N_DATA] = {"MNIST", "Fashion-MNIST"};
static const char *const data_key[N_DATA] = {"mnist", "fashion"};
#define N_RES 3
static const int res_factor[N_RES] = {1, 2, 4};
#define MAX_SEEDS 32

#define IMG 28
/* Tags that give each random stream of a seed its own key. */
#define TAG_ORDER 0x6f72646572ull    /* "order" */
#define TAG_MODEL 0x6d6f64656cull    /* "model" */
#define TAG_MAPS 0x6d617073ull       /* "maps" */
#define TAG_PROBE 0x70726f6265ull    /* "probe" */
/* maps.png shows both masks at 0.5, where each drops half of what it can. */
#define MAPS_RATE 0.5f
/* Test images are upsampled and evaluated this many at a time. */
#define CHUNK 1000

typedef struct s2_cfg {
    const char *data_dir[N_DATA], *out_dir;
    int use[N_DATA];
    int quick, seeds, epochs, n_train, n_test, batch, c1, c2, threads;
    int probe_images, probe_masks;
    float lr, rate;
} s2_cfg;

typedef struct s2_run {
    double train_acc, train_loss, test_acc, test_loss, seconds;
} s2_run;

/* The mechanism, on one trained network without dropout. */
enum { K_ELEMENT, K_SPATIAL, N_KINDS };
typedef struct s2_probe {
    double corr_input, corr_act;  /* adjacent-pair correlation of the input, of conv2d_1's output */
    double noise_in[N_KINDS], noise_out[N_KINDS], noise_logits[N_KINDS];
} s2_probe;

typedef struct s2_results {
    s2_run run[N_DATA][N_RES][N_VARIANTS][MAX_SEEDS];
    s2_probe probe[N_DATA][N_RES][MAX_SEEDS];
} s2_results;

/* ------------------------------------------------------------------ model */

static nn_status s2_spec(char *buf, size_t n, const s2_cfg *cfg, int s, int variant)
{
    char drop[128] = "", pool[128] = "";
    if (variant == V_ELEMENT)
        snprintf(drop, sizeof drop, "dropout rate=%g\n", (double)cfg->rate);
    else if (variant == V_SPATIAL)
        snprintf(drop, sizeof drop, "spatial_dropout2d rate=%g data_format=channels_last\n",
                 (double)cfg->rate);
    if (s > 1) snprintf(pool, sizeof pool, "maxpool2d pool_size=%d data_format=channels_last\n", s);
    int k = snprintf(buf, n,
                     "conv2d filters=%d kernel_size=3 padding=same activation=relu "
                     "data_format=channels_last\n"
                     "%s"
                     "conv2d filters=%d kernel_size=3 padding=same strides=2 activation=relu "
                     "data_format=channels_last\n"
                     "%s"
                     "flatten\n"
                     "dense units=64 activation=relu\n"
                     "dense units=10\n",
                     cfg->c1, drop, cfg->c2, pool);
    if (k < 0 || (size_t)k >= n) return nn_error(NN_ERR_ARG, "s2_spec: buffer too small");
    return NN_OK;
}

static nn_status s2_model(nn_model **out, const s2_cfg *cfg, int s, int variant, uint64_t seed)
{
    char spec[1024];
    NN_TRY(s2_spec(spec, sizeof spec, cfg, s, variant));
    nn_model *m = nn_model_create(tensor_hash3(seed, TAG_MODEL, (uint64_t)s));
    if (!m) return NN_ERR_MEMORY;
    const int shape[3] = {IMG * s, IMG * s, 1};
    nn_status st = nn_model_add_spec(m, spec);
    if (st == NN_OK) st = nn_model_build(m, 3, shape);
    if (st != NN_OK) {
        nn_model_free(m);
        return st;
    }
    *out = m;
    return NN_OK;
}

/* ------------------------------------------------------------------- data */

/* dst (28s, 28s) = the 28x28 byte image src scaled to [0, 1] and upsampled
 * by s, bilinear with half-pixel centres (PyTorch's interpolate with
 * align_corners=False, TensorFlow's resize with half_pixel_centers): output
 * pixel y reads source coordinate (y + 0.5) / s - 0.5, clamped at the
 * borders. s = 1 copies. */
static void s2_upsample(float *dst, const uint8_t *src, int s)
{
    const int S = IMG * s;
    for (int y = 0; y < S; y++) {
        float fy = ((float)y + 0.5f) / (float)s - 0.5f;
        if (fy < 0.0f) fy = 0.0f;
        const int y0 = (int)fy, y1 = y0 + 1 < IMG ? y0 + 1 : IMG - 1;
        const float wy = fy - (float)y0;
        for (int x = 0; x < S; x++) {
            float fx = ((float)x + 0.5f) / (float)s - 0.5f;
            if (fx < 0.0f) fx = 0.0f;
            const int x0 = (int)fx, x1 = x0 + 1 < IMG ? x0 + 1 : IMG - 1;
            const float wx = fx - (float)x0;
            const float top = (1.0f - wx) * src[y0 * IMG + x0] + wx * src[y0 * IMG + x1];
            const float bot = (1.0f - wx) * src[y1 * IMG + x0] + wx * src[y1 * IMG + x1];
            dst[(size_t)y * S + x] = ((1.0f - wy) * top + wy * bot) * (1.0f / 255.0f);
        }
    }
}

/* dst = images idx[0..n) (or first..first+n-1 when idx is NULL) of a byte
 * set, upsampled by s; labels to lab. */
static void s2_fill(float *dst, int *lab, const uint8_t *images, const uint8_t *labels,
                    const int *idx, int first, int n, int s)
{
    const size_t S2 = (size_t)IMG * s * IMG * s;
    for (int i = 0; i < n; i++) {
        const int k = idx ? idx[i] : first + i;
        s2_upsample(dst + (size_t)i * S2, images + (size_t)k * IMG * IMG, s);
        lab[i] = labels[k];
    }
}

/* Eval-mode mean loss and accuracy on the first n test images of d at
 * resolution s, upsampled CHUNK images at a time into buf/lab. */
static nn_status s2_test(nn_model *m, const nn_mnist *d, int n, int s, float *buf, int *lab,
                         double *loss, double *acc)
{
    const int S = IMG * s, shape[3] = {S, S, 1};
    double l_sum = 0.0, a_sum = 0.0;
    for (int first = 0; first < n; first += CHUNK) {
        const int b = n - first < CHUNK ? n - first : CHUNK;
        s2_fill(buf, lab, d->test_images, d->test_labels, NULL, first, b, s);
        nn_dataset ds;
        NN_TRY(nn_dataset_init_f32(&ds, buf, b, 3, shape));
        NN_TRY(nn_dataset_set_labels_int(&ds, lab));
        double l, a;
        NN_TRY(nn_model_evaluate(m, &ds, 250, NULL, &l, &a));
        l_sum += l * b;
        a_sum += a * b;
    }
    *loss = l_sum / n;
    *acc = a_sum / n;
    return NN_OK;
}

/* ---------------------------------------------------------- the mechanism */

/* Sum of squares of a - b over n values (b NULL: of a). */
static double s2_sq(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (b ? (double)b[i] : 0.0);
        s += d * d;
    }
    return s;
}

/* Runs layers first..n_layers-1 of m in eval mode from x; *y in g's arena. */
static nn_status s2_rest(nn_model *m, nn_graph *g, int first, tensor *x, tensor **y)
{
    for (int i = first; i < m->n_layers; i++)
        NN_TRY(nn_layer_forward(m->layers[i], g, i == first ? x : *y, y, 0));
    return NN_OK;
}

/* The measurement described at the top, on model m (no dropout) at
 * resolution s over `images` (n, S, S, 1), in batches of B. */
static nn_status s2_probe_run(nn_model *m, const s2_cfg *cfg, const float *images, int n, int s,
                              uint64_t seed, s2_probe *p)
{
    enum { B = 32 };
    const int S = IMG * s, C1 = cfg->c1;
    const size_t S2 = (size_t)S * S, na = (size_t)B * S2 * C1;
    nn_graph *g = nn_model_graph(m);
    nn_model *lm = NULL; /* holds the linear copy of conv2d_2 and its kernel */
    nn_layer *lin = NULL, *drop[N_KINDS] = {NULL, NULL};
    float *a = malloc(na * sizeof *a), *y0 = NULL, *z0 = malloc((size_t)B * 10 * sizeof *z0);
    char cfgtext[256];
    nn_status st = (!a || !z0) ? nn_error(NN_ERR_MEMORY, "s2_probe_run: out of memory") : NN_OK;
    /* conv2d_2 as a plain linear map: its kernel, no bias, no ReLU. */
    snprintf(cfgtext, sizeof cfgtext, "filters=%d kernel_size=3 padding=same strides=2 "
             "use_bias=false data_format=channels_last", cfg->c2);
    const int ashape[3] = {S, S, C1};
    if (st == NN_OK) {
        lm = nn_model_create(0);
        st = lm ? nn_model_add(lm, "conv2d", cfgtext) : NN_ERR_MEMORY;
        if (st == NN_OK) st = nn_model_build(lm, 3, ashape);
    }
    if (st == NN_OK) {
        lin = lm->layers[0];
        const nn_layer *c2 = m->layers[1];
        const tensor *k = lin->params[0].t;
        if (strcmp(c2->type->name, "conv2d") || k->size != c2->params[0].t->size)
            st = nn_error(NN_ERR_STATE, "s2_probe_run: layer 2 is not the expected conv2d");
        else
            memcpy(k->data, c2->params[0].t->data, k->size * sizeof(float));
    }
    for (int k = 0; st == NN_OK && k < N_KINDS; k++) {
        snprintf(cfgtext, sizeof cfgtext, "rate=%g seed=%llu%s", (double)cfg->rate,
                 (unsigned long long)tensor_hash3(seed, TAG_PROBE, (uint64_t)k),
                 k == K_SPATIAL ? " data_format=channels_last" : "");
        drop[k] = nn_layer_create(k == K_SPATIAL ? "spatial_dropout2d" : "dropout", cfgtext);
        st = drop[k] ? nn_layer_build(drop[k], 3, ashape) : NN_ERR_MEMORY;
    }
    study_corr cin = {0, 0, 0, 0, 0, 0}, cact = {0, 0, 0, 0, 0, 0};
    double sig_a = 0.0, sig_y = 0.0, sig_z = 0.0;
    double n_a[N_KINDS] = {0}, n_y[N_KINDS] = {0}, n_z[N_KINDS] = {0};
    size_t ny = 0;
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    for (int first = 0; st == NN_OK && first < n; first += B) {
        const int b = n - first < B ? n - first : B;
        const int xs[4] = {b, S, S, 1};
        tensor *x = tensor_wrap((float *)images + (size_t)first * S2, 4, xs), *t = NULL, *y = NULL;
        if (!x) {
            st = NN_ERR_MEMORY;
            break;
        }
        study_corr_add_nhwc(&cin, x->data, b, S, S, 1);
        st = nn_layer_forward(m->layers[0], g, x, &t, 0);
        tensor_free(x);
        if (st != NN_OK) break;
        const size_t nab = (size_t)b * S2 * C1;
        memcpy(a, t->data, nab * sizeof *a);
        study_corr_add_nhwc(&cact, a, b, S, S, C1);
        nn_graph_reset(g);
        const int as[4] = {b, S, S, C1};
        tensor *at = tensor_wrap(a, 4, as);
        if (!at) {
            st = NN_ERR_MEMORY;
            break;
        }
        st = nn_layer_forward(lin, g, at, &y, 0);
        if (st == NN_OK && !y0) {
            ny = (size_t)y->size / (size_t)b * B;
            y0 = malloc(ny * sizeof *y0);
            if (!y0) st = nn_error(NN_ERR_MEMORY, "s2_probe_run: out of memory");
        }
        const size_t nyb = st == NN_OK ? (size_t)y->size : 0;
        if (st == NN_OK) memcpy(y0, y->data, nyb * sizeof *y0);
        if (st == NN_OK) st = s2_rest(m, g, 1, at, &y);
        if (st == NN_OK) memcpy(z0, y->data, (size_t)b * 10 * sizeof *z0);
        nn_graph_reset(g);
        sig_a += s2_sq(a, NULL, nab);
        sig_y += s2_sq(y0, NULL, nyb);
        sig_z += s2_sq(z0, NULL, (size_t)b * 10);
        for (int k = 0; st == NN_OK && k < N_KINDS; k++)
            for (int j = 0; st == NN_OK && j < cfg->probe_masks; j++) {
                tensor *am = NULL;
                st = nn_layer_forward(drop[k], g, at, &am, 1);
                if (st == NN_OK) n_a[k] += s2_sq(am->data, a, nab);
                if (st == NN_OK) st = nn_layer_forward(lin, g, am, &y, 0);
                if (st == NN_OK) n_y[k] += s2_sq(y->data, y0, nyb);
                if (st == NN_OK) st = s2_rest(m, g, 1, am, &y);
                if (st == NN_OK) n_z[k] += s2_sq(y->data, z0, (size_t)b * 10);
                nn_graph_reset(g);
            }
        tensor_free(at);
    }
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    if (st == NN_OK) {
        p->corr_input = study_corr_value(&cin);
        p->corr_act = study_corr_value(&cact);
        const double J = cfg->probe_masks;
        for (int k = 0; k < N_KINDS; k++) {
            p->noise_in[k] = n_a[k] / J / sig_a;
            p->noise_out[k] = n_y[k] / J / sig_y;
            p->noise_logits[k] = n_z[k] / J / sig_z;
        }
    }
    nn_model_free(lm);
    for (int k = 0; k < N_KINDS; k++) nn_layer_free(drop[k]);
    free(a);
    free(y0);
    free(z0);
    return st;
}

/* The conv2d_1 maps of test image 0 at resolution s, as block `row` of
 * maps.png (see dropout_study_maps.h). */
enum { MAPS_SHOWN = 6, MAPS_TILE = 112, MAPS_GAP = 6, MAPS_SEP = 18 };
static nn_status s2_maps(study_canvas *cv, int row, nn_model *m, const float *img, int s,
                         uint64_t seed, int *pick)
{
    const int S = IMG * s, xs[4] = {1, S, S, 1};
    nn_graph *g = nn_model_graph(m);
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    tensor *x = tensor_wrap((float *)img, 4, xs), *a = NULL;
    nn_status st = x ? nn_layer_forward(m->layers[0], g, x, &a, 0) : NN_ERR_MEMORY;
    tensor_free(x);
    if (st == NN_OK) {
        const maps_block b = {MAPS_GAP, MAPS_GAP + row * (3 * (MAPS_TILE + MAPS_GAP) + MAPS_SEP),
                              MAPS_TILE, MAPS_GAP, MAPS_SHOWN};
        st = maps_draw(cv, &b, img, S, S, a->data, a->shape[1], a->shape[2], a->shape[3],
                       MAPS_RATE, tensor_hash3(seed, TAG_MAPS, (uint64_t)s), pick);
    }
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    return st;
}

/* ------------------------------------------------------------------- one cell */

typedef struct s2_work {
    const s2_cfg *cfg;
    const nn_mnist *data;
    float *train;   /* (n_train, S, S, 1) at the largest resolution */
    int *train_lab;
    float *buf;     /* (CHUNK, S, S, 1) */
    int *lab;
} s2_work;

/* Trains the network of `variant` at resolution s from seed on the
 * upsampled training images w->train, checks its initial parameters against
 * ref (the no-dropout network's, NULL for that network itself), and
 * evaluates it. *out_model gets the trained model when not NULL. */
static nn_status s2_train(s2_work *w, int s, int variant, uint64_t seed, const nn_model *ref,
                          s2_run *r, nn_model **out_model)
{
    const s2_cfg *cfg = w->cfg;
    const double t0 = study_now();
    nn_model *m = NULL;
    NN_TRY(s2_model(&m, cfg, s, variant, seed));
    if (ref && (m->n_params != ref->n_params ||
                memcmp(m->params, ref->params, m->n_params * sizeof(float)) != 0)) {
        nn_model_free(m);
        return nn_error(NN_ERR_STATE, "seed %llu, x%d, %s: the initial parameters differ from the "
                        "no-dropout network's, so the variants are not paired",
                        (unsigned long long)seed, s, variant_name[variant]);
    }
    const int S = IMG * s, shape[3] = {S, S, 1};
    optim *opt = optim_adam_create(cfg->lr, 0.9f, 0.999f, 1e-7f, 0.0f, 0);
    nn_dataset train;
    nn_status st = opt ? NN_OK : NN_ERR_MEMORY;
    if (st == NN_OK) st = nn_dataset_init_f32(&train, w->train, cfg->n_train, 3, shape);
    if (st == NN_OK) st = nn_dataset_set_labels_int(&train, w->train_lab);
    nn_fit_options o = nn_fit_defaults();
    o.epochs = cfg->epochs;
    o.batch = cfg->batch;
    o.shuffle_seed = tensor_hash3(seed, TAG_ORDER, (uint64_t)cfg->n_train);
    if (st == NN_OK) st = nn_model_fit(m, opt, &train, &o, NULL);
    if (st == NN_OK) st = nn_model_evaluate(m, &train, 250, NULL, &r->train_loss, &r->train_acc);
    if (st == NN_OK)
        st = s2_test(m, w->data, cfg->n_test, s, w->buf, w->lab, &r->test_loss, &r->test_acc);
    r->seconds = study_now() - t0;
    optim_free(opt);
    if (st == NN_OK && out_model)
        *out_model = m;
    else
        nn_model_free(m);
    return st;
}

/* ------------------------------------------------------------------ output */

static void s2_json_run(FILE *f, const s2_cfg *cfg, int d, int ri, int v, int seed, const s2_run *r)
{
    fprintf(f, "{\"kind\": \"train\", \"dataset\": \"%s\", \"upsample\": %d, \"size\": %d, "
            "\"variant\": \"%s\", \"rate\": %g, \"seed\": %d, \"n_train\": %d, \"n_test\": %d, "
            "\"epochs\": %d, \"batch\": %d, \"lr\": %g, \"filters\": [%d, %d], ",
            data_key[d], res_factor[ri], IMG * res_factor[ri], variant_name[v],
            v == V_NONE ? 0.0 : (double)cfg->rate, seed, cfg->n_train, cfg->n_test, cfg->epochs,
            cfg->batch, (double)cfg->lr, cfg->c1, cfg->c2);
    fputs("\"train_acc\": ", f), json_num(f, r->train_acc);
    fputs(", \"train_loss\": ", f), json_num(f, r->train_loss);
    fputs(", \"test_acc\": ", f), json_num(f, r->test_acc);
    fputs(", \"test_loss\": ", f), json_num(f, r->test_loss);
    fputs(", \"gap_acc\": ", f), json_num(f, r->train_acc - r->test_acc);
    fprintf(f, ", \"seconds\": %.2f}\n", r->seconds);
}

static void s2_json_probe(FILE *f, const s2_cfg *cfg, int d, int ri, int seed, const s2_probe *p)
{
    fprintf(f, "{\"kind\": \"probe\", \"dataset\": \"%s\", \"upsample\": %d, \"size\": %d, "
            "\"rate\": %g, \"seed\": %d, \"images\": %d, \"masks\": %d, ",
            data_key[d], res_factor[ri], IMG * res_factor[ri], (double)cfg->rate, seed,
            cfg->probe_images, cfg->probe_masks);
    fputs("\"corr_input\": ", f), json_num(f, p->corr_input);
    fputs(", \"corr_conv2d_1\": ", f), json_num(f, p->corr_act);
    static const char *const kn[N_KINDS] = {"elementwise", "spatial"};
    for (int k = 0; k < N_KINDS; k++) {
        fprintf(f, ", \"%s\": {\"noise_in\": ", kn[k]), json_num(f, p->noise_in[k]);
        fputs(", \"noise_out\": ", f), json_num(f, p->noise_out[k]);
        fputs(", \"noise_logits\": ", f), json_num(f, p->noise_logits[k]);
        fputc('}', f);
    }
    fputs("}\n", f);
}

/* Mean and sd over seeds of one probe field. */
enum { P_CORR_IN, P_CORR_ACT, P_IN, P_OUT, P_LOGITS, P_SURVIVE };
static double probe_field(const s2_probe *p, int f, int k)
{
    switch (f) {
    case P_CORR_IN: return p->corr_input;
    case P_CORR_ACT: return p->corr_act;
    case P_IN: return p->noise_in[k];
    case P_OUT: return p->noise_out[k];
    case P_LOGITS: return p->noise_logits[k];
    default: return p->noise_out[k] / p->noise_in[k];
    }
}

static void probe_values(const s2_results *R, int seeds, int d, int ri, int f, int k, double *v)
{
    for (int s = 0; s < seeds; s++) v[s] = probe_field(&R->probe[d][ri][s], f, k);
}

enum { F_TEST_ACC, F_TRAIN_ACC, F_GAP, F_TEST_LOSS };
static double run_field(const s2_run *r, int f)
{
    switch (f) {
    case F_TEST_ACC: return 100.0 * r->test_acc;
    case F_TRAIN_ACC: return 100.0 * r->train_acc;
    case F_GAP: return 100.0 * (r->train_acc - r->test_acc);
    default: return r->test_loss;
    }
}

static void run_values(const s2_results *R, int seeds, int d, int ri, int v, int f, double *out)
{
    for (int s = 0; s < seeds; s++) out[s] = run_field(&R->run[d][ri][v][s], f);
}

static void run_diff(const s2_results *R, int seeds, int d, int ri, int a, int b, int f, double *out)
{
    for (int s = 0; s < seeds; s++)
        out[s] = run_field(&R->run[d][ri][a][s], f) - run_field(&R->run[d][ri][b][s], f);
}

static void print_probe(const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    printf("\nThe mechanism: relative noise E||m.a - a||² / ||a||² put in by dropout at rate %g "
           "(a = conv2d_1's output), what of it reaches conv2d_2's linear output "
           "(E||W(m.a) - Wa||² / ||Wa||², kernel only) and the logits; %d masks per kind on the "
           "first %d test images; networks trained without dropout, mean ± sd over %d seeds. "
           "r: Pearson correlation of horizontally adjacent values. Surviving = out / in.\n\n",
           (double)cfg->rate, cfg->probe_masks, cfg->probe_images, n);
    printf("| data | size | r input | r conv2d_1 | kind | noise in | noise out (conv2d_2) | "
           "surviving | noise at logits |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n");
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++)
            for (int k = 0; k < N_KINDS; k++) {
                printf("| %s | %d ", data_name[d], IMG * res_factor[ri]);
                for (int f = P_CORR_IN; f <= P_CORR_ACT; f++) {
                    probe_values(R, n, d, ri, f, 0, v);
                    if (k == 0)
                        printf("| %.3f ± %.3f ", study_mean(v, n), study_sd(v, n));
                    else
                        printf("| ");
                }
                printf("| %s ", k == K_ELEMENT ? "element-wise" : "spatial");
                const int fs[4] = {P_IN, P_OUT, P_SURVIVE, P_LOGITS};
                for (int i = 0; i < 4; i++) {
                    probe_values(R, n, d, ri, fs[i], k, v);
                    printf("| %.4f ± %.4f ", study_mean(v, n), study_sd(v, n));
                }
                printf("|\n");
            }
    }
}

static void print_table(const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    printf("\nMean ± sd over %d seeds; %d training images, %d epochs, dropout after conv2d_1 at "
           "rate %g; test accuracy on the first %d test images, train accuracy in eval mode on "
           "the training subset; gap = train − test in percentage points.\n\n", n, cfg->n_train,
           cfg->epochs, (double)cfg->rate, cfg->n_test);
    printf("| data | size | dropout | test acc %% | train acc %% | gap (pp) | test loss |\n"
           "|---|---:|---|---:|---:|---:|---:|\n");
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++)
            for (int var = 0; var < N_VARIANTS; var++) {
                printf("| %s | %d | %s ", data_name[d], IMG * res_factor[ri], variant_name[var]);
                for (int f = F_TEST_ACC; f <= F_TEST_LOSS; f++) {
                    run_values(R, n, d, ri, var, f, v);
                    printf(f == F_TEST_LOSS ? "| %.3f ± %.3f " : "| %.2f ± %.2f ",
                           study_mean(v, n), study_sd(v, n));
                }
                printf("|\n");
            }
    }
}

static void print_paired(const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double d_[MAX_SEEDS];
    char a[80], b[80], c[80], e[80];
    printf("\nPaired differences (same seed: same subset, data order and initial weights), mean "
           "± sd over seeds in percentage points; t is the paired t statistic, * marks |t| > "
           "%.3f (two-sided 95 %%, %d degrees of freedom).\n\n", study_t_crit(n - 1), n - 1);
    printf("| data | size | test: element-wise − none | test: spatial − none | test: spatial − "
           "element-wise | gap: spatial − element-wise |\n|---|---:|---:|---:|---:|---:|\n");
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++) {
            run_diff(R, n, d, ri, V_ELEMENT, V_NONE, F_TEST_ACC, d_), study_fmt_diff(a, sizeof a, d_, n);
            run_diff(R, n, d, ri, V_SPATIAL, V_NONE, F_TEST_ACC, d_), study_fmt_diff(b, sizeof b, d_, n);
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_TEST_ACC, d_), study_fmt_diff(c, sizeof c, d_, n);
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_GAP, d_), study_fmt_diff(e, sizeof e, d_, n);
            printf("| %s | %d | %s | %s | %s | %s |\n", data_name[d], IMG * res_factor[ri], a, b,
                   c, e);
        }
    }
}

/* What the numbers say; every sentence is computed from the tables. */
static void print_reading(const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    const double tc = study_t_crit(n - 1);
    double v[MAX_SEEDS], u[MAX_SEEDS];
    printf("\nWhat the numbers say (a paired difference counts when |t| > %.3f):\n", tc);
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        double surv[N_KINDS][N_RES], r[N_RES];
        for (int ri = 0; ri < N_RES; ri++) {
            probe_values(R, n, d, ri, P_CORR_ACT, 0, v), r[ri] = study_mean(v, n);
            for (int k = 0; k < N_KINDS; k++)
                probe_values(R, n, d, ri, P_SURVIVE, k, v), surv[k][ri] = study_mean(v, n);
        }
        printf("- %s, mechanism: as conv2d_1's neighbour correlation goes %.3f -> %.3f -> %.3f "
               "(28, 56, 112 px), the share of element-wise noise surviving conv2d_2 goes "
               "%.3f -> %.3f -> %.3f and of spatial noise %.3f -> %.3f -> %.3f.\n",
               data_name[d], r[0], r[1], r[2], surv[0][0], surv[0][1], surv[0][2], surv[1][0],
               surv[1][1], surv[1][2]);
        for (int ri = 0; ri < N_RES; ri++) {
            double acc[N_VARIANTS], gap[N_VARIANTS];
            int best = 0;
            for (int var = 0; var < N_VARIANTS; var++) {
                run_values(R, n, d, ri, var, F_TEST_ACC, v), acc[var] = study_mean(v, n);
                run_values(R, n, d, ri, var, F_GAP, v), gap[var] = study_mean(v, n);
                if (acc[var] > acc[best]) best = var;
            }
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_TEST_ACC, v);
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_GAP, u);
            const double t = study_paired_t(v, n), tg = study_paired_t(u, n);
            printf("  - %d px: highest mean test accuracy %s (none %.2f %%, element-wise %.2f, "
                   "spatial %.2f); spatial − element-wise %+.2f ± %.2f pp (%s); gap none %.2f, "
                   "element-wise %.2f, spatial %.2f pp, spatial − element-wise %+.2f ± %.2f (%s).\n",
                   IMG * res_factor[ri], variant_name[best], acc[0], acc[1], acc[2],
                   study_mean(v, n), study_sd(v, n),
                   fabs(t) > tc ? "beyond the seed spread" : "within the seed spread", gap[0],
                   gap[1], gap[2], study_mean(u, n), study_sd(u, n),
                   fabs(tg) > tc ? "beyond the spread" : "within the spread");
        }
    }
}

/* noise.dat: per data set a block, per resolution a row: size, then mean
 * and sd over seeds of r conv2d_1, surviving element-wise, surviving
 * spatial, noise out element-wise, noise out spatial, noise at the logits
 * element-wise, spatial. accuracy.dat: per data
 * set a block, per resolution a row: size, then per variant mean and sd of
 * test accuracy and of the gap. Titles: one line per block. */
static nn_status write_dat(const s2_results *R, const s2_cfg *cfg)
{
    char path[2][1024], tmp[2][1040];
    static const char *const names[2] = {"noise.dat", "accuracy.dat"};
    FILE *f[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", cfg->out_dir, names[i]);
        snprintf(tmp[i], sizeof tmp[i], "%s.tmp", path[i]);
        f[i] = fopen(tmp[i], "w");
    }
    if (!f[0] || !f[1]) {
        for (int i = 0; i < 2; i++)
            if (f[i]) fclose(f[i]);
        return nn_error(NN_ERR_IO, "%s: cannot create: %s", cfg->out_dir, strerror(errno));
    }
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    int blocks = 0;
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        if (blocks++)
            for (int i = 0; i < 2; i++) fputs("\n\n", f[i]);
        fprintf(f[0], "# %s: size r_conv2d_1 sd surviving_elementwise sd surviving_spatial sd "
                "noise_out_elementwise sd noise_out_spatial sd noise_logits_elementwise sd "
                "noise_logits_spatial sd (mean, sd over %d seeds)\n",
                data_name[d], n);
        fprintf(f[1], "# %s: size, then for none, elementwise, spatial: test_acc sd gap sd "
                "(%%, mean and sd over %d seeds)\n", data_name[d], n);
        for (int ri = 0; ri < N_RES; ri++) {
            fprintf(f[0], "%d", IMG * res_factor[ri]);
            const int fs[7][2] = {{P_CORR_ACT, 0}, {P_SURVIVE, K_ELEMENT}, {P_SURVIVE, K_SPATIAL},
                                  {P_OUT, K_ELEMENT}, {P_OUT, K_SPATIAL}, {P_LOGITS, K_ELEMENT},
                                  {P_LOGITS, K_SPATIAL}};
            for (int i = 0; i < 7; i++) {
                probe_values(R, n, d, ri, fs[i][0], fs[i][1], v);
                fprintf(f[0], " %.6g %.6g", study_mean(v, n), study_sd(v, n));
            }
            fputc('\n', f[0]);
            fprintf(f[1], "%d", IMG * res_factor[ri]);
            for (int var = 0; var < N_VARIANTS; var++)
                for (int fld = F_TEST_ACC; fld <= F_GAP; fld += F_GAP - F_TEST_ACC) {
                    run_values(R, n, d, ri, var, fld, v);
                    fprintf(f[1], " %.6g %.6g", study_mean(v, n), study_sd(v, n));
                }
            fputc('\n', f[1]);
        }
    }
    nn_status st = NN_OK;
    for (int i = 0; i < 2; i++) {
        const int bad = ferror(f[i]);
        if ((fclose(f[i]) != 0 || bad) && st == NN_OK)
            st = nn_error(NN_ERR_IO, "%s: write error", tmp[i]);
        if (st == NN_OK) st = study_rename(tmp[i], path[i]);
    }
    return st;
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dropout_study2 [--quick] [--data DIR] [--fashion DIR] [--no-fashion]\n"
            "                      [--out DIR] [--seeds N] [--epochs N] [--train N] [--test N]\n"
            "                      [--rate R] [--filters C1,C2] [--threads N]\n"
            "  --quick        fewer seeds, images and epochs: about 3 min\n"
            "  --data DIR     MNIST files (default .cache/mnist)\n"
            "  --fashion DIR  Fashion-MNIST files (default /usr/share/datasets/fashion-mnist)\n"
            "  --no-fashion   MNIST only\n"
            "  --out DIR      results (default build/study2)\n"
            "  --seeds N      paired seeds (default 5; quick 3)\n"
            "  --epochs N     epochs (default 8; quick 6)\n"
            "  --train N      training images per seed (default 1000; quick 200)\n"
            "  --test N       test images evaluated (default 5000; quick 500)\n"
            "  --rate R       dropout rate of both kinds (default 0.3)\n"
            "  --filters A,B  conv2d_1 and conv2d_2 filters (default 8,16)\n"
            "  --threads N    threads (default: OpenMP's)\n");
}

int main(int argc, char **argv)
{
    s2_cfg cfg = {.data_dir = {".cache/mnist", "/usr/share/datasets/fashion-mnist"},
                  .out_dir = "build/study2", .use = {1, 1}, .seeds = -1, .epochs = -1,
                  .n_train = -1, .n_test = -1, .batch = 32, .c1 = 8, .c2 = 16,
                  .probe_images = -1, .probe_masks = 16, .lr = 1e-3f, .rate = 0.3f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--quick")) cfg.quick = 1;
        else if (!strcmp(a, "--no-fashion")) cfg.use[D_FASHION] = 0;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!v) ok = 0;
        else if (!strcmp(a, "--data")) cfg.data_dir[D_MNIST] = v, i++;
        else if (!strcmp(a, "--fashion")) cfg.data_dir[D_FASHION] = v, i++;
        else if (!strcmp(a, "--out")) cfg.out_dir = v, i++;
        else if (!strcmp(a, "--seeds")) ok = parse_int(v, 2, MAX_SEEDS, &cfg.seeds), i++;
        else if (!strcmp(a, "--epochs")) ok = parse_int(v, 1, 1000, &cfg.epochs), i++;
        else if (!strcmp(a, "--train")) ok = parse_int(v, 10, 60000, &cfg.n_train), i++;
        else if (!strcmp(a, "--test")) ok = parse_int(v, 10, 10000, &cfg.n_test), i++;
        else if (!strcmp(a, "--threads")) ok = parse_int(v, 1, 256, &cfg.threads), i++;
        else if (!strcmp(a, "--filters")) {
            ok = sscanf(v, "%d,%d", &cfg.c1, &cfg.c2) == 2 && cfg.c1 >= 1 && cfg.c1 <= 256 &&
                 cfg.c2 >= 1 && cfg.c2 <= 256;
            i++;
        } else if (!strcmp(a, "--rate")) {
            char *end;
            cfg.rate = strtof(v, &end);
            ok = *end == '\0' && end != v && cfg.rate > 0.0f && cfg.rate < 1.0f;
            i++;
        } else ok = 0;
        if (!ok) {
            fprintf(stderr, "dropout_study2: bad or incomplete option '%s%s%s'\n", a, v ? " " : "",
                    v ? v : "");
            usage(stderr);
            return 2;
        }
    }
    if (cfg.seeds < 0) cfg.seeds = cfg.quick ? 3 : 5;
    if (cfg.epochs < 0) cfg.epochs = cfg.quick ? 6 : 8;
    if (cfg.n_train < 0) cfg.n_train = cfg.quick ? 200 : 1000;
    if (cfg.n_test < 0) cfg.n_test = cfg.quick ? 500 : 5000;
    if (cfg.probe_images < 0) cfg.probe_images = cfg.quick ? 32 : 128;
    if (cfg.threads && nn_set_threads(cfg.threads) != NN_OK) {
        fprintf(stderr, "dropout_study2: %s\n", nn_last_error());
        return 2;
    }

    nn_mnist data[N_DATA];
    memset(data, 0, sizeof data);
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg.use[d]) continue;
        if (nn_mnist_load(cfg.data_dir[d], &data[d]) != NN_OK) {
            fprintf(stderr, "dropout_study2: %s: %s\n(%s)\n", data_name[d], nn_last_error(),
                    d == D_MNIST ? "run `make mnist-data` first"
                                 : "install Debian's dataset-fashion-mnist, or pass --no-fashion");
            for (int k = 0; k < d; k++) nn_mnist_free(&data[k]);
            return 1;
        }
        if (data[d].rows != IMG || data[d].cols != IMG || data[d].n_train < cfg.n_train ||
            data[d].n_test < cfg.n_test) {
            fprintf(stderr, "dropout_study2: %s: expected 28x28 images, at least %d training and "
                    "%d test images\n", data_name[d], cfg.n_train, cfg.n_test);
            for (int k = 0; k <= d; k++) nn_mnist_free(&data[k]);
            return 1;
        }
    }
    const int Smax = IMG * res_factor[N_RES - 1];
    const size_t S2max = (size_t)Smax * Smax;
    nn_status st = study_mkdirs(cfg.out_dir);
    s2_results *R = calloc(1, sizeof *R);
    s2_work w = {&cfg, NULL, tensor_aligned_alloc((size_t)cfg.n_train * S2max * sizeof(float)),
                 malloc((size_t)cfg.n_train * sizeof(int)),
                 tensor_aligned_alloc((size_t)CHUNK * S2max * sizeof(float)),
                 malloc((size_t)CHUNK * sizeof(int))};
    float *probe_x = malloc((size_t)cfg.probe_images * S2max * sizeof(float));
    int *probe_lab = malloc((size_t)cfg.probe_images * sizeof(int));
    study_canvas cv = {0, 0, NULL};
    if (st == NN_OK && (!R || !w.train || !w.train_lab || !w.buf || !w.lab || !probe_x || !probe_lab))
        st = nn_error(NN_ERR_MEMORY, "dropout_study2: out of memory");
    if (st == NN_OK && cfg.use[D_MNIST])
        st = study_canvas_init(&cv, MAPS_GAP + (MAPS_SHOWN + 1) * (MAPS_TILE + MAPS_GAP),
                               MAPS_GAP + N_RES * (3 * (MAPS_TILE + MAPS_GAP) + MAPS_SEP) - MAPS_SEP,
                               255, 255, 255);
    char jpath[1024], jtmp[1040], mpath[1024];
    snprintf(jpath, sizeof jpath, "%s/results.jsonl", cfg.out_dir);
    snprintf(jtmp, sizeof jtmp, "%s.tmp", jpath);
    snprintf(mpath, sizeof mpath, "%s/maps.png", cfg.out_dir);
    FILE *jf = st == NN_OK ? fopen(jtmp, "w") : NULL;
    if (st == NN_OK && !jf) st = nn_error(NN_ERR_IO, "%s: cannot create: %s", jtmp, strerror(errno));

    int n_data = 0;
    for (int d = 0; d < N_DATA; d++) n_data += cfg.use[d];
    const int n_runs = n_data * cfg.seeds * N_RES * N_VARIANTS;
    if (st == NN_OK) {
        printf("dropout study 2: %d data set(s) x %d seeds x %d resolutions x %d variants = %d "
               "runs; filters %d,%d; %d training images, %d epochs, Adam lr %g, batch %d, rate "
               "%g; %d test images\n", n_data, cfg.seeds, N_RES, N_VARIANTS, n_runs, cfg.c1,
               cfg.c2, cfg.n_train, cfg.epochs, (double)cfg.lr, cfg.batch, (double)cfg.rate,
               cfg.n_test);
        fflush(stdout);
    }
    const double t_start = study_now();
    double res_seconds[N_RES] = {0}, probe_seconds = 0.0;
    int done = 0, maps_pick[N_RES][MAPS_MAX];
    for (int d = 0; st == NN_OK && d < N_DATA; d++) {
        if (!cfg.use[d]) continue;
        w.data = &data[d];
        for (int sd = 0; st == NN_OK && sd < cfg.seeds; sd++) {
            const uint64_t seed = (uint64_t)sd + 1;
            int *subset = study_subset(data[d].n_train, cfg.n_train, seed);
            if (!subset) {
                st = nn_error(NN_ERR_MEMORY, "dropout_study2: out of memory");
                break;
            }
            for (int ri = 0; st == NN_OK && ri < N_RES; ri++) {
                const int s = res_factor[ri];
                s2_fill(w.train, w.train_lab, data[d].train_images, data[d].train_labels, subset,
                        0, cfg.n_train, s);
                nn_model *ref = NULL, *plain = NULL;
                st = s2_model(&ref, &cfg, s, V_NONE, seed);
                for (int var = 0; st == NN_OK && var < N_VARIANTS; var++) {
                    s2_run *r = &R->run[d][ri][var][sd];
                    st = s2_train(&w, s, var, seed, var == V_NONE ? NULL : ref, r,
                                  var == V_NONE ? &plain : NULL);
                    if (st != NN_OK) break;
                    s2_json_run(jf, &cfg, d, ri, var, (int)seed, r);
                    res_seconds[ri] += r->seconds;
                    done++;
                    const double el = study_now() - t_start;
                    printf("[%3d/%d] %-13s %3d px %-11s seed %llu: train %6.2f%%  test %6.2f%%  "
                           "gap %5.2f pp  (%.1f s, ETA %.0f s)\n", done, n_runs, data_name[d],
                           IMG * s, variant_name[var], (unsigned long long)seed,
                           100.0 * r->train_acc, 100.0 * r->test_acc,
                           100.0 * (r->train_acc - r->test_acc), r->seconds,
                           el / done * (n_runs - done));
                    fflush(stdout);
                }
                if (st == NN_OK) {
                    const double tp = study_now();
                    s2_fill(probe_x, probe_lab, data[d].test_images, data[d].test_labels, NULL, 0,
                            cfg.probe_images, s);
                    s2_probe *p = &R->probe[d][ri][sd];
                    st = s2_probe_run(plain, &cfg, probe_x, cfg.probe_images, s, seed, p);
                    if (st == NN_OK) s2_json_probe(jf, &cfg, d, ri, (int)seed, p);
                    if (st == NN_OK && d == D_MNIST && sd == 0)
                        st = s2_maps(&cv, ri, plain, probe_x, s, seed, maps_pick[ri]);
                    probe_seconds += study_now() - tp;
                    if (st == NN_OK)
                        printf("        probe %3d px: r conv2d_1 %.3f; surviving element-wise "
                               "%.3f, spatial %.3f (%.1f s)\n", IMG * s, p->corr_act,
                               p->noise_out[K_ELEMENT] / p->noise_in[K_ELEMENT],
                               p->noise_out[K_SPATIAL] / p->noise_in[K_SPATIAL],
                               study_now() - tp);
                }
                fflush(jf);
                nn_model_free(ref);
                nn_model_free(plain);
            }
            free(subset);
        }
    }
    if (jf) {
        const int bad = ferror(jf);
        if ((fclose(jf) != 0 || bad) && st == NN_OK) st = nn_error(NN_ERR_IO, "%s: write error", jtmp);
        if (st == NN_OK) st = study_rename(jtmp, jpath);
    }
    if (st == NN_OK) st = write_dat(R, &cfg);
    if (st == NN_OK && cv.rgb) st = study_canvas_write_png(&cv, mpath);
    if (st == NN_OK) {
        printf("\nAll %d runs in %.0f s (training and evaluation: %.0f s at 28 px, %.0f s at 56, "
               "%.0f s at 112; probes and pictures %.0f s). Initial parameters were "
               "bit-identical across the three variants for every seed and resolution "
               "(checked).\n", n_runs, study_now() - t_start, res_seconds[0], res_seconds[1],
               res_seconds[2], probe_seconds);
        print_probe(R, &cfg);
        print_table(R, &cfg);
        print_paired(R, &cfg);
        print_reading(R, &cfg);
        if (cv.rgb) {
            printf("\nmaps.png: MNIST test image 0 at 28, 56 and 112 px (one block each); "
                   "conv2d_1 maps");
            for (int ri = 0; ri < N_RES; ri++) {
                printf(ri ? ";" : "");
                for (int k = 0; k < (cfg.c1 < MAPS_SHOWN ? cfg.c1 : MAPS_SHOWN); k++)
                    printf(" %d", maps_pick[ri][k]);
            }
            printf(" (the most active) of the seed-1 networks trained without dropout; rows: "
                   "activation, element-wise, spatial dropout at rate %g, dropped values in "
                   "blue.\n", (double)MAPS_RATE);
        }
        printf("Wrote %s, %s/noise.dat, %s/accuracy.dat%s%s\n", jpath, cfg.out_dir, cfg.out_dir,
               cv.rgb ? ", " : "", cv.rgb ? mpath : "");
    }
    study_canvas_free(&cv);
    free(R);
    tensor_aligned_free(w.train);
    free(w.train_lab);
    tensor_aligned_free(w.buf);
    free(w.lab);
    free(probe_x);
    free(probe_lab);
    for (int d = 0; d < N_DATA; d++) nn_mnist_free(&data[d]);
    if (st != NN_OK) {
        fprintf(stderr, "dropout_study2: %s\n", nn_last_error());
        return 1;
    }
    return 0;
}
