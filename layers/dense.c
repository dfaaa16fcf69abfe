/* dense: y = act(x W + b), x (N, in), W (in, units), b (units).
 * Config: units (required), use_bias (true), activation (linear | relu |
 * sigmoid | tanh | leaky_relu | elu | gelu | softmax; linear), alpha (with
 * leaky_relu and elu only; their layers' defaults).
 * ReLU is fused so the bias, the ReLU and their backward are one pass over
 * y; backward reads y for the ReLU mask (y > 0). Every other activation is
 * a second graph node after the linear one (nn_act_record in
 * layers/activation.c), the same arithmetic as the activation's own layer
 * placed after a linear dense. GEMMs go to OpenBLAS in fixed tiles of the
 * output, threaded here, and chunks of the reduction axis (see
 * dense_gemm_tiled and dense_gemm_chunked). An eval-mode forward of at
 * most NN_DENSE_GEMV_MAX_N rows (a prediction) runs nn_dense_gemv
 * (layers/dense_gemv.c) instead, with the ReLU fused, whether or not it
 * records a tape, so a prediction equals an eval-mode forward bit for bit.
 * Its sums are rounded in another order than OpenBLAS's, so training-mode
 * forwards (every training step), whose results must not change, keep the
 * GEMM. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "layers/activation.h"
#include "layers/dense_gemv.h"
#include "layers/layer.h"

typedef struct {
    int units, use_bias;
    int activation; /* an nn_activation */
    float alpha;    /* leaky_relu and elu */
} dense_state;

/* Reduction chunk: below the K block of every x86 OpenBLAS kernel. */
#define DENSE_KC 256

/* C (M, N) = beta C + op(A) op(B), row-major, op(A) (M, K), op(B) (K, N),
 * summed over K in chunks of DENSE_KC with one GEMM call per chunk.
 * Why: when OpenBLAS 0.3.21 threads a GEMM whose K exceeds its block size
 * (384 on the AVX-512 kernels), it splits K at other points than its serial
 * path does, so the rounding, and then the trained weights, change with the
 * thread count (K = 400 or 1000: 70% of the outputs differ between 1 and 2
 * threads). With K <= DENSE_KC per call, both paths accumulate the same
 * blocks in the same order. */
static void dense_gemm_chunked(int trans_a, int trans_b, int M, int N, int K, const float *A,
                               int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M == 0 || N == 0) return;
    if (K == 0) { /* nothing to sum; BLAS would also reject lda = 0 */
        if (beta == 0.0f)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof *C);
        return;
    }
    int k0 = 0;
    do {
        const int k = K - k0 < DENSE_KC ? K - k0 : DENSE_KC;
        const float *a = trans_a ? A + (size_t)k0 * lda : A + k0;
        const float *b = trans_b ? B + k0 : B + (size_t)k0 * ldb;
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, k, 1.0f, a, lda, b, ldb,
                    k0 ? 1.0f : beta, C, ldc);
        k0 += k;
    } while (k0 < K);
}

/* Output tile edge of dense_gemm_tiled: fixed, so the calls do not depend
 * on the thread count. */
#define DENSE_TILE 64
/* Below this many multiply-adds (M N K) dense_gemm_tiled runs serially:
 * about 0.2 ms on one core; a batch-1 prediction's layers are all below. */
#define DENSE_PAR_MIN_MACS 4194304.0

/* dense_gemm_chunked split into tiles of C along its longer side, one tile
 * per iteration of an OpenMP loop. Why: OpenBLAS's own threading also
 * changes results with the thread count on its AVX2 kernels (Haswell, Zen),
 * even for K <= 256, once it splits M or N between threads. Inside an active
 * parallel region OpenBLAS runs each call on the calling thread, so here
 * every tile is one serial call whose arguments depend on the shapes alone,
 * and the result is the same for any number of threads. */
static void dense_gemm_tiled(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float beta, float *C, int ldc)
{
    const int split_m = M >= N, len = split_m ? M : N;
    const int tiles = (len + DENSE_TILE - 1) / DENSE_TILE;
    /* Small products (a batch-1 prediction) run on the calling thread: a
     * parallel region costs more than it saves, and with another busy
     * process on the machine its second thread may wait a whole time slice.
     * The tiles and calls are the same either way. Outside an active region
     * OpenBLAS would thread a call itself, so the OpenMP thread count, which
     * it follows, is 1 while the tiles run. */
    const int serial = (double)M * N * K < DENSE_PAR_MIN_MACS;
    const int threads = serial ? omp_get_max_threads() : 1;
    if (threads > 1) omp_set_num_threads(1);
    #pragma omp parallel for schedule(static) if (!serial)
    for (int t = 0; t < tiles; t++) {
        const int o = t * DENSE_TILE, n = len - o < DENSE_TILE ? len - o : DENSE_TILE;
        if (split_m) /* rows o.. of op(A) and C */
            dense_gemm_chunked(trans_a, trans_b, n, N, K, trans_a ? A + o : A + (size_t)o * lda,
                               lda, B, ldb, beta, C + (size_t)o * ldc, ldc);
        else /* columns o.. of op(B) and C */
            dense_gemm_chunked(trans_a, trans_b, M, n, K, A, lda,
                               trans_b ? B + (size_t)o * ldb : B + o, ldb, beta, C + o, ldc);
    }
    if (threads > 1) omp_set_num_threads(threads);
}

