/* nn/io/atomic_file.h: the temporary-file-and-rename writer behind checkpoints,
 * .npy and .safetensors. Checks that a save removes the temporary files a
 * killed writer of the same target left (a pid that no longer exists, taken
 * from a child that has exited and been reaped) and keeps those of live
 * processes (this one, its parent), of other targets and of other name
 * patterns; that each of the three file writers does so; and that every
 * failure (no directory, a directory in the way, a write that the file size
 * limit stops, bad arguments) names the paths and the reason, leaves no
 * temporary file and leaves the old file as it was. */
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "test_util.h"

#include "nn/io/atomic_file.h"

/* A pid that no process has: a child that exited and was reaped. */
static long dead_pid(void)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) _exit(0);
    int st;
    assert_int_equal(waitpid(p, &st, 0), p);
    assert_int_equal(kill(p, 0), -1);
    assert_int_equal(errno, ESRCH);
    return (long)p;
}

static void write_text(const char *path, const char *text) { test_write_bytes(path, text, strlen(text)); }

static void touch(const char *name) { write_text(test_path(name), "partial"); }

static int exists(const char *name)
{
    struct stat st;
    return lstat(test_path(name), &st) == 0;
}

static size_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (size_t)st.st_size;
}

/* Which leftovers a save of "x.bin" removes, and which it must keep. */
static void test_stale_temporaries(void **state)
{
    (void)state;
    const long dead = dead_pid(), self = (long)getpid(), parent = (long)getppid();
    char stale_new[64], stale_old[64], mine[64], parents[64], other_pattern[64],
        other_target[64], nested[96], stale_dir[64];
    snprintf(stale_new, sizeof stale_new, "x.bin.tmp.%ld.3", dead);
    snprintf(stale_old, sizeof stale_old, "x.bin.tmp.%ld", dead); /* older checkpoints' form */
    snprintf(mine, sizeof mine, "x.bin.tmp.%ld.77", self);
    snprintf(parents, sizeof parents, "x.bin.tmp.%ld.0", parent);
    snprintf(other_pattern, sizeof other_pattern, "x.bin.tmp.%ld.junk", dead);
    snprintf(other_target, sizeof other_target, "y.bin.tmp.%ld.0", dead);
    /* A temporary file of the target "x.bin.tmp.<dead>", not of "x.bin". */
    snprintf(nested, sizeof nested, "x.bin.tmp.%ld.tmp.%ld.0", dead, self);
    snprintf(stale_dir, sizeof stale_dir, "x.bin.tmp.%ld.5", dead);
    const char *files[] = {stale_new, stale_old, mine, parents, other_pattern, other_target, nested};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) touch(files[i]);
    assert_int_equal(mkdir(test_path(stale_dir), 0700), 0); /* not a regular file: kept */

    const char data[] = "complete";
    assert_ok(nn_atomic_file_save(test_path("x.bin"), data, sizeof data));
    assert_false(exists(stale_new));
    assert_false(exists(stale_old));
    assert_true(exists(mine));
    assert_true(exists(parents));
    assert_true(exists(other_pattern));
    assert_true(exists(other_target));
    assert_true(exists(nested));
    assert_true(exists(stale_dir));
    assert_true(exists("x.bin"));
    assert_int_equal(file_size(test_path("x.bin")), sizeof data);
    /* The 5 kept files, the directory and x.bin: no temporary file of this
     * save is left. */
    assert_int_equal(test_dir_entries(), 7);
    printf("stale temporaries of dead pid %ld removed; those of pids %ld (self) and %ld "
           "(parent), other names and a directory kept\n", dead, self, parent);
    rmdir(test_path(stale_dir));
}

/* Each file writer of the library goes through the helper. */
static void test_writers_clean_up(void **state)
{
    (void)state;
    const long dead = dead_pid(), self = (long)getpid();
    nn_model *m = nn_model_create(5);
    assert_non_null(m);
    assert_ok(nn_model_add_spec(m, "dense units=3\n"));
    const int in[1] = {4};
    assert_ok(nn_model_build(m, 1, in));
    tensor *t = tensor_zeros(2, (int[]){2, 3});
    assert_non_null(t);
    const char *targets[3] = {"m.ckpt", "t.npy", "m.safetensors"};
    for (int k = 0; k < 3; k++) {
        char stale[64], live[64];
        snprintf(stale, sizeof stale, "%s.tmp.%ld.0", targets[k], dead);
        snprintf(live, sizeof live, "%s.tmp.%ld.999", targets[k], self);
        touch(stale);
        touch(live);
        const char *p = test_path(targets[k]);
        if (k == 0) assert_ok(nn_checkpoint_save(p, m, NULL, NULL, 0));
        if (k == 1) assert_ok(nn_npy_save(p, t));
        if (k == 2) assert_ok(nn_safetensors_save(m, p));
        if (exists(stale)) fail_msg("%s: the stale %s is still there", targets[k], stale);
        if (!exists(live)) fail_msg("%s: the live %s was removed", targets[k], live);
        assert_true(exists(targets[k]));
        unlink(test_path(live));
    }
    assert_int_equal(test_dir_entries(), 3);
    /* What was written loads back. */
    nn_model *r = nn_model_create(9);
    assert_ok(nn_model_add_spec(r, "dense units=3\n"));
    assert_ok(nn_model_build(r, 1, in));
    assert_ok(nn_checkpoint_load(test_path("m.ckpt"), r, NULL, NULL, 0, NULL));
    assert_memory_equal(r->params, m->params, m->n_params * sizeof(float));
    tensor *u = NULL;
    assert_ok(nn_npy_load(test_path("t.npy"), &u));
    assert_int_equal(u->size, 6);
    tensor_free(u);
    nn_model_free(r);
    nn_model_free(m);
    tensor_free(t);
}

