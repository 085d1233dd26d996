// Multi-head self-attention for inference, fused into one MindSpore custom operator (ops.Custom, func_type="aot",
// CPU):
//
//   LsegAttention: qkv [B, T, 3C] float32, heads [H] (only its length is read) -> out [B, T, C]
//     out[b, :, h*d:(h+1)*d] = softmax(q_h k_h^T / sqrt(d)) v_h,  d = C / H,
//     q_h = qkv[b, :, h*d:(h+1)*d], k_h = qkv[b, :, C + h*d:...], v_h = qkv[b, :, 2C + h*d:...]
//
// The heads are read in place from the qkv projection's output (a leading dimension of 3C) and written in place
// into the [T, C] layout the output projection takes, so the graph has no split, no head transposes and no
// [B, H, T, T] scores tensor.
//
// Two ways to compute it, the same arithmetic up to float32 summation order:
//
// - AVX-512 (d a multiple of 16, up to 256; every LSeg ViT and CLIP head has d = 64): the (batch, head) pairs are
//   shared out between the CPU's threads (std::thread, one per core the process may run on, the caller's thread
//   included). Each thread packs k_h transposed and v_h contiguously, then takes the queries in blocks of 48 rows:
//   the block's scores [48, T] (register tiles of 8 x 32), the softmax over each row (row maximum subtracted,
//   glibc's vector expf), and the product with v_h (register tiles of 6 x d) scaled by 1 / row sum. No call goes
//   to OpenBLAS: its own worker thread cannot share a core with another thread of ours (it keeps spinning after
//   each product), and its per-call set-up dominates products this small (T x T x 64).
// - elsewhere: per head, the two products through the OpenBLAS sgemm of lseg_gemm.cc and the same softmax, on the
//   caller's thread.
//
// The scale multiplies the scores (for d = 64 a power of two: the same values as scaling q first); the softmax's
// division by the row sum is applied to the [T, d] result rather than to the [T, T] weights.
// No backward here: training uses the differentiable path (mindcv_lseg/models/attention.py). Return codes as
// lseg_gemm.cc's, plus 16: 3C is not a multiple of 3 * H.

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "lseg_aot.h"
#include "lseg_sgemm.h"

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

// ---- the AVX-512 path ----

constexpr int64_t kScoreRows = 8;   // scores register tile: 8 rows x 32 columns (16 accumulators)
constexpr int64_t kScoreCols = 32;
constexpr int64_t kOutRows = 6;     // product register tile: 6 rows x up to 64 columns (24 accumulators)
constexpr int64_t kBlockRows = 48;  // query rows per block (a multiple of both tile heights)
constexpr int64_t kMaxHeadDim = 256;

// s[r, 0:32] = scale * a[r] . bt[:, 0:32] for R rows of a (row stride lda); bt [d, tp] (a matrix transposed)
template <int R>
__attribute__((target("avx512f"))) inline void ScoreTile(const float *a, int64_t lda, const float *bt, int64_t tp,
                                                         int64_t d, float scale, float *s, int64_t lds) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const __m512 b0 = _mm512_loadu_ps(bt + c * tp), b1 = _mm512_loadu_ps(bt + c * tp + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + c]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(s + r * lds, _mm512_mul_ps(acc[r][0], sv));
    _mm512_storeu_ps(s + r * lds + 16, _mm512_mul_ps(acc[r][1], sv));
  }
}

