/* Thread-local error messages (see status.h). */
#include "tensor/status.h"

#include <stdarg.h>

static _Thread_local char last_error[1024];

nn_status nn_error(nn_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

const char *nn_last_error(void) { return last_error; }

void nn_clear_error(void) { last_error[0] = '\0'; }

const char *nn_status_str(nn_status s)
{
    switch (s) {
    case NN_OK: return "ok";
    case NN_ERR_ARG: return "bad argument";
    case NN_ERR_SHAPE: return "shape mismatch";
    case NN_ERR_CONFIG: return "bad config";
    case NN_ERR_MEMORY: return "out of memory";
    case NN_ERR_IO: return "i/o error";
    case NN_ERR_FORMAT: return "bad file format";
    case NN_ERR_STATE: return "invalid state";
    case NN_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown status";
}
