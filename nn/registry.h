/* The layer types, looked up by name: a static table of the built-in types
 * (nn/registry.c, one line per file in layers/), then a process-wide list of
 * types a program adds with nn_registry_add.
 * Thread-safety: lookups may run on any thread once registration is over;
 * nn_registry_add is not thread-safe (register at start, before other
 * threads look types up). */
#ifndef NN_NN_REGISTRY_H
#define NN_NN_REGISTRY_H

#include "layers/layer.h"

/* The type registered under name, or NULL (no error is recorded). */
const nn_layer_type *nn_registry_find(const char *name);
/* Number of types (built-in, then added), and the i-th one (NULL when out
 * of range). */
int nn_registry_count(void);
const nn_layer_type *nn_registry_get(int i);
/* Adds a user-defined type (for example a user's own convolution) to a
 * process-wide list searched after the built-in table. The type must stay
 * valid for the life of the process. Errors: NULL or missing hooks, a name
 * that is already taken, the list full. Not thread-safe: register at start. */
nn_status nn_registry_add(const nn_layer_type *type);

/* Creates a layer of the registered type `type_name` from config text, as
 * nn_layer_create_from_type does. Errors: unknown type (the message lists the
 * known ones), bad config. Free with nn_layer_free. */
nn_layer *nn_layer_create(const char *type_name, const char *config);

#endif
