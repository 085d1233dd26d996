// LayerNorm over the last axis and its gradient, for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
//   LsegLayerNorm:     x [..., C], gamma [C], beta [C], eps [1]  -> y [..., C]
//                      y = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps)   (per row of C)
//   LsegLayerNormGrad: x [..., C], dy [..., C], gamma [C], eps [1] -> dx [..., C], dgamma [C], dbeta [C]
//                      g = dy * gamma,  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
//                      dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy
//
// The leading axes are rows. Each row is normalised in three short passes while it sits in the L1 cache: the mean,
// the variance around it (two-pass), then the output. The row sums are accumulated in double precision in vector
// lanes, and x - mean uses the mean as a float pair (high part + rounding remainder), so a row far from zero (mean
// 1000, std 1) keeps float32 accuracy where a float mean loses ~3e-5. The backward pass recomputes mean and rstd from
// x (the same code, so the same values) instead of keeping them from the forward pass: the row is read anyway, and
// the layer then keeps only its input for the backward pass. dgamma and dbeta are summed in float over blocks of 32
// rows, the blocks in double. MindSpore 2.10's CPU LayerNorm takes ~2.5 ms on [577, 1024], this ~0.3 ms
// (docs/cpu_kernels.md). eps is an input tensor rather than an attribute (AOT kernels get no attributes without
// MindSpore's headers). Rows (forward) and blocks of rows (backward) are taken by the threads of the library's pool
// (lseg_threads.h); the gradient's sums do not depend on how many.
// Return codes: 0 ok, 11 wrong number of parameters, 12 not float32, 13 wrong rank, 14 shapes disagree.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lseg_aot.h"
#include "lseg_threads.h"

namespace {

constexpr int64_t kBlockRows = 32;  // rows summed in float into dgamma/dbeta before adding them to the double sums

// the mean as an unevaluated float sum mean + mean_lo (x - mean is then as exact as in double for rows far from 0)
struct RowStats {
  float mean;
  float mean_lo;
  float rstd;
};

__attribute__((always_inline)) inline RowStats Stats(const float *x, int64_t c, double eps) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < c; ++i) sum += static_cast<double>(x[i]);
  const double mean = sum / static_cast<double>(c);
  double sq = 0.0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < c; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    sq += d * d;
  }
  const double var = sq / static_cast<double>(c);  // biased, as LayerNorm
  const float hi = static_cast<float>(mean);
  return {hi, static_cast<float>(mean - hi), static_cast<float>(1.0 / std::sqrt(var + eps))};
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Forward(const float *x, const float *gamma,
                                                                           const float *beta, float *y, int64_t n,
                                                                           int64_t c, double eps) {
  for (int64_t r = 0; r < n; ++r) {
    const float *xr = x + r * c;
    float *yr = y + r * c;
    const RowStats s = Stats(xr, c, eps);
#pragma omp simd
    for (int64_t i = 0; i < c; ++i) yr[i] = ((xr[i] - s.mean) - s.mean_lo) * s.rstd * gamma[i] + beta[i];
  }
}

// dx for rows [r0, r1) (at most kBlockRows of them) and that block's float sums of dy * xhat and dy into
// part [2 C] (overwritten)
__attribute__((target_clones("avx512f", "avx2", "default"))) void BackwardBlock(const float *x, const float *dy,
                                                                                 const float *gamma, float *dx,
                                                                                 float *part, int64_t r0, int64_t r1,
                                                                                 int64_t c, double eps) {
  const double inv_c = 1.0 / static_cast<double>(c);
  float *part_g = part, *part_b = part + c;
  std::memset(part, 0, sizeof(float) * static_cast<size_t>(2 * c));
  for (int64_t r = r0; r < r1; ++r) {
    const float *xr = x + r * c;
    const float *dyr = dy + r * c;
    float *dxr = dx + r * c;
    const RowStats s = Stats(xr, c, eps);
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t i = 0; i < c; ++i) {
      const float xhat = ((xr[i] - s.mean) - s.mean_lo) * s.rstd;
      const float g = dyr[i] * gamma[i];
      sum_g += static_cast<double>(g);
      sum_gx += static_cast<double>(g * xhat);
      part_g[i] += dyr[i] * xhat;
      part_b[i] += dyr[i];
    }
    const float mean_g = static_cast<float>(sum_g * inv_c);
    const float mean_gx = static_cast<float>(sum_gx * inv_c);
#pragma omp simd
    for (int64_t i = 0; i < c; ++i) {
      const float xhat = ((xr[i] - s.mean) - s.mean_lo) * s.rstd;
      dxr[i] = s.rstd * (dyr[i] * gamma[i] - mean_g - xhat * mean_gx);
    }
  }
}

