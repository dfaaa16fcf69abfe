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
 * the dense layers. The receptive field therefore does not grow to match:
 * a conv2d_2 output sees 5x5 pixels at every size (5, 2.5, 1.25 pixels of
 * the original digit), and only the dense layers see the whole image. That
 * is the point: the claim is about a fixed kernel combining neighbours that
 * grow more alike. A kernel dilated by s would combine values s pixels
 * apart, as alike as neighbours at 28 px, and undo the change being
 * measured.
 *
 * 1. The mechanism. On each trained network without dropout, for a batch
 *    of test images: a = conv2d_1's output, m a mask of either kind at the
 *    study's rate. Over many masks, at each stage z after the dropout
 *    (conv2d_2 before and after its ReLU, max pooling, dense_1, the logits)
 *        noise = E ||z(m.a) - z(a)||^2 / ||z(a)||^2
 *    and the part of it that is a shift of the mean, ||E z(m.a) - z(a)||^2.
 *    The noise put in is the same at a; "surviving" is the noise after
 *    conv2d_2's kernel alone (W, no bias or ReLU) over the noise put in;
 *    next to it the Pearson correlation of horizontally adjacent values of
 *    a. As a control, the same conv2d_2 outputs are also pooled by their
 *    mean instead of their maximum (that stage only: the dense layers were
 *    trained on maxima).
 * 2. The outcome. No dropout, element-wise and spatial dropout after
 *    conv2d_1 at the same rate, trained with nn_model_fit on a random subset
 *    of the training images at each resolution, paired by seed (a seed
 *    fixes the subset, the data order and the initial weights of all three
 *    variants; the program checks the initial parameters are bit-identical),
 *    on MNIST and Fashion-MNIST; test accuracy and the train-test gap,
 *    evaluated in eval mode.
 *
 * Output (in --out, default build/study2): tables.md (every table and
 * figure, the same text as stdout's closing part), results.jsonl (one
 * object per training run and per probe), noise.dat, stages.dat and
 * accuracy.dat for examples/plot_study2.gp, maps.png (conv2d_1 maps of one
 * test digit at the three resolutions with both masks applied).
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
static const char *const variant_label[N_VARIANTS] = {"none", "element-wise", "spatial"};
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

/* The mechanism, on one trained network without dropout: the relative
 * noise at each stage after the dropout, in the network's order. At 28 px
 * there is no pooling, and both pooling stages are the ReLU output itself. */
enum { K_ELEMENT, K_SPATIAL, N_KINDS };
static const char *const kind_name[N_KINDS] = {"element-wise", "spatial"};
enum { ST_IN, ST_LIN, ST_PRE, ST_RELU, ST_POOL, ST_AVG, ST_DENSE1, ST_LOGITS, N_STAGES };
static const char *const stage_name[N_STAGES] = {
    "conv2d_1 output", "conv2d_2 kernel only", "conv2d_2 before ReLU", "conv2d_2 after ReLU",
    "max pooling", "average pooling instead", "dense_1 (ReLU)", "logits"};
static const char *const stage_key[N_STAGES] = {"in", "conv2d_2_kernel", "conv2d_2_pre",
                                                "conv2d_2_relu", "maxpool", "avgpool_control",
                                                "dense_1", "logits"};
typedef struct s2_probe {
    double corr_input, corr_act;    /* adjacent-pair correlation of the input, of conv2d_1's output */
    double noise[N_KINDS][N_STAGES]; /* E||z_m - z||^2 / ||z||^2 over masks m */
    double shift[N_KINDS][N_STAGES]; /* ||E z_m - z||^2 / ||z||^2: the part that moves the mean */
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

/* The network from conv2d_2 on, as the probe runs it: m's own layers, plus
 * conv2d_2 without its ReLU (lin, same kernel and bias) and an average
 * pooling of the same size as m's max pooling (avg, NULL at 28 px). */
typedef struct s2_net {
    nn_model *m;
    nn_layer *lin, *avg;
    int i_pool, i_flat; /* m's max pooling (-1: none) and flatten */
} s2_net;

/* Runs x (conv2d_1's output, masked or not) through s2_net in eval mode
 * and points z[st] (n[st] values, in g's arena) at each stage from ST_PRE
 * on; ST_IN and ST_LIN are the caller's. */
static nn_status s2_stages(const s2_net *net, nn_graph *g, tensor *x, const float *z[N_STAGES],
                           size_t n[N_STAGES])
{
    tensor *pre = NULL, *relu = NULL, *pool = NULL, *avg = NULL, *flat = NULL, *d1 = NULL,
           *out = NULL;
    nn_layer *const *L = net->m->layers;
    NN_TRY(nn_layer_forward(net->lin, g, x, &pre, 0));
    NN_TRY(nn_layer_forward(L[1], g, x, &relu, 0));
    pool = avg = relu;
    if (net->avg) {
        NN_TRY(nn_layer_forward(L[net->i_pool], g, relu, &pool, 0));
        NN_TRY(nn_layer_forward(net->avg, g, relu, &avg, 0));
    }
    NN_TRY(nn_layer_forward(L[net->i_flat], g, pool, &flat, 0));
    NN_TRY(nn_layer_forward(L[net->i_flat + 1], g, flat, &d1, 0));
    NN_TRY(nn_layer_forward(L[net->i_flat + 2], g, d1, &out, 0));
    const tensor *t[N_STAGES] = {NULL, NULL, pre, relu, pool, avg, d1, out};
    for (int st = ST_PRE; st < N_STAGES; st++) {
        z[st] = t[st]->data;
        n[st] = t[st]->size;
    }
    return NN_OK;
}

/* tot += ||z - z0||^2, sum[i] += z[i] - z0[i] over n values. */
static void s2_acc_add(double *tot, double *sum, const float *z, const float *z0, size_t n)
{
    double t = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)z[i] - (double)z0[i];
        t += d * d;
        sum[i] += d;
    }
    *tot += t;
}

