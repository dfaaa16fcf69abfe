/* The layer table, and creating a layer by type name. Adding a layer type:
 * write layers/<name>.c exporting nn_layer_<name>, and add one line here.
 * This is the one file of nn/ that names the layer objects of layers/, the
 * floor below it. */
#include "nn/registry.h"

#include <stdio.h>
#include <string.h>

extern const nn_layer_type nn_layer_dense, nn_layer_relu, nn_layer_flatten, nn_layer_dropout;
extern const nn_layer_type nn_layer_spatial_dropout1d, nn_layer_spatial_dropout2d, nn_layer_spatial_dropout3d;
extern const nn_layer_type nn_layer_conv2d, nn_layer_maxpool2d, nn_layer_avgpool2d, nn_layer_global_avgpool2d, nn_layer_batchnorm;
extern const nn_layer_type nn_layer_sigmoid, nn_layer_tanh, nn_layer_leaky_relu, nn_layer_elu, nn_layer_gelu, nn_layer_softmax;
extern const nn_layer_type nn_layer_add, nn_layer_concatenate;

static const nn_layer_type *const builtin[] = {
    &nn_layer_dense,
    &nn_layer_relu,
    &nn_layer_flatten,
    &nn_layer_dropout,
    &nn_layer_spatial_dropout1d,
    &nn_layer_spatial_dropout2d,
    &nn_layer_spatial_dropout3d,
    &nn_layer_conv2d,
    &nn_layer_maxpool2d,
    &nn_layer_avgpool2d,
    &nn_layer_global_avgpool2d,
    &nn_layer_batchnorm,
    &nn_layer_sigmoid,
    &nn_layer_tanh,
    &nn_layer_leaky_relu,
    &nn_layer_elu,
    &nn_layer_gelu,
    &nn_layer_softmax,
    &nn_layer_add,
    &nn_layer_concatenate,
};

#define N_BUILTIN ((int)(sizeof builtin / sizeof builtin[0]))
#define MAX_USER 32

static const nn_layer_type *user[MAX_USER];
static int n_user;

int nn_registry_count(void) { return N_BUILTIN + n_user; }

const nn_layer_type *nn_registry_get(int i)
{
    if (i < 0 || i >= N_BUILTIN + n_user) return NULL;
    return i < N_BUILTIN ? builtin[i] : user[i - N_BUILTIN];
}

const nn_layer_type *nn_registry_find(const char *name)
{
    if (!name) return NULL;
    for (int i = 0; i < nn_registry_count(); i++)
        if (!strcmp(nn_registry_get(i)->name, name)) return nn_registry_get(i);
    return NULL;
}

nn_status nn_registry_add(const nn_layer_type *type)
{
    /* One input (build, forward) or several (build_multi, forward_multi). */
    const int one = type && type->build && type->forward && !type->build_multi && !type->forward_multi;
    const int merge = type && !type->build && !type->forward && type->build_multi && type->forward_multi;
    if (!type || !type->name || !type->parse || !type->write || !(one || merge))
        return nn_error(NN_ERR_ARG, "nn_registry_add: the type needs a name and the parse, write, "
                                    "build and forward hooks (or, for a merge layer, build_multi "
                                    "and forward_multi instead of build and forward)");
    if (nn_registry_find(type->name))
        return nn_error(NN_ERR_ARG, "nn_registry_add: a layer type named '%s' already exists",
                        type->name);
    if (n_user == MAX_USER)
        return nn_error(NN_ERR_STATE, "nn_registry_add: at most %d user layer types", MAX_USER);
    user[n_user++] = type;
    return NN_OK;
}

nn_layer *nn_layer_create(const char *type_name, const char *config)
{
    const nn_layer_type *type = nn_registry_find(type_name);
    if (!type) {
        char known[512] = "";
        for (int i = 0; i < nn_registry_count(); i++) {
            size_t len = strlen(known);
            snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                     nn_registry_get(i)->name);
        }
        nn_error(NN_ERR_CONFIG, "unknown layer type '%s' (known: %s); to add a layer type, write "
                 "it as examples/custom_layer.c does and register it with nn_registry_add",
                 type_name ? type_name : "(null)", known);
        return NULL;
    }
    return nn_layer_create_from_type(type, config);
}
