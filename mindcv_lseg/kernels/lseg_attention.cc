// Multi-head self-attention for inference, fused into one MindSpore custom operator (ops.Custom, func_type="aot",
// CPU):
//
//   LsegAttention: qkv [B, T, 3C] float32, heads [H] (only its length is read) -> out [B, T, C]
//     out[b, :, h*d:(h+1)*d] = softmax(q_h k_h^T / sqrt(d)) v_h,  d = C / H,
//     q_h = qkv[b, :, h*d:(h+1)*d], k_h = qkv[b, :, C + h*d:...], v_h = qkv[b, :, 2C + h*d:...]
//
// The heads are read in place from the qkv projection's output (a leading dimension of 3C) and written in place
// into the [T, C] layout the output projection takes, so the graph has no split, no head transposes and no
// [B, H, T, T] scores tensor: one [T, T] scratch matrix per call. The two products go through the OpenBLAS sgemm of
// lseg_gemm.cc (the scale as its alpha: for d = 64 a power of two, the same values as scaling q first); the softmax
// subtracts the row maximum and is vectorised with glibc's vector expf, and its division by the row sum is applied to
// the [T, d] result rather than to the [T, T] weights (one pass less over them). Splitting the softmax over a
// second thread was slower: OpenBLAS's worker keeps spinning on the other core after each product.
// No backward: training uses the differentiable path (mindcv_lseg/models/attention.py). Return codes as
// lseg_gemm.cc's, plus 16: 3C is not a multiple of 3 * H.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lseg_sgemm.h"

extern "C" __attribute__((__simd__("notinbranch"))) float expf(float) noexcept;

namespace {

// exp(s - row max) in place for rows [begin, end) of s [rows, cols]; inv_sum[r] = 1 / sum of row r
__attribute__((target_clones("avx512f", "avx2", "default"))) void ExpRows(float *s, int64_t cols, int64_t begin,
                                                                           int64_t end, float *inv_sum) {
  for (int64_t r = begin; r < end; ++r) {
    float *row = s + r * cols;
    float peak = row[0];
#pragma omp simd reduction(max : peak)
    for (int64_t i = 0; i < cols; ++i) peak = row[i] > peak ? row[i] : peak;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < cols; ++i) {
      row[i] = expf(row[i] - peak);
      total += row[i];
    }
    inv_sum[r] = 1.0f / total;
  }
}

}  // namespace

extern "C" {

int LsegAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  const lseg::SgemmFn sgemm = lseg::GetSgemm();
  if (sgemm == nullptr) return 10;
  if (nparam != 3) return 11;
  for (int i = 0; i < 3; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return 12;
  }
  if (ndims[0] != 3 || ndims[1] != 1 || ndims[2] != 3) return 13;
  const int64_t b = shapes[0][0], t = shapes[0][1], c3 = shapes[0][2], heads = shapes[1][0];
  if (heads <= 0 || c3 % (3 * heads) != 0) return 16;
  const int64_t c = c3 / 3, d = c / heads;
  if (shapes[2][0] != b || shapes[2][1] != t || shapes[2][2] != c) return 14;
  const float *qkv = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[2]);
  if (b * t * c == 0) return 0;
  static thread_local std::vector<float> scores, inv_sum;
  if (static_cast<int64_t>(scores.size()) < t * t) scores.resize(static_cast<size_t>(t * t));
  if (static_cast<int64_t>(inv_sum.size()) < t) inv_sum.resize(static_cast<size_t>(t));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int64_t n = 0; n < b; ++n) {
    const float *base = qkv + n * t * c3;
    for (int64_t h = 0; h < heads; ++h) {
      const float *q = base + h * d, *k = base + c + h * d, *v = base + 2 * c + h * d;
      sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kTrans, t, t, d, scale, q, c3, k, c3, 0.0f, scores.data(), t);
      ExpRows(scores.data(), t, 0, t, inv_sum.data());
      float *o = out + n * t * c + h * d;
      sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kNoTrans, t, d, t, 1.0f, scores.data(), t, v, c3, 0.0f, o, c);
      for (int64_t r = 0; r < t; ++r) {  // the softmax's division, on the [T, d] result instead of the [T, T] weights
        float *row = o + r * c;
        const float inv = inv_sum[r];
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) row[i] *= inv;
      }
    }
  }
  return 0;
}

}  // extern "C"