/* The measurement described at the top, on model m (no dropout) at
 * resolution s over `images` (n, S, S, 1), in batches of B. Per stage z and
 * kind, over J masks m_j: noise = sum_j ||z_j - z||^2 / J / ||z||^2, and
 * shift = ||mean_j z_j - z||^2 less its expected excess from using J
 * masks only (the sample variance over masks / J), over ||z||^2. */
static nn_status s2_probe_run(nn_model *m, const s2_cfg *cfg, const float *images, int n, int s,
                              uint64_t seed, s2_probe *p)
{
    enum { B = 32 };
    const int S = IMG * s, C1 = cfg->c1, C2 = cfg->c2, J = cfg->probe_masks;
    const size_t S2 = (size_t)S * S, na = (size_t)B * S2 * C1;
    nn_graph *g = nn_model_graph(m);
    nn_model *lm = NULL; /* holds lin */
    s2_net net = {m, NULL, NULL, s > 1 ? 2 : -1, s > 1 ? 3 : 2};
    nn_layer *drop[N_KINDS] = {NULL, NULL};
    float *a = malloc(na * sizeof *a), *clean[N_STAGES] = {NULL};
    double *sum[N_STAGES] = {NULL};
    char cfgtext[256];
    nn_status st = !a ? nn_error(NN_ERR_MEMORY, "s2_probe_run: out of memory") : NN_OK;
    static const char *const want[6] = {"conv2d", "conv2d", "maxpool2d", "flatten", "dense",
                                        "dense"};
    for (int i = 0; st == NN_OK && i < 6; i++) {
        const int j = s > 1 || i < 2 ? i : i == 2 ? -1 : i - 1;
        if (j >= 0 && (j >= m->n_layers || strcmp(m->layers[j]->type->name, want[i])))
            st = nn_error(NN_ERR_STATE, "s2_probe_run: layer %d is not the expected %s", j,
                          want[i]);
    }
    /* conv2d_2 as a linear map: its kernel and bias, no ReLU. */
    snprintf(cfgtext, sizeof cfgtext, "filters=%d kernel_size=3 padding=same strides=2 "
             "data_format=channels_last", C2);
    const int ashape[3] = {S, S, C1};
    if (st == NN_OK) {
        lm = nn_model_create(0);
        st = lm ? nn_model_add(lm, "conv2d", cfgtext) : NN_ERR_MEMORY;
        if (st == NN_OK) st = nn_model_build(lm, 3, ashape);
    }
    const float *bias = NULL;
    if (st == NN_OK) {
        net.lin = lm->layers[0];
        const nn_layer *c2 = m->layers[1];
        for (int i = 0; i < 2; i++)
            memcpy(net.lin->params[i].t->data, c2->params[i].t->data,
                   c2->params[i].t->size * sizeof(float));
        bias = net.lin->params[1].t->data;
    }
    if (st == NN_OK && s > 1) {
        const int cshape[3] = {S / 2, S / 2, C2};
        snprintf(cfgtext, sizeof cfgtext, "pool_size=%d data_format=channels_last", s);
        net.avg = nn_layer_create("avgpool2d", cfgtext);
        st = net.avg ? nn_layer_build(net.avg, 3, cshape) : NN_ERR_MEMORY;
    }
    for (int k = 0; st == NN_OK && k < N_KINDS; k++) {
        snprintf(cfgtext, sizeof cfgtext, "rate=%g seed=%llu%s", (double)cfg->rate,
                 (unsigned long long)tensor_hash3(seed, TAG_PROBE, (uint64_t)k),
                 k == K_SPATIAL ? " data_format=channels_last" : "");
        drop[k] = nn_layer_create(k == K_SPATIAL ? "spatial_dropout2d" : "dropout", cfgtext);
        st = drop[k] ? nn_layer_build(drop[k], 3, ashape) : NN_ERR_MEMORY;
    }
    study_corr cin = {0, 0, 0, 0, 0, 0}, cact = {0, 0, 0, 0, 0, 0};
    double sig[N_STAGES] = {0}, tot[N_KINDS][N_STAGES] = {{0}}, sr[N_KINDS][N_STAGES] = {{0}};
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 0);
    for (int first = 0; st == NN_OK && first < n; first += B) {
        const int b = n - first < B ? n - first : B;
        const int xs[4] = {b, S, S, 1}, as[4] = {b, S, S, C1};
        tensor *x = tensor_wrap((float *)images + (size_t)first * S2, 4, xs), *t = NULL;
        if (!x) {
            st = NN_ERR_MEMORY;
            break;
        }
        study_corr_add_nhwc(&cin, x->data, b, S, S, 1);
        st = nn_layer_forward(m->layers[0], g, x, &t, 0);
        tensor_free(x);
        if (st != NN_OK) break;
        size_t len[N_STAGES];
        len[ST_IN] = (size_t)b * S2 * C1;
        memcpy(a, t->data, len[ST_IN] * sizeof *a);
        study_corr_add_nhwc(&cact, a, b, S, S, C1);
        nn_graph_reset(g);
        tensor *at = tensor_wrap(a, 4, as);
        if (!at) {
            st = NN_ERR_MEMORY;
            break;
        }
        const float *z[N_STAGES];
        st = s2_stages(&net, g, at, z, len);
        for (int q = ST_PRE; st == NN_OK && q < N_STAGES; q++) {
            if (!clean[q]) { /* sized by the first batch, the largest */
                clean[q] = malloc(len[q] * sizeof *clean[q]);
                sum[q] = malloc(len[q] * sizeof *sum[q]);
                if (!clean[q] || !sum[q]) st = nn_error(NN_ERR_MEMORY, "s2_probe_run: out of memory");
            }
            if (st == NN_OK) memcpy(clean[q], z[q], len[q] * sizeof *clean[q]);
        }
        if (st == NN_OK && !sum[ST_IN] && !(sum[ST_IN] = malloc(na * sizeof *sum[ST_IN])))
            st = nn_error(NN_ERR_MEMORY, "s2_probe_run: out of memory");
        nn_graph_reset(g);
        if (st == NN_OK) {
            sig[ST_IN] += s2_sq(a, NULL, len[ST_IN]);
            for (int q = ST_PRE; q < N_STAGES; q++) sig[q] += s2_sq(clean[q], NULL, len[q]);
            for (size_t i = 0; i < len[ST_PRE]; i++) {
                const double v = (double)clean[ST_PRE][i] - (double)bias[i % (size_t)C2];
                sig[ST_LIN] += v * v;
            }
        }
        for (int k = 0; st == NN_OK && k < N_KINDS; k++) {
            for (int q = 0; q < N_STAGES; q++)
                if (sum[q]) memset(sum[q], 0, len[q] * sizeof *sum[q]);
            for (int j = 0; st == NN_OK && j < J; j++) {
                tensor *am = NULL;
                st = nn_layer_forward(drop[k], g, at, &am, 1);
                if (st == NN_OK) {
                    s2_acc_add(&tot[k][ST_IN], sum[ST_IN], am->data, a, len[ST_IN]);
                    st = s2_stages(&net, g, am, z, len);
                }
                for (int q = ST_PRE; st == NN_OK && q < N_STAGES; q++)
                    s2_acc_add(&tot[k][q], sum[q], z[q], clean[q], len[q]);
                nn_graph_reset(g);
            }
            for (int q = 0; st == NN_OK && q < N_STAGES; q++) {
                if (q == ST_LIN) continue;
                double r = 0.0;
                for (size_t i = 0; i < len[q]; i++) r += (sum[q][i] / J) * (sum[q][i] / J);
                sr[k][q] += r;
            }
        }
        tensor_free(at);
    }
    nn_graph_reset(g);
    nn_graph_set_grad_enabled(g, 1);
    if (st == NN_OK) {
        p->corr_input = study_corr_value(&cin);
        p->corr_act = study_corr_value(&cact);
        for (int k = 0; k < N_KINDS; k++) {
            /* The kernel-only output differs from conv2d_2's by the bias
             * alone, so its differences are the same; its signal is not. */
            tot[k][ST_LIN] = tot[k][ST_PRE];
            sr[k][ST_LIN] = sr[k][ST_PRE];
            for (int q = 0; q < N_STAGES; q++) {
                p->noise[k][q] = tot[k][q] / J / sig[q];
                p->shift[k][q] = (sr[k][q] - (tot[k][q] - J * sr[k][q]) / ((double)J * (J - 1))) /
                                 sig[q];
            }
        }
    }
    nn_model_free(lm);
    nn_layer_free(net.avg);
    for (int k = 0; k < N_KINDS; k++) nn_layer_free(drop[k]);
    for (int q = 0; q < N_STAGES; q++) {
        free(clean[q]);
        free(sum[q]);
    }
    free(a);
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
        fprintf(f, ", \"%s\": {\"noise\": {", kn[k]);
        for (int q = 0; q < N_STAGES; q++)
            fprintf(f, "%s\"%s\": ", q ? ", " : "", stage_key[q]), json_num(f, p->noise[k][q]);
        fputs("}, \"shift\": {", f);
        for (int q = 0; q < N_STAGES; q++)
            fprintf(f, "%s\"%s\": ", q ? ", " : "", stage_key[q]), json_num(f, p->shift[k][q]);
        fputs("}}", f);
    }
    fputs("}\n", f);
}

