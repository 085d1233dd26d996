// Bilinear resize of [B, C, h, w] planes and its gradient, for MindSpore custom operators (ops.Custom,
// func_type="aot", CPU), with PyTorch's F.interpolate(mode="bilinear") rule (MindSpore's ops.interpolate follows it):
//
//   LsegResizeBilinear{AC,HP}:     x [B, C, h, w], mark_h [H], mark_w [W]   -> y [B, C, H, W]
//   LsegResizeBilinearGrad{AC,HP}: dy [B, C, H, W], mark_h [h], mark_w [w]  -> dx [B, C, h, w]
//
// AC: align_corners=True, source coordinate i * (in - 1) / (out - 1); HP: align_corners=False (half-pixel centres),
// (i + 0.5) * in / out - 0.5, clamped at 0. Both in float32, as PyTorch and MindSpore compute them. Only the lengths
// of the marker tensors are read (the output size, resp. the input size of the gradient).
//
// Each axis gets a table (first source index, second source index, weight of the second); the resize is separable,
// y = A_h x A_w^T: the forward interpolates every input row along the width (a gather through the column table,
// vectorised over the output width), then lerps the two rows each output row needs (contiguous, vectorised). The
// gradient is the transpose, dx = A_h^T dy A_w: first each output row's gradient is added, weighted, into its two
// input rows (contiguous), then every input column gathers its contributions from those rows (a padded list per input
// column, so the loop is a gather over the input width with no write conflicts). The planes are shared out in ranges
// between the threads of the library's pool (lseg_threads.h). Return codes: 0 ok, 11 wrong number
// of parameters, 12 not float32, 13 wrong rank, 14 shapes disagree, 15 an empty input for a non-empty output.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lseg_aot.h"
#include "lseg_threads.h"

