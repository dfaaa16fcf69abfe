/* dense_gemv: the dense layer's product for a few rows (a prediction of 1
 * to NN_DENSE_GEMV_MAX_N samples), where the GEMM library's packing and
 * blocking cost more than the product itself:
 *     y (N, U) = act(b + x (N, In) W (In, U)),  act = ReLU or none.
 * Every output is b[u] (or 0) plus the products x[n][i] W[i][u] added one
 * at a time in the order i = 0, 1, ..., In-1, each product rounded before
 * it is added (no fused multiply-add). That order fixes the result bit for
 * bit: nn_dense_gemv (vectors across u, several rows and columns per pass
 * over W) and nn_dense_gemv_reference (the plain loops) give the same
 * numbers on every vector width and thread count.
 *
 * Internal to layers/dense.c, which runs it for eval-mode forwards (its
 * results differ in the last bits from the GEMM's, whose order is
 * OpenBLAS's, so training-mode forwards keep the GEMM).
 *
 * Omits: other activations (dense applies them as a second node), strides
 * (x, W and y are contiguous).
 */
#ifndef NN_LAYERS_DENSE_GEMV_H
#define NN_LAYERS_DENSE_GEMV_H

/* Rows up to which the dense layer's predictions take nn_dense_gemv. */
#define NN_DENSE_GEMV_MAX_N 4

/* y (N, U) = act(b + x (N, In) W (In, U)); b (U) or NULL; relu: 0 or 1.
 * Any N >= 0 works; y may not overlap x, W or b. */
void nn_dense_gemv(float *y, const float *x, const float *W, const float *b, int N, int In, int U,
                   int relu);
/* The same sums as plain loops: what nn_dense_gemv is held to. */
void nn_dense_gemv_reference(float *y, const float *x, const float *W, const float *b, int N,
                             int In, int U, int relu);

#endif
