/* Layer config text: parsing, typed getters, writing (see config.h). */
#include "layers/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nn_status nn_config_parse(nn_config *c, const char *layer, const char *text)
{
    memset(c, 0, sizeof *c);
    snprintf(c->layer, sizeof c->layer, "%s", layer ? layer : "?");
    if (!text) return NN_OK;
    const char *p = text;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        size_t len = (size_t)(p - start);
        const char *eq = memchr(start, '=', len);
        if (!eq)
            return nn_error(NN_ERR_CONFIG, "%s: config token '%.*s' is not key=value", c->layer,
                            (int)len, start);
        size_t klen = (size_t)(eq - start), vlen = len - klen - 1;
        if (klen == 0 || vlen == 0)
            return nn_error(NN_ERR_CONFIG, "%s: config token '%.*s' has an empty %s", c->layer,
                            (int)len, start, klen == 0 ? "key" : "value");
        if (klen >= NN_CONFIG_KEY_LEN || vlen >= NN_CONFIG_VALUE_LEN)
            return nn_error(NN_ERR_CONFIG, "%s: config token '%.*s' is too long", c->layer,
                            (int)(len > 80 ? 80 : len), start);
        if (c->n == NN_CONFIG_MAX_KEYS)
            return nn_error(NN_ERR_CONFIG, "%s: more than %d config keys", c->layer,
                            NN_CONFIG_MAX_KEYS);
        memcpy(c->kv[c->n].key, start, klen);
        c->kv[c->n].key[klen] = '\0';
        memcpy(c->kv[c->n].value, eq + 1, vlen);
        c->kv[c->n].value[vlen] = '\0';
        for (int i = 0; i < c->n; i++)
            if (!strcmp(c->kv[i].key, c->kv[c->n].key))
                return nn_error(NN_ERR_CONFIG, "%s: config key '%s' is given twice", c->layer,
                                c->kv[i].key);
        c->n++;
    }
    return NN_OK;
}

static const char *config_lookup(nn_config *c, const char *key)
{
    int asked = 0;
    for (int i = 0; i < c->n_asked && !asked; i++) asked = !strcmp(c->asked[i], key);
    if (!asked && c->n_asked < NN_CONFIG_MAX_KEYS)
        snprintf(c->asked[c->n_asked++], NN_CONFIG_KEY_LEN, "%s", key);
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->kv[i].key, key)) {
            c->kv[i].used = 1;
            return c->kv[i].value;
        }
    return NULL;
}

static nn_status config_err_missing(const nn_config *c, const char *key)
{
    return nn_error(NN_ERR_CONFIG, "%s: config key '%s' is required", c->layer, key);
}

static nn_status config_parse_long(const nn_config *c, const char *key, const char *v, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return nn_error(NN_ERR_CONFIG, "%s: %s must be an integer, but got '%s'", c->layer, key, v);
    *out = x;
    return NN_OK;
}

static nn_status config_get_int(nn_config *c, const char *key, int *out, int def,
                                int required, int lo, int hi)
{
    const char *v = config_lookup(c, key);
    if (!v) {
        if (required) return config_err_missing(c, key);
        *out = def;
        return NN_OK;
    }
    long x;
    NN_TRY(config_parse_long(c, key, v, &x));
    if (x < lo || x > hi)
        return nn_error(NN_ERR_CONFIG, "%s: %s must be between %d and %d, but got %s", c->layer,
                        key, lo, hi, v);
    *out = (int)x;
    return NN_OK;
}

static nn_status config_get_float(nn_config *c, const char *key, float *out, float def,
                                  int required, float lo, float hi)
{
    const char *v = config_lookup(c, key);
    if (!v) {
        if (required) return config_err_missing(c, key);
        *out = def;
        return NN_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end)
        return nn_error(NN_ERR_CONFIG, "%s: %s must be a number, but got '%s'", c->layer, key, v);
    if (!isfinite(x) || x < lo || x > hi)
        return nn_error(NN_ERR_CONFIG, "%s: %s must be between %g and %g, but got %s", c->layer,
                        key, (double)lo, (double)hi, v);
    *out = (float)x;
    return NN_OK;
}