static void test_failures_named(void **state)
{
    (void)state;
    char p[300];
    /* No such directory. */
    snprintf(p, sizeof p, "%s/no/such/dir/a.bin", test_dir());
    assert_int_equal(nn_atomic_file_save(p, "x", 1), NN_ERR_IO);
    assert_error_contains(p);
    assert_error_contains("cannot create");
    assert_error_contains("/no/such/dir/a.bin.tmp.");
    assert_error_contains(strerror(ENOENT));

    /* A non-empty directory where the file goes: the rename fails. */
    assert_int_equal(mkdir(test_path("d.bin"), 0700), 0);
    write_text(test_path("d.bin/keep"), "k");
    assert_int_equal(nn_atomic_file_save(test_path("d.bin"), "x", 1), NN_ERR_IO);
    assert_error_contains("cannot rename");
    assert_error_contains("d.bin.tmp.");
    assert_error_contains(strerror(EISDIR));
    assert_int_equal(test_dir_entries(), 1); /* the temporary file is gone */
    unlink(test_path("d.bin/keep"));
    rmdir(test_path("d.bin"));

    /* A write stopped by the file size limit (EFBIG): the old file stays. */
    write_text(test_path("old.bin"), "old contents");
    struct rlimit was, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char big[1 << 16];
    memset(big, 'b', sizeof big);
    nn_status s = nn_atomic_file_save(test_path("old.bin"), big, sizeof big);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(s, NN_ERR_IO);
    assert_error_contains("old.bin: writing");
    assert_error_contains("old.bin.tmp.");
    assert_error_contains(strerror(EFBIG));
    assert_int_equal(file_size(test_path("old.bin")), strlen("old contents"));
    assert_int_equal(test_dir_entries(), 1);

    /* Bad arguments and misuse. */
    assert_int_equal(nn_atomic_file_save(NULL, "x", 1), NN_ERR_ARG);
    assert_error_contains("path is NULL or empty");
    assert_int_equal(nn_atomic_file_save("", "x", 1), NN_ERR_ARG);
    assert_int_equal(nn_atomic_file_save(test_path("n.bin"), NULL, 3), NN_ERR_ARG);
    assert_error_contains("data is NULL, len 3");
    static char longp[5000];
    memset(longp, 'a', sizeof longp - 1);
    assert_int_equal(nn_atomic_file_save(longp, "x", 1), NN_ERR_ARG);
    assert_error_contains("path is too long (4999 bytes)");
    assert_int_equal(nn_atomic_file_open(NULL, "x"), NN_ERR_ARG);

    /* Abandoning leaves nothing; a finished file takes no more calls. */
    nn_atomic_file af;
    assert_ok(nn_atomic_file_open(&af, test_path("gone.bin")));
    assert_ok(nn_atomic_file_write(&af, "abc", 3));
    assert_int_equal(test_dir_entries(), 2);
    nn_atomic_file_abandon(&af);
    nn_atomic_file_abandon(&af);
    assert_int_equal(test_dir_entries(), 1);
    assert_int_equal(nn_atomic_file_write(&af, "abc", 3), NN_ERR_STATE);
    assert_int_equal(nn_atomic_file_commit(&af), NN_ERR_STATE);
    assert_error_contains("no file is open");

    /* Streaming writes and an empty file. */
    assert_ok(nn_atomic_file_open(&af, test_path("s.bin")));
    for (int i = 0; i < 100; i++) assert_ok(nn_atomic_file_write(&af, big, 1000));
    assert_ok(nn_atomic_file_write(&af, NULL, 0));
    assert_ok(nn_atomic_file_commit(&af));
    assert_int_equal(file_size(test_path("s.bin")), 100000);
    assert_ok(nn_atomic_file_save(test_path("e.bin"), NULL, 0));
    assert_int_equal(file_size(test_path("e.bin")), 0);
    assert_int_equal(test_dir_entries(), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stale_temporaries, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_writers_clean_up, test_dir_setup, test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_failures_named, test_dir_setup, test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