/* One number per seed for the tables: f a P_ field, k a kind, q a stage. */
enum { P_CORR_IN, P_CORR_ACT, P_NOISE, P_SHIFT, P_SURVIVE, P_RATIO };
static double probe_field(const s2_probe *p, int f, int k, int q)
{
    switch (f) {
    case P_CORR_IN: return p->corr_input;
    case P_CORR_ACT: return p->corr_act;
    case P_NOISE: return p->noise[k][q];
    case P_SHIFT: return 100.0 * p->shift[k][q] / p->noise[k][q];
    case P_SURVIVE: return p->noise[k][ST_LIN] / p->noise[k][ST_IN];
    default:
        return (p->noise[K_SPATIAL][ST_LIN] / p->noise[K_SPATIAL][ST_IN]) /
               (p->noise[K_ELEMENT][ST_LIN] / p->noise[K_ELEMENT][ST_IN]);
    }
}

static void probe_values(const s2_results *R, int seeds, int d, int ri, int f, int k, int q,
                         double *v)
{
    for (int s = 0; s < seeds; s++) v[s] = probe_field(&R->probe[d][ri][s], f, k, q);
}

/* Per seed: the value at resolution rb less the value at ra. */
static void probe_diff(const s2_results *R, int seeds, int d, int ra, int rb, int f, int k, int q,
                       double *v)
{
    for (int s = 0; s < seeds; s++)
        v[s] = probe_field(&R->probe[d][rb][s], f, k, q) - probe_field(&R->probe[d][ra][s], f, k, q);
}

