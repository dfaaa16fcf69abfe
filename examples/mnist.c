/* mnist: train a CNN with SpatialDropout2D on MNIST-format data (MNIST,
 * Fashion-MNIST), evaluate, checkpoint.
 *
 *   make mnist ARGS="--epochs 1 --limit 6000"
 *   make fashion                  (Fashion-MNIST, examples/fashion_resnet.txt)
 *   build/examples/mnist --data .cache/mnist [flags]     (--help lists them)
 *
 * The default network is examples/mnist_cnn.txt, compiled in; --model FILE
 * replaces it. The loop is the library's nn_model_fit (nn/fit.h);
 * mnist_train.h (shared with its test) holds what is MNIST's own: the
 * shifts and flips (fit's per-sample transform), the progress bar and the
 * timings (its batch callback), the log, the checkpoint and the resumable
 * state (its epoch callback, initial_epoch and order_state).
 * Exit status: 0 done, 1 a run-time failure (missing data, bad checkpoint,
 * non-finite loss), 2 a bad command line.
 * Training images are shifted at random by up to --shift pixels (default 2,
 * see mnist_train.h); --shift 0 trains on the images as they are. --flip
 * also mirrors half of them at random (for Fashion-MNIST; off by default,
 * since a mirrored digit is no longer that digit).
 * Several processes: built with MPI (`make mpi`, or whenever mpicc is
 * found) and started by mpirun, every rank trains its part of each batch
 * (nn/shard.h): in exact mode (the default, --allreduce exact) the weights,
 * the log and the checkpoints are those of one process running the same
 * micro-shards (--shard N samples), bit for bit, for any number of ranks;
 * --allreduce fast sums with MPI instead, started in buckets during
 * backward (reproducible at a fixed rank count only; NN_MPI_OVERLAP=0: one
 * MPI_Allreduce after backward, see nn/mpi.h). Every rank reads the data; rank 0 prints, logs and
 * writes checkpoints, --load/--resume files are read by rank 0 and sent to
 * the others, and an error on any rank ends them all naming the rank.
 * Started on its own with --shard or --allreduce exact, the program runs the
 * exact mode's steps in one process, without MPI.
 * Deliberately omitted: other augmentations, a validation split, mid-epoch
 * checkpoints.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "examples/mnist_train.h"
#include "nn/nn.h"
#ifdef NN_WITH_MPI
#include "nn/mpi.h"
#endif

static const char default_spec[] =
#include "mnist_cnn.inc"
    ;

typedef struct options {
    int epochs, batch, threads, limit, eval_only, quiet, adam, shift, flip;
    float lr, lr_decay, rate;
    int lr_step;
    uint64_t seed;
    const char *dropout;     /* spatial | standard | none, or NULL: as the spec says */
    const char *data_format; /* or NULL: channels_last */
    const char *model, *data, *save, *load, *resume, *log, *export_onnx;
    /* which flags were given, for checks against a resumed checkpoint */
    int set_batch, set_lr, set_lr_decay, set_lr_step, set_seed, set_limit, set_rate, set_shift;
    int set_flip;
    int shard, set_shard, fast, set_allreduce; /* over ranks (nn/shard.h) */
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mnist [flags]\n"
            "Trains a CNN with SpatialDropout2D on MNIST-format data (MNIST, Fashion-MNIST)\n"
            "and reports the test accuracy.\n"
            "  --data DIR            MNIST-format files (plain, .gz) [.cache/mnist]\n"
            "  --epochs N            total epochs                    [12]\n"
            "  --batch N             batch size                      [128]\n"
            "  --optimizer NAME      adam | sgd (momentum 0.9)       [adam]\n"
            "  --lr X                base learning rate              [1e-3 adam, 1e-2 sgd]\n"
            "  --lr-decay G          multiply the lr by G ...        [0.1]\n"
            "  --lr-step S           ... every S epochs (StepLR)     [8]\n"
            "  --shift N             random shifts of up to N px     [2]\n"
            "                        in x and y, zero fill; 0..8, 0 = off\n"
            "  --flip                mirror half the training images at random, left to\n"
            "                        right (not for digits)          [off]\n"
            "  --seed N              the random draws: weights,      [1]\n"
            "                        dropout, data order, shifts, flips\n"
            "  --threads N           OpenMP/OpenBLAS threads         [all cores]\n"
            "  --dropout KIND        spatial | standard | none: the spatial_dropout2d line\n"
            "                        of the network becomes that    [spatial]\n"
            "  --rate X              its rate                        [0.25]\n"
            "  --data-format F       channels_last | channels_first  [channels_last]\n"
            "  --limit N             train on the first N images only\n"
            "  --model FILE          network spec instead of the built-in one\n"
            "  --save FILE           checkpoint after every epoch\n"
            "  --export-onnx FILE    write the trained model as ONNX (opset 13) at the end\n"
            "  --load FILE           start from a checkpoint's weights (fresh optimizer)\n"
            "  --resume FILE         continue a run from its checkpoint (weights, optimizer,\n"
            "                        data order, dropout counters, schedule)\n"
            "  --eval-only           only evaluate (with --load or --resume)\n"
            "  --log FILE            JSON Lines: one object per epoch, then a final one\n"
            "  --allreduce MODE      over MPI ranks: exact (any rank count, same bits)\n"
            "                        | fast (MPI, during backward)    [exact]\n"
            "  --shard N             exact mode's micro-shard size   [32]\n"
            "  --quiet               print only the final result\n"
            "  --help                this text\n");
}

