// 3x3 "same" convolution (stride 1, zero padding 1, no dilation, groups 1) by Winograd's minimal filtering
// F(4x4, 3x3), for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
// Entry points (all tensors contiguous float32):
//   LsegConv3x3:        x [B, C, H, W], w [O, C, 3, 3] -> y [B, O, H, W], cross-correlation (what deep-learning
//                       convolutions compute);
//   LsegConv3x3Adjoint: dy [B, O, H, W], w [O, C, 3, 3] -> dx [B, C, H, W], its gradient in x (the same
//                       computation with each filter flipped in space and in/out channels swapped).
// For y:
//   U[xi] = (G g G^T)[xi]      per (o, c), the 6x6 transformed filter; xi = 0..35
//   V[xi] = (B^T d B)[xi]      per (c, tile), d the 6x6 input patch of a 4x4 output tile (zeros outside the image)
//   M[xi] = U[xi] . V[xi]      36 products [O, C] x [C, tiles], through the OpenBLAS sgemm of lseg_gemm.cc
//   y     = A^T m A            per (o, tile), m the 36 values M[.][o][tile]; cropped where H or W is not a
//                              multiple of 4
// with the interpolation points 0, 1, -1, 1/2, -2 and infinity (the usual 0, +-1, +-2 give 2-3x larger worst-case
// float32 errors, see docs/cpu_kernels.md):
//   B^T = [[1, -3/2, -2,  3/2,  1,  0],     G = [[    1,     0,     0],     A^T = [[1, 1,  1,   1,  1, 0],
//          [0,   -1, 1/2, 5/2,  1,  0],          [  1/3,   1/3,   1/3],            [0, 1, -1, 1/2, -2, 0],
//          [0,    1, -5/2, 1/2, 1,  0],          [ -1/3,   1/3,  -1/3],            [0, 1,  1, 1/4,  4, 0],
//          [0,   -2,  -1,   2,  1,  0],          [-16/15, -8/15, -4/15],           [0, 1, -1, 1/8, -8, 1]]
//          [0,  1/2,  -1, -1/2, 1,  0],          [ 1/15, -2/15,  4/15],
//          [0,    1, -3/2, -2, 3/2, 1]]          [    0,     0,     1]]
// That is 36*O*C*tiles multiply-adds for tiles of 4x4 outputs (2.25 per output pixel and channel pair) instead of
// 9 per pixel for the direct product (4x fewer). G's rows are applied as integers (G = diag(1, 1/3, 1/3, 1/15,
// 1/15, 1) G') and the scale is one multiplication per transformed filter value. The transforms run over contiguous
// arrays (each image row split into its four column phases first), so target_clones vectorises them (no FMA
// contraction: every variant rounds alike). Return codes as lseg_gemm.cc's, plus 16: the weight is
// not [O, C, 3, 3] with C matching x.
//
// Threading: the transforms are shared out in ranges between the threads of the library's pool (lseg_threads.h):
// the filter transform by filters, the input transform by input channels and the output transform by output
// channels (each thread with its own small scratch); the 36 products are OpenBLAS's, threaded by it.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lseg_aot.h"
#include "lseg_sgemm.h"
#include "lseg_threads.h"

// the widest vector variant the CPU has, picked when the library is loaded; without contraction into FMAs (which the
// avx512f variant would otherwise get) every variant rounds alike
#define LSEG_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))