enum { F_TEST_ACC, F_TRAIN_ACC, F_GAP, F_TEST_LOSS, F_SECONDS };
static double run_field(const s2_run *r, int f)
{
    switch (f) {
    case F_TEST_ACC: return 100.0 * r->test_acc;
    case F_TRAIN_ACC: return 100.0 * r->train_acc;
    case F_GAP: return 100.0 * (r->train_acc - r->test_acc);
    case F_TEST_LOSS: return r->test_loss;
    default: return r->seconds;
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

/* "0.123 ± 0.045" with prec decimals. */
static const char *fmt_ms(char *buf, size_t n, const double *v, int seeds, int prec)
{
    snprintf(buf, n, "%.*f ± %.*f", prec, study_mean(v, seeds), prec, study_sd(v, seeds));
    return buf;
}

static void print_probe(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    char b[64];
    fprintf(f, "\n### The mechanism at the next convolution\n\nRelative noise E||m.a - a||² / "
            "||a||² put in by dropout at rate %g (a = conv2d_1's output), and the share of it "
            "that survives conv2d_2's kernel alone (E||W(m.a) - Wa||² / ||Wa||², no bias, no "
            "ReLU, divided by the noise put in); the relative noise at the logits z, E||z_m - "
            "z||² / ||z||²; %d masks per kind on the first %d test images; networks trained "
            "without dropout; mean ± sd over %d seeds. r: Pearson correlation of horizontally "
            "adjacent values.\n\n", (double)cfg->rate, cfg->probe_masks, cfg->probe_images, n);
    fprintf(f, "| data | size | r input | r conv2d_1 | noise in: element-wise | spatial | "
            "surviving conv2d_2: element-wise | spatial | spatial / element-wise | at the "
            "logits: element-wise | spatial |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++) {
            fprintf(f, "| %s | %d", data_name[d], IMG * res_factor[ri]);
            static const int cols[9][3] = {
                {P_CORR_IN, 0, 0},          {P_CORR_ACT, 0, 0},
                {P_NOISE, K_ELEMENT, ST_IN}, {P_NOISE, K_SPATIAL, ST_IN},
                {P_SURVIVE, K_ELEMENT, 0},  {P_SURVIVE, K_SPATIAL, 0},
                {P_RATIO, 0, 0},            {P_NOISE, K_ELEMENT, ST_LOGITS},
                {P_NOISE, K_SPATIAL, ST_LOGITS}};
            for (int c = 0; c < 9; c++) {
                probe_values(R, n, d, ri, cols[c][0], cols[c][1], cols[c][2], v);
                fprintf(f, " | %s", fmt_ms(b, sizeof b, v, n, cols[c][0] == P_RATIO ? 2 : 3));
            }
            fputs(" |\n", f);
        }
    }
}

/* The stages after the dropout, one row per data set, size and kind:
 * field P_NOISE or P_SHIFT. */
static void print_stages(FILE *f, const s2_results *R, const s2_cfg *cfg, int field)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    char b[64];
    static const int qs[7] = {ST_IN, ST_PRE, ST_RELU, ST_POOL, ST_AVG, ST_DENSE1, ST_LOGITS};
    if (field == P_NOISE)
        fprintf(f, "\n### Where the noise goes: relative noise at each stage\n\nE||z_m - z||² / "
                "||z||² at each stage z after the dropout (the same masks, networks and images "
                "as above), mean ± sd over %d seeds. Max pooling is the network's own (%d×%d at "
                "56 px, %d×%d at 112 px, none at 28 px, where both pooling columns are the ReLU "
                "output); \"average pooling instead\" pools the same conv2d_2 outputs by their "
                "mean over the same windows, a control measured at that stage only (the dense "
                "layers were trained on maxima).\n\n", n, res_factor[1], res_factor[1],
                res_factor[2], res_factor[2]);
    else
        fprintf(f, "\n### How much of it is a shift of the mean\n\n||E_m z_m - z||² as a "
                "percentage of E||z_m - z||² at each stage (estimated from %d masks, less the "
                "expected excess of a %d-mask mean; 0 for noise that averages out over masks, "
                "100 for a systematic change), mean ± sd over %d seeds.\n\n",
                cfg->probe_masks, cfg->probe_masks, n);
    fprintf(f, "| data | size | dropout | conv2d_1 output | conv2d_2 before ReLU | after ReLU | "
            "max pooling | average pooling instead | dense_1 (ReLU) | logits |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++)
            for (int k = 0; k < N_KINDS; k++) {
                fprintf(f, "| %s | %d | %s", data_name[d], IMG * res_factor[ri], kind_name[k]);
                for (int c = 0; c < 7; c++) {
                    probe_values(R, n, d, ri, field, k, qs[c], v);
                    fprintf(f, " | %s", fmt_ms(b, sizeof b, v, n, field == P_NOISE ? 3 : 1));
                }
                fputs(" |\n", f);
            }
    }
}

