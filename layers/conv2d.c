/* conv2d: 2-D convolution (cross-correlation, as Keras and PyTorch compute it)
 *   y = act(conv(x, kernel) + bias)
 * x (N, H, W, C) channels_last or (N, C, H, W) channels_first; y likewise
 * with F = filters channels and (OH, OW) from the padding rule.
 *
 * Config: filters (required), kernel_size (required, "3" or "3,3"), strides
 * (1), padding valid | same (valid), dilation_rate (1), use_bias (true),
 * activation linear | relu | sigmoid | tanh | leaky_relu | elu | gelu |
 * softmax (linear), alpha (with leaky_relu and elu only; their layers'
 * defaults), data_format (the framework default).
 * padding=same is Keras's: OH = ceil(H / stride), with the odd row or column
 * of padding at the bottom/right as TensorFlow puts it (PyTorch pads both
 * sides equally, so the two differ when the total padding is odd).
 *
 * Parameters: "kernel" (KH, KW, C, F) -- Keras's layout, for both data
 * formats (PyTorch's weight is the (F, C, KH, KW) permutation of it) -- and
 * "bias" (F). Init: glorot_uniform with fan_in = KH*KW*C, fan_out = KH*KW*F;
 * bias zeros.
 *
 * Computation: start reading at layers/conv_reference.c, the direct loops
 * that define what is computed; the layer runs the fast kernels that the
 * tests hold to them -- Winograd F(4x4, 3x3) or F(2x2, 3x3) for 3x3 windows at stride 1
 * (layers/conv_winograd.c), register-blocked GEMM tiles reading NHWC
 * tensors directly otherwise (layers/conv_gemm.c), with the buffers and the
 * choice between them in layers/conv_core.c. NHWC is the fast path.
 * channels_first runs the same kernels a chunk of samples at a time, each
 * chunk's input transposed to NHWC (nn_conv_forward_nchw; the GEMM tiles
 * store NCHW output themselves), so both formats give the same numbers for
 * the same kernel (bit for bit, except where chunks run the backward and
 * dkernel and dbias add per-chunk sums: see conv_core.h). The bias and ReLU are applied in registers
 * before the output is stored; backward masks dy by y > 0, as dense does.
 * Every other activation is a second graph node after the linear one
 * (nn_act_record in layers/activation.c), the same arithmetic as the
 * activation's own layer after a linear conv2d; softmax runs over the last
 * axis of y as that layer does (channels for channels_last, OW for
 * channels_first).
 * Results are bit-identical for any thread count.
 * Memory: the padded input dkernel reads comes from the graph arena, valid
 * until the next reset; every other buffer from the graph's scratch, which
 * all layers share (conv2d_carve). Both are taken in forward (sized for the
 * gradients that will be needed), so backward cannot fail. Forwards
 * that need no kernel gradient (predictions) take the Winograd transform of
 * the kernel from a cache the layer owns, recomputed whenever the kernel's
 * bytes differ from those it was computed from (conv2d_cached_wk).
 *
 * Omits: groups / depthwise, causal or explicit integer padding,
 * kernel/bias regularizers.
 */
#include <stdlib.h>
#include <string.h>

#include "layers/activation.h"
#include "layers/conv_core.h"
#include "layers/conv_gemm.h"
#include "layers/conv_winograd.h"
#include "layers/format.h"
#include "layers/layer.h"

typedef struct {
    int filters, kernel[2], strides[2], dilation[2], padding, use_bias;
    int activation; /* an nn_activation */
    float alpha;    /* leaky_relu and elu */
    nn_data_format format;
    nn_conv_geom geom; /* set by build */
    /* Forwards that do not need the kernel gradient (predictions) reuse the
     * Winograd transform of the kernel: wk = U for tile size wk_m, computed
     * from the kernel whose bytes wk_key holds (see conv2d_cached_wk).
     * Owned by the layer (malloc, freed by conv2d_destroy); NULL until a
     * forward first needs them. */
    float *wk, *wk_key;
    int wk_m;
} conv2d_state;

/* What backward needs; lives in the graph arena. */
typedef struct {
    const conv2d_state *s;
    nn_conv_work w;  /* the forward's padded input and the backward's buffers */
    nn_graph *g;     /* whose scratch holds the buffers other than xp */
    nn_conv_sizes z; /* their sizes, for conv2d_carve */
} conv2d_ctx;

