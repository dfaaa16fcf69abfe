/* Layer configs: the text "key=value key=value" that creates a layer.
 *
 * A layer's parse hook reads its keys with the nn_config_get_* calls; each
 * marks its key as used and notes it among the keys the layer reads.
 * nn_config_finish() then rejects any key that no hook read, so a misspelt
 * key is an error, never silently ignored; the message lists the keys the
 * layer reads and the closest one. Every error message names the layer, the
 * key and the value.
 * A hook stops at its first error, before reading its later keys, so a
 * misspelt key would hide behind the "required" error it causes. The layer's
 * creator then runs the hook again on nn_config_probe()'s copy, whose getters
 * never fail, and reports an unknown key first (layers/layer.c).
 * Values are single tokens without spaces; a tuple is written "3,3".
 * The struct is self-contained (no heap memory): nothing to free.
 * Thread-safety: no shared state; one nn_config or nn_config_writer per thread.
 */
#ifndef NN_LAYERS_CONFIG_H
#define NN_LAYERS_CONFIG_H

#include <stddef.h>

#include "tensor/status.h"

#define NN_CONFIG_MAX_KEYS 24
#define NN_CONFIG_KEY_LEN 32
#define NN_CONFIG_VALUE_LEN 64

typedef struct nn_config {
    char layer[NN_CONFIG_KEY_LEN]; /* layer type name, for messages */
    int n;
    struct {
        char key[NN_CONFIG_KEY_LEN];
        char value[NN_CONFIG_VALUE_LEN];
        int used;
    } kv[NN_CONFIG_MAX_KEYS];
    /* Every key a getter asked for, given or not: the keys the layer reads. */
    int n_asked;
    char asked[NN_CONFIG_MAX_KEYS][NN_CONFIG_KEY_LEN];
    int probe; /* getters never fail: see nn_config_probe */
} nn_config;

/* Splits text into pairs; text may be NULL or empty. Errors: a token without
 * '=', an empty key or value, a repeated key, too many or too long tokens. */
nn_status nn_config_parse(nn_config *c, const char *layer, const char *text);

/* Getters: when the key is absent, *out = def, or an error if `required`. */
nn_status nn_config_get_int(nn_config *c, const char *key, int *out, int def,
                            int required, int lo, int hi);
/* Rejects NaN, Inf and values outside [lo, hi]. */
nn_status nn_config_get_float(nn_config *c, const char *key, float *out, float def,
                              int required, float lo, float hi);
/* true/false (also 1/0). */
nn_status nn_config_get_bool(nn_config *c, const char *key, int *out, int def);
/* 64-bit unsigned (seeds); *present tells whether the key was given. */
nn_status nn_config_get_u64(nn_config *c, const char *key, unsigned long long *out,
                            int *present);
/* One of `allowed` (NULL-terminated); returns its index in *out. def < 0 and
 * absent key means required. */
nn_status nn_config_get_choice(nn_config *c, const char *key, int *out, int def,
                               const char *const *allowed);
/* "3" or "3,3": fills all `count` entries (a single value is repeated). */
nn_status nn_config_get_ints(nn_config *c, const char *key, int *out, int count,
                             const int *def, int required, int lo, int hi);
/* Error naming the first key that no getter read, with the keys the getters
 * asked for and, when one is close (a typo away), "did you mean". */
nn_status nn_config_finish(const nn_config *c);
/* Copies c into *probe with no key read yet and getters that never fail: a
 * missing or bad value gives the default (or, for a required key, the lowest
 * allowed value, the first choice). Running a parse hook on the copy reads
 * every key the hook can reach; the hook may still stop at a check of its
 * own. For messages only: the values read are not the layer's. */
void nn_config_probe(nn_config *probe, const nn_config *c);

/* Appends "key=value " to buf as snprintf would; keeps track of the length.
 * Used by layers' write hooks. */
typedef struct nn_config_writer {
    char *buf;
    size_t cap, len;
} nn_config_writer;
void nn_config_write(nn_config_writer *w, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes a float so that reading it back gives the same float. */
void nn_config_write_float(nn_config_writer *w, const char *key, float v);

#endif