bool IsVector(int ndim, const int64_t *shape, int64_t length) { return ndim == 1 && shape[0] == length; }

// rows and channels of x [..., C]
void Rows(int ndim, const int64_t *shape, int64_t *n, int64_t *c) {
  *c = shape[ndim - 1];
  *n = 1;
  for (int i = 0; i < ndim - 1; ++i) *n *= shape[i];
}

}  // namespace

extern "C" {

// params: x, gamma, beta, eps, y
int LsegLayerNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 5) return 11;
  if (!lseg::AllFloat32(5, dtypes)) return 12;
  if (ndims[0] < 1) return 13;
  int64_t n, c;
  Rows(ndims[0], shapes[0], &n, &c);
  if (!IsVector(ndims[1], shapes[1], c) || !IsVector(ndims[2], shapes[2], c) || !IsVector(ndims[3], shapes[3], 1) ||
      !lseg::SameShape(ndims[0], shapes[0], ndims[4], shapes[4])) {
    return 14;
  }
  if (n == 0 || c == 0) return 0;
  const double eps = static_cast<const float *>(params[3])[0];
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[4]);
  lseg::ParallelRanges(n, kBlockRows, [&](int64_t r0, int64_t r1) {
    Forward(x + r0 * c, static_cast<const float *>(params[1]), static_cast<const float *>(params[2]), y + r0 * c,
            r1 - r0, c, eps);
  });
  return 0;
}

// params: x, dy, gamma, eps, dx, dgamma, dbeta
int LsegLayerNormGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 7) return 11;
  if (!lseg::AllFloat32(7, dtypes)) return 12;
  if (ndims[0] < 1) return 13;
  int64_t n, c;
  Rows(ndims[0], shapes[0], &n, &c);
  if (!lseg::SameShape(ndims[0], shapes[0], ndims[1], shapes[1]) || !IsVector(ndims[2], shapes[2], c) ||
      !IsVector(ndims[3], shapes[3], 1) || !lseg::SameShape(ndims[0], shapes[0], ndims[4], shapes[4]) ||
      !IsVector(ndims[5], shapes[5], c) || !IsVector(ndims[6], shapes[6], c)) {
    return 14;
  }
  float *dgamma = static_cast<float *>(params[5]);
  float *dbeta = static_cast<float *>(params[6]);
  // the blocks of rows in parallel, each with its own float partial sums; the partials then added in block order
  // in double, so the sums do not depend on the threads
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  std::vector<float> part(static_cast<size_t>(blocks * 2 * c));
  if (c > 0) {
    const double eps = static_cast<const float *>(params[3])[0];
    const float *x = static_cast<const float *>(params[0]), *dy = static_cast<const float *>(params[1]);
    const float *gamma = static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[4]);
    lseg::ParallelFor(blocks, [&](int64_t b) {
      BackwardBlock(x, dy, gamma, dx, part.data() + b * 2 * c, b * kBlockRows, std::min(n, (b + 1) * kBlockRows), c,
                    eps);
    });
  }
  for (int64_t i = 0; i < c; ++i) {
    double sum_g = 0.0, sum_b = 0.0;
    for (int64_t b = 0; b < blocks; ++b) {
      sum_g += static_cast<double>(part[b * 2 * c + i]);
      sum_b += static_cast<double>(part[b * 2 * c + c + i]);
    }
    dgamma[i] = static_cast<float>(sum_g);
    dbeta[i] = static_cast<float>(sum_b);
  }
  return 0;
}

}  // extern "C"