static nn_status conv2d_parse(nn_layer *l, nn_config *c)
{
    conv2d_state *s = l->state;
    static const int one[2] = {1, 1};
    NN_TRY(nn_config_get_int(c, "filters", &s->filters, 0, 1, 1, 1 << 20));
    NN_TRY(nn_config_get_ints(c, "kernel_size", s->kernel, 2, NULL, 1, 1, 4096));
    NN_TRY(nn_config_get_ints(c, "strides", s->strides, 2, one, 0, 1, 4096));
    NN_TRY(nn_config_get_choice(c, "padding", &s->padding, NN_PAD_VALID, nn_conv_paddings));
    NN_TRY(nn_config_get_ints(c, "dilation_rate", s->dilation, 2, one, 0, 1, 4096));
    NN_TRY(nn_config_get_bool(c, "use_bias", &s->use_bias, 1));
    NN_TRY(nn_config_get_choice(c, "activation", &s->activation, NN_ACT_LINEAR, nn_activation_names));
    NN_TRY(nn_act_config_alpha(c, s->activation, &s->alpha));
    return nn_config_get_data_format(c, &s->format);
}

static void conv2d_write(const nn_layer *l, nn_config_writer *w)
{
    const conv2d_state *s = l->state;
    nn_config_write(w, "filters", "%d", s->filters);
    nn_config_write(w, "kernel_size", "%d,%d", s->kernel[0], s->kernel[1]);
    nn_config_write(w, "strides", "%d,%d", s->strides[0], s->strides[1]);
    nn_config_write(w, "padding", "%s", nn_conv_paddings[s->padding]);
    nn_config_write(w, "dilation_rate", "%d,%d", s->dilation[0], s->dilation[1]);
    nn_config_write(w, "use_bias", "%s", s->use_bias ? "true" : "false");
    nn_config_write(w, "activation", "%s", nn_activation_names[s->activation]);
    if (nn_act_has_alpha(s->activation)) nn_config_write_float(w, "alpha", s->alpha);
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
}

static nn_status conv2d_build(nn_layer *l, int in_rank, const int *in_shape)
{
    conv2d_state *s = l->state;
    const int cf = s->format == NN_CHANNELS_FIRST;
    nn_conv_geom *g = &s->geom;
    memset(g, 0, sizeof *g);
    NN_TRY(nn_conv_image_shape(l->name, in_rank, in_shape, cf, &g->H, &g->W, &g->C));
    g->KH = s->kernel[0];
    g->KW = s->kernel[1];
    g->SH = s->strides[0];
    g->SW = s->strides[1];
    g->DH = s->dilation[0];
    g->DW = s->dilation[1];
    NN_TRY(nn_conv_geom_init(g, s->padding, l->name));
    const int F = s->filters;
    const long fan = (long)g->KH * g->KW;
    if (fan * g->C > (1L << 30) || fan * F > (1L << 30))
        return nn_error(NN_ERR_SHAPE, "%s: kernel %dx%dx%dx%d is too large", l->name, g->KH, g->KW,
                        g->C, F);
    int kshape[4] = {g->KH, g->KW, g->C, F};
    NN_TRY(nn_layer_add_param(l, "kernel", 4, kshape, NN_INIT_GLOROT_UNIFORM, (int)(fan * g->C),
                              (int)(fan * F), 1));
    if (s->use_bias) NN_TRY(nn_layer_add_param(l, "bias", 1, &F, NN_INIT_ZEROS, 0, 0, 1));
    l->out_rank = 3;
    l->out_shape[0] = cf ? F : g->OH;
    l->out_shape[1] = cf ? g->OH : g->OW;
    l->out_shape[2] = cf ? g->OW : F;
    return NN_OK;
}

/* Points w's buffers other than xp into base (NULL: only counts), each
 * 64-byte aligned, in a fixed order; returns the bytes they take. Only xp
 * carries data from a forward to its backward (the padded input dkernel
 * reads); every other buffer is written and read within one call, so all
 * the layers share the graph's scratch for them (nn_graph_scratch), sized
 * for the largest layer instead of taking their sum from the arena. */
