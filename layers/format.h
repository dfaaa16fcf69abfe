/* Image data format: where the channel axis of an image tensor is.
 *
 *   channels_last   (N, H, W, C)   the default, as in Keras
 *   channels_first  (N, C, H, W)   PyTorch's layout
 *
 * Layers with a data_format option take the framework-wide default when the
 * option is absent, resolved when the layer is created, in this order:
 *   1. nn_set_image_data_format() (until nn_reset_image_data_format()),
 *   2. the environment variable NN_IMAGE_DATA_FORMAT,
 *   3. the key "image_data_format" in ~/.nn/nn.json (read, never written),
 *   4. channels_last.
 * The resolved value is stored in the layer and written to its config, so a
 * saved model keeps its format whatever the default is when it is loaded.
 * Not thread-safe: set the default before creating layers on other threads.
 */
#ifndef NN_LAYERS_FORMAT_H
#define NN_LAYERS_FORMAT_H

#include "layers/config.h"

typedef enum nn_data_format {
    NN_CHANNELS_LAST = 0,
    NN_CHANNELS_FIRST = 1
} nn_data_format;

/* The default, resolved as above. Errors: an environment value or JSON
 * entry that is not one of the two names, a config file that is not valid
 * JSON (the message names the variable or the file). */
nn_status nn_image_data_format(nn_data_format *out);
nn_status nn_set_image_data_format(nn_data_format f);
/* Forgets the value set by nn_set_image_data_format. */
void nn_reset_image_data_format(void);

/* "channels_last" / "channels_first" (exact, case-sensitive). */
nn_status nn_data_format_parse(const char *s, nn_data_format *out);
const char *nn_data_format_name(nn_data_format f);

/* For layers' parse hooks: reads key "data_format", or the default. */
nn_status nn_config_get_data_format(nn_config *c, nn_data_format *out);

#endif
