/* Tape-based autograd with an arena allocator (see graph.h).
 *
 * The arena is a list of blocks. When a step needs more than the first block,
 * further blocks are chained; on reset they are merged into one block of the
 * total size, so after the first step or two every step fits in one block.
 *
 * Intermediate gradients come from a pool of buffers kept across resets,
 * each with a count of the tensors whose grad points into it (a node's
 * output, and through grad_is_input and grad_in_place its input too); a
 * buffer with no user is free. A request takes a free buffer of the same
 * size, else the smallest free one up to twice its size (a smaller last
 * batch reuses the full batch's buffers), else a new one. Each step makes
 * the same requests in the same order, so after the first step or two the
 * pool has what every step needs. Buffers are never trimmed: the pool holds
 * the largest set of gradients a step has had in flight.
 *
 * A recycling backward (nn_graph_backward_recycle) looks for a gradient's
 * room in the arena first: activations near the loss are small and die
 * first, while the large gradients come last, near the input, when most of
 * the arena is dead. Each node notes where the arena stood when it was
 * recorded; nothing made after that is read by its backward or an earlier
 * node's, so once its backward is next that memory is free except for the
 * recycled gradients still in use, which are entries of the pool's list
 * (in_arena) until the reset. The same requests in the same order land in
 * the same places every step, so the pool stops growing as before.
 */
#include "tensor/graph.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
    struct arena_block *next;
    size_t size, used;
    size_t end; /* used when a recycling backward began (0 for later blocks) */
    unsigned char *mem;
} arena_block;

typedef struct grad_buf {
    float *mem;
    size_t floats;
    int users;    /* tensors whose grad is mem; 0: free */
    int in_arena; /* mem is dead arena memory of this step, not the pool's */
} grad_buf;

/* Where the arena stood right after a node was recorded. */
typedef struct arena_mark {
    arena_block *block;
    size_t used;
} arena_mark;

/* Arena bytes [lo, hi) that no backward reads. */
typedef struct arena_span {
    uintptr_t lo, hi;
} arena_span;

struct nn_graph {
    arena_block *blocks; /* head is the block being filled */
    size_t first_size;
    nn_node **nodes;
    arena_mark *marks; /* marks[i]: the arena right after nodes[i] was recorded */
    int n_nodes, cap_nodes;
    int grad_enabled;
    /* A node that could not be recorded (no memory) would silently cut the
     * gradient path; the failure is kept here and reported by backward. */
    nn_status record_error;
    char record_msg[160];
    int backward_done; /* backward has run since the last reset */
    unsigned long generation; /* 1 + resets so far */
    grad_buf *bufs;
    int n_bufs, cap_bufs;
    void *scratch; /* nn_graph_scratch_reserve */
    size_t scratch_bytes;
    /* A recycling backward (nn_graph_backward_recycle): the node whose
     * backward is next (the arena made after it was recorded is dead), and
     * the outputs no backward reads. */
    int recycling, floor;
    arena_span *dead;
    int n_dead, cap_dead;
    nn_graph_param_fn param_hook; /* nn_graph_set_param_hook */
    void *param_ctx;
};

static arena_block *graph_block_new(size_t size)
{
    arena_block *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->mem = tensor_aligned_alloc(size);
    if (!b->mem) {
        free(b);
        return NULL;
    }
    b->size = size;
    return b;
}

static void graph_blocks_free(arena_block *b)
{
    while (b) {
        arena_block *next = b->next;
        tensor_aligned_free(b->mem);
        free(b);
        b = next;
    }
}

nn_graph *nn_graph_create(size_t arena_bytes)
{
    nn_graph *g = calloc(1, sizeof *g);
    if (!g) {
        nn_error(NN_ERR_MEMORY, "nn_graph_create: out of memory");
        return NULL;
    }
    g->first_size = arena_bytes ? arena_bytes : (size_t)1 << 20;
    g->blocks = graph_block_new(g->first_size);
    if (!g->blocks) {
        free(g);
        nn_error(NN_ERR_MEMORY, "nn_graph_create: out of memory for a %zu-byte arena", arena_bytes);
        return NULL;
    }
    g->grad_enabled = 1;
    g->generation = 1;
    return g;
}