namespace {

constexpr int kXi = 36;          // transformed values per tile (6x6)
constexpr int64_t kBlock = 64;   // filters per filter-transform block
constexpr int64_t kChannelGrain = 16384;  // pixels of channel planes per range of the input/output transforms

// Scratch buffers reused between calls (grown, never shrunk; one set per calling thread): fresh multi-megabyte
// allocations would cost a page fault per 4 KiB on every call. The transformed filters are one of them: 151 MB for
// ViT-L/16's 1024-channel reassemble convolution (its input gradient).
float *Scratch(std::vector<float> *buffer, int64_t size) {
  if (static_cast<int64_t>(buffer->size()) < size) buffer->resize(static_cast<size_t>(size));
  return buffer->data();
}

// the running thread's small scratch of the input and output transforms (one buffer serves both: they never overlap)
float *TransformScratch(int64_t size) {
  static thread_local std::vector<float> small;
  return Scratch(&small, size);
}

// The tile grid of an H x W plane: th x tw tiles of 4x4 outputs; each padded image row (one zero column left,
// zeros right) is kept as 4 column phases of tw + 1 values: phase q, entry j = padded column 4j + q.
struct Grid {
  int64_t h, w, th, tw, tiles, phase;
  Grid(int64_t height, int64_t width)
      : h(height), w(width), th((height + 3) / 4), tw((width + 3) / 4), tiles(th * tw), phase(tw + 1) {}
  int64_t PhaseRow() const { return 4 * phase; }  // floats per split padded row
  int64_t PaddedRows() const { return 4 * th + 2; }
};

// ---- filter transform ------------------------------------------------------------------------------------------

// U = G g G^T for n <= kBlock filters: taps[t * kBlock + i] is tap t (row-major 3x3) of filter i; writes
// u[xi * stride + i].
LSEG_CLONES void FilterBlock(const float *__restrict taps, int64_t n, float *__restrict u, int64_t stride) {
  float t[6][3][kBlock];  // G' g
  for (int c = 0; c < 3; ++c) {
    const float *g0 = taps + c * kBlock, *g1 = taps + (3 + c) * kBlock, *g2 = taps + (6 + c) * kBlock;
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float a = g0[i], b = g1[i], d = g2[i];
      t[0][c][i] = a;
      t[1][c][i] = a + b + d;
      t[2][c][i] = b - a - d;
      t[3][c][i] = -16.0f * a - 8.0f * b - 4.0f * d;
      t[4][c][i] = a - 2.0f * b + 4.0f * d;
      t[5][c][i] = d;
    }
  }
  // 1 / (s_k s_l) with s = (1, 3, 3, 15, 15, 1)
  constexpr float s[6] = {1.0f, 1.0f / 3, 1.0f / 3, 1.0f / 15, 1.0f / 15, 1.0f};
  constexpr float s2[6][6] = {
      {s[0] * s[0], s[0] * s[1], s[0] * s[2], s[0] * s[3], s[0] * s[4], s[0] * s[5]},
      {s[1] * s[0], 1.0f / 9, 1.0f / 9, 1.0f / 45, 1.0f / 45, s[1] * s[5]},
      {s[2] * s[0], 1.0f / 9, 1.0f / 9, 1.0f / 45, 1.0f / 45, s[2] * s[5]},
      {s[3] * s[0], 1.0f / 45, 1.0f / 45, 1.0f / 225, 1.0f / 225, s[3] * s[5]},
      {s[4] * s[0], 1.0f / 45, 1.0f / 45, 1.0f / 225, 1.0f / 225, s[4] * s[5]},
      {s[5] * s[0], s[5] * s[1], s[5] * s[2], s[5] * s[3], s[5] * s[4], s[5] * s[5]}};
  for (int k = 0; k < 6; ++k) {  // (G' g) G'^T, scaled
    const float *r0 = t[k][0], *r1 = t[k][1], *r2 = t[k][2];
    float *o = u + k * 6 * stride;
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float a = r0[i], b = r1[i], d = r2[i];
      o[i] = a * s2[k][0];
      o[stride + i] = (a + b + d) * s2[k][1];
      o[2 * stride + i] = (b - a - d) * s2[k][2];
      o[3 * stride + i] = (-16.0f * a - 8.0f * b - 4.0f * d) * s2[k][3];
      o[4 * stride + i] = (a - 2.0f * b + 4.0f * d) * s2[k][4];
      o[5 * stride + i] = d * s2[k][5];
    }
  }
}

// Transformed filters u [36, count] (u[xi * count + f]) of the filters f in [f0, f1) of g [count, 3, 3], each
// flipped in space when `flip` (the adjoint's filters).
void FilterTransform(const float *g, int64_t count, bool flip, int64_t f0, int64_t f1, float *u) {
  float taps[9 * kBlock];
  for (int64_t start = f0; start < f1; start += kBlock) {
    const int64_t n = f1 - start < kBlock ? f1 - start : kBlock;
    for (int64_t i = 0; i < n; ++i) {
      const float *src = g + (start + i) * 9;
      for (int t = 0; t < 9; ++t) taps[t * kBlock + i] = src[flip ? 8 - t : t];
    }
    FilterBlock(taps, n, u + start, count);
  }
}