// out[r, 0:16W] = row_scale[r] * sum_{j < t} p(r, j) v[j, 0:16W] for R rows, p(r, j) = p[r * rs + j * js]
// (rs = row stride, js = 1: p itself; rs = 1, js = row stride: p transposed); v [t, vld] rows
template <int R, int W>
__attribute__((target("avx512f"))) inline void ProductTile(const float *p, int64_t rs, int64_t js, const float *v,
                                                           int64_t vld, int64_t t, const float *row_scale,
                                                           float *out, int64_t ld_out) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r) {
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < t; ++j) {
    __m512 vv[W];
    for (int w = 0; w < W; ++w) vv[w] = _mm512_loadu_ps(v + j * vld + 16 * w);
    const float *pj = p + j * js;
    for (int r = 0; r < R; ++r) {
      const __m512 pv = _mm512_set1_ps(pj[r * rs]);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(pv, vv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 k = _mm512_set1_ps(row_scale[r]);
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(out + r * ld_out + 16 * w, _mm512_mul_ps(acc[r][w], k));
  }
}

template <int R>
__attribute__((target("avx512f"))) void ScoreRows(const float *a, int64_t lda, const float *bt, int64_t tp,
                                                  int64_t d, float scale, float *s, int64_t lds) {
  for (int64_t j0 = 0; j0 < tp; j0 += kScoreCols) ScoreTile<R>(a, lda, bt + j0, tp, d, scale, s + j0, lds);
}

template <int R>
__attribute__((target("avx512f"))) void ProductRows(const float *p, int64_t rs, int64_t js, const float *v, int64_t d,
                                                    int64_t t, const float *row_scale, float *out, int64_t ld_out) {
  int64_t c0 = 0;
  for (; c0 + 64 <= d; c0 += 64) ProductTile<R, 4>(p, rs, js, v + c0, d, t, row_scale, out + c0, ld_out);
  for (; c0 < d; c0 += 16) ProductTile<R, 1>(p, rs, js, v + c0, d, t, row_scale, out + c0, ld_out);
}

using ScoreFn = void (*)(const float *, int64_t, const float *, int64_t, int64_t, float, float *, int64_t);
using ProductFn = void (*)(const float *, int64_t, int64_t, const float *, int64_t, int64_t, const float *, float *,
                           int64_t);
constexpr ScoreFn kScoreRowsFn[kScoreRows + 1] = {nullptr,      ScoreRows<1>, ScoreRows<2>, ScoreRows<3>,
                                                  ScoreRows<4>, ScoreRows<5>, ScoreRows<6>, ScoreRows<7>,
                                                  ScoreRows<8>};
constexpr ProductFn kProductRowsFn[kOutRows + 1] = {nullptr,        ProductRows<1>, ProductRows<2>, ProductRows<3>,
                                                    ProductRows<4>, ProductRows<5>, ProductRows<6>};

// s [rows, tp] = scale * a [rows, d] (row stride lda) @ bt [d, tp]
void Scores(const float *a, int64_t lda, int64_t rows, const float *bt, int64_t tp, int64_t d, float scale, float *s) {
  for (int64_t r = 0; r < rows; r += kScoreRows) {
    kScoreRowsFn[std::min(kScoreRows, rows - r)](a + r * lda, lda, bt, tp, d, scale, s + r * tp, tp);
  }
}

// out [rows, d] (row stride ld_out) = row_scale * p [rows, t] @ v [t, d]; p element (r, j) at p[r * rs + j * js]
void Products(const float *p, int64_t rs, int64_t js, int64_t rows, const float *v, int64_t d, int64_t t,
              const float *row_scale, float *out, int64_t ld_out) {
  for (int64_t r = 0; r < rows; r += kOutRows) {
    kProductRowsFn[std::min(kOutRows, rows - r)](p + r * rs, rs, js, v, d, t, row_scale + r, out + r * ld_out,
                                                 ld_out);
  }
}

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
  int64_t padded() const { return (t + kScoreCols - 1) / kScoreCols * kScoreCols; }
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

// out = softmax(scale q k^T) v, one block of query rows at a time
__attribute__((target("avx512f"))) void ForwardHead(const Head &h, const Problem &p, Scratch *w) {
  const int64_t t = p.t, d = p.d, tp = p.padded();
  float *kt = Scratch::Get(&w->kt, d * tp), *v = Scratch::Get(&w->v, t * d);
  float *s = Scratch::Get(&w->block, kBlockRows * tp), *inv = Scratch::Get(&w->row_scale, kBlockRows);
  PackTransposed(h.k, p.ld, t, d, tp, kt);
  PackRows(h.v, p.ld, t, d, v);
  for (int64_t i0 = 0; i0 < t; i0 += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, t - i0);
    Scores(h.q + i0 * p.ld, p.ld, rows, kt, tp, d, p.scale, s);
    ExpRows(s, tp, t, rows, inv);
    Products(s, tp, 1, rows, v, d, t, inv, h.out + i0 * p.ld_out, p.ld_out);
  }
}

// One head's gradient: dq, dk, dv [T, d] (rows p.ld apart) from q, k, v and dout [T, d] (rows p.ld_out apart)
struct HeadGrad {
  const float *q, *k, *v, *dout;
  float *dq, *dk, *dv;
};

