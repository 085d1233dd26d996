// Single-precision matrix products for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
// The products themselves are computed by an OpenBLAS sgemm that the Python side hands over once with
// LsegGemmSetSgemm (the copy bundled with NumPy, see mindcv_lseg/kernels/openblas.py); this file only adapts
// MindSpore's AOT calling convention to a row-major cblas call and loops over a leading batch axis.
//
// Entry points LsegGemmNN / LsegGemmNT / LsegGemmTN compute C = op(A) op(B) with op = identity or transpose:
//   NN: A [M, K],  B [K, N]  -> C [M, N]
//   NT: A [M, K],  B [N, K]  -> C [M, N]
//   TN: A [K, M],  B [K, N]  -> C [M, N]
// and LsegGemmNTBias: A [M, K], B [N, K], bias [N] -> C = A B^T + bias (every row; C is filled with the bias, then
// the product is accumulated onto it: no separate pass over C for the bias).
// Either operand may carry a leading batch axis ([batch, rows, cols]); a 2-D operand is shared by every batch
// entry and C is then [batch, M, N]. Inputs and output are contiguous float32. Return codes: 0 ok, 10 no sgemm
// set, 11 wrong number of parameters, 12 not float32, 13 not 2-D/3-D, 14 inner or output sizes disagree,
// 15 batch sizes disagree.

#include <cstdint>
#include <cstring>

#include "lseg_aot.h"
#include "lseg_sgemm.h"

namespace lseg {
namespace {
SgemmFn g_sgemm = nullptr;
}  // namespace

SgemmFn GetSgemm() { return g_sgemm; }
}  // namespace lseg

namespace {

using lseg::g_sgemm;
using lseg::kNoTrans;
using lseg::kRowMajor;
using lseg::kTrans;
using lseg::SgemmFn;

struct Operand {
  int64_t batch;  // 0: a 2-D operand, shared by every batch entry
  int64_t rows;
  int64_t cols;
};

bool AsOperand(int ndim, const int64_t *shape, Operand *out) {
  if (ndim == 2) {
    *out = {0, shape[0], shape[1]};
    return true;
  }
  if (ndim == 3) {
    *out = {shape[0], shape[1], shape[2]};
    return true;
  }
  return false;
}

int Gemm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool trans_a, bool trans_b,
         bool bias = false) {
  if (g_sgemm == nullptr) return 10;
  const int out = bias ? 3 : 2;
  if (nparam != out + 1) return 11;
  if (!lseg::AllFloat32(nparam, dtypes)) return 12;
  Operand a, b, c;
  if (!AsOperand(ndims[0], shapes[0], &a) || !AsOperand(ndims[1], shapes[1], &b) ||
      !AsOperand(ndims[out], shapes[out], &c) || (bias && ndims[2] != 1)) {
    return 13;
  }
  const int64_t m = trans_a ? a.cols : a.rows;
  const int64_t k = trans_a ? a.rows : a.cols;
  const int64_t k_b = trans_b ? b.cols : b.rows;
  const int64_t n = trans_b ? b.rows : b.cols;
  if (k != k_b || c.rows != m || c.cols != n || (bias && shapes[2][0] != n)) return 14;
  const int64_t batch = c.batch > 0 ? c.batch : 1;
  if ((a.batch != 0 && a.batch != batch) || (b.batch != 0 && b.batch != batch)) return 15;

  const float *pa = static_cast<const float *>(params[0]);
  const float *pb = static_cast<const float *>(params[1]);
  float *pc = static_cast<float *>(params[out]);
  const int64_t step_a = a.batch != 0 ? a.rows * a.cols : 0;
  const int64_t step_b = b.batch != 0 ? b.rows * b.cols : 0;
  const int64_t step_c = m * n;
  if (step_c == 0) return 0;
  if (bias) {
    const float *pbias = static_cast<const float *>(params[2]);
    for (int64_t row = 0; row < batch * m; ++row) {
      std::memcpy(pc + row * n, pbias, sizeof(float) * static_cast<size_t>(n));
    }
  } else if (k == 0) {
    std::memset(pc, 0, sizeof(float) * static_cast<size_t>(batch * step_c));
  }
  if (k == 0) return 0;
  for (int64_t i = 0; i < batch; ++i) {
    g_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, m, n, k, 1.0f, pa + i * step_a,
            a.cols, pb + i * step_b, b.cols, bias ? 1.0f : 0.0f, pc + i * step_c, n);
  }
  return 0;
}

}  // namespace

extern "C" {

void LsegGemmSetSgemm(void *sgemm) { g_sgemm = reinterpret_cast<SgemmFn>(sgemm); }

int LsegGemmReady() { return g_sgemm != nullptr ? 1 : 0; }

int LsegGemmNN(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  return Gemm(nparam, params, ndims, shapes, dtypes, false, false);
}

int LsegGemmNT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  return Gemm(nparam, params, ndims, shapes, dtypes, false, true);
}

int LsegGemmNTBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  return Gemm(nparam, params, ndims, shapes, dtypes, false, true, true);
}

int LsegGemmTN(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  return Gemm(nparam, params, ndims, shapes, dtypes, true, false);
}

}  // extern "C"
