/* NumPy .npy files: one float32 tensor per file, exchanged with numpy.save
 * and numpy.load.
 *
 * A file is the magic "\x93NUMPY", a version (major, minor), the length of a
 * header (2 bytes little-endian in version 1.0, 4 bytes in 2.0 and 3.0), the
 * header itself, then the raw array data. The header is a Python dict
 * literal padded with spaces and ending in '\n':
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28, 1), }
 *
 * Saving writes version 1.0 (2.0 when the header would exceed 65535 bytes),
 * with the data starting at a multiple of 64 bytes as numpy does, through a
 * temporary file renamed over path: a reader never sees half a file.
 * Loading reads versions 1.0, 2.0 and 3.0. The header parser accepts what
 * numpy and hand-written files contain: either quote style, any key order,
 * any spacing, a trailing comma, Python 2 "L" suffixes on sizes.
 *
 * Deliberately omitted: any dtype other than little-endian float32 ('<f4'),
 * Fortran order, 0-d arrays and rank above TENSOR_MAX_RANK, object arrays,
 * .npz archives and memory mapping. Each is rejected with an error naming
 * the file and what it holds, never converted silently.
 * Thread-safety: no shared state; distinct calls may run on distinct threads.
 */
#ifndef NN_IO_NPY_H
#define NN_IO_NPY_H

#include <stddef.h>

#include "tensor/tensor.h"

/* Writes t (shape and data, C order) to path atomically. t->grad is not
 * written. Errors: NULL arguments, the file cannot be written. */
nn_status nn_npy_save(const char *path, const tensor *t);

/* Reads path into a new tensor (*out, owned by the caller: tensor_free).
 * Errors name the file and the byte offset: bad magic, unsupported version,
 * malformed or incomplete header, dtype other than '<f4', fortran_order
 * True, a data size that does not match the shape (truncated or trailing
 * bytes). *out is NULL on error. */
nn_status nn_npy_load(const char *path, tensor **out);

/* As nn_npy_load, from the complete file contents in memory (len bytes);
 * name is used in messages. For fuzzing and for callers with their own I/O. */
nn_status nn_npy_parse(const void *buf, size_t len, const char *name, tensor **out);

#endif
