// Multi-head self-attention and its gradient, each fused into one MindSpore custom operator (ops.Custom,
// func_type="aot", CPU):
//
//   LsegAttention: qkv [B, T, 3C] float32, heads [H] (only its length is read) -> out [B, T, C]
//     out[b, :, h*d:(h+1)*d] = softmax(q_h k_h^T / sqrt(d)) v_h,  d = C / H,
//     q_h = qkv[b, :, h*d:(h+1)*d], k_h = qkv[b, :, C + h*d:...], v_h = qkv[b, :, 2C + h*d:...]
//   LsegAttentionGrad: qkv, heads, dout [B, T, C] -> dqkv [B, T, 3C] (the attention recomputed per head)
//
// The heads are read in place from the qkv projection's output (a leading dimension of 3C) and written in place
// into the [T, C] layout the output projection takes, so the graph has no split, no head transposes and no
// [B, H, T, T] scores tensor.
//
// Two ways to compute it, the same arithmetic up to float32 summation order:
//
// - register-tiled (d a multiple of 16, up to 256; every LSeg ViT and CLIP head has d = 64), with AVX-512 or with
//   AVX2 + FMA, whichever the CPU has (the loops are written once, lseg_attention_tiles.h): the (batch, head)
//   pairs are taken by the threads of the kernels' pool (lseg_threads.h), the caller's thread included. Each
//   thread packs k_h transposed and v_h contiguously, then takes the queries in blocks of 48 rows: the block's
//   scores [48, T] (register tiles of 8 x 32 / 6 x 16), the softmax over each row (row maximum subtracted, glibc's
//   vector expf), and the product with v_h (register tiles of 6 x 64 / 6 x 16) scaled by 1 / row sum. No call goes
//   to OpenBLAS: its per-call set-up dominates products this small (T x T x 64).
// - elsewhere: per head, the two products through the OpenBLAS sgemm of lseg_gemm.cc and the same softmax, on the
//   caller's thread.
//
// The scale multiplies the scores (for d = 64 a power of two: the same values as scaling q first); the softmax's
// division by the row sum is applied to the [T, d] result rather than to the [T, T] weights.
// Return codes as lseg_gemm.cc's, plus 16: 3C is not a multiple of 3 * H.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "lseg_aot.h"
#include "lseg_sgemm.h"
#include "lseg_threads.h"

extern "C" __attribute__((__simd__("notinbranch"))) float expf(float) noexcept;

namespace {

// exp(s - row max) in place for the first `cols` entries of `rows` rows of s (row stride `stride`);
// inv_sum[r] = 1 / sum of row r
__attribute__((target_clones("avx512f", "avx2", "default"))) void ExpRows(float *s, int64_t stride, int64_t cols,
                                                                           int64_t rows, float *inv_sum) {
  for (int64_t r = 0; r < rows; ++r) {
    float *row = s + r * stride;
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

// softmax in place over the first `cols` entries of `rows` rows of s (row stride `stride`); inv_sum as ExpRows
__attribute__((target_clones("avx512f", "avx2", "default"))) void SoftmaxRows(float *s, int64_t stride, int64_t cols,
                                                                               int64_t rows, float *inv_sum) {
  ExpRows(s, stride, cols, rows, inv_sum);
  for (int64_t r = 0; r < rows; ++r) {
    float *row = s + r * stride;
    const float k = inv_sum[r];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) row[j] *= k;
  }
}

// the softmax gradient in place: p[r, j] <- p[r, j] (dp[r, j] - sum_j p[r, j] dp[r, j]) for `rows` rows of `cols`
__attribute__((target_clones("avx512f", "avx2", "default"))) void SoftmaxGradRows(float *p, int64_t stride,
                                                                                   const float *dp, int64_t dp_stride,
                                                                                   int64_t cols, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    float *pr = p + r * stride;
    const float *dpr = dp + r * dp_stride;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < cols; ++j) dot += pr[j] * dpr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) pr[j] *= dpr[j] - dot;
  }
}

