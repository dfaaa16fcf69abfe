/* spatial_dropout2d: Keras's SpatialDropout2D, PyTorch's Dropout2d. Drops
 * whole (H, W) feature maps of (N, C, H, W) channels_first or (N, H, W, C)
 * channels_last input; kept maps are scaled by 1/(1-rate).
 * Config: rate in [0, 1] (required), data_format (default: the image data
 * format default, resolved at creation), seed, inplace (false).
 * The shared hooks are in spatial_dropout.c, the kernels in
 * spatial_dropout_kernels.c; this file only names the type. PyTorch's
 * unbatched (C, H, W) input is deliberately an error here, never
 * reinterpreted. */
#include "layers/spatial_dropout.h"

static nn_status spatial_dropout2d_parse(nn_layer *l, nn_config *c)
{
    return nn_spatial_dropout_layer_parse(l, c, 2);
}

const nn_layer_type nn_layer_spatial_dropout2d = {
    .name = "spatial_dropout2d",
    .summary = "drops whole 2-D feature maps, kept maps scaled by 1/(1-rate)",
    .state_size = sizeof(nn_spatial_dropout_state),
    .parse = spatial_dropout2d_parse,
    .write = nn_spatial_dropout_layer_write,
    .build = nn_spatial_dropout_layer_build,
    .forward = nn_spatial_dropout_layer_forward,
    /* seed 2 keeps maps (0,0), (0,1), (1,0), (1,2) of a batch of 2 on call 0:
     * the check sees kept and dropped maps in both samples. */
    .test_config = "rate=0.5 seed=2 data_format=channels_first",
    .test_rank = 3,
    .test_shape = {3, 2, 2},
};
