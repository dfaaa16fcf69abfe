/* batchnorm: batch normalization over the channel axis, Keras's
 * BatchNormalization.
 *   y = gamma * (x - mean) / sqrt(var + epsilon) + beta        per channel
 * Training: mean and var are the batch's (var biased, dividing by the count
 * M = N * positions), and the moving statistics are updated as Keras does,
 *   moving = moving * momentum + batch * (1 - momentum),
 * where the batch variance for the moving average is the unbiased one,
 * var * M / (M - 1) (what TensorFlow's fused kernel, the Keras default for
 * images, and PyTorch's running_var store; Keras 3 stores the biased one;
 * with M = 1 the biased value is used). Eval: the moving statistics.
 *
 * Config: momentum (0.99), epsilon (1e-3, > 0), center (true: beta), scale
 * (true: gamma), data_format (the framework default; it places the channel
 * axis of image input), activation and alpha (as dense's: linear | relu |
 * sigmoid | tanh | leaky_relu | elu | gelu | softmax; linear). Per-sample
 * input: (C) or (L, C), channel last; or an image (H, W, C) / (C, H, W).
 * activation=relu is fused: y = max(0, ...) in the normalising pass, and
 * backward masks dy by the saved y > 0 inside its own two passes, bit for
 * bit what a relu layer after the batchnorm gives; every other activation is
 * a second graph node (nn_act_record), as after dense.
 * Parameters, in Keras's order: "gamma" (ones), "beta" (zeros) -- trainable,
 * present when scale / center -- then "moving_mean" (zeros) and
 * "moving_variance" (ones), not trainable.
 *
 * Backward, training (x_hat = (x - mean) * inv_std, M values per channel):
 *   dbeta += sum(dy);  dgamma += sum(dy * x_hat)
 *   dx += gamma * inv_std * (dy - sum(dy)/M - x_hat * sum(dy * x_hat)/M)
 * eval: dx += gamma * inv_std * dy.
 *
 * Passes over the data: forward, one for both moments (sum and sum of
 * squares about a per-channel shift, see batchnorm_forward) and one for y;
 * backward, one for sum(dy) and sum(dy * (x - mean)) together and one for
 * dx. The per-channel sums accumulate in double over fixed blocks of rows,
 * added in block order, so results do not depend on the thread count. The
 * loops are written with layers/simd.h's vectors: lanes run along the
 * channels for channels-last data and along the positions of one channel
 * for channels-first.
 *
 * In a sharded step (nn/shard.h) the statistics are the whole batch's: a
 * shard's moments meet the other shards' in forward, its sum(dy) and
 * sum(dy * (x - mean)) in backward (l->meet, layers/layer.h), and every
 * shard normalises and differentiates with the totals.
 *
 * Omits: renorm, virtual batches, an axis other than the channel axis.
 */
#include <math.h>
#include <string.h>

#include "layers/activation.h"
#include "layers/format.h"
#include "layers/layer.h"
#include "layers/simd.h"

typedef struct {
    float momentum, epsilon;
    int center, scale;
    nn_data_format format;
    int activation;    /* an nn_activation */
    float alpha;       /* leaky_relu and elu */
    int C, pre, inner; /* per sample: (pre, C, inner); set by build */
    int i_gamma, i_beta, i_mean, i_var;
} bn_state;

typedef struct {
    const bn_state *s;
    nn_layer *l;
    float *mean, *inv_std; /* (C): what forward normalised with */
    int training;
    double count;          /* values per channel the statistics are over */
    nn_batch_meet *meet;   /* a sharded step's (layers/layer.h), or NULL */
    double *part;          /* per-block sums, and 2*C results */
} bn_ctx;

/* ---- kernels, on the (outer, C, inner) view: channels-last data is
 * (rows, C, 1), channels-first (N, C, HW) ---- */

typedef double vd __attribute__((vector_size(VL * sizeof(double))));

/* vf to vd, lane by lane. A macro: without -mavx, a function passing a
 * 32-byte vd by value would have a different ABI than with it (-Wpsabi). */