// ---- input transform -------------------------------------------------------------------------------------------

// One image row [W] (or zeros) -> its padded row split into column phases: out[q * phase + j] = padded column
// 4j + q = image column 4j + q - 1.
LSEG_CLONES void SplitRow(const float *__restrict src, const Grid &grid, float *__restrict out) {
  const int64_t p = grid.phase, w = grid.w;
  float *__restrict q0 = out, *__restrict q1 = out + p, *__restrict q2 = out + 2 * p, *__restrict q3 = out + 3 * p;
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(4 * p));
  if (src == nullptr) return;
  const int64_t full = w >= 3 ? (w - 3) / 4 : 0;  // j = 1 .. full: image columns 4j - 1 .. 4j + 2 all inside
  const float *s = src + 3;
  #pragma omp simd
  for (int64_t k = 0; k < full; ++k) {
    q0[k + 1] = s[4 * k];
    q1[k + 1] = s[4 * k + 1];
    q2[k + 1] = s[4 * k + 2];
    q3[k + 1] = s[4 * k + 3];
  }
  for (int64_t x = 0; x < w && x < 3; ++x) out[(x + 1) * p] = src[x];  // j = 0: padded columns 1 .. 3
  for (int64_t x = 4 * full + 3; x < w; ++x) out[((x + 1) % 4) * p + (x + 1) / 4] = src[x];  // j > full
}

// B^T d down the columns: 6 split padded rows (d[r * len + i]) -> 6 rows t[k * len + i].
LSEG_CLONES void InputColumns(const float *__restrict d, int64_t len, float *__restrict t) {
  const float *d0 = d, *d1 = d + len, *d2 = d + 2 * len, *d3 = d + 3 * len, *d4 = d + 4 * len, *d5 = d + 5 * len;
  #pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const float a0 = d0[i], a1 = d1[i], a2 = d2[i], a3 = d3[i], a4 = d4[i], a5 = d5[i];
    t[i] = (a0 - 2.0f * a2 + a4) + 1.5f * (a3 - a1);
    t[len + i] = (a4 - a1) + (0.5f * a2 + 2.5f * a3);
    t[2 * len + i] = (a4 + a1) - (2.5f * a2 - 0.5f * a3);
    t[3 * len + i] = (a4 - a2) + 2.0f * (a3 - a1);
    t[4 * len + i] = (a4 - a2) - 0.5f * (a3 - a1);
    t[5 * len + i] = (a1 - 2.0f * a3 + a5) + 1.5f * (a4 - a2);
  }
}

// (B^T d) B along the rows: row k of t (4 phases of `phase` values) -> v[(k * 6 + l) * tiles + tj], tj < tw.
LSEG_CLONES void InputRows(const float *__restrict t, int64_t phase, int64_t tw, float *__restrict v, int64_t tiles) {
  for (int k = 0; k < 6; ++k) {
    const float *p0 = t + k * 4 * phase, *p1 = p0 + phase, *p2 = p1 + phase, *p3 = p2 + phase;
    float *o = v + k * 6 * tiles;
    #pragma omp simd
    for (int64_t j = 0; j < tw; ++j) {
      const float a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j], a4 = p0[j + 1], a5 = p1[j + 1];
      o[j] = (a0 - 2.0f * a2 + a4) + 1.5f * (a3 - a1);
      o[tiles + j] = (a4 - a1) + (0.5f * a2 + 2.5f * a3);
      o[2 * tiles + j] = (a4 + a1) - (2.5f * a2 - 0.5f * a3);
      o[3 * tiles + j] = (a4 - a2) + 2.0f * (a3 - a1);
      o[4 * tiles + j] = (a4 - a2) - 0.5f * (a3 - a1);
      o[5 * tiles + j] = (a1 - 2.0f * a3 + a5) + 1.5f * (a4 - a2);
    }
  }
}

// Floats of scratch InputTransform needs (per caller): the split padded plane and 6 transformed rows.
int64_t InputScratch(const Grid &grid) { return (grid.PaddedRows() + 6) * grid.PhaseRow(); }

