/* Losses by name (see loss.h): the table of names, the text form, and the
 * dispatch to the ops of tensor/ops.h, which do the arithmetic.
 * Omitted: one-hot or probability targets for the softmax loss, per-sample
 * weights, reductions other than the mean. */
#include "tensor/loss.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"

static const struct {
    const char *name;
    nn_loss_kind kind;
} loss_names[] = {
    {"sparse_categorical_crossentropy", NN_LOSS_SOFTMAX_CROSS_ENTROPY},
    {"categorical_crossentropy", NN_LOSS_SOFTMAX_CROSS_ENTROPY},
    {"binary_crossentropy", NN_LOSS_BINARY_CROSS_ENTROPY},
    {"mean_squared_error", NN_LOSS_MEAN_SQUARED_ERROR},
    {"mse", NN_LOSS_MEAN_SQUARED_ERROR},
};
#define LOSS_VALID_NAMES                                                                   \
    "sparse_categorical_crossentropy, categorical_crossentropy, binary_crossentropy, " \
    "mean_squared_error, mse"

const char *nn_loss_name(nn_loss_kind kind)
{
    switch (kind) {
    case NN_LOSS_SOFTMAX_CROSS_ENTROPY: return "sparse_categorical_crossentropy";
    case NN_LOSS_BINARY_CROSS_ENTROPY: return "binary_crossentropy";
    case NN_LOSS_MEAN_SQUARED_ERROR: return "mean_squared_error";
    }
    return NULL;
}

/* A descriptor that names a loss and options that loss takes. */
static nn_status loss_check(const char *fn, const nn_loss *loss)
{
    const char *name = nn_loss_name(loss->kind);
    if (!name) return nn_error(NN_ERR_ARG, "%s: unknown loss kind %d", fn, (int)loss->kind);
    const float e = loss->label_smoothing;
    if (loss->kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY) {
        if (!(e >= 0.0f && e <= 1.0f))
            return nn_error(NN_ERR_ARG, "%s: label_smoothing of %s must be in [0, 1], got %g", fn, name,
                            (double)e);
    } else if (e != 0.0f) {
        return nn_error(NN_ERR_ARG,
                        "%s: label_smoothing applies to sparse_categorical_crossentropy only, got %g for %s",
                        fn, (double)e, name);
    }
    return NN_OK;
}

/* Reads the value of label_smoothing: a number in [0, 1]. */
static nn_status loss_parse_smoothing(const char *v, float *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end)
        return nn_error(NN_ERR_CONFIG, "nn_loss_parse: label_smoothing must be a number, but got '%s'", v);
    if (!(x >= 0.0 && x <= 1.0))
        return nn_error(NN_ERR_CONFIG, "nn_loss_parse: label_smoothing must be between 0 and 1, but got %s",
                        v);
    *out = (float)x;
    return NN_OK;
}