#define batchnorm_wide(v) __builtin_convertvector((v), vd)

/* max(v, 0) as relu computes it: +0 for v <= 0 (and for NaN). */
INLINE vf batchnorm_relu(vf v) { return (vf)((vi)v & (vi)(v > splat(0.0f))); }
INLINE float batchnorm_relu1(float v) { return v > 0.0f ? v : 0.0f; }

/* dy where y > 0, else +0: the gradient relu's backward hands to its input,
 * whose buffer starts at zero, hence 0 + dy (dy = -0 becomes +0). */
INLINE vf batchnorm_mask(vf dy, vf y)
{
    return (vf)((vi)(splat(0.0f) + dy) & (vi)(y > splat(0.0f)));
}
INLINE float batchnorm_mask1(float dy, float y) { return y > 0.0f ? 0.0f + dy : 0.0f; }

/* Four lanes in double: the channels-last statistics accumulate in these
 * rather than in vd, whose 2 * VL doubles GCC keeps on the stack when they
 * exceed a register (with AVX2 the loop ran from memory, at a tenth of its
 * speed). The same operations lane by lane, so the same sums. */
typedef float bn_f4 __attribute__((vector_size(4 * sizeof(float))));
typedef double bn_d4 __attribute__((vector_size(4 * sizeof(double))));
#define BN_Q (VL / 4)

/* *r = p[0..4) in double (through a pointer: a 32-byte vector passed by
 * value has another ABI in builds without AVX). */
INLINE void batchnorm_wide4(bn_d4 *r, const float *p)
{
    bn_f4 f;
    memcpy(&f, p, sizeof f);
    *r = __builtin_convertvector(f, bn_d4);
}

/* Keeps *v from being fused into a multiply-add with the addition that
 * follows: the sums are defined with a rounded product, as vd's code (and
 * the scalar tail) computes them, whatever the compiler's contraction. */
#ifdef __AVX__
#define BATCHNORM_ROUNDED(v) __asm__("" : "+x"(v))
#else
#define BATCHNORM_ROUNDED(v) __asm__("" : "+m"(v))
#endif

/* The lanes of v added in lane order. */
INLINE double batchnorm_hsum(const vd *v)
{
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += (*v)[j];
    return s;
}

/* Floats per block of the statistics; a block is a whole number of rows of
 * the view, so the blocks depend on the shape alone. */
#define BATCHNORM_BLOCK 16384

/* Below this many elements a loop stays on one thread. */
#define BATCHNORM_PAR_MIN 32768

static size_t batchnorm_rows_per_block(int C, size_t inner)
{
    const size_t per = (size_t)C * inner;
    const size_t r = per ? BATCHNORM_BLOCK / per : 1;
    return r ? r : 1;
}

/* Doubles of scratch batchnorm_stats needs: two sums per channel per block. */
static size_t batchnorm_stats_scratch(size_t outer, int C, size_t inner)
{
    const size_t rpb = batchnorm_rows_per_block(C, inner);
    const size_t blocks = (outer + rpb - 1) / rpb;
    return (blocks ? blocks : 1) * 2 * (size_t)(C > 0 ? C : 1);
}

/* Per channel c, over every (o, i) of x (outer, C, inner), in one pass:
 *   forward (dy NULL): s1[c] = sum (x - shift[c]), s2[c] = sum (x - shift[c])^2
 *   backward:          s1[c] = sum g,             s2[c] = sum g * (x - shift[c])
 * with g = dy, or with relu, dy masked by the output y (batchnorm_mask).
 * Accumulated in double over fixed blocks of rows (batchnorm_rows_per_block),
 * each block's sums in a fixed order of lanes and rows, then the blocks added
 * in index order: the result is the same for any thread count. part holds
 * batchnorm_stats_scratch() doubles; s1 and s2 (C) may not alias it. */