static int bad_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "mnist: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(run with --help for the flags)\n");
    return 2;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        char range[64];
        snprintf(range, sizeof range, "an integer in [%d, %d]", lo, hi);
        fprintf(stderr, "mnist: %s needs %s, but got '%s'\n", flag, range, v);
        return 2;
    }
    *out = (int)x;
    return 0;
}

static int parse_float(const char *flag, const char *v, float lo, float hi, int lo_open, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x > hi || x < lo || (lo_open && x == lo)) {
        fprintf(stderr, "mnist: %s needs a number in %s%g, %g], but got '%s'\n", flag,
                lo_open ? "(" : "[", (double)lo, (double)hi, v);
        return 2;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        char flag[64];
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        if (!strncmp(arg, "--", 2) && eq && (size_t)(eq - arg) < sizeof flag) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
        }
        const char *f = flag;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        int is_switch = !strcmp(f, "--eval-only") || !strcmp(f, "--quiet") || !strcmp(f, "--flip");
        if (is_switch) {
            if (val) return bad_usage("%s takes no value, but got '%s'", f, val);
            if (!strcmp(f, "--eval-only")) o->eval_only = 1;
            else if (!strcmp(f, "--flip")) o->flip = o->set_flip = 1;
            else o->quiet = 1;
            continue;
        }
        static const char *const with_value[] = {
            "--epochs", "--batch", "--lr", "--lr-decay", "--lr-step", "--optimizer", "--seed", "--threads",
            "--dropout", "--rate", "--data-format", "--limit", "--shift", "--model", "--data", "--save",
            "--load", "--resume", "--log", "--allreduce", "--shard", "--export-onnx", NULL};
        int known = 0;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(f, with_value[k]);
        if (!known) return bad_usage("unknown flag '%s'%s", arg, "");
        if (!val) {
            if (i + 1 >= argc) return bad_usage("%s needs a value%s", f, "");
            val = argv[++i];
        }
        int rc = 0;
        if (!strcmp(f, "--epochs")) rc = parse_int(f, val, 1, 100000, &o->epochs);
        else if (!strcmp(f, "--batch")) rc = parse_int(f, val, 1, 65536, &o->batch), o->set_batch = 1;
        else if (!strcmp(f, "--threads")) rc = parse_int(f, val, 1, 1024, &o->threads);
        else if (!strcmp(f, "--shard")) rc = parse_int(f, val, 1, 65536, &o->shard), o->set_shard = 1;
        else if (!strcmp(f, "--allreduce")) {
            if (strcmp(val, "exact") && strcmp(val, "fast"))
                return bad_usage("--allreduce must be exact or fast, but got '%s'%s", val, "");
            o->fast = !strcmp(val, "fast");
            o->set_allreduce = 1;
        }
        else if (!strcmp(f, "--lr-step"))
            rc = parse_int(f, val, 1, 100000, &o->lr_step), o->set_lr_step = 1;
        else if (!strcmp(f, "--limit")) rc = parse_int(f, val, 1, INT_MAX, &o->limit), o->set_limit = 1;
        else if (!strcmp(f, "--shift")) {
            if (mnist_shift_parse(val, &o->shift) != NN_OK)
                return bad_usage("%s%s", nn_last_error(), "");
            o->set_shift = 1;
        }
        else if (!strcmp(f, "--lr")) rc = parse_float(f, val, 0.0f, 10.0f, 1, &o->lr), o->set_lr = 1;
        else if (!strcmp(f, "--lr-decay"))
            rc = parse_float(f, val, 0.0f, 1.0f, 1, &o->lr_decay), o->set_lr_decay = 1;
        else if (!strcmp(f, "--rate")) {
            rc = parse_float(f, val, 0.0f, 1.0f, 0, &o->rate);
            if (!rc && o->rate >= 1.0f) return bad_usage("--rate must be below 1, but got '%s'%s", val, "");
            o->set_rate = 1;
        } else if (!strcmp(f, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-')
                return bad_usage("--seed needs a non-negative integer, but got '%s'%s", val, "");
            o->seed = x;
            o->set_seed = 1;
        } else if (!strcmp(f, "--optimizer")) {
            if (strcmp(val, "adam") && strcmp(val, "sgd"))
                return bad_usage("--optimizer must be adam or sgd, but got '%s'%s", val, "");
            o->adam = !strcmp(val, "adam");
        } else if (!strcmp(f, "--dropout")) {
            if (strcmp(val, "spatial") && strcmp(val, "standard") && strcmp(val, "none"))
                return bad_usage("--dropout must be spatial, standard or none, but got '%s'%s", val, "");
            o->dropout = val;
        } else if (!strcmp(f, "--data-format")) {
            if (strcmp(val, "channels_last") && strcmp(val, "channels_first"))
                return bad_usage("--data-format must be channels_last or channels_first, but got "
                                 "'%s'%s", val, "");
            o->data_format = val;
        } else if (!val[0]) {
            return bad_usage("%s needs a non-empty value%s", f, "");
        } else if (!strcmp(f, "--model")) o->model = val;
        else if (!strcmp(f, "--data")) o->data = val;
        else if (!strcmp(f, "--save")) o->save = val;
        else if (!strcmp(f, "--export-onnx")) o->export_onnx = val;
        else if (!strcmp(f, "--load")) o->load = val;
        else if (!strcmp(f, "--resume")) o->resume = val;
        else if (!strcmp(f, "--log")) o->log = val;
        if (rc) return rc;
    }
    if (o->fast && o->set_shard)
        return bad_usage("--shard is exact mode's; --allreduce fast takes each rank's rows as one "
                         "pass%s%s", "", "");
    if (o->load && o->resume) return bad_usage("--load and --resume exclude each other%s%s", "", "");
    if (o->eval_only && !o->load && !o->resume)
        return bad_usage("--eval-only needs --load FILE or --resume FILE%s%s", "", "");
    if (o->eval_only && o->save)
        return bad_usage("--eval-only does not train, so --save has nothing to save%s%s", "", "");
    if (o->dropout && !strcmp(o->dropout, "none") && o->set_rate)
        return bad_usage("--rate has no effect with --dropout none%s%s", "", "");
    return 0;
}