static nn_status dense_parse(nn_layer *l, nn_config *c)
{
    dense_state *s = l->state;
    NN_TRY(nn_config_get_int(c, "units", &s->units, 0, 1, 1, 1 << 24));
    NN_TRY(nn_config_get_bool(c, "use_bias", &s->use_bias, 1));
    NN_TRY(nn_config_get_choice(c, "activation", &s->activation, NN_ACT_LINEAR, nn_activation_names));
    return nn_act_config_alpha(c, s->activation, &s->alpha);
}

static void dense_write(const nn_layer *l, nn_config_writer *w)
{
    const dense_state *s = l->state;
    nn_config_write(w, "units", "%d", s->units);
    nn_config_write(w, "use_bias", "%s", s->use_bias ? "true" : "false");
    nn_config_write(w, "activation", "%s", nn_activation_names[s->activation]);
    if (nn_act_has_alpha(s->activation)) nn_config_write_float(w, "alpha", s->alpha);
}

static nn_status dense_build(nn_layer *l, int in_rank, const int *in_shape)
{
    dense_state *s = l->state;
    if (in_rank != 1) {
        char b[96];
        return nn_error(NN_ERR_SHAPE, "%s: expected a per-sample input of rank 1 (features), got %s; "
                        "add a flatten layer before it", l->name,
                        tensor_shape_str(in_rank, in_shape, b, sizeof b));
    }
    int wshape[2] = {in_shape[0], s->units};
    NN_TRY(nn_layer_add_param(l, "kernel", 2, wshape, NN_INIT_GLOROT_UNIFORM, in_shape[0], s->units, 1));
    if (s->use_bias) NN_TRY(nn_layer_add_param(l, "bias", 1, &s->units, NN_INIT_ZEROS, 0, 0, 1));
    l->out_rank = 1;
    l->out_shape[0] = s->units;
    return NN_OK;
}

static void dense_backward(nn_node *n)
{
    nn_layer *l = n->ctx;
    const dense_state *s = l->state;
    tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL, *y = n->out;
    const int N = x->shape[0], In = x->shape[1], U = s->units;
    /* dz = dy * relu'(z), computed in place: every consumer of y has run its
     * backward already, so nothing reads y->grad after this. */
    float *dz = y->grad;
    if (s->activation == NN_ACT_RELU)
        for (size_t i = 0; i < y->size; i++)
            if (!(y->data[i] > 0.0f)) dz[i] = 0.0f;
    if (b && b->grad)
        for (int i = 0; i < N; i++)
            for (int u = 0; u < U; u++) b->grad[u] += dz[(size_t)i * U + u];
    if (N == 0) return;
    /* dW (In, U) += x^T (In, N) dz (N, U);  dx (N, In) += dz (N, U) W^T (U, In) */
    if (w->grad) dense_gemm_tiled(1, 0, In, U, N, x->data, In, dz, U, 1.0f, w->grad, U);
    if (x->grad) dense_gemm_tiled(0, 1, N, In, U, dz, U, w->data, U, 1.0f, x->grad, In);
}

static nn_status dense_forward(nn_layer *l, nn_graph *g, tensor *x, tensor **out, int training)
{
    const dense_state *s = l->state;
    const int N = x->shape[0], In = x->shape[1], U = s->units;
    int shape[2] = {N, U};
    tensor *y = nn_graph_tensor(g, 2, shape);
    if (!y) return NN_ERR_MEMORY;
    tensor *w = l->params[0].t, *b = s->use_bias ? l->params[1].t : NULL;
    tensor *in[3] = {x, w, b};
    const int relu = s->activation == NN_ACT_RELU;
    if (N > 0 && N <= NN_DENSE_GEMV_MAX_N && !training) {
        nn_dense_gemv(y->data, x->data, w->data, b ? b->data : NULL, N, In, U, relu);
    } else if (N > 0) {
        if (b)
            for (int i = 0; i < N; i++) memcpy(y->data + (size_t)i * U, b->data, (size_t)U * sizeof(float));
        /* y (N, U) = [b] + x (N, In) W (In, U) */
        dense_gemm_tiled(0, 0, N, U, In, x->data, In, w->data, U, b ? 1.0f : 0.0f, y->data, U);
        if (relu)
            for (size_t i = 0; i < y->size; i++) y->data[i] = y->data[i] > 0.0f ? y->data[i] : 0.0f;
    }
    nn_node *node = nn_graph_record(g, "dense", y, in, b ? 3 : 2, dense_backward, l);
    if (node) node->saves_output = s->activation == NN_ACT_RELU;
    if (s->activation > NN_ACT_RELU) return nn_act_record(g, s->activation, s->alpha, y, out, 1);
    *out = y;
    return NN_OK;
}

const nn_layer_type nn_layer_dense = {
    .name = "dense",
    .summary = "fully connected: y = act(x W + b)",
    .state_size = sizeof(dense_state),
    .parse = dense_parse,
    .write = dense_write,
    .build = dense_build,
    .forward = dense_forward,
    .test_config = "units=5 activation=relu",
    .test_rank = 1,
    .test_shape = {7},
};