void nn_graph_free(nn_graph *g)
{
    if (!g) return;
    graph_blocks_free(g->blocks);
    for (int i = 0; i < g->n_bufs; i++)
        if (!g->bufs[i].in_arena) tensor_aligned_free(g->bufs[i].mem);
    free(g->bufs);
    free(g->nodes);
    free(g->marks);
    free(g->dead);
    tensor_aligned_free(g->scratch);
    free(g);
}

void *nn_graph_scratch_reserve(nn_graph *g, size_t bytes)
{
    if (bytes <= g->scratch_bytes) return g->scratch;
    /* The old buffer goes first: nothing in it is kept, and the peak stays
     * the larger buffer alone. */
    tensor_aligned_free(g->scratch);
    g->scratch = tensor_aligned_alloc(bytes);
    g->scratch_bytes = g->scratch ? bytes : 0;
    if (!g->scratch) nn_error(NN_ERR_MEMORY, "nn_graph_scratch_reserve: out of memory for %zu bytes", bytes);
    return g->scratch;
}

void *nn_graph_scratch(const nn_graph *g) { return g->scratch; }
size_t nn_graph_scratch_bytes(const nn_graph *g) { return g->scratch_bytes; }

void nn_graph_reset(nn_graph *g)
{
    g->generation++;
    g->n_nodes = 0;
    g->record_error = NN_OK;
    g->backward_done = 0;
    /* The pool's buffers become free; the ones in the arena go with it. */
    int kept = 0;
    for (int i = 0; i < g->n_bufs; i++)
        if (!g->bufs[i].in_arena) {
            g->bufs[kept] = g->bufs[i];
            g->bufs[kept++].users = 0;
        }
    g->n_bufs = kept;
    if (g->blocks->next) {
        size_t total = 0;
        for (arena_block *b = g->blocks; b; b = b->next) total += b->size;
        arena_block *merged = graph_block_new(total);
        if (merged) {
            graph_blocks_free(g->blocks);
            g->blocks = merged;
        } else {
            /* Keep the chain; it still works, only less compactly. */
            for (arena_block *b = g->blocks; b; b = b->next) b->used = 0;
            return;
        }
    }
    g->blocks->used = 0;
}

void nn_graph_set_grad_enabled(nn_graph *g, int enabled) { g->grad_enabled = enabled != 0; }
int nn_graph_grad_enabled(const nn_graph *g) { return g->grad_enabled; }