// P = softmax(s q k^T); dV = P^T dO; dP = dO V^T; dS = P (dP - rowsum(P dP)); dQ = s dS K; dK = s dS^T Q
__attribute__((target("avx512f"))) void BackwardHead(const HeadGrad &g, const Problem &p, Scratch *w) {
  const int64_t t = p.t, d = p.d, tp = p.padded();
  float *kt = Scratch::Get(&w->kt, d * tp), *vt = Scratch::Get(&w->vt, d * tp);
  float *k = Scratch::Get(&w->k, t * d), *q = Scratch::Get(&w->q, t * d), *dout = Scratch::Get(&w->dout, t * d);
  float *probs = Scratch::Get(&w->probs, t * tp), *dp = Scratch::Get(&w->block, kBlockRows * tp);
  float *inv = Scratch::Get(&w->row_scale, t), *scale = Scratch::Get(&w->scale, t);
  PackTransposed(g.k, p.ld, t, d, tp, kt);
  PackTransposed(g.v, p.ld, t, d, tp, vt);
  PackRows(g.k, p.ld, t, d, k);
  PackRows(g.q, p.ld, t, d, q);
  PackRows(g.dout, p.ld_out, t, d, dout);
  std::fill(scale, scale + t, p.scale);
  Scores(q, d, t, kt, tp, d, p.scale, probs);
  SoftmaxRows(probs, tp, t, t, inv);  // P
  std::fill(inv, inv + t, 1.0f);
  Products(probs, 1, tp, t, dout, d, t, inv, g.dv, p.ld);  // dV = P^T dO
  for (int64_t i0 = 0; i0 < t; i0 += kBlockRows) {  // P becomes dS, a block of rows at a time
    const int64_t rows = std::min(kBlockRows, t - i0);
    Scores(dout + i0 * d, d, rows, vt, tp, d, 1.0f, dp);
    SoftmaxGradRows(probs + i0 * tp, tp, dp, tp, t, rows);
  }
  Products(probs, tp, 1, t, k, d, t, scale, g.dq, p.ld);  // dQ = s dS K
  Products(probs, 1, tp, t, q, d, t, scale, g.dk, p.ld);  // dK = s dS^T Q
}

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

int UsableThreads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

bool UseAvx512(int64_t d) { return d % 16 == 0 && d <= kMaxHeadDim && __builtin_cpu_supports("avx512f"); }

// run(task, scratch) for task in [0, tasks): on this thread (OpenBLAS path: its products are threaded already), or
// shared out between up to one thread per usable CPU, this one included
template <typename Fn>
void ForEachHead(int64_t tasks, bool threaded, Fn run) {
  const int64_t workers = threaded ? std::min<int64_t>(UsableThreads(), tasks) : 1;
  auto share = [&](int64_t worker) {
    static thread_local Scratch scratch;
    for (int64_t task = worker * tasks / workers; task < (worker + 1) * tasks / workers; ++task) run(task, &scratch);
  };
  std::vector<std::thread> threads;
  for (int64_t w = 1; w < workers; ++w) threads.emplace_back(share, w);
  share(0);
  for (auto &thread : threads) thread.join();
}

// The `tasks` (batch, head) problems of head size d: avx(task, scratch) shared out between the threads where the
// AVX-512 path applies, else blas(task, sgemm, scratch) on this thread. 0, or 10 when no sgemm was handed over.
template <typename Avx, typename Blas>
int RunHeads(int64_t tasks, int64_t d, Avx avx, Blas blas) {
  if (UseAvx512(d)) {
    ForEachHead(tasks, true, avx);
    return 0;
  }
  const lseg::SgemmFn sgemm = lseg::GetSgemm();
  if (sgemm == nullptr) return 10;
  ForEachHead(tasks, false, [&](int64_t task, Scratch *w) { blas(task, sgemm, w); });
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
  return RunHeads(
      p.tasks(), p.d, [&](int64_t task, Scratch *w) { ForwardHead(head(task), p, w); },
      [&](int64_t task, lseg::SgemmFn sgemm, Scratch *w) { ForwardHeadBlas(head(task), p, sgemm, w); });
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
  return RunHeads(
      p.tasks(), p.d, [&](int64_t task, Scratch *w) { BackwardHead(head(task), p, w); },
      [&](int64_t task, lseg::SgemmFn sgemm, Scratch *w) { BackwardHeadBlas(head(task), p, sgemm, w); });
}

}  // extern "C"
