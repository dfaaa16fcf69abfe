/* The framework-wide image data format default (see format.h). */
#include "layers/format.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_by_call = 0;
static nn_data_format set_value = NN_CHANNELS_LAST;

const char *nn_data_format_name(nn_data_format f)
{
    return f == NN_CHANNELS_FIRST ? "channels_first" : "channels_last";
}

nn_status nn_data_format_parse(const char *s, nn_data_format *out)
{
    if (s && !strcmp(s, "channels_last")) *out = NN_CHANNELS_LAST;
    else if (s && !strcmp(s, "channels_first")) *out = NN_CHANNELS_FIRST;
    else
        return nn_error(NN_ERR_ARG, "data_format must be one of {channels_last, channels_first}, "
                                    "but got '%s'", s ? s : "(null)");
    return NN_OK;
}

nn_status nn_set_image_data_format(nn_data_format f)
{
    if (f != NN_CHANNELS_LAST && f != NN_CHANNELS_FIRST)
        return nn_error(NN_ERR_ARG, "nn_set_image_data_format: unknown format %d", (int)f);
    set_by_call = 1;
    set_value = f;
    return NN_OK;
}

void nn_reset_image_data_format(void) { set_by_call = 0; }

/* Reads ~/.nn/nn.json; *found = 0 when there is no file or no key. */
static nn_status format_from_file(nn_data_format *out, int *found)
{
    *found = 0;
    const char *home = getenv("HOME");
    if (!home || !*home) return NN_OK;
    char path[1024];
    snprintf(path, sizeof path, "%s/.nn/nn.json", home);
    FILE *f = fopen(path, "rb");
    if (!f) return NN_OK;
    char buf[65536];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    int too_big = !feof(f);
    fclose(f);
    if (too_big) return nn_error(NN_ERR_FORMAT, "%s: larger than 64 KiB", path);
    buf[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - buf) : 0;
        return nn_error(NN_ERR_FORMAT, "%s: not valid JSON (at offset %zu)", path, at);
    }
    nn_status s = NN_OK;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "image_data_format");
    if (v) {
        if (!cJSON_IsString(v) || nn_data_format_parse(v->valuestring, out) != NN_OK)
            s = nn_error(NN_ERR_FORMAT, "%s: image_data_format must be \"channels_last\" or "
                                        "\"channels_first\"", path);
        else
            *found = 1;
    }
    cJSON_Delete(root);
    return s;
}

nn_status nn_image_data_format(nn_data_format *out)
{
    if (set_by_call) {
        *out = set_value;
        return NN_OK;
    }
    const char *env = getenv("NN_IMAGE_DATA_FORMAT");
    if (env && *env) {
        if (nn_data_format_parse(env, out) != NN_OK)
            return nn_error(NN_ERR_CONFIG, "NN_IMAGE_DATA_FORMAT must be channels_last or "
                                           "channels_first, but got '%s'", env);
        return NN_OK;
    }
    int found;
    NN_TRY(format_from_file(out, &found));
    if (!found) *out = NN_CHANNELS_LAST;
    return NN_OK;
}

nn_status nn_config_get_data_format(nn_config *c, nn_data_format *out)
{
    static const char *const names[] = {"channels_last", "channels_first", NULL};
    int def = -1, idx;
    nn_data_format d;
    /* Only consult the default when the key is absent, so a bad environment
     * does not break a layer whose format is explicit. */
    int present = 0;
    for (int i = 0; i < c->n; i++) present |= !strcmp(c->kv[i].key, "data_format");
    if (!present) {
        NN_TRY(nn_image_data_format(&d));
        def = (int)d;
    }
    NN_TRY(nn_config_get_choice(c, "data_format", &idx, def, names));
    *out = (nn_data_format)idx;
    return NN_OK;
}