static size_t conv2d_carve(nn_conv_work *w, const nn_conv_sizes *z, unsigned char *base)
{
    size_t off = 0;
    float **ptr[] = {&w->kp, &w->bp, &w->dzp, &w->part, &w->dzs, &w->kt, &w->dcol,
                     &w->db, &w->wk, &w->wkt, &w->ws, &w->yn, &w->dxn};
    const size_t n[] = {z->kp, z->bp, z->dzp, z->part, z->dzs, z->kt, z->dcol,
                        z->db, z->wk, z->wkt, z->ws, z->yn, z->dxn};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
        if (!n[i]) continue;
        if (base) *ptr[i] = (float *)(base + off);
        off += (n[i] * sizeof(float) + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    }
    return off;
}

static void conv2d_backward(nn_node *n)
{
    conv2d_ctx *c = n->ctx;
    /* Other layers' calls have used the scratch since the forward, and may
     * have moved it: the buffers are taken again (the forward reserved their
     * size, so the scratch holds them). */
    conv2d_carve(&c->w, &c->z, nn_graph_scratch(c->g));
    const conv2d_state *s = c->s;
    const nn_conv_geom *g = &s->geom;
    tensor *x = n->in[0], *k = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL, *y = n->out;
    const int N = x->shape[0], F = s->filters, cf = s->format == NN_CHANNELS_FIRST;
    /* dz = dy * relu'(y), in place: every consumer of y has run its backward
     * already, so nothing reads y->grad after this. channels_last masks in
     * the same pass that sums the bias gradient. */
    float *dz = y->grad;
    const float *mask_y = s->activation == NN_ACT_RELU ? y->data : NULL;
    /* Forward reserved the dx buffers only when x required a gradient; a
     * leaf may carry a grad buffer without asking for one. */
    float *dx = x->grad && (c->w.kt || c->w.wkt) ? x->grad : NULL;
    float *dk = k->grad && c->w.part ? k->grad : NULL;
    float *db = b && b->grad && c->w.db ? b->grad : NULL;
    if (cf)
        nn_conv_backward_nchw(dx, dk, db, dz, mask_y, x->data, k->data, g, N, F, &c->w);
    else
        nn_conv_backward(dx, dk, db, dz, mask_y, k->data, g, N, F, &c->w);
}

/* The Winograd transform U of the kernel k for tile size m, or NULL when
 * there is no memory for it (the forward then transforms into its arena,
 * as a training forward does).
 * Why the cache is keyed on the kernel's contents: the kernel changes
 * through optimizer steps, checkpoint and safetensors loads, and any write
 * a program makes to l->params[0].t->data, and only a comparison of the
 * bytes sees all of these; a version counter would miss the direct
 * writes. U is a pure function of (m, the kernel's bytes, C, F) computed in
 * an order that does not depend on the thread count, so when the bytes
 * match, the cached U is the U the forward would compute, bit for bit, and
 * the output is the same as without the cache. The memcmp reads the kernel
 * once, as the transform would, without the transform's arithmetic and
 * without writing U, (m+2)^2/9 times the kernel's size. */
static const float *conv2d_cached_wk(conv2d_state *s, const tensor *k, int m)
{
    const nn_conv_geom *g = &s->geom;
    const size_t kbytes = k->size * sizeof(float);
    int fresh = 0;
    if (!s->wk || s->wk_m != m) {
        free(s->wk);
        free(s->wk_key);
        s->wk = malloc(nn_conv_winograd_kernel_size(m, g->C, s->filters) * sizeof(float));
        s->wk_key = malloc(kbytes ? kbytes : 1);
        if (!s->wk || !s->wk_key) {
            free(s->wk);
            free(s->wk_key);
            s->wk = s->wk_key = NULL;
            return NULL;
        }
        s->wk_m = m;
        fresh = 1;
    }
    if (fresh || memcmp(s->wk_key, k->data, kbytes) != 0) {
        nn_conv_winograd_kernel(m, s->wk, k->data, g->C, s->filters, 0);
        memcpy(s->wk_key, k->data, kbytes);
    }
    return s->wk;
}

static void conv2d_destroy(nn_layer *l)
{
    conv2d_state *s = l->state;
    free(s->wk);
    free(s->wk_key);
    s->wk = s->wk_key = NULL;
}

/* n floats from the arena, or NULL when n is 0; *failed is set on error. */
static void *conv2d_arena(nn_graph *g, size_t n, size_t elem, int *failed)
{
    if (!n) return NULL;
    void *p = nn_graph_alloc(g, n * elem);
    if (!p) *failed = 1;
    return p;
}