/* Each probe quantity at the three sizes, and its change from 28 px paired
 * over seeds (same seed: same subset and initial weights). */
static void print_across(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    char b[96];
    fprintf(f, "\n### Across sizes, paired over seeds\n\nEach quantity at 28, 56 and 112 px "
            "(mean ± sd over %d seeds) and its change from 28 px, per seed, as mean ± sd with "
            "the paired t; * marks |t| > %.3f (two-sided 95 %%, %d degrees of freedom). Noise: "
            "E||z_m - z||² / ||z||² at that stage; shift: its mean-shift part in %%.\n\n", n,
            study_t_crit(n - 1), n - 1);
    fprintf(f, "| data | quantity | 28 | 56 | 112 | 56 − 28 | 112 − 28 |\n"
            "|---|---|---:|---:|---:|---:|---:|\n");
    static const int rows[][3] = {
        {P_CORR_ACT, 0, 0},
        {P_SURVIVE, K_ELEMENT, 0},          {P_SURVIVE, K_SPATIAL, 0},
        {P_RATIO, 0, 0},
        {P_NOISE, K_ELEMENT, ST_PRE},       {P_NOISE, K_SPATIAL, ST_PRE},
        {P_NOISE, K_ELEMENT, ST_RELU},      {P_NOISE, K_SPATIAL, ST_RELU},
        {P_NOISE, K_ELEMENT, ST_POOL},      {P_NOISE, K_SPATIAL, ST_POOL},
        {P_NOISE, K_ELEMENT, ST_AVG},       {P_NOISE, K_SPATIAL, ST_AVG},
        {P_NOISE, K_ELEMENT, ST_DENSE1},    {P_NOISE, K_SPATIAL, ST_DENSE1},
        {P_NOISE, K_ELEMENT, ST_LOGITS},    {P_NOISE, K_SPATIAL, ST_LOGITS},
        {P_SHIFT, K_ELEMENT, ST_POOL},      {P_SHIFT, K_SPATIAL, ST_POOL},
        {P_SHIFT, K_ELEMENT, ST_LOGITS},    {P_SHIFT, K_SPATIAL, ST_LOGITS}};
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            const int fl = rows[r][0], k = rows[r][1], q = rows[r][2];
            const int prec = fl == P_RATIO ? 2 : fl == P_SHIFT ? 1 : 3;
            if (fl == P_CORR_ACT) fprintf(f, "| %s | r conv2d_1", data_name[d]);
            else if (fl == P_SURVIVE)
                fprintf(f, "| %s | surviving conv2d_2, %s", data_name[d], kind_name[k]);
            else if (fl == P_RATIO) fprintf(f, "| %s | surviving: spatial / element-wise", data_name[d]);
            else
                fprintf(f, "| %s | %s: %s, %s", data_name[d], fl == P_NOISE ? "noise" : "shift %",
                        stage_name[q], kind_name[k]);
            for (int ri = 0; ri < N_RES; ri++) {
                probe_values(R, n, d, ri, fl, k, q, v);
                fprintf(f, " | %s", fmt_ms(b, sizeof b, v, n, prec));
            }
            for (int ri = 1; ri < N_RES; ri++) {
                probe_diff(R, n, d, 0, ri, fl, k, q, v);
                fprintf(f, " | %s", study_fmt_diff(b, sizeof b, v, n, prec));
            }
            fputs(" |\n", f);
        }
    }
}

static void print_outcome(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    char b[64];
    fprintf(f, "\n### The outcome\n\nMean ± sd over %d seeds; %d training images, %d epochs, "
            "dropout after conv2d_1 at rate %g; test accuracy on the first %d test images, "
            "train accuracy in eval mode on the training subset; gap = train − test in "
            "percentage points.\n\n", n, cfg->n_train, cfg->epochs, (double)cfg->rate,
            cfg->n_test);
    static const int fl[2][2] = {{F_TEST_ACC, F_GAP}, {F_TRAIN_ACC, F_TEST_LOSS}};
    static const char *const head[2] = {
        "| data | size | none: test % | element-wise | spatial | none: gap (pp) | element-wise "
        "| spatial |\n",
        "| data | size | none: train % | element-wise | spatial | none: test loss | "
        "element-wise | spatial |\n"};
    for (int t = 0; t < 2; t++) {
        fprintf(f, "%s%s|---|---:|---:|---:|---:|---:|---:|---:|\n", t ? "\n" : "", head[t]);
        for (int d = 0; d < N_DATA; d++) {
            if (!cfg->use[d]) continue;
            for (int ri = 0; ri < N_RES; ri++) {
                fprintf(f, "| %s | %d", data_name[d], IMG * res_factor[ri]);
                for (int c = 0; c < 2; c++)
                    for (int var = 0; var < N_VARIANTS; var++) {
                        run_values(R, n, d, ri, var, fl[t][c], v);
                        fprintf(f, " | %s", fmt_ms(b, sizeof b, v, n, fl[t][c] == F_TEST_LOSS ? 3 : 2));
                    }
                fputs(" |\n", f);
            }
        }
    }
}

