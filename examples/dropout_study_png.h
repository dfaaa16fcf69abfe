/* An RGB canvas and its PNG file, for the feature-map picture of
 * examples/dropout_study.c. Encoding is libpng's; this file only lays out
 * pixels: tiles with nearest-neighbour upscaling and a fill colour.
 * The file is written to "<path>.tmp" and renamed, so a reader never sees
 * half a picture.
 * Deliberately omitted: text (the README captions the picture), alpha,
 * colour maps other than grey plus one marker colour.
 */
#ifndef NN_EXAMPLES_DROPOUT_STUDY_PNG_H
#define NN_EXAMPLES_DROPOUT_STUDY_PNG_H

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/status.h"

typedef struct study_canvas {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) */
} study_canvas;

static nn_status study_canvas_init(study_canvas *c, int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    c->w = w;
    c->h = h;
    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb) return nn_error(NN_ERR_MEMORY, "study_canvas_init: %dx%d: out of memory", w, h);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        c->rgb[3 * i] = r;
        c->rgb[3 * i + 1] = g;
        c->rgb[3 * i + 2] = b;
    }
    return NN_OK;
}

static void study_canvas_free(study_canvas *c)
{
    free(c->rgb);
    c->rgb = NULL;
}

static void study_canvas_put(study_canvas *c, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->rgb + ((size_t)y * c->w + x) * 3, rgb, 3);
}

/* Draws a (sh, sw) source image into the size x size tile at (x0, y0),
 * nearest neighbour. colour(i, rgb, ctx) gives source pixel i's colour. */
static void study_canvas_tile(study_canvas *c, int x0, int y0, int size, int sh, int sw,
                              void (*colour)(int i, uint8_t rgb[3], const void *ctx),
                              const void *ctx)
{
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            uint8_t rgb[3];
            colour((y * sh / size) * sw + x * sw / size, rgb, ctx);
            study_canvas_put(c, x0 + x, y0 + y, rgb);
        }
}

/* libpng reports errors through longjmp; the handler keeps its message. */
static char study_png_msg[200];
static void study_png_error(png_structp p, png_const_charp msg)
{
    snprintf(study_png_msg, sizeof study_png_msg, "%s", msg);
    png_longjmp(p, 1);
}
static void study_png_warning(png_structp p, png_const_charp msg)
{
    (void)p;
    (void)msg;
}

static nn_status study_canvas_write_png(const study_canvas *c, const char *path)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return nn_error(NN_ERR_ARG, "study_canvas_write_png: path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return nn_error(NN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, study_png_error,
                                              study_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        remove(tmp);
        return nn_error(NN_ERR_MEMORY, "%s: libpng could not start", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        return nn_error(NN_ERR_IO, "%s: libpng: %s", path, study_png_msg);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < c->h; y++) png_write_row(png, c->rgb + (size_t)y * c->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        remove(tmp);
        return nn_error(NN_ERR_IO, "%s: write error: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return nn_error(NN_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    }
    return NN_OK;
}

#endif