static nn_status conv2d_forward(nn_layer *l, nn_graph *gr, tensor *x, tensor **out, int training)
{
    (void)training;
    conv2d_state *s = l->state;
    const nn_conv_geom *g = &s->geom;
    const int N = x->shape[0], F = s->filters, cf = s->format == NN_CHANNELS_FIRST;
    int shape[4] = {N, g->OH, g->OW, F};
    if (cf) {
        shape[1] = F;
        shape[2] = g->OH;
        shape[3] = g->OW;
    }
    tensor *k = l->params[0].t, *b = s->use_bias ? l->params[1].t : NULL;
    tensor *in[3] = {x, k, b};
    const int n_in = b ? 3 : 2;
    const int record = nn_graph_needs_grad(gr, in, n_in);
    const int need_dx = record && (x->flags & TENSOR_REQUIRES_GRAD);
    const int need_dk = record && (k->flags & TENSOR_REQUIRES_GRAD);
    const int need_db = record && b && (b->flags & TENSOR_REQUIRES_GRAD);
    nn_conv_sizes z;
    if (cf)
        nn_conv_work_sizes_nchw(&z, g, N, F, need_dx, need_dk, need_db);
    else
        nn_conv_work_sizes(&z, g, N, F, need_dx, need_dk, need_db);
    /* A forward that does not need dk uses the cached kernel transform; one
     * that does is a training step, after which the kernel changes anyway. */
    const int wino = N > 0 && g->OH > 0 && g->OW > 0 ? nn_conv_winograd_m(g, F) : 0;
    const float *wk_cached = wino && !need_dk ? conv2d_cached_wk(s, k, wino) : NULL;
    if (wk_cached) z.wk = 0;
    int failed = 0;
    tensor *y = nn_graph_tensor(gr, 4, shape);
    conv2d_ctx *c = conv2d_arena(gr, 1, sizeof *c, &failed);
    if (!y || failed) return NN_ERR_MEMORY;
    memset(c, 0, sizeof *c);
    c->s = s;
    c->g = gr;
    c->z = z;
    nn_conv_work *w = &c->w;
    w->xp = conv2d_arena(gr, z.xp, sizeof(float), &failed);
    const size_t shared = conv2d_carve(w, &z, NULL);
    if (shared) {
        unsigned char *base = nn_graph_scratch_reserve(gr, shared);
        if (!base) return NN_ERR_MEMORY;
        conv2d_carve(w, &z, base);
    }
    w->ws_slots = z.ws_slots;
    w->xp_whole = z.xp_whole;
    if (wk_cached) { /* read only: wk_ready tells the forward not to write it */
        w->wk = (float *)wk_cached;
        w->wk_ready = 1;
    }
    if (failed) return NN_ERR_MEMORY;
    const int relu = s->activation == NN_ACT_RELU;
    if (cf)
        nn_conv_forward_nchw(y->data, x->data, k->data, b ? b->data : NULL, relu, g, N, F, w);
    else
        nn_conv_forward(y->data, x->data, k->data, b ? b->data : NULL, relu, g, N, F, w);
    if (record) {
        nn_node *node = nn_graph_record(gr, "conv2d", y, in, n_in, conv2d_backward, c);
        if (node) node->saves_output = s->activation == NN_ACT_RELU;
    }
    if (s->activation > NN_ACT_RELU) return nn_act_record(gr, s->activation, s->alpha, y, out, 1);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_conv2d = {
    .name = "conv2d",
    .summary = "2-D convolution: y = act(conv(x, kernel) + bias)",
    .state_size = sizeof(conv2d_state),
    .parse = conv2d_parse,
    .write = conv2d_write,
    .build = conv2d_build,
    .forward = conv2d_forward,
    .destroy = conv2d_destroy,
    /* Linear: each kernel weight feeds every output position, so with ReLU
     * too many finite-difference points straddle a kink; the PyTorch
     * fixtures in tests/test_conv.c check the ReLU path. */
    .test_config = "filters=3 kernel_size=3,2 strides=2,1 padding=same dilation_rate=1 "
                   "data_format=channels_first",
    .test_rank = 3,
    .test_shape = {2, 5, 4},
};