static void print_paired(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    double d_[MAX_SEEDS];
    char b[96];
    fprintf(f, "\n### Paired differences\n\nSame seed: same subset, data order and initial "
            "weights; mean ± sd over seeds in percentage points; t is the paired t statistic, * "
            "marks |t| > %.3f (two-sided 95 %%, %d degrees of freedom).\n\n",
            study_t_crit(n - 1), n - 1);
    fprintf(f, "| data | size | test: element-wise − none | test: spatial − none | test: spatial "
            "− element-wise | gap: element-wise − none | gap: spatial − none | gap: spatial − "
            "element-wise |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    static const int pairs[6][3] = {{V_ELEMENT, V_NONE, F_TEST_ACC}, {V_SPATIAL, V_NONE, F_TEST_ACC},
                                    {V_SPATIAL, V_ELEMENT, F_TEST_ACC}, {V_ELEMENT, V_NONE, F_GAP},
                                    {V_SPATIAL, V_NONE, F_GAP}, {V_SPATIAL, V_ELEMENT, F_GAP}};
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        for (int ri = 0; ri < N_RES; ri++) {
            fprintf(f, "| %s | %d", data_name[d], IMG * res_factor[ri]);
            for (int c = 0; c < 6; c++) {
                run_diff(R, n, d, ri, pairs[c][0], pairs[c][1], pairs[c][2], d_);
                fprintf(f, " | %s", study_fmt_diff(b, sizeof b, d_, n, 2));
            }
            fputs(" |\n", f);
        }
    }
}

/* Test accuracy of every network, and seconds of training and evaluation. */
static void print_seeds(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    for (int t = 0; t < 2; t++) {
        const int fl = t ? F_SECONDS : F_TEST_ACC;
        fprintf(f, t ? "\n### Seconds per network (training and evaluation), per seed\n\n"
                     : "\n### Test accuracy (%%) per seed\n\n");
        fprintf(f, "| data | size | dropout |");
        for (int s = 0; s < n; s++) fprintf(f, " seed %d |", s + 1);
        fprintf(f, " mean |\n|---|---:|---|");
        for (int s = 0; s <= n; s++) fputs("---:|", f);
        fputc('\n', f);
        double v[MAX_SEEDS];
        for (int d = 0; d < N_DATA; d++) {
            if (!cfg->use[d]) continue;
            for (int ri = 0; ri < N_RES; ri++)
                for (int var = 0; var < N_VARIANTS; var++) {
                    run_values(R, n, d, ri, var, fl, v);
                    fprintf(f, "| %s | %d | %s |", data_name[d], IMG * res_factor[ri],
                            variant_label[var]);
                    for (int s = 0; s < n; s++) fprintf(f, t ? " %.1f |" : " %.2f |", v[s]);
                    fprintf(f, t ? " %.1f |\n" : " %.2f |\n", study_mean(v, n));
                }
        }
    }
}