namespace {

// The interpolation table of one axis: out[i] = in[lo[i]] + lam[i] * (in[hi[i]] - in[lo[i]]).
struct Axis {
  std::vector<int32_t> lo, hi;
  std::vector<float> lam;
};

// Not a target clone: compiled for the baseline instruction set (no FMA to contract into), so the source coordinate
// rounds twice, as (i + 0.5f) * scale - 0.5f does in PyTorch's and MindSpore's scalar code.
void BuildAxis(int64_t in, int64_t out, bool align_corners, Axis *axis) {
  axis->lo.resize(static_cast<size_t>(out));
  axis->hi.resize(static_cast<size_t>(out));
  axis->lam.resize(static_cast<size_t>(out));
  float scale;
  if (align_corners) {
    scale = out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.0f;
  } else {
    scale = static_cast<float>(in) / static_cast<float>(out);
  }
  for (int64_t i = 0; i < out; ++i) {
    float src;
    if (align_corners) {
      src = scale * static_cast<float>(i);
    } else {
      src = std::max((static_cast<float>(i) + 0.5f) * scale - 0.5f, 0.0f);
    }
    const int64_t lo = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    const int64_t hi = lo < in - 1 ? lo + 1 : lo;
    const float lam = hi == lo ? 0.0f : std::min(std::max(src - static_cast<float>(lo), 0.0f), 1.0f);
    axis->lo[i] = static_cast<int32_t>(lo);
    axis->hi[i] = static_cast<int32_t>(hi);
    axis->lam[i] = lam;
  }
}

// The transpose of an axis table as a gather: for every input index j, `depth` slots (source output index, weight),
// stored slot-major ([depth][in]); unused slots have weight 0 and index 0.
struct Gather {
  int64_t depth = 0;
  std::vector<int32_t> index;
  std::vector<float> weight;
};

void BuildGather(const Axis &axis, int64_t in, Gather *gather) {
  const int64_t out = static_cast<int64_t>(axis.lo.size());
  std::vector<int32_t> count(static_cast<size_t>(in), 0);
  for (int64_t i = 0; i < out; ++i) {
    ++count[axis.lo[i]];
    if (axis.hi[i] != axis.lo[i]) ++count[axis.hi[i]];
  }
  gather->depth = in > 0 ? *std::max_element(count.begin(), count.end()) : 0;
  gather->index.assign(static_cast<size_t>(gather->depth * in), 0);
  gather->weight.assign(static_cast<size_t>(gather->depth * in), 0.0f);
  std::fill(count.begin(), count.end(), 0);
  auto add = [&](int32_t j, int64_t i, float w) {
    const size_t slot = static_cast<size_t>(count[j]++ * in + j);
    gather->index[slot] = static_cast<int32_t>(i);
    gather->weight[slot] = w;
  };
  for (int64_t i = 0; i < out; ++i) {
    add(axis.lo[i], i, 1.0f - axis.lam[i]);
    if (axis.hi[i] != axis.lo[i]) add(axis.hi[i], i, axis.lam[i]);
  }
}

// rows [n, w] -> rows [n, out_w] along the width
__attribute__((target_clones("avx512f", "avx2", "default"))) void WidthPass(const float *x, float *out, int64_t n,
                                                                             int64_t w, int64_t out_w,
                                                                             const int32_t *lo, const int32_t *hi,
                                                                             const float *lam) {
  for (int64_t r = 0; r < n; ++r) {
    const float *row = x + r * w;
    float *dst = out + r * out_w;
#pragma omp simd
    for (int64_t i = 0; i < out_w; ++i) {
      const float a = row[lo[i]];
      dst[i] = a + lam[i] * (row[hi[i]] - a);
    }
  }
}

// rows [h, width] -> rows [out_h, width] along the height
__attribute__((target_clones("avx512f", "avx2", "default"))) void HeightPass(const float *x, float *out,
                                                                              int64_t out_h, int64_t width,
                                                                              const Axis &axis) {
  for (int64_t r = 0; r < out_h; ++r) {
    const float *a = x + axis.lo[r] * width;
    const float *b = x + axis.hi[r] * width;
    const float lam = axis.lam[r];
    float *dst = out + r * width;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) dst[i] = a[i] + lam * (b[i] - a[i]);
  }
}

// the transpose of HeightPass: dy rows [out_h, width] -> acc rows [h, width] (acc zeroed here)
__attribute__((target_clones("avx512f", "avx2", "default"))) void HeightAdjoint(const float *dy, float *acc, int64_t h,
                                                                                 int64_t out_h, int64_t width,
                                                                                 const Axis &axis) {
  std::memset(acc, 0, sizeof(float) * static_cast<size_t>(h * width));
  for (int64_t r = 0; r < out_h; ++r) {
    const float *g = dy + r * width;
    float *a = acc + axis.lo[r] * width;
    float *b = acc + axis.hi[r] * width;
    const float lam = axis.lam[r], keep = 1.0f - lam;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) a[i] += keep * g[i];
    if (b != a) {
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) b[i] += lam * g[i];
    }
  }
}

// the transpose of WidthPass: rows [n, out_w] -> rows [n, w]
__attribute__((target_clones("avx512f", "avx2", "default"))) void WidthAdjoint(const float *g, float *dx, int64_t n,
                                                                                int64_t w, int64_t out_w,
                                                                                const Gather &gather) {
  for (int64_t r = 0; r < n; ++r) {
    const float *row = g + r * out_w;
    float *dst = dx + r * w;
    std::memset(dst, 0, sizeof(float) * static_cast<size_t>(w));
    for (int64_t k = 0; k < gather.depth; ++k) {
      const int32_t *index = gather.index.data() + k * w;
      const float *weight = gather.weight.data() + k * w;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) dst[j] += weight[j] * row[index[j]];
    }
  }
}