// Channels [c0, c1) of x [C, H, W] -> v [C, 36, tiles] (v[(c * 36 + xi) * tiles + tile], tiles row-major).
void InputTransform(const float *x, const Grid &grid, int64_t c0, int64_t c1, float *v, float *scratch) {
  const int64_t len = grid.PhaseRow();
  float *split = scratch, *t = scratch + grid.PaddedRows() * len;
  for (int64_t c = c0; c < c1; ++c) {
    const float *plane = x + c * grid.h * grid.w;
    for (int64_t r = 0; r < grid.PaddedRows(); ++r) {
      const int64_t y = r - 1;
      SplitRow(y >= 0 && y < grid.h ? plane + y * grid.w : nullptr, grid, split + r * len);
    }
    float *vc = v + c * kXi * grid.tiles;
    for (int64_t ti = 0; ti < grid.th; ++ti) {
      InputColumns(split + 4 * ti * len, len, t);
      InputRows(t, grid.phase, grid.tw, vc + ti * grid.tw, grid.tiles);
    }
  }
}

// ---- output transform ------------------------------------------------------------------------------------------

// A^T m A of one row of tiles: m[xi * tiles + tj] (tj < tw) -> 4 output rows out[k * 4 * tw + 4 tj + q]. `s` is
// scratch for 24 rows of tw floats.
LSEG_CLONES void OutputTiles(const float *__restrict m, int64_t tiles, int64_t tw, float *__restrict s,
                             float *__restrict out) {
  for (int b = 0; b < 6; ++b) {  // A^T m down the columns: s[(k * 6 + b) * tw + tj]
    const float *m0 = m + b * tiles, *m1 = m0 + 6 * tiles, *m2 = m1 + 6 * tiles, *m3 = m2 + 6 * tiles;
    const float *m4 = m3 + 6 * tiles, *m5 = m4 + 6 * tiles;
    float *s0 = s + b * tw, *s1 = s0 + 6 * tw, *s2 = s1 + 6 * tw, *s3 = s2 + 6 * tw;
    #pragma omp simd
    for (int64_t j = 0; j < tw; ++j) {
      const float a1 = m1[j], a2 = m2[j], a3 = m3[j], a4 = m4[j];
      const float sum = a1 + a2, diff = a1 - a2;
      s0[j] = (m0[j] + sum) + (a3 + a4);
      s1[j] = diff + (0.5f * a3 - 2.0f * a4);
      s2[j] = sum + (0.25f * a3 + 4.0f * a4);
      s3[j] = (diff + m5[j]) + (0.125f * a3 - 8.0f * a4);
    }
  }
  for (int k = 0; k < 4; ++k) {  // (A^T m) A along the rows, interleaved into the output row
    const float *r0 = s + k * 6 * tw, *r1 = r0 + tw, *r2 = r1 + tw, *r3 = r2 + tw, *r4 = r3 + tw, *r5 = r4 + tw;
    float *o = out + k * 4 * tw;
    #pragma omp simd
    for (int64_t j = 0; j < tw; ++j) {
      const float a1 = r1[j], a2 = r2[j], a3 = r3[j], a4 = r4[j];
      const float sum = a1 + a2, diff = a1 - a2;
      o[4 * j] = (r0[j] + sum) + (a3 + a4);
      o[4 * j + 1] = diff + (0.5f * a3 - 2.0f * a4);
      o[4 * j + 2] = sum + (0.25f * a3 + 4.0f * a4);
      o[4 * j + 3] = (diff + r5[j]) + (0.125f * a3 - 8.0f * a4);
    }
  }
}

// Floats of scratch OutputTransform needs (per caller).
int64_t OutputScratch(const Grid &grid) { return 24 * grid.tw + 16 * grid.tw; }

// Channels [c0, c1) of m [O, 36, tiles] -> y [O, H, W].
void OutputTransform(const float *m, const Grid &grid, int64_t c0, int64_t c1, float *y, float *scratch) {
  float *s = scratch, *rows = scratch + 24 * grid.tw;
  const int64_t width = 4 * grid.tw;
  for (int64_t c = c0; c < c1; ++c) {
    const float *mc = m + c * kXi * grid.tiles;
    float *plane = y + c * grid.h * grid.w;
    for (int64_t ti = 0; ti < grid.th; ++ti) {
      OutputTiles(mc + ti * grid.tw, grid.tiles, grid.tw, s, rows);
      for (int64_t k = 0; k < 4 && 4 * ti + k < grid.h; ++k) {
        std::memcpy(plane + (4 * ti + k) * grid.w, rows + k * width, sizeof(float) * static_cast<size_t>(grid.w));
      }
    }
  }
}