INLINE void batchnorm_stats_body(double *s1, double *s2, const float *x, const float *shift,
                                 const float *dy, const float *y, size_t outer, int C,
                                 size_t inner, double *part, int backward, int relu)
{
    const size_t rpb = batchnorm_rows_per_block(C, inner);
    const size_t blocks = (outer + rpb - 1) / rpb, row = (size_t)C * inner;
    const int cv = C / VL * VL; /* channels in whole vectors (channels-last) */
    const size_t iv = inner / VL * VL;
    #pragma omp parallel for schedule(static) if (outer * row > BATCHNORM_PAR_MIN)
    for (size_t blk = 0; blk < blocks; blk++) {
        double *restrict p1 = part + blk * 2 * C, *restrict p2 = p1 + C;
        const size_t o0 = blk * rpb, o1 = o0 + rpb < outer ? o0 + rpb : outer;
        if (inner == 1) {
            /* Channels-last: lanes are channels; each vector of channels
             * runs down the block's rows. */
            for (int c = 0; c < cv; c += VL) {
                bn_d4 sh[BN_Q], a1[BN_Q], a2[BN_Q];
                for (int q = 0; q < BN_Q; q++) {
                    batchnorm_wide4(&sh[q], shift + c + 4 * q);
                    a1[q] = a2[q] = (bn_d4){0};
                }
                for (size_t o = o0; o < o1; o++) {
                    const size_t e = o * C + c;
                    float gl[VL];
                    if (backward)
                        vstore(gl, relu ? batchnorm_mask(vload(dy + e), vload(y + e)) : vload(dy + e));
                    UNROLL for (int q = 0; q < BN_Q; q++) {
                        bn_d4 d, a;
                        batchnorm_wide4(&d, x + e + 4 * q);
                        d -= sh[q];
                        if (backward) batchnorm_wide4(&a, gl + 4 * q);
                        else a = d;
                        bn_d4 prod = a * d;
                        BATCHNORM_ROUNDED(prod);
                        a1[q] += a;
                        a2[q] += prod;
                    }
                }
                for (int q = 0; q < BN_Q; q++)
                    for (int j = 0; j < 4; j++) {
                        p1[c + 4 * q + j] = a1[q][j];
                        p2[c + 4 * q + j] = a2[q][j];
                    }
            }
            for (int c = cv; c < C; c++) {
                double a1 = 0.0, a2 = 0.0;
                for (size_t o = o0; o < o1; o++) {
                    const double d = (double)x[o * C + c] - shift[c];
                    const size_t e = o * C + c;
                    const double a = !backward ? d
                                     : relu    ? (double)batchnorm_mask1(dy[e], y[e])
                                               : (double)dy[e];
                    a1 += a;
                    a2 += a * d;
                }
                p1[c] = a1;
                p2[c] = a2;
            }
            continue;
        }
        /* Channels-first: each (row, channel) is a contiguous run of inner. */
        for (int c = 0; c < C; c++) p1[c] = p2[c] = 0.0;
        for (size_t o = o0; o < o1; o++)
            for (int c = 0; c < C; c++) {
                const size_t base = o * row + (size_t)c * inner;
                const float *xr = x + base, *gr = backward ? dy + base : NULL;
                const float *yr = relu ? y + base : NULL;
                const double shc = shift[c];
                const vd sh = batchnorm_wide(splat(shift[c]));
                vd v1 = {0}, v2 = {0};
                for (size_t i = 0; i < iv; i += VL) {
                    const vd d = batchnorm_wide(vload(xr + i)) - sh;
                    const vd a = !backward ? d
                                 : relu    ? batchnorm_wide(batchnorm_mask(vload(gr + i), vload(yr + i)))
                                           : batchnorm_wide(vload(gr + i));
                    v1 += a;
                    v2 += a * d;
                }
                double a1 = batchnorm_hsum(&v1), a2 = batchnorm_hsum(&v2);
                for (size_t i = iv; i < inner; i++) {
                    const double d = (double)xr[i] - shc;
                    const double a = !backward ? d
                                     : relu    ? (double)batchnorm_mask1(gr[i], yr[i])
                                               : (double)gr[i];
                    a1 += a;
                    a2 += a * d;
                }
                p1[c] += a1;
                p2[c] += a2;
            }
    }
    for (int c = 0; c < C; c++) {
        double t1 = 0.0, t2 = 0.0;
        for (size_t blk = 0; blk < blocks; blk++) {
            t1 += part[blk * 2 * C + c];
            t2 += part[blk * 2 * C + C + c];
        }
        s1[c] = t1;
        s2[c] = t2;
    }
}