void *nn_graph_alloc(nn_graph *g, size_t bytes)
{
    /* Rounding up must not wrap a huge request around to a small block. */
    if (bytes > SIZE_MAX - TENSOR_ALIGN) {
        nn_error(NN_ERR_MEMORY, "nn_graph_alloc: arena out of memory for %zu bytes", bytes);
        return NULL;
    }
    size_t need = (bytes + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    if (need == 0) need = TENSOR_ALIGN;
    arena_block *b = g->blocks;
    if (b->size - b->used < need) {
        size_t size = b->size * 2 > need ? b->size * 2 : need;
        arena_block *nb = graph_block_new(size);
        if (!nb) {
            nn_error(NN_ERR_MEMORY, "nn_graph_alloc: arena out of memory for %zu bytes", bytes);
            return NULL;
        }
        nb->next = b;
        g->blocks = b = nb;
    }
    void *p = b->mem + b->used;
    b->used += need;
    return p;
}

tensor *nn_graph_tensor(nn_graph *g, int rank, const int *shape)
{
    size_t size;
    if (tensor_shape_size(rank, shape, &size, "nn_graph_tensor") != NN_OK) return NULL;
    tensor *t = nn_graph_alloc(g, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    tensor_set_shape(t, rank, shape);
    t->data = nn_graph_alloc(g, size * sizeof(float));
    if (!t->data) return NULL;
    return t;
}

tensor *nn_graph_view(nn_graph *g, tensor *src, int rank, const int *shape)
{
    if (!src) {
        nn_error(NN_ERR_ARG, "nn_graph_view: src is NULL");
        return NULL;
    }
    size_t size;
    if (tensor_shape_size(rank, shape, &size, "nn_graph_view") != NN_OK) return NULL;
    if (size != src->size) {
        char a[96], b[96];
        nn_error(NN_ERR_SHAPE, "view: cannot view %s as %s",
                 tensor_shape_str(src->rank, src->shape, a, sizeof a),
                 tensor_shape_str(rank, shape, b, sizeof b));
        return NULL;
    }
    tensor *t = nn_graph_alloc(g, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    tensor_set_shape(t, rank, shape);
    t->data = src->data;
    return t;
}

int nn_graph_needs_grad(const nn_graph *g, tensor **in, int n_in)
{
    if (!g || !g->grad_enabled || !in) return 0;
    for (int i = 0; i < n_in; i++)
        if (in[i] && (in[i]->flags & TENSOR_REQUIRES_GRAD)) return 1;
    return 0;
}

static nn_node *graph_record_failed(nn_graph *g, const char *op)
{
    if (g->record_error == NN_OK) {
        g->record_error = NN_ERR_MEMORY;
        snprintf(g->record_msg, sizeof g->record_msg,
                 "nn_graph_backward: out of memory recording '%s' in the forward pass", op);
    }
    return NULL;
}

nn_node *nn_graph_record(nn_graph *g, const char *op, tensor *out, tensor **in,
                         int n_in, nn_backward_fn backward, void *ctx)
{
    /* Custom ops call this too: a bad call is reported now and by backward
     * (a node left out would silently cut the gradient path). */
    if (g && (n_in < 0 || n_in > NN_NODE_MAX_INPUTS || !out || !backward || (n_in && !in))) {
        nn_error(NN_ERR_ARG, "nn_graph_record: '%s' has %d inputs, at most %d, and needs an "
                 "output and a backward function", op ? op : "(null)", n_in, NN_NODE_MAX_INPUTS);
        if (g->record_error == NN_OK) {
            g->record_error = NN_ERR_ARG;
            snprintf(g->record_msg, sizeof g->record_msg, "%s", nn_last_error());
        }
        return NULL;
    }
    if (!nn_graph_needs_grad(g, in, n_in)) return NULL;
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        nn_node **nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) return graph_record_failed(g, op);
        g->nodes = nodes;
        arena_mark *marks = realloc(g->marks, (size_t)cap * sizeof *marks);
        if (!marks) return graph_record_failed(g, op);
        g->marks = marks;
        g->cap_nodes = cap;
    }
    nn_node *n = nn_graph_alloc(g, sizeof *n);
    if (!n) return graph_record_failed(g, op);
    memset(n, 0, sizeof *n);
    n->op = op;
    n->out = out;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->n_in = n_in;
    n->backward = backward;
    n->ctx = ctx;
    out->node = n;
    out->flags |= TENSOR_REQUIRES_GRAD;
    g->marks[g->n_nodes] = (arena_mark){g->blocks, g->blocks->used};
    g->nodes[g->n_nodes++] = n;
    return n;
}

/* Room for one more entry in g->bufs; -1 when out of memory. */
static int graph_bufs_room(nn_graph *g)
{
    if (g->n_bufs < g->cap_bufs) return 0;
    int cap = g->cap_bufs ? g->cap_bufs * 2 : 16;
    grad_buf *bufs = realloc(g->bufs, (size_t)cap * sizeof *bufs);
    if (!bufs) return -1;
    g->bufs = bufs;
    g->cap_bufs = cap;
    return 0;
}

/* Bytes a gradient of n floats covers in the arena (whole alignment units,
 * as the arena hands them out). */
static uintptr_t graph_grad_bytes(size_t n)
{
    return (n * sizeof(float) + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
}

/* Looks for the shortest free stretch of arena bytes [lo, hi) that holds
 * `bytes`: free where no live recycled gradient lies, so a stretch starts at
 * lo or where such a gradient ends. Keeps it in *best if shorter than
 * *best_len (best fit keeps the long stretches for the large gradients of
 * the layers near the input). */
static void graph_span_fit(const nn_graph *g, uintptr_t lo, uintptr_t hi, uintptr_t bytes,
                           uintptr_t *best, uintptr_t *best_len)
{
    for (int c = -1; c < g->n_bufs; c++) {
        uintptr_t s = lo;
        if (c >= 0) {
            const grad_buf *b = &g->bufs[c];
            if (!b->in_arena || !b->users) continue;
            s = (uintptr_t)b->mem + graph_grad_bytes(b->floats);
            if (s < lo || s >= hi) continue;
        }
        uintptr_t end = hi;
        int covered = 0;
        for (int i = 0; i < g->n_bufs && !covered; i++) {
            const grad_buf *b = &g->bufs[i];
            if (!b->in_arena || !b->users) continue;
            const uintptr_t bl = (uintptr_t)b->mem, bh = bl + graph_grad_bytes(b->floats);
            if (bl <= s && s < bh) covered = 1;
            else if (bl > s && bl < end) end = bl;
        }
        if (!covered && end - s >= bytes && end - s < *best_len) {
            *best = s;
            *best_len = end - s;
        }
    }
}

/* A recycling backward's gradient of n floats in arena memory that nothing
 * reads any more: an output no backward reads (g->dead), or anything made
 * after nodes[g->floor] was recorded, whose readers are the nodes after it,
 * whose backward has run. The index of its new entry in g->bufs, or -1 when
 * no free stretch is long enough. */
static int graph_buf_recycle(nn_graph *g, size_t n)
{
    const uintptr_t bytes = graph_grad_bytes(n);
    uintptr_t best = 0, best_len = UINTPTR_MAX;
    for (int i = 0; i < g->n_dead; i++)
        graph_span_fit(g, g->dead[i].lo, g->dead[i].hi, bytes, &best, &best_len);
    /* The rest of the floor's block, and the blocks made after it (the list
     * runs from the newest). */
    const arena_mark *m = &g->marks[g->floor];
    for (arena_block *b = g->blocks; b; b = b->next) {
        const size_t lo = b == m->block ? m->used : 0;
        if (lo < b->end)
            graph_span_fit(g, (uintptr_t)(b->mem + lo), (uintptr_t)(b->mem + b->end), bytes,
                           &best, &best_len);
        if (b == m->block) break;
    }
    if (!best) return -1;
    int slot = 0; /* a recycled entry no tensor uses any more, else a new one */
    while (slot < g->n_bufs && !(g->bufs[slot].in_arena && !g->bufs[slot].users)) slot++;
    if (slot == g->n_bufs && graph_bufs_room(g)) return -1;
    g->bufs[slot] = (grad_buf){.mem = (float *)best, .floats = n, .in_arena = 1};
    if (slot == g->n_bufs) g->n_bufs++;
    return slot;
}

/* The index of a free buffer of at least n floats (see the top of the
 * file; in a recycling backward dead arena memory comes first), or -1 with
 * an error. */
static int graph_buf_take(nn_graph *g, size_t n)
{
    if (g->recycling) {
        const int r = graph_buf_recycle(g, n);
        if (r >= 0) return r;
    }
    int best = -1;
    for (int i = 0; i < g->n_bufs; i++) {
        const grad_buf *b = &g->bufs[i];
        if (b->in_arena || b->users || b->floats < n || b->floats / 2 > n) continue;
        if (best < 0 || b->floats < g->bufs[best].floats) best = i;
        if (b->floats == n) break;
    }
    if (best >= 0) return best;
    if (graph_bufs_room(g)) goto fail;
    float *mem = NULL;
    if (n <= SIZE_MAX / sizeof(float)) mem = tensor_aligned_alloc((n ? n : 1) * sizeof(float));
    if (!mem) goto fail;
    g->bufs[g->n_bufs] = (grad_buf){.mem = mem, .floats = n};
    return g->n_bufs++;
fail:
    nn_error(NN_ERR_MEMORY, "nn_graph_backward: out of memory for a gradient of %zu floats", n);
    return -1;
}

/* True when tensor t's storage overlaps arena bytes [lo, hi). */
static int graph_overlaps(const tensor *t, uintptr_t lo, uintptr_t hi)
{
    if (!t || !t->data) return 0;
    const uintptr_t d = (uintptr_t)t->data;
    return d < hi && lo < d + t->size * sizeof(float);
}

/* Fills g->dead with the outputs whose storage no backward reads: not
 * their node's (saves_output unset), nor any later node's, each of which
 * reads none of its inputs (inputs_unread) or has no input there, and
 * whose output is not a view into it (it would be read or written through
 * the view). A residual block's last batchnorm, which only the add reads,
 * is one. An output that is itself a view of an input is left out: its
 * storage is the input's. A full list only means less recycling. */
static void graph_find_dead(nn_graph *g)
{
    g->n_dead = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const nn_node *p = g->nodes[i];
        const tensor *y = p->out;
        if (p->saves_output || y->node != p || !y->data || !nn_graph_holds(g, y->data)) continue;
        const uintptr_t lo = (uintptr_t)y->data, hi = lo + y->size * sizeof(float);
        int read = 0;
        for (int k = 0; k < p->n_in && !read; k++) read = graph_overlaps(p->in[k], lo, hi);
        for (int j = i + 1; j < g->n_nodes && !read; j++) {
            const nn_node *c = g->nodes[j];
            read = graph_overlaps(c->out, lo, hi);
            for (int k = 0; k < c->n_in && !read && !c->inputs_unread; k++)
                read = graph_overlaps(c->in[k], lo, hi);
        }
        if (read) continue;
        if (g->n_dead == g->cap_dead) {
            const int cap = g->cap_dead ? g->cap_dead * 2 : 16;
            arena_span *dead = realloc(g->dead, (size_t)cap * sizeof *dead);
            if (!dead) return;
            g->dead = dead;
            g->cap_dead = cap;
        }
        g->dead[g->n_dead++] = (arena_span){lo, hi};
    }
}

/* t's node (if t is the output of one) now also uses the pool buffer that
 * `holder`'s gradient is in, if any; a leaf's stays in use until the reset. */
static void graph_buf_share(nn_graph *g, tensor *t, const tensor *holder)
{
    const int b = holder->node && holder->node->out == holder ? holder->node->grad_buf : 0;
    if (!b) return;
    g->bufs[b - 1].users++;
    if (t->node && t->node->out == t) t->node->grad_buf = b;
}

static nn_status graph_ensure_grad(nn_graph *g, tensor *t)
{
    if (t->grad || !(t->flags & TENSOR_REQUIRES_GRAD)) return NN_OK;
    if (t->flags & TENSOR_PARAM)
        return nn_error(NN_ERR_STATE, "nn_graph_backward: a parameter has no grad buffer");
    nn_node *n = t->node;
    if (n && n->grad_is_input && n->n_in == 1 && (n->in[0]->flags & TENSOR_REQUIRES_GRAD) &&
        n->in[0]->size == t->size) {
        NN_TRY(graph_ensure_grad(g, n->in[0]));
        t->grad = n->in[0]->grad;
        graph_buf_share(g, t, n->in[0]);
        return NN_OK;
    }
    if (n && n->out == t) {
        const int b = graph_buf_take(g, t->size);
        if (b < 0) return NN_ERR_MEMORY;
        g->bufs[b].users = 1;
        n->grad_buf = b + 1;
        t->grad = g->bufs[b].mem;
    } else {
        t->grad = nn_graph_alloc(g, t->size * sizeof(float));
        if (!t->grad) return NN_ERR_MEMORY;
    }
    memset(t->grad, 0, t->size * sizeof(float));
    return NN_OK;
}

/* After n's backward nothing reads its output's gradient any more: the
 * output lets go of it (its storage stays in use while a leaf's or another
 * live tensor's gradient is in it). */
static void graph_release_out_grad(nn_graph *g, nn_node *n)
{
    tensor *y = n->out;
    if (y->node != n || n->retain_grad) return;
    if (n->grad_buf) g->bufs[n->grad_buf - 1].users--;
    n->grad_buf = 0;
    y->grad = NULL;
}

/* grad_in_place applies to in[0] when every other input is a parameter
 * (batchnorm's gamma and beta): their gradients have buffers of their own,
 * so only in[0]'s can be the one out->grad turns into. */
static int graph_in_place_inputs(const nn_node *n)
{
    for (int k = 1; k < n->n_in; k++)
        if (n->in[k] && (!(n->in[k]->flags & TENSOR_PARAM) || n->in[k] == n->in[0])) return 0;
    return 1;
}

void nn_graph_set_param_hook(nn_graph *g, nn_graph_param_fn fn, void *ctx)
{
    g->param_hook = fn;
    g->param_ctx = fn ? ctx : NULL;
}

static int graph_is_trainable(const tensor *t)
{
    return t && (t->flags & TENSOR_PARAM) && (t->flags & TENSOR_REQUIRES_GRAD);
}

/* For the parameter hook: marks in each node the parameters whose first
 * reader (in recording order) it is, the last whose backward adds into
 * their gradients. A mark on the tensor notes "seen" for the one pass. */
static void graph_mark_param_final(nn_graph *g)
{
    for (int i = 0; i < g->n_nodes; i++) {
        nn_node *n = g->nodes[i];
        n->param_final = 0;
        for (int k = 0; k < n->n_in; k++) {
            tensor *p = n->in[k];
            if (!graph_is_trainable(p) || (p->flags & TENSOR_GRAPH_MARK)) continue;
            p->flags |= TENSOR_GRAPH_MARK;
            n->param_final |= 1u << k;
        }
    }
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i]->n_in; k++)
            if (g->nodes[i]->in[k]) g->nodes[i]->in[k]->flags &= ~TENSOR_GRAPH_MARK;
}

