/* libFuzzer harness: layer configs. The input is "type\nkey=value ...";
 * a config that creates a layer must write back a config that creates an
 * equal layer (same written config). Errors must carry a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *config = strchr(text, '\n');
    if (config) *config++ = '\0';
    nn_clear_error();
    nn_layer *l = nn_layer_create(text, config);
    if (!l) {
        if (!nn_last_error()[0]) abort();
    } else {
        char a[1024], b[1024];
        if (nn_layer_config_string(l, a, sizeof a) != NN_OK) abort();
        nn_layer *l2 = nn_layer_create(text, a);
        if (!l2) abort();
        if (nn_layer_config_string(l2, b, sizeof b) != NN_OK || strcmp(a, b)) abort();
        nn_layer_free(l2);
        nn_layer_free(l);
    }
    free(text);
    return 0;
}