// ---- the convolution -------------------------------------------------------------------------------------------

// y = conv3x3_same(x, w) (adjoint false: x [B, C, H, W], w [O, C, 3, 3], y [B, O, H, W]) or its adjoint in x,
// the input gradient dx = conv3x3_same(dy, w flipped in space, in/out swapped) (adjoint true: x is dy
// [B, O, H, W], y is dx [B, C, H, W]).
int Conv3x3(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool adjoint) {
  const lseg::SgemmFn sgemm = lseg::GetSgemm();
  if (sgemm == nullptr) return 10;
  if (nparam != 3) return 11;
  for (int i = 0; i < 3; ++i) {
    if (!lseg::AllFloat32(1, dtypes + i)) return 12;
    if (ndims[i] != 4) return 13;
  }
  const int64_t wo = shapes[1][0], wc = shapes[1][1];
  const int64_t cin = adjoint ? wo : wc, cout = adjoint ? wc : wo;  // channels of x and of y
  const int64_t b = shapes[0][0], h = shapes[0][2], w = shapes[0][3];
  if (shapes[0][1] != cin || shapes[1][2] != 3 || shapes[1][3] != 3) return 16;
  if (shapes[2][0] != b || shapes[2][1] != cout || shapes[2][2] != h || shapes[2][3] != w) return 14;
  const float *x = static_cast<const float *>(params[0]);
  const float *g = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  if (b * cout * h * w == 0) return 0;
  if (cin == 0) {
    std::memset(y, 0, sizeof(float) * static_cast<size_t>(b * cout * h * w));
    return 0;
  }
  const Grid grid(h, w);
  const int64_t tiles = grid.tiles, filters = wo * wc;
  static thread_local std::vector<float> u_buffer, v_buffer, m_buffer;
  // u [36, wo, wc] in the weight's own (o, c) order for both directions: the adjoint's product reads it transposed
  float *u = Scratch(&u_buffer, kXi * filters);
  lseg::ParallelRanges(filters, 4 * kBlock, [&](int64_t f0, int64_t f1) { FilterTransform(g, filters, adjoint, f0, f1, u); });
  // transformed input [cin, 36, tiles] and products [cout, 36, tiles]: each channel's 36 rows lie together (the
  // transforms stream through them); the xi-th product reads/writes every 36th row (leading dimension 36 * tiles)
  float *v = Scratch(&v_buffer, kXi * cin * tiles);
  float *m = Scratch(&m_buffer, kXi * cout * tiles);
  const int64_t in_scratch = InputScratch(grid), out_scratch = OutputScratch(grid);
  const int64_t grain = std::max<int64_t>(1, kChannelGrain / std::max<int64_t>(h * w, 1));  // channels per range
  for (int64_t n = 0; n < b; ++n) {
    lseg::ParallelRanges(cin, grain, [&](int64_t c0, int64_t c1) {
      InputTransform(x + n * cin * h * w, grid, c0, c1, v, TransformScratch(in_scratch));
    });
    for (int xi = 0; xi < kXi; ++xi) {
      const float *uxi = u + xi * filters;
      if (adjoint) {  // [cout, cin] = (u[xi] as [cin = wo, cout = wc])^T
        sgemm(lseg::kRowMajor, lseg::kTrans, lseg::kNoTrans, cout, tiles, cin, 1.0f, uxi, cout, v + xi * tiles,
              kXi * tiles, 0.0f, m + xi * tiles, kXi * tiles);
      } else {
        sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kNoTrans, cout, tiles, cin, 1.0f, uxi, cin, v + xi * tiles,
              kXi * tiles, 0.0f, m + xi * tiles, kXi * tiles);
      }
    }
    lseg::ParallelRanges(cout, grain, [&](int64_t c0, int64_t c1) {
      OutputTransform(m, grid, c0, c1, y + n * cout * h * w, TransformScratch(out_scratch));
    });
  }
  return 0;
}

}  // namespace

extern "C" {

int LsegConv3x3(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  return Conv3x3(nparam, params, ndims, shapes, dtypes, false);
}

int LsegConv3x3Adjoint(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                       void *) {
  return Conv3x3(nparam, params, ndims, shapes, dtypes, true);
}

}  // extern "C"