/* The parameters whose gradients node n's backward finished, to the hook. */
static nn_status graph_report_params(nn_graph *g, const nn_node *n)
{
    for (int k = 0; k < n->n_in; k++)
        if (n->param_final & (1u << k)) NN_TRY(g->param_hook(g->param_ctx, n->in[k]));
    return NN_OK;
}

/* nn_graph_backward_seed and nn_graph_backward_recycle. */
static nn_status graph_backward(nn_graph *g, tensor *loss, float seed, int recycle)
{
    if (!g || !loss)
        return nn_error(NN_ERR_ARG, "nn_graph_backward: NULL argument: %s is NULL",
                        !g ? "g" : "loss");
    if (!isfinite(seed))
        return nn_error(NN_ERR_ARG, "nn_graph_backward_seed: seed must be finite, but got %g",
                        (double)seed);
    if (loss->size != 1) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "nn_graph_backward: loss must hold one element, got shape %s",
                        tensor_shape_str(loss->rank, loss->shape, b, sizeof b));
    }
    if (g->record_error != NN_OK) return nn_error(g->record_error, "%s", g->record_msg);
    if (g->backward_done)
        return nn_error(NN_ERR_STATE, "nn_graph_backward: backward already ran on this graph; "
                                      "reset it first (to combine losses, add them with nn_op_add)");
    if (!(loss->flags & TENSOR_REQUIRES_GRAD))
        return nn_error(NN_ERR_STATE, "nn_graph_backward: loss does not depend on anything that "
                                      "requires a gradient (was the graph recording?)");
    g->backward_done = 1;
    if (loss->node && loss->node->out == loss) loss->node->retain_grad = 1;
    NN_TRY(graph_ensure_grad(g, loss));
    loss->grad[0] += seed;
    /* The loss's gradient, kept until the reset, comes from the pool: in
     * recycled memory it would split a stretch for good. */
    if (recycle && g->n_nodes > 0) {
        /* What the arena held when backward began is what may be recycled;
         * a leaf's gradient that backward makes goes after it. */
        for (arena_block *b = g->blocks; b; b = b->next) b->end = b->used;
        graph_find_dead(g);
        g->floor = g->n_nodes - 1;
        g->recycling = 1;
    }
    if (g->param_hook) graph_mark_param_final(g);
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        nn_node *n = g->nodes[i];
        if (!n->out->grad) { /* not on a path to the loss */
            if (g->param_hook) NN_TRY(graph_report_params(g, n));
            continue;
        }
        g->floor = i;
        tensor *x = n->in[0];
        /* Every consumer of out has run (reverse order), and x has no
         * gradient yet, so nothing else is in either buffer. */
        if (n->grad_in_place && graph_in_place_inputs(n) && !x->grad &&
            (x->flags & TENSOR_REQUIRES_GRAD) && !(x->flags & TENSOR_PARAM) &&
            x->size == n->out->size) {
            x->grad = n->out->grad;
            graph_buf_share(g, x, n->out);
        }
        for (int k = 0; k < n->n_in; k++) NN_TRY(graph_ensure_grad(g, n->in[k]));
        n->backward(n);
        graph_release_out_grad(g, n);
        if (g->param_hook) NN_TRY(graph_report_params(g, n));
    }
    return NN_OK;
}