// ---- the register-tiled path ----

constexpr int64_t kBlockRows = 48;  // query rows per block (a multiple of every tile height below)
constexpr int64_t kPadCols = 32;    // key rows padded to a multiple of every score tile width below
constexpr int64_t kMaxHeadDim = 256;

// dst [d, tp] = src [t, d]^T (rows `ld` apart), zero beyond column t
void PackTransposed(const float *src, int64_t ld, int64_t t, int64_t d, int64_t tp, float *dst) {
  for (int64_t c = 0; c < d; ++c) std::memset(dst + c * tp + t, 0, sizeof(float) * static_cast<size_t>(tp - t));
  for (int64_t j = 0; j < t; ++j) {
    for (int64_t c = 0; c < d; ++c) dst[c * tp + j] = src[j * ld + c];
  }
}

// dst [t, d] contiguous = src [t, d] (rows `ld` apart)
void PackRows(const float *src, int64_t ld, int64_t t, int64_t d, float *dst) {
  for (int64_t j = 0; j < t; ++j) std::memcpy(dst + j * d, src + j * ld, sizeof(float) * static_cast<size_t>(d));
}

// A thread's working memory, kept between calls made on that thread
struct Scratch {
  std::vector<float> kt, vt, k, q, v, dout, probs, block, row_scale, scale;
  static float *Get(std::vector<float> *buffer, int64_t size) {
    if (static_cast<int64_t>(buffer->size()) < size) buffer->resize(static_cast<size_t>(size));
    return buffer->data();
  }
};

// The sizes of one call: T tokens, head size d, rows of qkv `ld` = 3C apart, rows of out / dout `ld_out` = C apart.
struct Problem {
  int64_t t, d, ld, ld_out;
  float scale;
  int64_t batch, heads;  // the (batch, head) problems of the call, task = batch entry * heads + head
  int64_t padded() const { return (t + kPadCols - 1) / kPadCols * kPadCols; }
  int64_t tasks() const { return batch * heads; }
  // where a task's head starts in qkv / dqkv (rows ld apart) and in out / dout (rows ld_out apart)
  int64_t qkv_offset(int64_t task) const { return task / heads * t * ld + task % heads * d; }
  int64_t out_offset(int64_t task) const { return task / heads * t * ld_out + task % heads * d; }
};

// One head: q, k, v [T, d] (rows p.ld apart), out [T, d] (rows p.ld_out apart)
struct Head {
  const float *q, *k, *v;
  float *out;
};

// One head's gradient: dq, dk, dv [T, d] (rows p.ld apart) from q, k, v and dout [T, d] (rows p.ld_out apart)
struct HeadGrad {
  const float *q, *k, *v, *dout;
  float *dq, *dk, *dv;
};

using ScoreFn = void (*)(const float *, int64_t, const float *, int64_t, int64_t, float, float *, int64_t);
using ProductFn = void (*)(const float *, int64_t, int64_t, const float *, int64_t, int64_t, const float *, float *,
                           int64_t);

// The tiled loops once per instruction set (lseg_attention_tiles.h), each in a namespace compiled for it.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using V = __m512;
constexpr int kLanes = 16;
constexpr int kScoreRows = 8, kScoreVecs = 2;  // 8 x 32 scores: 16 accumulators of 32 registers
constexpr int kOutRows = 6, kOutVecs = 4;      // 6 x 64 products: 24 accumulators
inline V Zero() { return _mm512_setzero_ps(); }
inline V Load(const float *p) { return _mm512_loadu_ps(p); }
inline void Store(float *p, V v) { _mm512_storeu_ps(p, v); }
inline V Set1(float x) { return _mm512_set1_ps(x); }
inline V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
#include "lseg_attention_tiles.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using V = __m256;
constexpr int kLanes = 8;
constexpr int kScoreRows = 6, kScoreVecs = 2;  // 6 x 16 scores: 12 accumulators of 16 registers
constexpr int kOutRows = 6, kOutVecs = 2;      // 6 x 16 products: 12 accumulators
inline V Zero() { return _mm256_setzero_ps(); }
inline V Load(const float *p) { return _mm256_loadu_ps(p); }
inline void Store(float *p, V v) { _mm256_storeu_ps(p, v); }
inline V Set1(float x) { return _mm256_set1_ps(x); }
inline V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
#include "lseg_attention_tiles.h"
}  // namespace avx2
#pragma GCC pop_options

