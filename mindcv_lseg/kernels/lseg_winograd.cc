// 3x3 "same" convolution (stride 1, zero padding 1, no dilation, groups 1) by Winograd's minimal filtering
// F(2x2, 3x3), for MindSpore custom operators (ops.Custom, func_type="aot", CPU).
//
// Entry points (all tensors contiguous float32):
//   LsegConv3x3:        x [B, C, H, W], w [O, C, 3, 3] -> y [B, O, H, W], cross-correlation (what deep-learning
//                       convolutions compute);
//   LsegConv3x3Adjoint: dy [B, O, H, W], w [O, C, 3, 3] -> dx [B, C, H, W], its gradient in x (the same
//                       computation with each filter flipped in space and in/out channels swapped).
// For y:
//   U[xi] = (G g G^T)[xi]      per (o, c), the 4x4 transformed filter; xi = 0..15
//   V[xi] = (B^T d B)[xi]      per (c, tile), d the 4x4 input patch of a 2x2 output tile (zeros outside the image)
//   M[xi] = U[xi] . V[xi]      16 products [O, C] x [C, tiles], through the OpenBLAS sgemm of lseg_gemm.cc
//   y     = A^T m A            per (o, tile), m the 16 values M[.][o][tile]; cropped at odd H or W
// with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]],
// A^T = [[1,1,1,0],[0,1,-1,-1]]. That is 16*O*C*tiles multiply-adds instead of 36*O*C*tiles for the direct
// product (2.25x fewer); the transforms add and subtract only. Return codes as lseg_gemm.cc's, plus 16: the
// weight is not [O, C, 3, 3] with C matching x.

#include <cstdint>
#include <cstring>
#include <vector>

#include "lseg_aot.h"
#include "lseg_sgemm.h"