/* Reads a whole text file; NULL with a message on stderr. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mnist: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    while (text) {
        len += fread(text + len, 1, cap - 1 - len, f);
        if (len < cap - 1 || cap > (1u << 24)) break;
        char *t = realloc(text, cap * 2);
        if (!t) free(text);
        text = t;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!text || err) {
        fprintf(stderr, "mnist: %s: read error\n", path);
        free(text);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

/* Replaces the first spatial_dropout2d line of spec with the --dropout
 * choice, keeping a seed= key if the line has one. Returns a new string, or
 * NULL (message on stderr) when there is no such line. */
static char *rewrite_dropout(const char *spec, const char *kind, float rate)
{
    const char *line = spec;
    while (*line) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!strncmp(p, "spatial_dropout2d", 17) && (p[17] == ' ' || p[17] == '\t' ||
                                                     p[17] == '\n' || p[17] == '\0'))
            break;
        const char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : line + strlen(line);
    }
    if (!*line) {
        fprintf(stderr, "mnist: --dropout/--rate rewrite the spatial_dropout2d line of the network, "
                        "but the spec has none\n");
        return NULL;
    }
    const char *nl = strchr(line, '\n');
    const size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
    char seed[96] = "";
    const char *sp = strstr(line, "seed=");
    if (sp && sp < line + line_len) {
        size_t k = strcspn(sp, " \t\n#");
        if (k < sizeof seed - 1) snprintf(seed, sizeof seed, " %.*s", (int)k, sp);
    }
    char repl[160];
    if (!strcmp(kind, "none")) repl[0] = '\0';
    else snprintf(repl, sizeof repl, "%s rate=%.9g%s", strcmp(kind, "spatial") ? "dropout" :
                  "spatial_dropout2d", (double)rate, seed);
    size_t head = (size_t)(line - spec), total = strlen(spec) - line_len + strlen(repl) + 1;
    char *out = malloc(total);
    if (!out) return NULL;
    snprintf(out, total, "%.*s%s%s", (int)head, spec, repl, line + line_len);
    return out;
}

