/* Atomic file replacement, shared by every writer in the library
 * (checkpoints, .npy, .safetensors): a reader of PATH sees the old complete
 * file or the new complete file, never a mix, even if the writer is killed.
 *
 * How: the bytes go to a new temporary file PATH.tmp.<pid>.<n> next to PATH
 * (created with O_EXCL; <n> is a per-process counter, so threads saving to
 * the same PATH never share a temporary file), which is flushed, fsynced,
 * closed and renamed over PATH; then the directory is fsynced so the rename
 * itself survives a power cut. Any failure removes the temporary file and
 * leaves PATH as it was.
 *
 * Stale temporary files: a writer killed mid-save (SIGKILL, power cut)
 * leaves its PATH.tmp.<pid>[.<n>] behind. Opening a new one for PATH first
 * removes those of PATH whose process no longer exists (kill(pid, 0) fails
 * with ESRCH); temporary files of this process or of any live process, and
 * names of any other pattern, are never touched. The scan reads PATH's
 * directory once per save; it is best effort and never fails the save.
 *
 * Ownership: an nn_atomic_file is the caller's (usually on the stack); it
 * borrows `path`, which must stay valid until commit or abandon. Every
 * successful nn_atomic_file_open is ended by exactly one successful commit
 * or by a failure (which cleans up by itself) or by nn_atomic_file_abandon.
 *
 * Deliberately omitted: keeping PATH's owner, mode or ACLs (the new file
 * gets 0666 minus the umask); file locking between writers (the last rename
 * wins); writers in other PID namespaces or on other hosts sharing the
 * directory (their pids mean nothing here: their temporary files can look
 * stale and be removed, which makes that writer's rename fail with an
 * error, never corrupts PATH); a pid reused by a new process keeps its old
 * temporary file until that process exits too. Not included by nn.h: it is
 * plumbing for the file formats, not part of the training API.
 * Thread-safety: distinct calls may run on distinct threads, also for the
 * same PATH (see the per-process counter above).
 */
#ifndef NN_IO_ATOMIC_FILE_H
#define NN_IO_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tensor/status.h"

/* Longest temporary path: PATH (up to 4095 bytes), ".tmp.", a pid and a
 * counter. */
#define NN_ATOMIC_TMP_MAX 4160

typedef struct nn_atomic_file {
    FILE *f;                     /* the temporary file; NULL once finished */
    const char *path;            /* borrowed: the file being replaced */
    char tmp[NN_ATOMIC_TMP_MAX]; /* the temporary file's path */
} nn_atomic_file;

/* Removes PATH's stale temporary files, then creates a new one, open for
 * writing in af->f. Errors: NULL or too long a path (NN_ERR_ARG), the
 * temporary file cannot be created (NN_ERR_IO, naming both paths and the
 * system's reason). On failure af->f is NULL and nothing is left behind. */
nn_status nn_atomic_file_open(nn_atomic_file *af, const char *path);

/* Appends len bytes. On failure the temporary file is removed and the
 * message names PATH, the temporary file and the reason. */
nn_status nn_atomic_file_write(nn_atomic_file *af, const void *data, size_t len);

/* Flushes, fsyncs and closes the temporary file, renames it over PATH and
 * fsyncs the directory. On failure the temporary file is removed, PATH is
 * unchanged (unless only the directory sync failed: then PATH is new but
 * its rename may not survive a crash) and the message names the step. */
nn_status nn_atomic_file_commit(nn_atomic_file *af);

/* Closes and removes the temporary file, for a caller that gives up
 * between open and commit. A no-op once finished (or after a failure). */
void nn_atomic_file_abandon(nn_atomic_file *af);

/* Appends n floats as little-endian float32, byte-swapped in chunks on a
 * big-endian host; failures as for nn_atomic_file_write. */
nn_status nn_atomic_file_write_floats_le(nn_atomic_file *af, const float *x, size_t n);

/* open + write + commit of one buffer. */
nn_status nn_atomic_file_save(const char *path, const void *data, size_t len);

/* The reading side, shared by the loaders (checkpoints, model files, ONNX):
 * the whole of the regular file path in *data (malloc'ed, the caller's to
 * free; at least 1 byte allocated) and its size in *len. Errors name path:
 * it cannot be opened ("cannot open <what>", or "cannot open" when what is
 * NULL, with the system's reason), is not a regular file, memory, or a
 * short read (how many bytes of how many); *data is then untouched. */
nn_status nn_file_read_all(const char *path, const char *what, uint8_t **data, size_t *len);

#endif
