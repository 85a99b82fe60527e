// CBLAS access for the core: one place that knows the symbol prefix and how to
// set the library's thread count.
#pragma once

#include PARRBM_CBLAS_HEADER

#ifdef BLAS_SYMBOL_PREFIX
#define PARRBM_CAT2(a, b) a##b
#define PARRBM_CAT(a, b) PARRBM_CAT2(a, b)
#define PARRBM_BLAS_FN(name) PARRBM_CAT(BLAS_SYMBOL_PREFIX, name)
#else
#define PARRBM_BLAS_FN(name) name
#endif

namespace parrbm {

inline void cblas_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                       const float* a, int lda, const float* b, int ldb, float beta,
                       float* c, int ldc) {
  PARRBM_BLAS_FN(cblas_sgemm)(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                              b, ldb, beta, c, ldc);
}

inline void cblas_gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha,
                       const double* a, int lda, const double* b, int ldb, double beta,
                       double* c, int ldc) {
  PARRBM_BLAS_FN(cblas_dgemm)(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                              b, ldb, beta, c, ldc);
}

}  // namespace parrbm