static void batchnorm_stats_forward(double *s1, double *s2, const float *x, const float *shift,
                                    size_t outer, int C, size_t inner, double *part)
{
    batchnorm_stats_body(s1, s2, x, shift, NULL, NULL, outer, C, inner, part, 0, 0);
}

/* y: the output, for relu's mask; NULL without relu. */
static void batchnorm_stats_backward(double *s1, double *s2, const float *dy, const float *y,
                                     const float *x, const float *mean, size_t outer, int C,
                                     size_t inner, double *part)
{
    if (y) batchnorm_stats_body(s1, s2, x, mean, dy, y, outer, C, inner, part, 1, 1);
    else batchnorm_stats_body(s1, s2, x, mean, dy, NULL, outer, C, inner, part, 1, 0);
}

/* y = (x - mean) * a + b per channel, then max(y, 0) with relu;  x, y
 * (outer, C, inner), the rest (C): row o. */
INLINE void batchnorm_normalize_row(float *y, const float *x, const float *mean, const float *a,
                                    const float *b, size_t o, int C, size_t inner, int relu)
{
    const size_t row = (size_t)C * inner;
    const int cv = C / VL * VL;
    const size_t iv = inner / VL * VL;
    const float *xr = x + o * row;
    float *yr = y + o * row;
    if (inner == 1) {
        for (int c = 0; c < cv; c += VL) {
            const vf v = (vload(xr + c) - vload(mean + c)) * vload(a + c) + vload(b + c);
            vstore(yr + c, relu ? batchnorm_relu(v) : v);
        }
        for (int c = cv; c < C; c++) {
            const float v = (xr[c] - mean[c]) * a[c] + b[c];
            yr[c] = relu ? batchnorm_relu1(v) : v;
        }
        return;
    }
    for (int c = 0; c < C; c++) {
        const float *xc = xr + (size_t)c * inner;
        float *yc = yr + (size_t)c * inner;
        const vf vm = splat(mean[c]), va = splat(a[c]), vb = splat(b[c]);
        for (size_t i = 0; i < iv; i += VL) {
            const vf v = (vload(xc + i) - vm) * va + vb;
            vstore(yc + i, relu ? batchnorm_relu(v) : v);
        }
        for (size_t i = iv; i < inner; i++) {
            const float v = (xc[i] - mean[c]) * a[c] + b[c];
            yc[i] = relu ? batchnorm_relu1(v) : v;
        }
    }
}

/* Every row. Small tensors (a batch-1 prediction) run outside any parallel
 * region, not in one with a false if clause: libgomp ends every region,
 * even a one-thread one, with a futex system call (about a microsecond). */
