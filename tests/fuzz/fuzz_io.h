/* Shared by the file-format harnesses: the loaders under test take a path,
 * so each input is written to a per-process temporary file first (in
 * /dev/shm when it exists, to keep the fuzzer off the disk), and the small
 * models that checkpoints and safetensors files are loaded into. The seed
 * corpora come from tests/fuzz/gen_corpus.c, which uses the same models. */
#ifndef NN_FUZZ_IO_H
#define NN_FUZZ_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/nn.h"

/* The checkpoint and safetensors harnesses load into this network, built
 * for a (4, 3) input: 67 parameters, small enough that a whole file fits
 * the 4096-byte inputs make fuzz allows. */
#define FUZZ_MODEL_SPEC "flatten\ndense units=4 activation=relu\ndropout rate=0.25\ndense units=3\n"

static inline nn_model *fuzz_model(void)
{
    nn_model *m = nn_model_create(7);
    const int shape[2] = {4, 3};
    if (!m || nn_model_add_spec(m, FUZZ_MODEL_SPEC) != NN_OK || nn_model_build(m, 2, shape) != NN_OK)
        abort();
    return m;
}

static char fuzz_path_[256];
static void fuzz_remove_tmp(void) { unlink(fuzz_path_); }

/* A temporary path for this process, chosen once and removed at exit. */
static inline const char *fuzz_tmp_path(const char *suffix)
{
    if (!fuzz_path_[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_path_, sizeof fuzz_path_, "%s/nn_fuzz_%ld%s", dir, (long)getpid(), suffix);
        atexit(fuzz_remove_tmp);
    }
    return fuzz_path_;
}

static inline void fuzz_write(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
}

#endif