// params: src [B, C, sh, sw], mark_h [dh], mark_w [dw], dst [B, C, dh, dw]; 0 or a return code
int CheckArgs(int nparam, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 4) return 11;
  if (!lseg::AllFloat32(4, dtypes)) return 12;
  if (ndims[0] != 4 || ndims[1] != 1 || ndims[2] != 1 || ndims[3] != 4) return 13;
  if (shapes[3][0] != shapes[0][0] || shapes[3][1] != shapes[0][1] || shapes[3][2] != shapes[1][0] ||
      shapes[3][3] != shapes[2][0]) {
    return 14;
  }
  return 0;
}

// planes per range handed to a thread: at least ~64K output values (one plane where planes are larger)
int64_t PlanesPerRange(int64_t plane_size) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(plane_size, 1)); }

int Resize(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool align_corners) {
  if (const int bad = CheckArgs(nparam, ndims, shapes, dtypes)) return bad;
  const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t out_h = shapes[3][2], out_w = shapes[3][3];
  if (planes * out_h * out_w == 0) return 0;
  if (h * w == 0) return 15;  // nothing to interpolate from
  Axis rows, cols;
  BuildAxis(h, out_h, align_corners, &rows);
  BuildAxis(w, out_w, align_corners, &cols);
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[3]);
  lseg::ParallelRanges(planes, PlanesPerRange(out_h * out_w), [&](int64_t begin, int64_t end) {
    static thread_local std::vector<float> wide;  // one plane interpolated along the width: [h, out_w]
    if (static_cast<int64_t>(wide.size()) < h * out_w) wide.resize(static_cast<size_t>(h * out_w));
    for (int64_t p = begin; p < end; ++p) {
      WidthPass(x + p * h * w, wide.data(), h, w, out_w, cols.lo.data(), cols.hi.data(), cols.lam.data());
      HeightPass(wide.data(), y + p * out_h * out_w, out_h, out_w, rows);
    }
  });
  return 0;
}

int ResizeGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool align_corners) {
  if (const int bad = CheckArgs(nparam, ndims, shapes, dtypes)) return bad;
  const int64_t planes = shapes[0][0] * shapes[0][1], out_h = shapes[0][2], out_w = shapes[0][3];
  const int64_t h = shapes[3][2], w = shapes[3][3];
  float *dx = static_cast<float *>(params[3]);
  if (planes * h * w == 0) return 0;
  if (out_h * out_w == 0) {
    std::memset(dx, 0, sizeof(float) * static_cast<size_t>(planes * h * w));
    return 0;
  }
  Axis rows, cols;
  BuildAxis(h, out_h, align_corners, &rows);
  BuildAxis(w, out_w, align_corners, &cols);
  Gather gather;
  BuildGather(cols, w, &gather);
  const float *dy = static_cast<const float *>(params[0]);
  lseg::ParallelRanges(planes, PlanesPerRange(out_h * out_w), [&](int64_t begin, int64_t end) {
    static thread_local std::vector<float> acc;  // one plane's gradient summed over the height: [h, out_w]
    if (static_cast<int64_t>(acc.size()) < h * out_w) acc.resize(static_cast<size_t>(h * out_w));
    for (int64_t p = begin; p < end; ++p) {
      HeightAdjoint(dy + p * out_h * out_w, acc.data(), h, out_h, out_w, rows);
      WidthAdjoint(acc.data(), dx + p * h * w, h, w, out_w, gather);
    }
  });
  return 0;
}

}  // namespace

extern "C" {

int LsegResizeBilinearAC(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  return Resize(nparam, params, ndims, shapes, dtypes, true);
}

int LsegResizeBilinearHP(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  return Resize(nparam, params, ndims, shapes, dtypes, false);
}

int LsegResizeBilinearGradAC(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                             void *) {
  return ResizeGrad(nparam, params, ndims, shapes, dtypes, true);
}

int LsegResizeBilinearGradHP(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                             void *) {
  return ResizeGrad(nparam, params, ndims, shapes, dtypes, false);
}

}  // extern "C"
