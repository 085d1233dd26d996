// The OpenBLAS sgemm shared by the kernels of the _lseg_gemm library (lseg_gemm.cc sets it, see LsegGemmSetSgemm).
#ifndef MINDCV_LSEG_KERNELS_LSEG_SGEMM_H_
#define MINDCV_LSEG_KERNELS_LSEG_SGEMM_H_

#include <cstdint>

namespace lseg {

// cblas_sgemm of an ILP64 OpenBLAS (64-bit integer sizes), e.g. NumPy's cblas_sgemm64_.
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                         const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                         int64_t ldc);

constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

// the sgemm handed over by LsegGemmSetSgemm, or nullptr
SgemmFn GetSgemm();

}  // namespace lseg

#endif  // MINDCV_LSEG_KERNELS_LSEG_SGEMM_H_
