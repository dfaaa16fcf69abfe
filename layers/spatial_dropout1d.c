/* spatial_dropout1d: Keras's SpatialDropout1D. Drops whole channels of a
 * sequence: (N, L, C) channels_last, the default whatever the image format
 * default is (as in Keras), or (N, C, L) with data_format=channels_first
 * (PyTorch's Dropout1d layout).
 * Config: rate in [0, 1] (required), data_format (channels_last), seed,
 * inplace (false). The shared hooks are in spatial_dropout.c, the kernels
 * in spatial_dropout_kernels.c; this file only names the type. */
#include "layers/spatial_dropout.h"

static nn_status spatial_dropout1d_parse(nn_layer *l, nn_config *c)
{
    return nn_spatial_dropout_layer_parse(l, c, 1);
}

const nn_layer_type nn_layer_spatial_dropout1d = {
    .name = "spatial_dropout1d",
    .summary = "drops whole channels of a sequence, kept ones scaled by 1/(1-rate)",
    .state_size = sizeof(nn_spatial_dropout_state),
    .parse = spatial_dropout1d_parse,
    .write = nn_spatial_dropout_layer_write,
    .build = nn_spatial_dropout_layer_build,
    .forward = nn_spatial_dropout_layer_forward,
    .test_config = "rate=0.5 seed=2 data_format=channels_last",
    .test_rank = 2,
    .test_shape = {4, 3},
};