// ---- the OpenBLAS path (no AVX-512, or d not a multiple of 16) ----

void ForwardHeadBlas(const Head &h, const Problem &p, lseg::SgemmFn sgemm, Scratch *w) {
  const int64_t t = p.t, d = p.d;
  float *s = Scratch::Get(&w->probs, t * t), *inv = Scratch::Get(&w->row_scale, t);
  sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kTrans, t, t, d, p.scale, h.q, p.ld, h.k, p.ld, 0.0f, s, t);
  ExpRows(s, t, t, t, inv);
  sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kNoTrans, t, d, t, 1.0f, s, t, h.v, p.ld, 0.0f, h.out, p.ld_out);
  for (int64_t r = 0; r < t; ++r) {
    float *row = h.out + r * p.ld_out;
    const float k = inv[r];
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) row[i] *= k;
  }
}

void BackwardHeadBlas(const HeadGrad &g, const Problem &p, lseg::SgemmFn sgemm, Scratch *w) {
  const int64_t t = p.t, d = p.d;
  float *probs = Scratch::Get(&w->probs, t * t), *dp = Scratch::Get(&w->block, t * t);
  float *inv = Scratch::Get(&w->row_scale, t);
  sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kTrans, t, t, d, p.scale, g.q, p.ld, g.k, p.ld, 0.0f, probs, t);
  SoftmaxRows(probs, t, t, t, inv);
  sgemm(lseg::kRowMajor, lseg::kTrans, lseg::kNoTrans, t, d, t, 1.0f, probs, t, g.dout, p.ld_out, 0.0f, g.dv, p.ld);
  sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kTrans, t, t, d, 1.0f, g.dout, p.ld_out, g.v, p.ld, 0.0f, dp, t);
  SoftmaxGradRows(probs, t, dp, t, t, t);
  sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kNoTrans, t, d, t, p.scale, probs, t, g.k, p.ld, 0.0f, g.dq, p.ld);
  sgemm(lseg::kRowMajor, lseg::kTrans, lseg::kNoTrans, t, d, t, p.scale, probs, t, g.q, p.ld, 0.0f, g.dk, p.ld);
}

// Which tiled loops compute heads of size d on this CPU: AVX-512 or AVX2 + FMA, or none (then OpenBLAS per head)
enum class Tiles { kNone, kAvx2, kAvx512 };

Tiles TilesFor(int64_t d) {
  if (d % 16 != 0 || d > kMaxHeadDim) return Tiles::kNone;
  if (__builtin_cpu_supports("avx512f")) return Tiles::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Tiles::kAvx2;
  return Tiles::kNone;
}

// run(task, scratch) for task in [0, tasks): on this thread (OpenBLAS path: its products are threaded already), or
// taken by the threads of the kernels' pool (lseg_threads.h), this one included; scratch is the running thread's
template <typename Fn>
void ForEachHead(int64_t tasks, bool threaded, Fn run) {
  const std::function<void(int64_t)> one = [&](int64_t task) {
    static thread_local Scratch scratch;
    run(task, &scratch);
  };
  if (threaded) {
    lseg::ParallelFor(tasks, one);
  } else {
    for (int64_t task = 0; task < tasks; ++task) one(task);
  }
}

