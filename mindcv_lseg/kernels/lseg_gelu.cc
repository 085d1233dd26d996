// The exact GELU and its derivative for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
//   LsegGelu:     y  = x * 0.5 * (1 + erf(x / sqrt(2)))                      (x -> y, any shape)
//   LsegGeluGrad: dx = dy * (0.5 * (1 + erf(x / sqrt(2))) + x * exp(-x^2 / 2) / sqrt(2 pi))   (x, dy -> dx)
//
// One pass over the data instead of MindSpore's five elementwise kernels. The loops are vectorised with glibc's
// vector math library (libmvec, glibc >= 2.35: the AVX-512 / AVX2 / SSE variants of erff and expf, accurate to a
// few ulp); target_clones picks the widest variant the CPU has when the library is loaded. Large tensors are cut
// into ranges that the threads of the library's pool take (lseg_threads.h). Return codes: 0 ok,
// 11 wrong number of parameters, 12 not float32, 14 shapes disagree.

#include <cstdint>

#include "lseg_aot.h"
#include "lseg_threads.h"

// the vector variants glibc declares for -ffast-math builds, declared here without fast-math's other effects
extern "C" __attribute__((__simd__("notinbranch"))) float erff(float) noexcept;
extern "C" __attribute__((__simd__("notinbranch"))) float expf(float) noexcept;

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr int64_t kGrain = 32768;  // elements per range handed to a thread (128 KiB of float32)

__attribute__((target_clones("avx512f", "avx2", "default"))) void GeluForward(const float *x, float *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = v * 0.5f * (1.0f + erff(v * kInvSqrt2));
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void GeluBackward(const float *x, const float *dy,
                                                                                 float *dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float cdf = 0.5f * (1.0f + erff(v * kInvSqrt2));
    const float pdf = expf(-0.5f * v * v) * kInvSqrt2Pi;
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

int64_t Numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

}  // namespace

extern "C" {

int LsegGelu(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 2) return 11;
  if (!lseg::AllFloat32(2, dtypes)) return 12;
  if (!lseg::SameShape(ndims[0], shapes[0], ndims[1], shapes[1])) return 14;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  lseg::ParallelRanges(Numel(ndims[0], shapes[0]), kGrain,
                       [&](int64_t begin, int64_t end) { GeluForward(x + begin, y + begin, end - begin); });
  return 0;
}

int LsegGeluGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3) return 11;
  if (!lseg::AllFloat32(3, dtypes)) return 12;
  if (!lseg::SameShape(ndims[0], shapes[0], ndims[1], shapes[1]) || !lseg::SameShape(ndims[0], shapes[0], ndims[2], shapes[2])) {
    return 14;
  }
  const float *x = static_cast<const float *>(params[0]), *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  lseg::ParallelRanges(Numel(ndims[0], shapes[0]), kGrain, [&](int64_t begin, int64_t end) {
    GeluBackward(x + begin, dy + begin, dx + begin, end - begin);
  });
  return 0;
}

}  // extern "C"
