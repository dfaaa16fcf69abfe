/* Shared helpers for the cmocka suites. */
#ifndef NN_TEST_UTIL_H
#define NN_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "nn/nn.h"

/* Asserts that the last error message contains `needle`. */
#define assert_error_contains(needle)                                                     \
    do {                                                                                  \
        if (!strstr(nn_last_error(), (needle)))                                           \
            fail_msg("error message '%s' does not contain '%s'", nn_last_error(), (needle)); \
    } while (0)

#define assert_ok(expr)                                                                   \
    do {                                                                                  \
        nn_status s_ = (expr);                                                            \
        if (s_ != NN_OK) fail_msg("%s failed: %s", #expr, nn_last_error());               \
    } while (0)

#endif
