/* Atomic file replacement (see atomic_file.h): temporary file, fsync,
 * rename, directory fsync, and the removal of temporary files that killed
 * writers left behind. Deliberately omitted: see atomic_file.h (ownership
 * and mode of the old file, locking, other PID namespaces). */
#include "nn/io/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "nn/io/byte_order.h"

/* dir receives the directory part of path ("." when there is none); the
 * return value points at the file name inside path. */
static const char *atomic_file_split_path(const char *path, char *dir, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
    return slash ? slash + 1 : path;
}

/* strerror(e), or a plain reason when a short write left errno at 0. */
static const char *atomic_file_strerror(int e) { return e ? strerror(e) : "short write"; }

/* The writer's pid if name is "<base>.tmp.<pid>" (the form checkpoints used
 * to write) or "<base>.tmp.<pid>.<n>", else 0. Digits only, so another
 * target's temporary file ("<base>.tmp.7.tmp.9.0") never matches. */
static long atomic_file_temp_owner(const char *name, const char *base, size_t base_len)
{
    if (strncmp(name, base, base_len) || strncmp(name + base_len, ".tmp.", 5)) return 0;
    const char *p = name + base_len + 5;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++digits > 10) return 0;
        pid = pid * 10 + (*p - '0');
    }
    if (!digits || pid <= 0 || pid > INT_MAX) return 0;
    if (*p == '\0') return pid;
    if (*p++ != '.' || !*p) return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return pid;
}

/* Removes path's temporary files whose writer is gone. ESRCH is the only
 * proof of that: success or EPERM mean a process with that pid exists. */
static void atomic_file_remove_stale(const char *path)
{
    char dir[4096];
    const char *base = atomic_file_split_path(path, dir, sizeof dir);
    const size_t base_len = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    const long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        const long pid = atomic_file_temp_owner(e->d_name, base, base_len);
        if (!pid || pid == self) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* fsync the directory holding path, so the rename itself is durable. */
static nn_status atomic_file_sync_dir(const char *path)
{
    char dir[4096];
    atomic_file_split_path(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return nn_error(NN_ERR_IO, "%s: cannot open directory %s to sync it: %s", path, dir,
                        strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* Some file systems cannot sync a directory; the data itself is synced. */
    if (rc != 0 && err != EINVAL && err != ENOTSUP)
        return nn_error(NN_ERR_IO, "%s: fsync of directory %s failed: %s", path, dir, strerror(err));
    return NN_OK;
}

/* Ends a failed save: closes and removes the temporary file, returns s. */
static nn_status atomic_file_fail(nn_atomic_file *af, nn_status s)
{
    nn_atomic_file_abandon(af);
    return s;
}

nn_status nn_atomic_file_open(nn_atomic_file *af, const char *path)
{
    if (!af) return nn_error(NN_ERR_ARG, "nn_atomic_file_open: af is NULL");
    af->f = NULL;
    af->path = path;
    af->tmp[0] = '\0';
    if (!path || !*path) return nn_error(NN_ERR_ARG, "nn_atomic_file_open: path is NULL or empty");
    if (strlen(path) >= 4096)
        return nn_error(NN_ERR_ARG, "nn_atomic_file_open: path is too long (%zu bytes): %.64s...",
                        strlen(path), path);
    atomic_file_remove_stale(path);
    static atomic_uint counter;
    int fd = -1;
    /* EEXIST only when an earlier process with this pid left the same name. */
    for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
        snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&counter, 1u));
        fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST)
            return nn_error(NN_ERR_IO, "%s: cannot create %s: %s", path, af->tmp, strerror(errno));
    }
    if (fd < 0)
        return nn_error(NN_ERR_IO, "%s: cannot create a temporary file next to it: 100 names "
                        "like %s exist", path, af->tmp);
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        int e = errno;
        close(fd);
        unlink(af->tmp);
        return nn_error(NN_ERR_IO, "%s: cannot open %s as a stream: %s", path, af->tmp, strerror(e));
    }
    return NN_OK;
}