nn_status nn_graph_backward(nn_graph *g, tensor *loss)
{
    return graph_backward(g, loss, 1.0f, 0);
}

nn_status nn_graph_backward_seed(nn_graph *g, tensor *loss, float seed)
{
    return graph_backward(g, loss, seed, 0);
}

nn_status nn_graph_backward_recycle(nn_graph *g, tensor *loss, float seed)
{
    const nn_status s = graph_backward(g, loss, seed, 1);
    if (g) {
        g->recycling = 0;
        g->n_dead = 0;
    }
    return s;
}

nn_status nn_graph_retain_grad(nn_graph *g, tensor *t)
{
    if (!g || !t)
        return nn_error(NN_ERR_ARG, "nn_graph_retain_grad: NULL argument: %s is NULL",
                        !g ? "g" : "t");
    if (g->backward_done)
        return nn_error(NN_ERR_STATE, "nn_graph_retain_grad: backward already ran on this graph; "
                                      "retain the gradient before it");
    if (t->node && t->node->out == t) t->node->retain_grad = 1;
    return NN_OK;
}

int nn_graph_node_count(const nn_graph *g) { return g->n_nodes; }

size_t nn_graph_arena_bytes(const nn_graph *g)
{
    size_t total = 0;
    for (const arena_block *b = g->blocks; b; b = b->next) total += b->size;
    return total;
}

size_t nn_graph_arena_used(const nn_graph *g)
{
    size_t total = 0;
    for (const arena_block *b = g->blocks; b; b = b->next) total += b->used;
    return total;
}

int nn_graph_holds(const nn_graph *g, const void *p)
{
    const unsigned char *q = p;
    for (const arena_block *b = g->blocks; b; b = b->next)
        if (q >= b->mem && q < b->mem + b->used) return 1;
    return 0;
}

unsigned long nn_graph_generation(const nn_graph *g) { return g->generation; }
int nn_graph_backward_ran(const nn_graph *g) { return g->backward_done; }

size_t nn_graph_grad_pool_bytes(const nn_graph *g)
{
    size_t total = 0;
    for (int i = 0; i < g->n_bufs; i++)
        if (!g->bufs[i].in_arena) total += g->bufs[i].floats * sizeof(float);
    return total;
}