/* What the numbers say; every number is computed from the tables. */
static void print_reading(FILE *f, const s2_results *R, const s2_cfg *cfg)
{
    const int n = cfg->seeds;
    const double tc = study_t_crit(n - 1);
    double v[MAX_SEEDS], u[MAX_SEEDS];
    char b1[96], b2[96];
    fprintf(f, "\n### What the numbers say\n\n(A paired difference counts when |t| > %.3f.)\n", tc);
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        double r[N_RES], surv[N_KINDS][N_RES];
        for (int ri = 0; ri < N_RES; ri++) {
            probe_values(R, n, d, ri, P_CORR_ACT, 0, 0, v), r[ri] = study_mean(v, n);
            for (int k = 0; k < N_KINDS; k++)
                probe_values(R, n, d, ri, P_SURVIVE, k, 0, v), surv[k][ri] = study_mean(v, n);
        }
        probe_diff(R, n, d, 0, N_RES - 1, P_SURVIVE, K_ELEMENT, 0, v);
        probe_diff(R, n, d, 0, N_RES - 1, P_SURVIVE, K_SPATIAL, 0, u);
        fprintf(f, "- %s, next convolution: as conv2d_1's neighbour correlation goes %.3f -> "
                "%.3f -> %.3f (28, 56, 112 px), the share of element-wise noise surviving "
                "conv2d_2 goes %.3f -> %.3f -> %.3f (112 − 28: %s) and of spatial noise %.3f -> "
                "%.3f -> %.3f (%s).\n", data_name[d], r[0], r[1], r[2], surv[0][0], surv[0][1],
                surv[0][2], study_fmt_diff(b1, sizeof b1, v, n, 3), surv[1][0], surv[1][1], surv[1][2],
                study_fmt_diff(b2, sizeof b2, u, n, 3));
        for (int k = 0; k < N_KINDS; k++) {
            fprintf(f, "- %s, %s noise along the network (28 -> 112 px):", data_name[d],
                    kind_name[k]);
            static const int qs[5] = {ST_RELU, ST_POOL, ST_AVG, ST_DENSE1, ST_LOGITS};
            for (int c = 0; c < 5; c++) {
                probe_values(R, n, d, 0, P_NOISE, k, qs[c], v);
                probe_values(R, n, d, N_RES - 1, P_NOISE, k, qs[c], u);
                const double a0 = study_mean(v, n), a2 = study_mean(u, n);
                probe_diff(R, n, d, 0, N_RES - 1, P_NOISE, k, qs[c], v);
                fprintf(f, "%s %s %.3f -> %.3f (%s)", c ? ";" : "", stage_name[qs[c]], a0, a2,
                        fabs(study_paired_t(v, n)) > tc ? "changed beyond the seed spread"
                                                        : "within the spread");
            }
            probe_values(R, n, d, N_RES - 1, P_SHIFT, k, ST_POOL, v);
            probe_values(R, n, d, N_RES - 1, P_SHIFT, k, ST_LOGITS, u);
            fprintf(f, ". At 112 px %.0f %% of the noise after max pooling and %.0f %% at the "
                    "logits is a shift of the mean.\n", study_mean(v, n), study_mean(u, n));
        }
        for (int ri = 0; ri < N_RES; ri++) {
            double acc[N_VARIANTS], gap[N_VARIANTS], tr[N_VARIANTS];
            int best = 0;
            for (int var = 0; var < N_VARIANTS; var++) {
                run_values(R, n, d, ri, var, F_TEST_ACC, v), acc[var] = study_mean(v, n);
                run_values(R, n, d, ri, var, F_GAP, v), gap[var] = study_mean(v, n);
                run_values(R, n, d, ri, var, F_TRAIN_ACC, v), tr[var] = study_mean(v, n);
                if (acc[var] > acc[best]) best = var;
            }
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_TEST_ACC, v);
            run_diff(R, n, d, ri, V_SPATIAL, V_ELEMENT, F_GAP, u);
            const double t = study_paired_t(v, n), tg = study_paired_t(u, n);
            fprintf(f, "  - %d px: highest mean test accuracy %s (none %.2f %%, element-wise "
                    "%.2f, spatial %.2f; train %.2f, %.2f, %.2f); spatial − element-wise %+.2f ± "
                    "%.2f pp (%s); gap none %.2f, element-wise %.2f, spatial %.2f pp, spatial − "
                    "element-wise %+.2f ± %.2f (%s).\n", IMG * res_factor[ri], variant_label[best],
                    acc[0], acc[1], acc[2], tr[0], tr[1], tr[2], study_mean(v, n),
                    study_sd(v, n), fabs(t) > tc ? "beyond the seed spread" : "within the seed spread",
                    gap[0], gap[1], gap[2], study_mean(u, n), study_sd(u, n),
                    fabs(tg) > tc ? "beyond the spread" : "within the spread");
        }
    }
}

/* Every table, to f (stdout and tables.md get the same text). */
static void print_all(FILE *f, const s2_results *R, const s2_cfg *cfg, const char *timing)
{
    fprintf(f, "## dropout study 2: tables\n\n%s\n", timing);
    print_probe(f, R, cfg);
    print_stages(f, R, cfg, P_NOISE);
    print_stages(f, R, cfg, P_SHIFT);
    print_across(f, R, cfg);
    print_outcome(f, R, cfg);
    print_paired(f, R, cfg);
    print_seeds(f, R, cfg);
    print_reading(f, R, cfg);
}

/* noise.dat: per data set a block, per resolution a row: size, then mean
 * and sd over seeds of r conv2d_1, surviving element-wise, surviving
 * spatial, noise out element-wise, noise out spatial, noise at the logits
 * element-wise, spatial. accuracy.dat: per data set a block, per resolution
 * a row: size, then per variant mean and sd of test accuracy and of the
 * gap. stages.dat: per data set a block, per stage from conv2d_1's output
 * to the logits (average pooling left out) a row: its index, then for
 * element-wise at 28, 56, 112 px and spatial at 28, 56, 112 px the mean and
 * sd of the relative noise. Titles: one line per block. */