nn_status nn_atomic_file_write(nn_atomic_file *af, const void *data, size_t len)
{
    if (!af || !af->f) return nn_error(NN_ERR_STATE, "nn_atomic_file_write: no file is open");
    if (len == 0) return NN_OK;
    errno = 0;
    if (fwrite(data, 1, len, af->f) != len) {
        const int e = errno;
        return atomic_file_fail(af, nn_error(NN_ERR_IO, "%s: writing %s failed: %s", af->path,
                                             af->tmp, atomic_file_strerror(e)));
    }
    return NN_OK;
}

nn_status nn_atomic_file_write_floats_le(nn_atomic_file *af, const float *x, size_t n)
{
    if (nn_host_is_little_endian()) return nn_atomic_file_write(af, x, n * sizeof(float));
    float chunk[1024];
    for (size_t i = 0; i < n; i += 1024) {
        const size_t k = n - i < 1024 ? n - i : 1024;
        memcpy(chunk, x + i, k * sizeof(float));
        nn_swap_floats(chunk, k);
        NN_TRY(nn_atomic_file_write(af, chunk, k * sizeof(float)));
    }
    return NN_OK;
}

nn_status nn_atomic_file_commit(nn_atomic_file *af)
{
    if (!af || !af->f) return nn_error(NN_ERR_STATE, "nn_atomic_file_commit: no file is open");
    errno = 0;
    if (fflush(af->f) != 0 || ferror(af->f)) {
        const int e = errno;
        return atomic_file_fail(af, nn_error(NN_ERR_IO, "%s: writing %s failed: %s", af->path,
                                             af->tmp, atomic_file_strerror(e)));
    }
    if (fsync(fileno(af->f)) != 0) {
        const int e = errno;
        return atomic_file_fail(af, nn_error(NN_ERR_IO, "%s: fsync of %s failed: %s", af->path,
                                             af->tmp, strerror(e)));
    }
    FILE *f = af->f;
    af->f = NULL;
    if (fclose(f) != 0) {
        const int e = errno;
        unlink(af->tmp);
        return nn_error(NN_ERR_IO, "%s: closing %s failed: %s", af->path, af->tmp, strerror(e));
    }
    if (rename(af->tmp, af->path) != 0) {
        const int e = errno;
        unlink(af->tmp);
        return nn_error(NN_ERR_IO, "%s: cannot rename %s over it: %s", af->path, af->tmp,
                        strerror(e));
    }
    return atomic_file_sync_dir(af->path);
}

void nn_atomic_file_abandon(nn_atomic_file *af)
{
    if (!af || !af->f) return;
    fclose(af->f);
    af->f = NULL;
    unlink(af->tmp);
}

nn_status nn_atomic_file_save(const char *path, const void *data, size_t len)
{
    if (!data && len) return nn_error(NN_ERR_ARG, "nn_atomic_file_save: data is NULL, len %zu", len);
    nn_atomic_file af;
    NN_TRY(nn_atomic_file_open(&af, path));
    NN_TRY(nn_atomic_file_write(&af, data, len));
    return nn_atomic_file_commit(&af);
}

nn_status nn_file_read_all(const char *path, const char *what, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return nn_error(NN_ERR_IO, "%s: cannot open%s%s: %s", path, what ? " " : "", what ? what : "",
                        strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return nn_error(NN_ERR_IO, "%s: not a regular file", path);
    }
    const size_t n = (size_t)st.st_size;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        fclose(f);
        return nn_error(NN_ERR_MEMORY, "%s: out of memory for %zu bytes", path, n);
    }
    const size_t got = fread(p, 1, n, f);
    const int err = ferror(f);
    fclose(f);
    if (err || got != n) {
        free(p);
        return nn_error(NN_ERR_IO, "%s: read error after %zu of %zu bytes", path, got, n);
    }
    *data = p;
    *len = n;
    return NN_OK;
}