static nn_status config_get_bool(nn_config *c, const char *key, int *out, int def)
{
    const char *v = config_lookup(c, key);
    if (!v) {
        *out = def;
        return NN_OK;
    }
    if (!strcmp(v, "true") || !strcmp(v, "1")) *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0")) *out = 0;
    else
        return nn_error(NN_ERR_CONFIG, "%s: %s must be true or false, but got '%s'", c->layer, key, v);
    return NN_OK;
}

static nn_status config_get_u64(nn_config *c, const char *key, unsigned long long *out,
                                int *present)
{
    const char *v = config_lookup(c, key);
    *present = v != NULL;
    if (!v) return NN_OK;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return nn_error(NN_ERR_CONFIG, "%s: %s must be a non-negative integer, but got '%s'",
                        c->layer, key, v);
    *out = x;
    return NN_OK;
}

static nn_status config_get_choice(nn_config *c, const char *key, int *out, int def,
                                   const char *const *allowed)
{
    const char *v = config_lookup(c, key);
    if (!v) {
        if (def < 0) return config_err_missing(c, key);
        *out = def;
        return NN_OK;
    }
    char list[256] = "";
    for (int i = 0; allowed[i]; i++) {
        if (!strcmp(v, allowed[i])) {
            *out = i;
            return NN_OK;
        }
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", allowed[i]);
    }
    /* The activations are a fixed list; another one is a layer of its own,
     * placed after this one, so say how to write and register it. */
    const char *more = !strcmp(key, "activation")
                           ? "; for another activation, write a layer type as "
                             "examples/custom_layer.c does (swish), register it with "
                             "nn_registry_add and put it after this layer"
                           : "";
    return nn_error(NN_ERR_CONFIG, "%s: %s must be one of {%s}, but got '%s'%s", c->layer, key,
                    list, v, more);
}

static nn_status config_get_ints(nn_config *c, const char *key, int *out, int count,
                                 const int *def, int required, int lo, int hi)
{
    const char *v = config_lookup(c, key);
    if (!v) {
        if (required || !def) return config_err_missing(c, key);
        for (int i = 0; i < count; i++) out[i] = def[i];
        return NN_OK;
    }
    char tmp[NN_CONFIG_VALUE_LEN];
    snprintf(tmp, sizeof tmp, "%s", v);
    int n = 0;
    /* Split by hand rather than with strtok, which would skip empty items
     * and so accept "3,,3" or a trailing comma. */
    for (char *tok = tmp, *end;; tok = end + 1) {
        end = tok + strcspn(tok, ",x");
        const int last = *end == '\0';
        *end = '\0';
        long x;
        if (n == count)
            return nn_error(NN_ERR_CONFIG, "%s: %s takes at most %d values, but got '%s'",
                            c->layer, key, count, v);
        if (!*tok)
            return nn_error(NN_ERR_CONFIG, "%s: %s has an empty item in '%s'", c->layer, key, v);
        NN_TRY(config_parse_long(c, key, tok, &x));
        if (x < lo || x > hi)
            return nn_error(NN_ERR_CONFIG, "%s: %s values must be between %d and %d, but got '%s'",
                            c->layer, key, lo, hi, v);
        out[n++] = (int)x;
        if (last) break;
    }
    if (n == 1)
        for (int i = 1; i < count; i++) out[i] = out[0];
    else if (n != count)
        return nn_error(NN_ERR_CONFIG, "%s: %s needs 1 or %d values, but got '%s'", c->layer, key,
                        count, v);
    return NN_OK;
}

/* The public getters: in a probe (nn_config_probe) a value that would be an
 * error gives a stand-in instead, so the hook goes on to its later keys. */
