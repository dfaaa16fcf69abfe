/* Error reporting for the whole library.
 *
 * Every public function that can fail returns an nn_status (NN_OK is 0) or,
 * for constructors, NULL; in both cases it first records a message in a
 * thread-local buffer that nn_last_error() returns. Messages name the function
 * and the argument, shape, value, or file and offset that was wrong.
 * NN_ASSERT guards internal invariants only: it is never used on user input.
 * Thread-safety: every function here may be called from any thread; each
 * thread sees its own last message.
 */
#ifndef NN_TENSOR_STATUS_H
#define NN_TENSOR_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum nn_status {
    NN_OK = 0,
    NN_ERR_ARG,      /* a bad argument value (rate out of range, NULL pointer, ...) */
    NN_ERR_SHAPE,    /* tensor shapes that do not fit the operation */
    NN_ERR_CONFIG,   /* bad layer config or model spec text */
    NN_ERR_MEMORY,   /* allocation failed */
    NN_ERR_IO,       /* a file could not be opened, read or written */
    NN_ERR_FORMAT,   /* a file's contents are not what they must be */
    NN_ERR_STATE,    /* the call is not valid in the object's current state */
    NN_ERR_NUMERIC   /* NaN or Inf where a finite number is needed */
} nn_status;

/* Records a printf-style message for nn_last_error() and returns s. */
nn_status nn_error(nn_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last error on this thread; "" when none. The pointer
 * stays valid until the next failing call on the same thread. */
const char *nn_last_error(void);

/* A fixed name for a status code ("ok", "bad argument", ...). */
const char *nn_status_str(nn_status s);

/* Clears the thread's last error message. */
void nn_clear_error(void);

#define NN_ASSERT(cond)                                                       \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "nn: internal error at %s:%d: %s\n", __FILE__,    \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* Propagates a failing status to the caller. */
#define NN_TRY(expr)                                                          \
    do {                                                                      \
        nn_status nn_try_s_ = (expr);                                         \
        if (nn_try_s_ != NN_OK) return nn_try_s_;                             \
    } while (0)

#endif
