/* libFuzzer harness: the .npy reader (nn/io/npy.h), both entry points.
 * The input is parsed in memory (nn_npy_parse) and, written to a file,
 * streamed by nn_npy_load, which reads the header in steps and the data
 * straight into the tensor: the two must agree on the status and, when the
 * file is accepted, on the shape and every data byte. An accepted tensor is
 * saved again and reloaded to the same bytes (the round trip). Errors carry
 * a message naming the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"

static void check_same(const tensor *a, const tensor *b)
{
    if (!a || !b || a->rank != b->rank || a->size != b->size) abort();
    if (memcmp(a->shape, b->shape, (size_t)a->rank * sizeof(int))) abort();
    if (a->size && memcmp(a->data, b->data, a->size * sizeof(float))) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    const char *path = fuzz_tmp_path(".npy");
    fuzz_write(path, data, size);

    tensor *mem = NULL, *file = NULL;
    nn_clear_error();
    nn_status s1 = nn_npy_parse(data, size, "fuzz.npy", &mem);
    if (s1 != NN_OK && (mem || !strstr(nn_last_error(), "fuzz.npy"))) abort();
    nn_clear_error();
    nn_status s2 = nn_npy_load(path, &file);
    if (s2 != NN_OK && (file || !strstr(nn_last_error(), path))) abort();
    if ((s1 == NN_OK) != (s2 == NN_OK)) abort();
    if (s1 == NN_OK) {
        check_same(mem, file);
        if (nn_npy_save(path, mem) != NN_OK) abort();
        tensor *again = NULL;
        if (nn_npy_load(path, &again) != NN_OK) abort();
        check_same(mem, again);
        tensor_free(again);
    }
    tensor_free(mem);
    tensor_free(file);
    return 0;
}