nn_status nn_loss_parse(const char *text, nn_loss *loss)
{
    if (!text) return nn_error(NN_ERR_ARG, "nn_loss_parse: text is NULL");
    if (!loss) return nn_error(NN_ERR_ARG, "nn_loss_parse: loss is NULL");
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    const char *start = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    const size_t len = (size_t)(p - start);
    if (len == 0)
        return nn_error(NN_ERR_CONFIG, "nn_loss_parse: no loss name in '%s'; valid names: " LOSS_VALID_NAMES,
                        text);
    nn_loss l = {0};
    const char *name = NULL;
    for (size_t i = 0; i < sizeof loss_names / sizeof loss_names[0]; i++)
        if (strlen(loss_names[i].name) == len && !strncmp(loss_names[i].name, start, len)) {
            name = loss_names[i].name;
            l.kind = loss_names[i].kind;
        }
    if (!name)
        return nn_error(NN_ERR_CONFIG, "nn_loss_parse: unknown loss '%.*s'; valid names: " LOSS_VALID_NAMES,
                        (int)(len > 80 ? 80 : len), start);
    int have_smoothing = 0;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *tok = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        const int tlen = (int)((size_t)(p - tok) > 80 ? 80 : (size_t)(p - tok));
        const char *eq = memchr(tok, '=', (size_t)(p - tok));
        if (!eq || eq == tok || eq + 1 == p)
            return nn_error(NN_ERR_CONFIG, "nn_loss_parse: option '%.*s' of %s is not key=value", tlen, tok,
                            name);
        const size_t klen = (size_t)(eq - tok), vlen = (size_t)(p - eq - 1);
        const char *key = "label_smoothing";
        if (l.kind != NN_LOSS_SOFTMAX_CROSS_ENTROPY || klen != strlen(key) || strncmp(tok, key, klen))
            return nn_error(NN_ERR_CONFIG, "nn_loss_parse: unknown option '%.*s' for %s; %s", (int)klen, tok,
                            name,
                            l.kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY ? "valid options: label_smoothing"
                                                                    : "it takes no options");
        if (have_smoothing)
            return nn_error(NN_ERR_CONFIG, "nn_loss_parse: option 'label_smoothing' is given twice");
        char value[64];
        if (vlen >= sizeof value)
            return nn_error(NN_ERR_CONFIG, "nn_loss_parse: value of label_smoothing is too long ('%.*s')",
                            tlen, tok);
        memcpy(value, eq + 1, vlen);
        value[vlen] = '\0';
        NN_TRY(loss_parse_smoothing(value, &l.label_smoothing));
        have_smoothing = 1;
    }
    *loss = l;
    return NN_OK;
}

nn_status nn_loss_string(const nn_loss *loss, char *buf, size_t n)
{
    if (!loss) return nn_error(NN_ERR_ARG, "nn_loss_string: loss is NULL");
    if (!buf) return nn_error(NN_ERR_ARG, "nn_loss_string: buf is NULL");
    NN_TRY(loss_check("nn_loss_string", loss));
    const char *name = nn_loss_name(loss->kind);
    /* %.9g: nine significant digits read back as the same float. */
    const int k = loss->label_smoothing != 0.0f
                      ? snprintf(buf, n, "%s label_smoothing=%.9g", name, (double)loss->label_smoothing)
                      : snprintf(buf, n, "%s", name);
    if (k < 0 || (size_t)k >= n)
        return nn_error(NN_ERR_ARG, "nn_loss_string: needs %d bytes, buffer has %zu", k + 1, n);
    return NN_OK;
}

nn_status nn_op_loss(nn_graph *g, const nn_loss *loss, tensor *pred, const int *labels,
                     const tensor *targets, tensor **out, int *correct)
{
    if (!loss) return nn_error(NN_ERR_ARG, "nn_op_loss: loss is NULL");
    NN_TRY(loss_check("nn_op_loss", loss));
    const char *name = nn_loss_name(loss->kind);
    if (loss->kind == NN_LOSS_SOFTMAX_CROSS_ENTROPY) {
        if (targets)
            return nn_error(NN_ERR_ARG, "nn_op_loss: %s takes integer labels, not float targets "
                                        "(targets must be NULL)", name);
        if (!labels) return nn_error(NN_ERR_ARG, "nn_op_loss: %s needs labels, but labels is NULL", name);
        return nn_op_softmax_cross_entropy_smoothed(g, pred, labels, loss->label_smoothing, out, correct);
    }
    if (labels)
        return nn_error(NN_ERR_ARG, "nn_op_loss: %s takes float targets, not integer labels "
                                    "(labels must be NULL)", name);
    if (!targets) return nn_error(NN_ERR_ARG, "nn_op_loss: %s needs targets, but targets is NULL", name);
    if (loss->kind == NN_LOSS_BINARY_CROSS_ENTROPY)
        return nn_op_binary_cross_entropy(g, pred, targets, out, correct);
    NN_TRY(nn_op_mean_squared_error(g, pred, targets, out));
    if (correct) *correct = 0;
    return NN_OK;
}