/* Checks a flag the user gave against the value a resumed run was made with. */
static int resume_conflict(int given, double flag, double saved, const char *name, const char *path)
{
    if (!given || flag == saved) return 0;
    fprintf(stderr, "mnist: %s %g, but %s was trained with %g; a resumed run continues with the "
            "checkpoint's value (leave the flag out)\n", name, flag, path, saved);
    return 1;
}

/* --export-onnx: the trained model as an ONNX inference graph. */
static nn_status mnist_export(const nn_model *m, const char *path)
{
    if (!path) return NN_OK;
    NN_TRY(nn_onnx_save(m, path));
    printf("wrote %s (ONNX opset 13)\n", path);
    return NN_OK;
}

static void print_final(FILE *out, const mnist_metrics *test, const mnist_result *r)
{
    fprintf(out, "final test accuracy %.2f%% (%d/%d), test loss %.4f", 100.0 * test->acc,
            test->correct, test->n, test->loss);
    if (r && r->train_seconds > 0)
        fprintf(out, "; training %.0f img/s, eval %.0f img/s, %d epoch%s in %.0f s\n",
                r->train_images / r->train_seconds, r->eval_images / r->eval_seconds, r->epoch,
                r->epoch == 1 ? "" : "s", r->wall_seconds);
    else
        fprintf(out, "; eval %.0f img/s\n", test->n / test->seconds);
}

/* One process's comm: no transfer is ever needed, so none is made. */
static int solo_transfer(void *ctx, int peer, const void *buf, size_t bytes)
{
    (void)ctx, (void)peer, (void)buf, (void)bytes;
    return nn_error(NN_ERR_STATE, "one rank has no one to talk to"), 1;
}
static int solo_recv(void *ctx, int peer, void *buf, size_t bytes)
{
    return solo_transfer(ctx, peer, buf, bytes);
}

/* A checkpoint for --load/--resume: over ranks, rank 0 reads the file and
 * sends its bytes to the others; every rank parses them. */