INLINE void batchnorm_normalize_body(float *y, const float *x, const float *mean, const float *a,
                                     const float *b, size_t outer, int C, size_t inner, int relu)
{
    if (outer * (size_t)C * inner <= BATCHNORM_PAR_MIN) {
        for (size_t o = 0; o < outer; o++) batchnorm_normalize_row(y, x, mean, a, b, o, C, inner, relu);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (size_t o = 0; o < outer; o++) batchnorm_normalize_row(y, x, mean, a, b, o, C, inner, relu);
}

static void batchnorm_normalize(float *y, const float *x, const float *mean, const float *a,
                                const float *b, size_t outer, int C, size_t inner, int relu)
{
    if (relu) batchnorm_normalize_body(y, x, mean, a, b, outer, C, inner, 1);
    else batchnorm_normalize_body(y, x, mean, a, b, outer, C, inner, 0);
}

/* dx += k1 * (g - k2 - (x - mean) * k3) per channel, g = dy or with relu
 * dy masked by y (batchnorm_mask);  dx, dy, y, x (outer, C, inner), the
 * rest (C). over: dx is dy's storage (the graph's grad_in_place), and gets
 * 0 + k1 * (...) -- what adding into the zeroed gradient it would
 * otherwise have gives, bit for bit -- each element written after its g
 * is read. */
INLINE void batchnorm_dx_body(float *dx, const float *dy, const float *y, const float *x,
                              const float *mean, const float *k1, const float *k2,
                              const float *k3, size_t outer, int C, size_t inner, int relu,
                              int over)
{
    const size_t row = (size_t)C * inner;
    const int cv = C / VL * VL;
    const size_t iv = inner / VL * VL;
    #pragma omp parallel for schedule(static) if (outer * row > BATCHNORM_PAR_MIN)
    for (size_t o = 0; o < outer; o++) {
        const size_t r = o * row;
        if (inner == 1) {
            for (int c = 0; c < cv; c += VL) {
                const size_t e = r + c;
                const vf g = relu ? batchnorm_mask(vload(dy + e), vload(y + e)) : vload(dy + e);
                const vf d0 = over ? splat(0.0f) : vload(dx + e);
                vstore(dx + e, d0 + vload(k1 + c) * (g - vload(k2 + c) -
                                                     (vload(x + e) - vload(mean + c)) *
                                                         vload(k3 + c)));
            }
            for (int c = cv; c < C; c++) {
                const size_t e = r + c;
                const float g = relu ? batchnorm_mask1(dy[e], y[e]) : dy[e];
                dx[e] = (over ? 0.0f : dx[e]) + k1[c] * (g - k2[c] - (x[e] - mean[c]) * k3[c]);
            }
            continue;
        }
        for (int c = 0; c < C; c++) {
            const size_t base = r + (size_t)c * inner;
            const vf v1 = splat(k1[c]), v2 = splat(k2[c]), v3 = splat(k3[c]), vm = splat(mean[c]);
            for (size_t i = 0; i < iv; i += VL) {
                const size_t e = base + i;
                const vf g = relu ? batchnorm_mask(vload(dy + e), vload(y + e)) : vload(dy + e);
                const vf d0 = over ? splat(0.0f) : vload(dx + e);
                vstore(dx + e, d0 + v1 * (g - v2 - (vload(x + e) - vm) * v3));
            }
            for (size_t i = iv; i < inner; i++) {
                const size_t e = base + i;
                const float g = relu ? batchnorm_mask1(dy[e], y[e]) : dy[e];
                dx[e] = (over ? 0.0f : dx[e]) + k1[c] * (g - k2[c] - (x[e] - mean[c]) * k3[c]);
            }
        }
    }
}

/* y: the output, for relu's mask; NULL without relu. dx may be dy itself. */
static void batchnorm_dx(float *dx, const float *dy, const float *y, const float *x,
                         const float *mean, const float *k1, const float *k2, const float *k3,
                         size_t outer, int C, size_t inner)
{
    const int over = dx == dy;
    if (y && over) batchnorm_dx_body(dx, dy, y, x, mean, k1, k2, k3, outer, C, inner, 1, 1);
    else if (y) batchnorm_dx_body(dx, dy, y, x, mean, k1, k2, k3, outer, C, inner, 1, 0);
    else if (over) batchnorm_dx_body(dx, dy, NULL, x, mean, k1, k2, k3, outer, C, inner, 0, 1);
    else batchnorm_dx_body(dx, dy, NULL, x, mean, k1, k2, k3, outer, C, inner, 0, 0);
}

/* Two shards' moments, {count, shift[C], s1[C], s2[C]} with sums about
 * the shift (batchnorm_stats_forward), into acc about acc's shift: with
 * d = shift_b - shift_a, b's sums move to shift a as
 *     s1 + n_b d  and  s2 + 2 d s1 + n_b d^2.
 * The merged sums are those one pass over both shards would give about
 * shift a (the whole batch's first value at the end of a merge over
 * shards in order, the plain pass's shift), and carry the same
 * cancellation in var = s2/M - (s1/M)^2, which batchnorm_forward's comment
 * bounds. */
static void batchnorm_merge_moments(double *acc, const double *next, size_t n)
{
    const size_t C = (n - 1) / 3;
    const double nb = next[0];
    for (size_t k = 0; k < C; k++) {
        const double d = next[1 + k] - acc[1 + k], s1 = next[1 + C + k];
        acc[1 + 2 * C + k] += next[1 + 2 * C + k] + d * (2.0 * s1 + nb * d);
        acc[1 + C + k] += s1 + nb * d;
    }
    acc[0] += nb;
}

static nn_status batchnorm_parse(nn_layer *l, nn_config *c)
{
    bn_state *s = l->state;
    NN_TRY(nn_config_get_float(c, "momentum", &s->momentum, 0.99f, 0, 0.0f, 1.0f));
    NN_TRY(nn_config_get_float(c, "epsilon", &s->epsilon, 1e-3f, 0, 0.0f, 1e6f));
    if (!(s->epsilon > 0.0f))
        return nn_error(NN_ERR_CONFIG, "%s: epsilon must be greater than 0, but got %g", c->layer,
                        (double)s->epsilon);
    NN_TRY(nn_config_get_bool(c, "center", &s->center, 1));
    NN_TRY(nn_config_get_bool(c, "scale", &s->scale, 1));
    NN_TRY(nn_config_get_data_format(c, &s->format));
    NN_TRY(nn_config_get_choice(c, "activation", &s->activation, NN_ACT_LINEAR, nn_activation_names));
    return nn_act_config_alpha(c, s->activation, &s->alpha);
}

static void batchnorm_write(const nn_layer *l, nn_config_writer *w)
{
    const bn_state *s = l->state;
    nn_config_write_float(w, "momentum", s->momentum);
    nn_config_write_float(w, "epsilon", s->epsilon);
    nn_config_write(w, "center", "%s", s->center ? "true" : "false");
    nn_config_write(w, "scale", "%s", s->scale ? "true" : "false");
    nn_config_write(w, "data_format", "%s", nn_data_format_name(s->format));
    nn_config_write(w, "activation", "%s", nn_activation_names[s->activation]);
    if (nn_act_has_alpha(s->activation)) nn_config_write_float(w, "alpha", s->alpha);
}

static nn_status batchnorm_build(nn_layer *l, int in_rank, const int *in_shape)
{
    bn_state *s = l->state;
    if (in_rank < 1 || in_rank > 3) {
        char b[96];
        return nn_error(NN_ERR_SHAPE,
                        "%s: expected a per-sample input of rank 1 (features), 2 (steps, "
                        "features) or 3 (an image), got %s",
                        l->name, tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    long pre = 1;
    int cax = in_rank - 1;
    if (in_rank == 3 && s->format == NN_CHANNELS_FIRST) cax = 0;
    for (int i = 0; i < cax; i++) pre *= in_shape[i];
    long inner = 1;
    for (int i = cax + 1; i < in_rank; i++) inner *= in_shape[i];
    s->C = in_shape[cax];
    s->pre = (int)pre;
    s->inner = (int)inner;
    s->i_gamma = s->i_beta = -1;
    const int C = s->C;
    if (s->scale) {
        s->i_gamma = l->n_params;
        NN_TRY(nn_layer_add_param(l, "gamma", 1, &C, NN_INIT_ONES, 0, 0, 1));
    }
    if (s->center) {
        s->i_beta = l->n_params;
        NN_TRY(nn_layer_add_param(l, "beta", 1, &C, NN_INIT_ZEROS, 0, 0, 1));
    }
    s->i_mean = l->n_params;
    NN_TRY(nn_layer_add_param(l, "moving_mean", 1, &C, NN_INIT_ZEROS, 0, 0, 0));
    s->i_var = l->n_params;
    NN_TRY(nn_layer_add_param(l, "moving_variance", 1, &C, NN_INIT_ONES, 0, 0, 0));
    l->out_rank = in_rank;
    memcpy(l->out_shape, in_shape, (size_t)in_rank * sizeof *in_shape);
    return NN_OK;
}

static void batchnorm_backward(nn_node *n)
{
    const bn_ctx *c = n->ctx;
    const bn_state *s = c->s;
    nn_layer *l = c->l;
    tensor *x = n->in[0], *y = n->out;
    tensor *gamma = s->i_gamma >= 0 ? l->params[s->i_gamma].t : NULL;
    tensor *beta = s->i_beta >= 0 ? l->params[s->i_beta].t : NULL;
    const int C = s->C;
    const size_t outer = (size_t)x->shape[0] * s->pre, inner = (size_t)s->inner;
    const double M = c->count;
    /* dy may be x->grad's storage too (grad_in_place): batchnorm_dx reads
     * it after the sums and overwrites it with dx. */
    const float *dy = y->grad;
    /* sum(dy * (x - mean)); times inv_std it is sum(dy * x_hat). */
    double *sum_dy = c->part, *sum_dyxc = c->part + C, *part = c->part + 2 * C;
    const float *mask_y = s->activation == NN_ACT_RELU ? y->data : NULL;
    batchnorm_stats_backward(sum_dy, sum_dyxc, dy, mask_y, x->data, c->mean, outer, C, inner, part);
    if (gamma && gamma->grad)
        for (int k = 0; k < C; k++) gamma->grad[k] += (float)(sum_dyxc[k] * c->inv_std[k]);
    if (beta && beta->grad)
        for (int k = 0; k < C; k++) beta->grad[k] += (float)sum_dy[k];
    if (!x->grad || M == 0) return;
    /* dx needs the sums over the whole batch; dgamma and dbeta took this
     * shard's, which the step adds up with the other gradients. */
    if (c->meet && c->training) c->meet->meet(c->meet, l, c->part, 2 * (size_t)C, NULL);
    /* dx += k1 * (dy - k2 - (x - mean) * k3), per channel coefficients; the
     * batch terms k2, k3 vanish in eval mode, where mean and var are
     * constants. Reuses part for the three (C) float vectors. */
    float *k1 = (float *)part, *k2 = k1 + C, *k3 = k2 + C;
    for (int k = 0; k < C; k++) {
        const double is = c->inv_std[k];
        k1[k] = (float)((gamma ? gamma->data[k] : 1.0f) * is);
        k2[k] = c->training ? (float)(sum_dy[k] / M) : 0.0f;
        k3[k] = c->training ? (float)(is * is * sum_dyxc[k] / M) : 0.0f;
    }
    batchnorm_dx(x->grad, dy, mask_y, x->data, c->mean, k1, k2, k3, outer, C, inner);
}

static nn_status batchnorm_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    const bn_state *s = l->state;
    const int C = s->C;
    const size_t outer = (size_t)x->shape[0] * s->pre, inner = (size_t)s->inner;
    const size_t M = outer * inner;
    tensor *y = nn_graph_tensor(g, x->rank, x->shape);
    bn_ctx *c = nn_graph_alloc(g, sizeof *c);
    const size_t n_part = 2 * (size_t)C + batchnorm_stats_scratch(outer, C, inner);
    double *part = nn_graph_alloc(g, n_part * sizeof(double));
    float *mean = nn_graph_alloc(g, (size_t)C * sizeof(float));
    float *inv_std = nn_graph_alloc(g, (size_t)C * sizeof(float));
    if (!y || !c || !part || !mean || !inv_std) return NN_ERR_MEMORY;
    tensor *gamma = s->i_gamma >= 0 ? l->params[s->i_gamma].t : NULL;
    tensor *beta = s->i_beta >= 0 ? l->params[s->i_beta].t : NULL;
    float *mm = l->params[s->i_mean].t->data, *mv = l->params[s->i_var].t->data;
    const int batch = training && M > 0;
    double count = (double)M;
    if (batch) {
        /* One pass for both moments, about a shift K per channel: the
         * channel's first value. var = E[(x-K)^2] - E[x-K]^2 cancels only as
         * far as the batch mean lies from K in standard deviations, which
         * for a value drawn from the batch is a few at most; the sums are in
         * double (2^-53 per rounding, about 1e-12 relative after a block's
         * 16384 terms), so even a thousand standard deviations leave var
         * correct far below float precision. */
        double *s1 = part, *s2 = part + C, *blocks = part + 2 * C;
        float *shift = mean; /* K, until the mean replaces it */
        for (int k = 0; k < C; k++) shift[k] = x->data[(size_t)k * inner];
        batchnorm_stats_forward(s1, s2, x->data, shift, outer, C, inner, blocks);
        if (l->meet) {
            /* A shard of a batch: its moments, merged with the other
             * shards', become the whole batch's, about its shift. */
            double *m = nn_graph_alloc(g, (1 + 3 * (size_t)C) * sizeof(double));
            if (!m) return NN_ERR_MEMORY;
            m[0] = count;
            for (int k = 0; k < C; k++) {
                m[1 + k] = shift[k];
                m[1 + C + k] = s1[k];
                m[1 + 2 * C + k] = s2[k];
            }
            l->meet->meet(l->meet, l, m, 1 + 3 * (size_t)C, batchnorm_merge_moments);
            count = m[0];
            for (int k = 0; k < C; k++) {
                shift[k] = (float)m[1 + k];
                s1[k] = m[1 + C + k];
                s2[k] = m[1 + 2 * C + k];
            }
        }
        const double mom = s->momentum;
        for (int k = 0; k < C; k++) {
            const double d = s1[k] / count, sq = s2[k] / count - d * d;
            const double var = sq > 0.0 ? sq : 0.0;
            const double unbiased = count > 1 ? var * count / (count - 1) : var;
            mean[k] = (float)(shift[k] + d);
            inv_std[k] = (float)(1.0 / sqrt(var + s->epsilon));
            mm[k] = (float)(mm[k] * mom + (double)mean[k] * (1.0 - mom));
            mv[k] = (float)(mv[k] * mom + unbiased * (1.0 - mom));
        }
    } else {
        for (int k = 0; k < C; k++) {
            mean[k] = mm[k];
            inv_std[k] = (float)(1.0 / sqrt((double)mv[k] + s->epsilon));
        }
    }
    /* y = (x - mean) * a + beta with a = gamma * inv_std. */
    float *a = (float *)part, *bb = a + C;
    for (int k = 0; k < C; k++) {
        a[k] = (gamma ? gamma->data[k] : 1.0f) * inv_std[k];
        bb[k] = beta ? beta->data[k] : 0.0f;
    }
    batchnorm_normalize(y->data, x->data, mean, a, bb, outer, C, inner,
                        s->activation == NN_ACT_RELU);
    c->s = s;
    c->l = l;
    c->mean = mean;
    c->inv_std = inv_std;
    c->training = batch;
    c->count = count;
    c->meet = batch ? l->meet : NULL;
    c->part = part;
    tensor *in[3] = {x, gamma, beta};
    int n_in = 1;
    if (gamma) in[n_in++] = gamma;
    if (beta) in[n_in++] = beta;
    nn_node *node = nn_graph_record(g, "batchnorm", y, in, n_in, batchnorm_backward, c);
    if (node) {
        node->saves_output = node->output_is_mask = s->activation == NN_ACT_RELU;
        /* dx is elementwise once the sums over dy are taken: it can be
         * written over dy, which saves a gradient buffer the size of x. */
        node->grad_in_place = 1;
    }
    if (s->activation > NN_ACT_RELU) return nn_act_record(g, s->activation, s->alpha, y, out, 1);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_batchnorm = {
    .name = "batchnorm",
    .summary = "batch normalization over the channel axis (Keras semantics)",
    .state_size = sizeof(bn_state),
    .parse = batchnorm_parse,
    .write = batchnorm_write,
    .build = batchnorm_build,
    .forward = batchnorm_forward,
    .test_config = "momentum=0.9 data_format=channels_first",
    .test_rank = 3,
    .test_shape = {3, 2, 2},
    .whole_batch = 1,
};
