/* The feature-map picture of the dropout studies (examples/dropout_study.c,
 * examples/dropout_study2.c): a digit and some feature maps of a layer in
 * three rows -- the activation, element-wise dropout applied to it, spatial
 * dropout applied to it, dropped values in blue -- drawn on a study_canvas
 * (examples/dropout_study_png.h). The masks come from the library's own
 * dropout and spatial_dropout2d layers run in training mode, so the picture
 * shows exactly what training sees.
 * Deliberately omitted: colour maps, labels (the README captions the
 * pictures).
 */
#ifndef NN_EXAMPLES_DROPOUT_STUDY_MAPS_H
#define NN_EXAMPLES_DROPOUT_STUDY_MAPS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

#include "dropout_study_png.h"

typedef struct maps_tile {
    const float *v;      /* (H, W, C) values */
    const float *mask;   /* (H, W, C): 0 where dropped, or NULL */
    int C, c;            /* channels, the one shown */
    float vmax;
} maps_tile;

static void maps_colour(int i, uint8_t rgb[3], const void *ctx)
{
    const maps_tile *t = ctx;
    const size_t k = (size_t)i * t->C + t->c;
    if (t->mask && t->mask[k] == 0.0f) {
        rgb[0] = 40, rgb[1] = 90, rgb[2] = 200; /* dropped: blue */
        return;
    }
    float u = t->vmax > 0.0f ? t->v[k] / t->vmax : 0.0f;
    u = u < 0.0f ? 0.0f : (u > 1.0f ? 1.0f : u);
    rgb[0] = rgb[1] = rgb[2] = (uint8_t)lrintf(255.0f * u);
}

/* Runs a standalone dropout layer of type `type` in training mode on x
 * (1, H, W, C): y gets the output, mask the output for an all-ones input
 * with the same seed and call (0 where dropped). */
static nn_status maps_drop(const char *type, const char *config, const float *x, float *y,
                           float *mask, int H, int W, int C)
{
    nn_layer *l = nn_layer_create(type, config);
    nn_graph *g = nn_graph_create(0);
    const size_t n = (size_t)H * W * C;
    float *ones = malloc(n * sizeof *ones), *xin = malloc(n * sizeof *xin);
    nn_status s = (!l || !g || !ones || !xin) ? nn_error(NN_ERR_MEMORY, "maps_drop: out of memory")
                                              : NN_OK;
    const int shape[3] = {H, W, C}, bshape[4] = {1, H, W, C};
    if (s == NN_OK) s = nn_layer_build(l, 3, shape);
    if (s == NN_OK) {
        nn_graph_set_grad_enabled(g, 0);
        for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
        memcpy(xin, x, n * sizeof *xin);
        const float *src[2] = {ones, xin};
        float *dst[2] = {mask, y};
        for (int pass = 0; pass < 2 && s == NN_OK; pass++) {
            tensor *in = tensor_wrap((float *)src[pass], 4, bshape), *out = NULL;
            if (!in) {
                s = NN_ERR_MEMORY;
                break;
            }
            l->calls = 0; /* the same draw for the ones and for x */
            s = nn_layer_forward(l, g, in, &out, 1);
            if (s == NN_OK) memcpy(dst[pass], out->data, n * sizeof(float));
            tensor_free(in);
            nn_graph_reset(g);
        }
    }
    nn_layer_free(l);
    nn_graph_free(g);
    free(ones);
    free(xin);
    return s;
}

/* Where and how one block of the picture is drawn. */
typedef struct maps_block {
    int x0, y0;      /* top left corner on the canvas */
    int tile, gap;   /* tile size and the space between tiles, in pixels */
    int shown;       /* maps shown, at most MAPS_MAX */
} maps_block;
#define MAPS_MAX 16

/* Draws one block: the image img (IH, IW) at the block's top left, then
 * in three rows the `shown` most active channels (by mean activation, shown
 * in channel order) of act (H, W, C) -- the activation, element-wise and
 * spatial dropout at `rate` applied to it with the given seed. Tiles are
 * upscaled nearest-neighbour. The chosen channels go to pick[0..shown). */
static nn_status maps_draw(study_canvas *cv, const maps_block *b, const float *img, int IH,
                           int IW, const float *act, int H, int W, int C, float rate,
                           uint64_t seed, int *pick)
{
    const size_t n = (size_t)H * W * C;
    const int shown = C < b->shown ? C : b->shown;
    if (shown > MAPS_MAX || C > 256) return nn_error(NN_ERR_ARG, "maps_draw: too many channels");
    float *ye = malloc(n * sizeof *ye), *me = malloc(n * sizeof *me);
    float *ys = malloc(n * sizeof *ys), *ms = malloc(n * sizeof *ms);
    nn_status s = (!ye || !me || !ys || !ms) ? nn_error(NN_ERR_MEMORY, "maps_draw: out of memory")
                                             : NN_OK;
    if (s == NN_OK) {
        char cfg[128];
        snprintf(cfg, sizeof cfg, "rate=%g seed=%llu", (double)rate, (unsigned long long)seed);
        s = maps_drop("dropout", cfg, act, ye, me, H, W, C);
        snprintf(cfg, sizeof cfg, "rate=%g seed=%llu data_format=channels_last", (double)rate,
                 (unsigned long long)seed);
        if (s == NN_OK) s = maps_drop("spatial_dropout2d", cfg, act, ys, ms, H, W, C);
    }
    if (s == NN_OK) {
        int used[256] = {0};
        for (int k = 0; k < shown; k++) {
            int best = -1;
            double best_mean = -1.0;
            for (int c = 0; c < C; c++) {
                if (used[c]) continue;
                double mean = 0.0;
                for (int p = 0; p < H * W; p++) mean += act[(size_t)p * C + c];
                if (mean > best_mean) best_mean = mean, best = c;
            }
            used[best] = 1;
            pick[k] = best;
        }
        for (int i = 1; i < shown; i++)
            for (int j = i; j > 0 && pick[j - 1] > pick[j]; j--) {
                const int t = pick[j];
                pick[j] = pick[j - 1];
                pick[j - 1] = t;
            }
        const int step = b->tile + b->gap;
        maps_tile digit = {img, NULL, 1, 0, 1.0f};
        study_canvas_tile(cv, b->x0, b->y0, b->tile, IH, IW, maps_colour, &digit);
        for (int k = 0; k < shown; k++) {
            const int c = pick[k];
            float vmax = 0.0f;
            for (int p = 0; p < H * W; p++) {
                const size_t i = (size_t)p * C + c;
                vmax = fmaxf(vmax, fmaxf(act[i], fmaxf(ye[i], ys[i])));
            }
            const maps_tile rows[3] = {{act, NULL, C, c, vmax}, {ye, me, C, c, vmax},
                                       {ys, ms, C, c, vmax}};
            for (int r = 0; r < 3; r++)
                study_canvas_tile(cv, b->x0 + (k + 1) * step, b->y0 + r * step, b->tile, H, W,
                                  maps_colour, &rows[r]);
        }
    }
    free(ye);
    free(me);
    free(ys);
    free(ms);
    return s;
}

#endif