nn_status nn_config_get_int(nn_config *c, const char *key, int *out, int def,
                            int required, int lo, int hi)
{
    nn_status s = config_get_int(c, key, out, def, required, lo, hi);
    if (s != NN_OK && c->probe) {
        *out = required ? lo : def;
        return NN_OK;
    }
    return s;
}

nn_status nn_config_get_float(nn_config *c, const char *key, float *out, float def,
                              int required, float lo, float hi)
{
    nn_status s = config_get_float(c, key, out, def, required, lo, hi);
    if (s != NN_OK && c->probe) {
        *out = required ? lo : def;
        return NN_OK;
    }
    return s;
}

nn_status nn_config_get_bool(nn_config *c, const char *key, int *out, int def)
{
    nn_status s = config_get_bool(c, key, out, def);
    if (s != NN_OK && c->probe) {
        *out = def;
        return NN_OK;
    }
    return s;
}

nn_status nn_config_get_u64(nn_config *c, const char *key, unsigned long long *out, int *present)
{
    nn_status s = config_get_u64(c, key, out, present);
    if (s != NN_OK && c->probe) {
        *present = 0;
        return NN_OK;
    }
    return s;
}

nn_status nn_config_get_choice(nn_config *c, const char *key, int *out, int def,
                               const char *const *allowed)
{
    nn_status s = config_get_choice(c, key, out, def, allowed);
    if (s != NN_OK && c->probe) {
        *out = def < 0 ? 0 : def;
        return NN_OK;
    }
    return s;
}

nn_status nn_config_get_ints(nn_config *c, const char *key, int *out, int count,
                             const int *def, int required, int lo, int hi)
{
    nn_status s = config_get_ints(c, key, out, count, def, required, lo, hi);
    if (s != NN_OK && c->probe) {
        for (int i = 0; i < count; i++) out[i] = def && !required ? def[i] : lo;
        return NN_OK;
    }
    return s;
}

void nn_config_probe(nn_config *probe, const nn_config *c)
{
    *probe = *c;
    for (int i = 0; i < probe->n; i++) probe->kv[i].used = 0;
    probe->n_asked = 0;
    probe->probe = 1;
}

/* Edit distance (insertions, deletions, substitutions, swaps of neighbours)
 * between two keys, for "did you mean". */
static int config_distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    int d[NN_CONFIG_KEY_LEN + 1][NN_CONFIG_KEY_LEN + 1];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

nn_status nn_config_finish(const nn_config *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->kv[i].used) continue;
        const char *key = c->kv[i].key;
        /* A key counts as a typo of another when at most a third of the
         * longer one differs (kernal_size, unitz): closer than that, most
         * guesses would be wrong. */
        const char *near = NULL;
        int best = INT_MAX;
        char list[NN_CONFIG_MAX_KEYS * (NN_CONFIG_KEY_LEN + 2)] = "";
        for (int k = 0; k < c->n_asked; k++) {
            const char *a = c->asked[k];
            const int d = config_distance(key, a);
            const size_t la = strlen(a), lk = strlen(key), lmax = la > lk ? la : lk;
            if (d < best && (size_t)d * 3 <= lmax) {
                best = d;
                near = a;
            }
            size_t len = strlen(list);
            snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "", a);
        }
        char hint[NN_CONFIG_KEY_LEN + 24] = "";
        if (near) snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
        return nn_error(NN_ERR_CONFIG, "%s: unknown config key '%s'%s; %s takes %s%s", c->layer,
                        key, hint, c->layer, c->n_asked ? "the keys " : "no keys",
                        list);
    }
    return NN_OK;
}

void nn_config_write(nn_config_writer *w, const char *key, const char *fmt, ...)
{
    char value[NN_CONFIG_VALUE_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    size_t room = w->len < w->cap ? w->cap - w->len : 0;
    int n = snprintf(room ? w->buf + w->len : NULL, room, "%s%s=%s", w->len ? " " : "", key, value);
    if (n > 0) w->len += (size_t)n;
}

void nn_config_write_float(nn_config_writer *w, const char *key, float v)
{
    nn_config_write(w, key, "%.9g", (double)v);
}
