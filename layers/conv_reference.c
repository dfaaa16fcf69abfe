/* conv_reference: the convolution's forward and backward as direct loops
 * over NHWC buffers (see conv_reference.h for the shapes), one output
 * element at a time.
 *
 * Every element is one sum, accumulated in double and rounded to float once.
 * Double because these loops are the yardstick for the float kernels: their
 * own rounding error (about 1e-16 of the summed magnitudes) is then far
 * below the kernels' (about 1e-7), so a difference measures the kernel
 * alone, and it does not depend on the order of the loops -- each backward
 * sum is written in the order easiest to read, not the one a kernel uses.
 *
 * Omits: speed (no threads, blocking or vectors), the fused ReLU.
 */
#include "layers/conv_reference.h"

#include <stddef.h>

void nn_conv_forward_reference(float *y, const float *x, const float *k, const float *b,
                               const nn_conv_geom *g, int N, int F)
{
    const int H = g->H, W = g->W, C = g->C;
    for (int n = 0; n < N; n++)
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++)
                for (int f = 0; f < F; f++) {
                    double s = b ? b[f] : 0.0;
                    for (int kh = 0; kh < g->KH; kh++)
                        for (int kw = 0; kw < g->KW; kw++) {
                            /* The input pixel this tap reads; padding reads 0. */
                            const int ih = oh * g->SH - g->PT + kh * g->DH;
                            const int iw = ow * g->SW - g->PL + kw * g->DW;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            const float *xs = x + (((size_t)n * H + ih) * W + iw) * C;
                            const float *ks = k + (((size_t)kh * g->KW + kw) * C) * F + f;
                            for (int c = 0; c < C; c++) s += (double)xs[c] * ks[(size_t)c * F];
                        }
                    y[(((size_t)n * g->OH + oh) * g->OW + ow) * F + f] = (float)s;
                }
}

void nn_conv_backward_reference(float *dx, float *dk, float *db, const float *dz, const float *x,
                                const float *k, const nn_conv_geom *g, int N, int F)
{
    const int H = g->H, W = g->W, C = g->C, OH = g->OH, OW = g->OW;
    /* dx: an input pixel gathers from every (window, tap) that read it. Tap
     * kh of output row oh reads ih = oh*SH - PT + kh*DH, so the row is
     * oh = (ih + PT - kh*DH) / SH, when that divides and lies in [0, OH). */
    for (int n = 0; dx && n < N; n++)
        for (int ih = 0; ih < H; ih++)
            for (int iw = 0; iw < W; iw++)
                for (int c = 0; c < C; c++) {
                    double s = 0.0;
                    for (int kh = 0; kh < g->KH; kh++)
                        for (int kw = 0; kw < g->KW; kw++) {
                            const int th = ih + g->PT - kh * g->DH, tw = iw + g->PL - kw * g->DW;
                            if (th < 0 || tw < 0 || th % g->SH || tw % g->SW) continue;
                            const int oh = th / g->SH, ow = tw / g->SW;
                            if (oh >= OH || ow >= OW) continue;
                            const float *ds = dz + (((size_t)n * OH + oh) * OW + ow) * F;
                            const float *ks = k + (((size_t)kh * g->KW + kw) * C + c) * F;
                            for (int f = 0; f < F; f++) s += (double)ds[f] * ks[f];
                        }
                    dx[(((size_t)n * H + ih) * W + iw) * C + c] += (float)s;
                }
    /* dk: a tap's weight sums x at that tap times dz over every window. */
    for (int kh = 0; dk && kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++)
            for (int c = 0; c < C; c++)
                for (int f = 0; f < F; f++) {
                    double s = 0.0;
                    for (int n = 0; n < N; n++)
                        for (int oh = 0; oh < OH; oh++)
                            for (int ow = 0; ow < OW; ow++) {
                                const int ih = oh * g->SH - g->PT + kh * g->DH;
                                const int iw = ow * g->SW - g->PL + kw * g->DW;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                s += (double)x[(((size_t)n * H + ih) * W + iw) * C + c] *
                                     dz[(((size_t)n * OH + oh) * OW + ow) * F + f];
                            }
                    dk[(((size_t)kh * g->KW + kw) * C + c) * F + f] += (float)s;
                }
    /* db: dz summed over every output pixel. */
    for (int f = 0; db && f < F; f++) {
        double s = 0.0;
        for (size_t p = 0; p < (size_t)N * OH * OW; p++) s += dz[p * F + f];
        db[f] += (float)s;
    }
}
