/* spatial_dropout3d: Keras's SpatialDropout3D, PyTorch's Dropout3d. Drops
 * whole (D, H, W) volumes of (N, C, D, H, W) channels_first or
 * (N, D, H, W, C) channels_last input; kept ones are scaled by 1/(1-rate).
 * Config: rate in [0, 1] (required), data_format (default: the image data
 * format default, resolved at creation), seed, inplace (false).
 * The shared hooks are in spatial_dropout.c, the kernels in
 * spatial_dropout_kernels.c; this file only names the type. Unbatched 4-D
 * input is an error, never reinterpreted. */
#include "layers/spatial_dropout.h"

static nn_status spatial_dropout3d_parse(nn_layer *l, nn_config *c)
{
    return nn_spatial_dropout_layer_parse(l, c, 3);
}

const nn_layer_type nn_layer_spatial_dropout3d = {
    .name = "spatial_dropout3d",
    .summary = "drops whole 3-D feature volumes, kept ones scaled by 1/(1-rate)",
    .state_size = sizeof(nn_spatial_dropout_state),
    .parse = spatial_dropout3d_parse,
    .write = nn_spatial_dropout_layer_write,
    .build = nn_spatial_dropout_layer_build,
    .forward = nn_spatial_dropout_layer_forward,
    .test_config = "rate=0.5 seed=2 data_format=channels_last",
    .test_rank = 4,
    .test_shape = {2, 2, 2, 3},
};
