// The register-tiled attention loops of lseg_attention.cc, written once for any SIMD width.
//
// No include guard: lseg_attention.cc includes this file once per instruction set, inside a namespace of its own
// and a `#pragma GCC target` region, after defining there
//   V, kLanes                     the vector type and its float lanes;
//   Zero, Load, Store, Set1, Fma, Mul   its operations (unaligned loads and stores);
//   kScoreRows x kScoreVecs       the scores register tile (rows x vectors of columns);
//   kOutRows x kOutVecs           the product register tile;
// and before it (outside the namespaces) kBlockRows, kPadCols, Scratch, Problem, Head, HeadGrad, ExpRows,
// SoftmaxRows, SoftmaxGradRows, PackTransposed and PackRows. kBlockRows must be a multiple of both tile heights and
// kPadCols of the score tile's width; the head size d a multiple of kLanes.

constexpr int64_t kScoreCols = kScoreVecs * kLanes;
static_assert(kBlockRows % kScoreRows == 0 && kBlockRows % kOutRows == 0, "query blocks must hold whole tiles");
static_assert(kPadCols % kScoreCols == 0, "padded key rows must hold whole score tiles");

// s[r, 0:kScoreCols] = scale * a[r] . bt[:, 0:kScoreCols] for R rows of a (row stride lda); bt [d, tp] (a matrix
// transposed)
template <int R>
inline void ScoreTile(const float *a, int64_t lda, const float *bt, int64_t tp, int64_t d, float scale, float *s,
                      int64_t lds) {
  V acc[R][kScoreVecs];
  for (int r = 0; r < R; ++r) {
    for (int w = 0; w < kScoreVecs; ++w) acc[r][w] = Zero();
  }
  for (int64_t c = 0; c < d; ++c) {
    V b[kScoreVecs];
    for (int w = 0; w < kScoreVecs; ++w) b[w] = Load(bt + c * tp + w * kLanes);
    for (int r = 0; r < R; ++r) {
      const V av = Set1(a[r * lda + c]);
      for (int w = 0; w < kScoreVecs; ++w) acc[r][w] = Fma(av, b[w], acc[r][w]);
    }
  }
  const V sv = Set1(scale);
  for (int r = 0; r < R; ++r) {
    for (int w = 0; w < kScoreVecs; ++w) Store(s + r * lds + w * kLanes, Mul(acc[r][w], sv));
  }
}

// out[r, 0:W*kLanes] = row_scale[r] * sum_{j < t} p(r, j) v[j, 0:W*kLanes] for R rows, p(r, j) = p[r * rs + j * js]
// (rs = row stride, js = 1: p itself; rs = 1, js = row stride: p transposed); v [t, vld] rows
template <int R, int W>
inline void ProductTile(const float *p, int64_t rs, int64_t js, const float *v, int64_t vld, int64_t t,
                        const float *row_scale, float *out, int64_t ld_out) {
  V acc[R][W];
  for (int r = 0; r < R; ++r) {
    for (int w = 0; w < W; ++w) acc[r][w] = Zero();
  }
  for (int64_t j = 0; j < t; ++j) {
    V vv[W];
    for (int w = 0; w < W; ++w) vv[w] = Load(v + j * vld + w * kLanes);
    const float *pj = p + j * js;
    for (int r = 0; r < R; ++r) {
      const V pv = Set1(pj[r * rs]);
      for (int w = 0; w < W; ++w) acc[r][w] = Fma(pv, vv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const V k = Set1(row_scale[r]);
    for (int w = 0; w < W; ++w) Store(out + r * ld_out + w * kLanes, Mul(acc[r][w], k));
  }
}

template <int R>
void ScoreRows(const float *a, int64_t lda, const float *bt, int64_t tp, int64_t d, float scale, float *s,
               int64_t lds) {
  for (int64_t j0 = 0; j0 < tp; j0 += kScoreCols) ScoreTile<R>(a, lda, bt + j0, tp, d, scale, s + j0, lds);
}

template <int R>
void ProductRows(const float *p, int64_t rs, int64_t js, const float *v, int64_t d, int64_t t, const float *row_scale,
                 float *out, int64_t ld_out) {
  constexpr int64_t wide = kOutVecs * kLanes;
  int64_t c0 = 0;
  for (; c0 + wide <= d; c0 += wide) ProductTile<R, kOutVecs>(p, rs, js, v + c0, d, t, row_scale, out + c0, ld_out);
  for (; c0 < d; c0 += kLanes) ProductTile<R, 1>(p, rs, js, v + c0, d, t, row_scale, out + c0, ld_out);
}

// ScoreRows<R> / ProductRows<R> for R = 1 .. the tile height (the last rows of a block may fill a tile partly)
template <int... R>
constexpr std::array<ScoreFn, sizeof...(R) + 1> ScoreTable(std::integer_sequence<int, 0, R...>) {
  return {nullptr, ScoreRows<R>...};
}
template <int... R>
constexpr std::array<ProductFn, sizeof...(R) + 1> ProductTable(std::integer_sequence<int, 0, R...>) {
  return {nullptr, ProductRows<R>...};
}

// s [rows, tp] = scale * a [rows, d] (row stride lda) @ bt [d, tp]
void Scores(const float *a, int64_t lda, int64_t rows, const float *bt, int64_t tp, int64_t d, float scale, float *s) {
  static constexpr auto table = ScoreTable(std::make_integer_sequence<int, kScoreRows + 1>());
  for (int64_t r = 0; r < rows; r += kScoreRows) {
    table[std::min<int64_t>(kScoreRows, rows - r)](a + r * lda, lda, bt, tp, d, scale, s + r * tp, tp);
  }
}

// out [rows, d] (row stride ld_out) = row_scale * p [rows, t] @ v [t, d]; p element (r, j) at p[r * rs + j * js]
void Products(const float *p, int64_t rs, int64_t js, int64_t rows, const float *v, int64_t d, int64_t t,
              const float *row_scale, float *out, int64_t ld_out) {
  static constexpr auto table = ProductTable(std::make_integer_sequence<int, kOutRows + 1>());
  for (int64_t r = 0; r < rows; r += kOutRows) {
    table[std::min<int64_t>(kOutRows, rows - r)](p + r * rs, rs, js, v, d, t, row_scale + r, out + r * ld_out,
                                                 ld_out);
  }
}

// out = softmax(scale q k^T) v, one block of query rows at a time
void ForwardHead(const Head &h, const Problem &p, Scratch *w) {
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

// P = softmax(s q k^T); dV = P^T dO; dP = dO V^T; dS = P (dP - rowsum(P dP)); dQ = s dS K; dK = s dS^T Q
void BackwardHead(const HeadGrad &g, const Problem &p, Scratch *w) {
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