static nn_status write_dat(const s2_results *R, const s2_cfg *cfg)
{
    enum { NF = 3 };
    char path[NF][1024], tmp[NF][1040];
    static const char *const names[NF] = {"noise.dat", "accuracy.dat", "stages.dat"};
    FILE *f[NF] = {NULL, NULL, NULL};
    int ok = 1;
    for (int i = 0; i < NF; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", cfg->out_dir, names[i]);
        snprintf(tmp[i], sizeof tmp[i], "%s.tmp", path[i]);
        f[i] = fopen(tmp[i], "w");
        ok = ok && f[i];
    }
    if (!ok) {
        for (int i = 0; i < NF; i++)
            if (f[i]) fclose(f[i]);
        return nn_error(NN_ERR_IO, "%s: cannot create: %s", cfg->out_dir, strerror(errno));
    }
    const int n = cfg->seeds;
    double v[MAX_SEEDS];
    int blocks = 0;
    static const int qs[6] = {ST_IN, ST_PRE, ST_RELU, ST_POOL, ST_DENSE1, ST_LOGITS};
    for (int d = 0; d < N_DATA; d++) {
        if (!cfg->use[d]) continue;
        if (blocks++)
            for (int i = 0; i < NF; i++) fputs("\n\n", f[i]);
        fprintf(f[0], "# %s: size r_conv2d_1 sd surviving_elementwise sd surviving_spatial sd "
                "noise_out_elementwise sd noise_out_spatial sd noise_logits_elementwise sd "
                "noise_logits_spatial sd (mean, sd over %d seeds)\n",
                data_name[d], n);
        fprintf(f[1], "# %s: size, then for none, elementwise, spatial: test_acc sd gap sd "
                "(%%, mean and sd over %d seeds)\n", data_name[d], n);
        fprintf(f[2], "# %s: stage (0 conv2d_1, 1 conv2d_2 before ReLU, 2 after ReLU, 3 max "
                "pooling, 4 dense_1, 5 logits), then relative noise mean sd for elementwise "
                "28 56 112 px, spatial 28 56 112 px (over %d seeds)\n", data_name[d], n);
        for (int ri = 0; ri < N_RES; ri++) {
            fprintf(f[0], "%d", IMG * res_factor[ri]);
            const int fs[7][3] = {{P_CORR_ACT, 0, 0},          {P_SURVIVE, K_ELEMENT, 0},
                                  {P_SURVIVE, K_SPATIAL, 0},   {P_NOISE, K_ELEMENT, ST_LIN},
                                  {P_NOISE, K_SPATIAL, ST_LIN}, {P_NOISE, K_ELEMENT, ST_LOGITS},
                                  {P_NOISE, K_SPATIAL, ST_LOGITS}};
            for (int i = 0; i < 7; i++) {
                probe_values(R, n, d, ri, fs[i][0], fs[i][1], fs[i][2], v);
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
        for (int c = 0; c < 6; c++) {
            fprintf(f[2], "%d", c);
            for (int k = 0; k < N_KINDS; k++)
                for (int ri = 0; ri < N_RES; ri++) {
                    probe_values(R, n, d, ri, P_NOISE, k, qs[c], v);
                    fprintf(f[2], " %.6g %.6g", study_mean(v, n), study_sd(v, n));
                }
            fputc('\n', f[2]);
        }
    }
    nn_status st = NN_OK;
    for (int i = 0; i < NF; i++) {
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
                               "%.3f, spatial %.3f; at the logits %.3f, %.3f (%.1f s)\n",
                               IMG * s, p->corr_act, probe_field(p, P_SURVIVE, K_ELEMENT, 0),
                               probe_field(p, P_SURVIVE, K_SPATIAL, 0),
                               p->noise[K_ELEMENT][ST_LOGITS], p->noise[K_SPATIAL][ST_LOGITS],
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
    char tpath[1024], ttmp[1040];
    snprintf(tpath, sizeof tpath, "%s/tables.md", cfg.out_dir);
    snprintf(ttmp, sizeof ttmp, "%s.tmp", tpath);
    if (st == NN_OK) {
        char timing[1024], picks[256] = "";
        snprintf(timing, sizeof timing,
                 "All %d runs in %.0f s (training and evaluation: %.0f s at 28 px, %.0f s at 56, "
                 "%.0f s at 112; probes and pictures %.0f s); %d data set(s) x %d seeds x %d "
                 "resolutions x %d variants; filters %d,%d; %d training images, %d epochs, Adam "
                 "lr %g, batch %d, rate %g; %d test images; probe: %d images, %d masks per kind. "
                 "Initial parameters were bit-identical across the three variants for every seed "
                 "and resolution (checked).", n_runs, study_now() - t_start, res_seconds[0],
                 res_seconds[1], res_seconds[2], probe_seconds, n_data, cfg.seeds, N_RES,
                 N_VARIANTS, cfg.c1, cfg.c2, cfg.n_train, cfg.epochs, (double)cfg.lr, cfg.batch,
                 (double)cfg.rate, cfg.n_test, cfg.probe_images, cfg.probe_masks);
        printf("\n");
        print_all(stdout, R, &cfg, timing);
        FILE *tf = fopen(ttmp, "w");
        if (!tf) st = nn_error(NN_ERR_IO, "%s: cannot create: %s", ttmp, strerror(errno));
        if (st == NN_OK) {
            print_all(tf, R, &cfg, timing);
            const int bad = ferror(tf);
            if (fclose(tf) != 0 || bad) st = nn_error(NN_ERR_IO, "%s: write error", ttmp);
            if (st == NN_OK) st = study_rename(ttmp, tpath);
        }
        for (int ri = 0; cv.rgb && ri < N_RES; ri++) {
            size_t k = strlen(picks);
            snprintf(picks + k, sizeof picks - k, "%s", ri ? ";" : "");
            for (int c = 0; c < (cfg.c1 < MAPS_SHOWN ? cfg.c1 : MAPS_SHOWN); c++) {
                k = strlen(picks);
                snprintf(picks + k, sizeof picks - k, " %d", maps_pick[ri][c]);
            }
        }
        if (cv.rgb)
            printf("\nmaps.png: MNIST test image 0 at 28, 56 and 112 px (one block each); "
                   "conv2d_1 maps%s (the most active) of the seed-1 networks trained without "
                   "dropout; rows: activation, element-wise, spatial dropout at rate %g, dropped "
                   "values in blue.\n", picks, (double)MAPS_RATE);
        printf("Wrote %s, %s, %s/noise.dat, %s/stages.dat, %s/accuracy.dat%s%s\n", tpath, jpath,
               cfg.out_dir, cfg.out_dir, cfg.out_dir, cv.rgb ? ", " : "", cv.rgb ? mpath : "");
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