// Every (batch, head) problem of p: tiled(head(task), p, scratch) shared out between the threads, with `tiled` the
// loops for this CPU (avx512_fn or avx2_fn), where they apply; else blas(head(task), p, sgemm, scratch) on this
// thread. 0, or 10 when no sgemm was handed over.
template <typename HeadOf, typename Arg>
int RunHeads(const Problem &p, HeadOf head, void (*avx512_fn)(const Arg &, const Problem &, Scratch *),
             void (*avx2_fn)(const Arg &, const Problem &, Scratch *),
             void (*blas)(const Arg &, const Problem &, lseg::SgemmFn, Scratch *)) {
  const Tiles tiles = TilesFor(p.d);
  if (tiles != Tiles::kNone) {
    const auto tiled = tiles == Tiles::kAvx512 ? avx512_fn : avx2_fn;
    ForEachHead(p.tasks(), true, [&](int64_t task, Scratch *w) { tiled(head(task), p, w); });
    return 0;
  }
  const lseg::SgemmFn sgemm = lseg::GetSgemm();
  if (sgemm == nullptr) return 10;
  ForEachHead(p.tasks(), false, [&](int64_t task, Scratch *w) { blas(head(task), p, sgemm, w); });
  return 0;
}

// Checks the qkv [B, T, 3C] and heads [H] operands; sets the sizes. 0 or a return code.
int ReadShapes(int *ndims, int64_t **shapes, const char **dtypes, int nparam, Problem *p) {
  if (!lseg::AllFloat32(nparam, dtypes)) return 12;
  if (ndims[0] != 3 || ndims[1] != 1) return 13;
  const int64_t b = shapes[0][0], t = shapes[0][1], c3 = shapes[0][2], heads = shapes[1][0];
  if (heads <= 0 || c3 % (3 * heads) != 0) return 16;
  const int64_t c = c3 / 3, d = c / heads;
  *p = Problem{t, d, c3, c, 1.0f / std::sqrt(static_cast<float>(d)), b, heads};
  return 0;
}

bool SameShape(int ndim, const int64_t *shape, int64_t b, int64_t t, int64_t c) {
  return ndim == 3 && shape[0] == b && shape[1] == t && shape[2] == c;
}

}  // namespace

extern "C" {

int LsegAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3) return 11;
  Problem p;
  if (int code = ReadShapes(ndims, shapes, dtypes, nparam, &p)) return code;
  const int64_t c = p.ld_out;
  if (!SameShape(ndims[2], shapes[2], p.batch, p.t, c)) return 14;
  const float *qkv = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[2]);
  if (p.batch * p.t * c == 0) return 0;
  auto head = [&](int64_t task) {
    const float *base = qkv + p.qkv_offset(task);
    return Head{base, base + c, base + 2 * c, out + p.out_offset(task)};
  };
  return RunHeads(p, head, avx512::ForwardHead, avx2::ForwardHead, ForwardHeadBlas);
}

int LsegAttentionGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 4) return 11;
  Problem p;
  if (int code = ReadShapes(ndims, shapes, dtypes, nparam, &p)) return code;
  const int64_t c = p.ld_out;
  if (!SameShape(ndims[2], shapes[2], p.batch, p.t, c) || !SameShape(ndims[3], shapes[3], p.batch, p.t, p.ld)) {
    return 14;
  }
  const float *qkv = static_cast<const float *>(params[0]);
  const float *dout = static_cast<const float *>(params[2]);
  float *dqkv = static_cast<float *>(params[3]);
  if (p.batch * p.t * c == 0) return 0;
  auto head = [&](int64_t task) {
    const float *base = qkv + p.qkv_offset(task);
    float *grad = dqkv + p.qkv_offset(task);
    return HeadGrad{base, base + c, base + 2 * c, dout + p.out_offset(task), grad, grad + c, grad + 2 * c};
  };
  return RunHeads(p, head, avx512::BackwardHead, avx2::BackwardHead, BackwardHeadBlas);
}

}  // extern "C"
