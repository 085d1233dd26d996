// Per-pixel channel norms for LSeg's cosine logits, for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
//   LsegInvNorm:      x [B, C, P]                          -> inv [B, 1, P],  inv = 1 / sqrt(sum over C of x^2)
//   LsegAddScaled:    a [B, C, P], x [B, C, P], k [B, 1, P] -> a + x * k      (k broadcast over C)
//
// The first is the L2 norm of every pixel embedding (no epsilon, as the reference; a zero pixel gives inf); the
// second is the last step of its backward pass, dX = T^T dR + X * k. MindSpore computes the first as a multiply and
// a reduction over the channel axis (strided: 87 ms for [1, 512, 36864]) and the second with an explicit broadcast
// of k to the full size (0.35 s at 480x480); here each is one pass with the pixels in the inner, vectorised loop.
// Return codes: 0 ok, 11 wrong number of parameters, 12 not float32, 13 not 3-D, 14 shapes disagree.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lseg_aot.h"

namespace {

bool Is3d(int nparam, const int *ndims) {
  for (int i = 0; i < nparam; ++i) {
    if (ndims[i] != 3) return false;
  }
  return true;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void InvNorm(const float *x, float *inv, int64_t c,
                                                                           int64_t p) {
  std::memset(inv, 0, sizeof(float) * static_cast<size_t>(p));
  for (int64_t ch = 0; ch < c; ++ch) {
    const float *row = x + ch * p;
#pragma omp simd
    for (int64_t i = 0; i < p; ++i) inv[i] += row[i] * row[i];
  }
#pragma omp simd
  for (int64_t i = 0; i < p; ++i) inv[i] = 1.0f / std::sqrt(inv[i]);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void AddScaled(const float *a, const float *x,
                                                                             const float *k, float *out, int64_t c,
                                                                             int64_t p) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const float *ra = a + ch * p, *rx = x + ch * p;
    float *ro = out + ch * p;
#pragma omp simd
    for (int64_t i = 0; i < p; ++i) ro[i] = ra[i] + rx[i] * k[i];
  }
}

}  // namespace

extern "C" {

int LsegInvNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 2) return 11;
  if (!lseg::AllFloat32(2, dtypes)) return 12;
  if (!Is3d(2, ndims)) return 13;
  const int64_t b = shapes[0][0], c = shapes[0][1], p = shapes[0][2];
  if (shapes[1][0] != b || shapes[1][1] != 1 || shapes[1][2] != p) return 14;
  const float *x = static_cast<const float *>(params[0]);
  float *inv = static_cast<float *>(params[1]);
  for (int64_t n = 0; n < b; ++n) InvNorm(x + n * c * p, inv + n * p, c, p);
  return 0;
}

int LsegAddScaled(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 4) return 11;
  if (!lseg::AllFloat32(4, dtypes)) return 12;
  if (!Is3d(4, ndims)) return 13;
  const int64_t b = shapes[0][0], c = shapes[0][1], p = shapes[0][2];
  for (int i = 1; i < 4; i += 2) {  // x and the output: as a
    if (shapes[i][0] != b || shapes[i][1] != c || shapes[i][2] != p) return 14;
  }
  if (shapes[2][0] != b || shapes[2][1] != 1 || shapes[2][2] != p) return 14;
  const float *a = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *k = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[3]);
  for (int64_t n = 0; n < b; ++n) AddScaled(a + n * c * p, x + n * c * p, k + n * p, out + n * c * p, c, p);
  return 0;
}

}  // extern "C"