namespace {

// filter transform of one 3x3 filter g (row-major) into 16 values, row-major 4x4
inline void FilterTransform(const float *g, float *u) {
  float t[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    const float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
    t[0][j] = g0;
    t[1][j] = 0.5f * (g0 + g1 + g2);
    t[2][j] = 0.5f * (g0 - g1 + g2);
    t[3][j] = g2;
  }
  for (int i = 0; i < 4; ++i) {  // (G g) G^T
    const float a = t[i][0], b = t[i][1], c = t[i][2];
    u[i * 4 + 0] = a;
    u[i * 4 + 1] = 0.5f * (a + b + c);
    u[i * 4 + 2] = 0.5f * (a - b + c);
    u[i * 4 + 3] = c;
  }
}

// Scratch buffers reused between calls (grown, never shrunk; one set per calling thread): fresh multi-megabyte
// allocations would cost a page fault per 4 KiB on every call. The transformed filters are one of them: 64 MB for
// ViT-L/16's 1024-channel reassemble convolution.
float *Scratch(std::vector<float> *buffer, int64_t size) {
  if (static_cast<int64_t>(buffer->size()) < size) buffer->resize(static_cast<size_t>(size));
  return buffer->data();
}

// Input transform of one channel plane [H, W] into v[xi * tiles + tile] (16 rows of `tiles` values, tiles row-major
// over (th, tw)). `rows` is scratch for 8 rows of 2 * tw + 2 floats.
void InputTransform(const float *plane, int64_t h, int64_t w, int64_t th, int64_t tw, float *v, float *rows) {
  const int64_t width = 2 * tw + 2;  // the padded row: one zero column left, zeros right of the image
  const int64_t tiles = th * tw;
  float *padded[4] = {rows, rows + width, rows + 2 * width, rows + 3 * width};
  float *t[4] = {rows + 4 * width, rows + 5 * width, rows + 6 * width, rows + 7 * width};
  for (int64_t ti = 0; ti < th; ++ti) {
    for (int r = 0; r < 4; ++r) {  // image rows 2ti-1 .. 2ti+2, zero outside
      const int64_t y = 2 * ti - 1 + r;
      float *dst = padded[r];
      std::memset(dst, 0, sizeof(float) * static_cast<size_t>(width));
      if (y >= 0 && y < h) std::memcpy(dst + 1, plane + y * w, sizeof(float) * static_cast<size_t>(w));
    }
    for (int64_t x = 0; x < width; ++x) {  // B^T d, along the rows
      const float d0 = padded[0][x], d1 = padded[1][x], d2 = padded[2][x], d3 = padded[3][x];
      t[0][x] = d0 - d2;
      t[1][x] = d1 + d2;
      t[2][x] = d2 - d1;
      t[3][x] = d1 - d3;
    }
    for (int r = 0; r < 4; ++r) {  // (B^T d) B, along the columns of each tile
      const float *src = t[r];
      float *o0 = v + (r * 4 + 0) * tiles + ti * tw, *o1 = v + (r * 4 + 1) * tiles + ti * tw;
      float *o2 = v + (r * 4 + 2) * tiles + ti * tw, *o3 = v + (r * 4 + 3) * tiles + ti * tw;
      for (int64_t tj = 0; tj < tw; ++tj) {
        const float a = src[2 * tj], b = src[2 * tj + 1], c = src[2 * tj + 2], d = src[2 * tj + 3];
        o0[tj] = a - c;
        o1[tj] = b + c;
        o2[tj] = c - b;
        o3[tj] = b - d;
      }
    }
  }
}

// Output transform of one output channel: m[xi * tiles + tile] -> plane [H, W]. `rows` is scratch for 4 rows of
// 2 * tw floats.
void OutputTransform(const float *m, int64_t h, int64_t w, int64_t th, int64_t tw, float *plane, float *rows) {
  const int64_t tiles = th * tw;
  const int64_t width = 2 * tw;
  float *out[2] = {rows, rows + width};
  for (int64_t ti = 0; ti < th; ++ti) {
    const float *s[16];
    for (int xi = 0; xi < 16; ++xi) s[xi] = m + xi * tiles + ti * tw;
    for (int64_t tj = 0; tj < tw; ++tj) {
      float t0[4], t1[4];  // A^T m
      for (int c = 0; c < 4; ++c) {
        const float m0 = s[c][tj], m1 = s[4 + c][tj], m2 = s[8 + c][tj], m3 = s[12 + c][tj];
        t0[c] = m0 + m1 + m2;
        t1[c] = m1 - m2 - m3;
      }
      out[0][2 * tj] = t0[0] + t0[1] + t0[2];  // (A^T m) A
      out[0][2 * tj + 1] = t0[1] - t0[2] - t0[3];
      out[1][2 * tj] = t1[0] + t1[1] + t1[2];
      out[1][2 * tj + 1] = t1[1] - t1[2] - t1[3];
    }
    for (int r = 0; r < 2; ++r) {
      if (2 * ti + r < h) std::memcpy(plane + (2 * ti + r) * w, out[r], sizeof(float) * static_cast<size_t>(w));
    }
  }
}

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
  const int64_t th = (h + 1) / 2, tw = (w + 1) / 2, tiles = th * tw;
  static thread_local std::vector<float> u_buffer, v_buffer, m_buffer, row_buffer;
  float *u = Scratch(&u_buffer, 16 * cout * cin);  // [16, cout, cin]
  float filt[16], flipped[9];
  for (int64_t i = 0; i < wo; ++i) {
    for (int64_t j = 0; j < wc; ++j) {
      const float *src = g + (i * wc + j) * 9;
      if (adjoint) {
        for (int t = 0; t < 9; ++t) flipped[t] = src[8 - t];
        src = flipped;
      }
      FilterTransform(src, filt);
      const int64_t at = adjoint ? j * cin + i : i * cin + j;  // (output channel, input channel) of this filter
      for (int xi = 0; xi < 16; ++xi) u[xi * cout * cin + at] = filt[xi];
    }
  }
  // transformed input [cin, 16, tiles] and products [cout, 16, tiles]: each channel's 16 rows lie together (the
  // transforms stream through them); the xi-th product reads/writes every 16th row (leading dimension 16 * tiles)
  float *v = Scratch(&v_buffer, 16 * cin * tiles);
  float *m = Scratch(&m_buffer, 16 * cout * tiles);
  float *rows = Scratch(&row_buffer, 8 * (2 * tw + 2));
  for (int64_t n = 0; n < b; ++n) {
    const float *xn = x + n * cin * h * w;
    for (int64_t ch = 0; ch < cin; ++ch) {
      InputTransform(xn + ch * h * w, h, w, th, tw, v + ch * 16 * tiles, rows);
    }
    for (int xi = 0; xi < 16; ++xi) {
      sgemm(lseg::kRowMajor, lseg::kNoTrans, lseg::kNoTrans, cout, tiles, cin, 1.0f, u + xi * cout * cin,
            cin, v + xi * tiles, 16 * tiles, 0.0f, m + xi * tiles, 16 * tiles);
    }
    float *yn = y + n * cout * h * w;
    for (int64_t ch = 0; ch < cout; ++ch) {
      OutputTransform(m + ch * 16 * tiles, h, w, th, tw, yn + ch * h * w, rows);
    }
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