static nn_status load_checkpoint(const nn_comm *comm, const char *path, nn_model *m, optim *opt,
                                 void *blob, size_t cap, size_t *len)
{
    if (!comm || comm->size == 1) return nn_checkpoint_load(path, m, opt, blob, cap, len);
    uint64_t n = 0;
    uint8_t *bytes = NULL;
    nn_status s = NN_OK;
    if (comm->rank == 0) {
        FILE *f = fopen(path, "rb");
        if (!f) return nn_error(NN_ERR_IO, "%s: %s", path, strerror(errno));
        if (fseek(f, 0, SEEK_END) == 0) {
            long end = ftell(f);
            n = end > 0 ? (uint64_t)end : 0;
            bytes = malloc(n ? n : 1);
            rewind(f);
            if (!bytes || fread(bytes, 1, n, f) != n) s = nn_error(NN_ERR_IO, "%s: read error", path);
        } else {
            s = nn_error(NN_ERR_IO, "%s: %s", path, strerror(errno));
        }
        fclose(f);
        if (s != NN_OK) {
            free(bytes);
            return s;
        }
    }
    s = nn_comm_bcast(comm, &n, sizeof n);
    if (s == NN_OK && comm->rank != 0 && !(bytes = malloc(n ? n : 1)))
        s = nn_error(NN_ERR_MEMORY, "%s: out of memory for %llu bytes", path, (unsigned long long)n);
    if (s == NN_OK) s = nn_comm_bcast(comm, bytes, n);
    if (s == NN_OK) s = nn_checkpoint_parse(bytes, n, path, m, opt, blob, cap, len);
    free(bytes);
    return s;
}

int main(int argc, char **argv)
{
    options o = {.epochs = 12, .batch = 128, .lr_decay = 0.1f, .lr_step = 8, .rate = 0.25f, .adam = 1,
                 .shift = 2, .seed = 1, .data = ".cache/mnist"};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    if (!o.set_lr) o.lr = o.adam ? 1e-3f : 1e-2f;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per_machine = 1;

    /* Ranks: mpirun's, or one of our own for the exact mode's steps. */
    nn_comm comm_store, *comm = NULL;
#ifdef NN_WITH_MPI
    if (nn_mpi_launched()) {
        if (nn_mpi_init(&argc, &argv, &comm_store) != NN_OK) {
            fprintf(stderr, "mnist: %s\n", nn_last_error());
            return 1;
        }
        comm = &comm_store;
        per_machine = nn_mpi_local_size();
    }
#endif
    if (!comm && (o.set_shard || o.set_allreduce)) {
        if (o.fast) {
#ifdef NN_WITH_MPI
            return bad_usage("--allreduce fast sums over MPI ranks: start the program with "
                             "mpirun%s%s", "", "");
#else
            return bad_usage("--allreduce fast needs MPI: this program was built without it "
                             "(make mpi)%s%s", "", "");
#endif
        }
        const nn_comm solo = {.rank = 0, .size = 1, .send = solo_transfer, .recv = solo_recv};
        comm_store = solo;
        comm = &comm_store;
    }
    const int root = !comm || comm->rank == 0;
    if (!root) o.quiet = 1;
    if (!o.threads) {
        const long share = cores / per_machine;
        o.threads = share > 0 ? (int)share : 1;
    }

    /* The network text: built in or --model, with --dropout applied. */
    char *spec = o.model ? read_text(o.model) : strdup(default_spec);
    if (!spec) return o.model ? 2 : 1;
    if (o.dropout || o.set_rate) {
        char *s2 = rewrite_dropout(spec, o.dropout ? o.dropout : "spatial", o.rate);
        free(spec);
        if (!s2) return 2;
        spec = s2;
    }
    nn_data_format fmt = NN_CHANNELS_LAST;
    if (o.data_format && nn_data_format_parse(o.data_format, &fmt) != NN_OK) return 2;
    nn_set_image_data_format(fmt);

    int status = 1;
    nn_model *m = NULL;
    optim *opt = NULL;
    FILE *log = NULL;
    nn_mnist data;
    memset(&data, 0, sizeof data);
    if (nn_set_threads(o.threads) != NN_OK) {
        fprintf(stderr, "mnist: %s\n", nn_last_error());
        goto out;
    }
    m = nn_model_create(o.seed);
    if (!m) goto fail;
    if (nn_model_add_spec(m, spec) != NN_OK) {
        fprintf(stderr, "mnist: %s: %s\n", o.model ? o.model : "built-in network", nn_last_error());
        status = 2;
        goto out;
    }
    if (nn_mnist_load(o.data, &data) != NN_OK) goto fail;
    const int in_shape[3] = {fmt == NN_CHANNELS_FIRST ? 1 : data.rows,
                             fmt == NN_CHANNELS_FIRST ? data.rows : data.cols,
                             fmt == NN_CHANNELS_FIRST ? data.cols : 1};
    if (nn_model_build(m, 3, in_shape) != NN_OK) goto fail;
    opt = o.adam ? optim_adam_create(o.lr, 0.9f, 0.999f, 1e-7f, 0.0f, 0)
                 : optim_sgd_create(o.lr, 0.9f, 0, 0.0f);
    if (!opt) goto fail;

    mnist_config cfg = {.epochs = o.epochs, .batch = o.batch, .lr = o.lr, .lr_decay = o.lr_decay,
                        .lr_step = o.lr_step, .shift = o.shift, .flip = o.flip,
                        .seed = o.seed, .out = stdout, .save_path = o.save, .comm = comm,
                        .shard_mode = o.fast ? NN_SHARD_FAST : NN_SHARD_EXACT, .shard = o.shard};
    cfg.verbose = !o.quiet;
    cfg.progress = !o.quiet && isatty(fileno(stdout));
    if (o.limit > data.n_train) {
        fprintf(stderr, "mnist: --limit %d, but %s has %d training images\n", o.limit, o.data,
                data.n_train);
        status = 2;
        goto out;
    }
    mnist_state st;
    mnist_state_init(&st, &cfg, o.limit ? o.limit : data.n_train);
    if (o.load && load_checkpoint(comm, o.load, m, NULL, NULL, 0, NULL) != NN_OK) goto fail;
    if (o.resume) {
        uint8_t blob[MNIST_STATE_BYTES];
        size_t blob_len = 0;
        /* The blob first into a scratch buffer: a foreign blob is refused
         * before anything is changed, by its size check in the loader. */
        if (load_checkpoint(comm, o.resume, m, opt, blob, sizeof blob, &blob_len) != NN_OK) goto fail;
        if (mnist_state_unpack(&st, blob, blob_len, o.resume) != NN_OK) goto fail;
        if (resume_conflict(o.set_batch, o.batch, st.batch, "--batch", o.resume) ||
            resume_conflict(o.set_lr, o.lr, st.lr, "--lr", o.resume) ||
            resume_conflict(o.set_lr_decay, o.lr_decay, st.lr_decay, "--lr-decay", o.resume) ||
            resume_conflict(o.set_lr_step, o.lr_step, st.lr_step, "--lr-step", o.resume) ||
            resume_conflict(o.set_seed, (double)o.seed, (double)st.seed, "--seed", o.resume) ||
            resume_conflict(o.set_limit, o.limit, st.n_train, "--limit", o.resume) ||
            resume_conflict(o.set_shift, o.shift, st.shift, "--shift", o.resume)) {
            status = 2;
            goto out;
        }
        /* A switch can only disagree one way: without it a resumed run keeps
         * the checkpoint's flips, as it keeps its shift. */
        if (o.set_flip && !st.flip) {
            fprintf(stderr, "mnist: --flip, but %s was trained without flips; a resumed run "
                    "continues with the checkpoint's value (leave the flag out)\n", o.resume);
            status = 2;
            goto out;
        }
        if ((int)st.n_train > data.n_train) {
            fprintf(stderr, "mnist: %s was trained on %u images, %s has %d\n", o.resume, st.n_train,
                    o.data, data.n_train);
            goto out;
        }
        cfg.batch = (int)st.batch;
        cfg.lr = st.lr;
        cfg.lr_decay = st.lr_decay;
        cfg.lr_step = (int)st.lr_step;
        cfg.seed = st.seed;
        cfg.shift = (int)st.shift;
        cfg.flip = (int)st.flip;
    }
    if (o.log && root) {
        /* A resumed run appends, so the file keeps the whole history. */
        log = fopen(o.log, o.resume ? "a" : "w");
        if (!log) {
            fprintf(stderr, "mnist: %s: %s\n", o.log, strerror(errno));
            goto out;
        }
        cfg.log = log;
    }

    if (!o.quiet) {
        nn_model_summary(m, stdout);
        printf("data: %u of %d training images, %d test images (%s)\n", st.n_train, data.n_train,
               data.n_test, o.data);
        char shifts[80] = "no shifts";
        if (cfg.shift)
            snprintf(shifts, sizeof shifts, "random shifts up to %d px", cfg.shift);
        if (cfg.flip) strcat(shifts, ", random horizontal flips");
        printf("%s, lr %g x %g every %d epoch%s, batch %d, %s, %d epoch%s, seed %llu, %d thread%s, "
               "%s\n", o.adam ? "adam" : "sgd (momentum 0.9)", (double)cfg.lr, (double)cfg.lr_decay,
               cfg.lr_step, cfg.lr_step == 1 ? "" : "s", cfg.batch, shifts, o.epochs,
               o.epochs == 1 ? "" : "s",
               (unsigned long long)cfg.seed, o.threads, o.threads == 1 ? "" : "s",
               nn_data_format_name(fmt));
        if (comm)
            printf("%d rank%s, %s\n", comm->size, comm->size == 1 ? "" : "s",
                   !o.fast            ? "exact mode (the same weights for any rank count)"
                   : comm->wait_all   ? "fast mode (MPI_Iallreduce during backward; the same "
                                        "bits at this rank count only)"
                                      : "fast mode (MPI_Allreduce after backward; the same bits "
                                        "at this rank count only)");
        if (comm && !o.fast)
            printf("micro-shards of %d samples\n", o.shard ? o.shard : NN_SHARD_DEFAULT);
        if (o.resume) printf("resuming %s after epoch %u\n", o.resume, st.epoch);
        fflush(stdout);
    }

    if (o.eval_only || (int)st.epoch >= o.epochs) {
        if (!o.eval_only && root)
            printf("%s already has %u epochs; nothing to train (raise --epochs)\n", o.resume,
                   st.epoch);
        mnist_metrics test;
        if (mnist_evaluate(m, data.test_images, data.test_labels, data.n_test, cfg.batch, &test) !=
            NN_OK)
            goto fail;
        mnist_metrics none = {0};
        /* Evaluation flips nothing, so the record says no flips. */
        mnist_log_line(log, 1, (int)st.epoch, mnist_epoch_lr(&st, st.epoch ? st.epoch - 1 : 0), 0,
                       &none, &test, test.seconds, 0.0, test.n / test.seconds);
        if (root) print_final(stdout, &test, NULL);
        if (root && mnist_export(m, o.export_onnx) != NN_OK) goto fail;
        status = 0;
        goto out;
    }
    mnist_result res;
    if (mnist_train(m, opt, &data, &cfg, &st, &res) != NN_OK) goto fail;
    if (root) print_final(stdout, &res.test, &res);
    if (root && mnist_export(m, o.export_onnx) != NN_OK) goto fail;
    status = 0;
    goto out;

fail:
#ifdef NN_WITH_MPI
    /* The other ranks may be waiting for this one: end them all. */
    if (comm && comm->size > 1) nn_mpi_abort(comm, "mnist", 1, nn_last_error());
#endif
    fprintf(stderr, "mnist: %s\n", nn_last_error());
out:
    if (log) fclose(log);
    nn_mnist_free(&data);
    optim_free(opt);
    nn_model_free(m);
    free(spec);
#ifdef NN_WITH_MPI
    if (comm && comm->size > 1 && status == 2)
        nn_mpi_abort(comm, "mnist", 2, "stopped (see the message above)");
    if (comm && comm->send != solo_transfer) nn_mpi_finalize();
#endif
    return status;
}
