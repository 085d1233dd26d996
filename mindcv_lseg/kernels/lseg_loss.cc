// The gradient of the pixel-wise softmax cross-entropy in its logits, for MindSpore custom operators (ops.Custom,
// func_type="aot", CPU):
//
//   LsegSoftmaxXentGrad: logits [B, N, H, W] float32, labels [B, H, W] int32, weight [B, H, W] float32
//                        -> grad [B, N, H, W] = (softmax over N of logits - onehot(label)) * weight
//
// weight is dL/dloss * valid / count per pixel (zero at ignored pixels, whose label must still lie in [0, N)).
// Three passes over each image's logits, the pixels in the inner, vectorised loop (glibc's vector expf); MindSpore's
// composite form (softmax, a broadcast of the weight, a multiply, a scatter) makes several passes and a full-size
// temporary. Return codes: 0 ok, 11 wrong number of parameters, 12 wrong dtype, 13 wrong rank, 14 shapes disagree,
// 17 a label outside [0, N).

#include <cstdint>
#include <cstring>
#include <vector>

extern "C" __attribute__((__simd__("notinbranch"))) float expf(float) noexcept;

namespace {

// one image: logits/grad [N, P], labels/weight [P]
__attribute__((target_clones("avx512f", "avx2", "default"))) void ImageGrad(const float *logits, const int32_t *labels,
                                                                             const float *weight, float *grad,
                                                                             int64_t n, int64_t p, float *peak,
                                                                             float *scale) {
  for (int64_t i = 0; i < p; ++i) peak[i] = logits[i];
  for (int64_t c = 1; c < n; ++c) {
    const float *row = logits + c * p;
#pragma omp simd
    for (int64_t i = 0; i < p; ++i) peak[i] = row[i] > peak[i] ? row[i] : peak[i];
  }
  std::memset(scale, 0, sizeof(float) * static_cast<size_t>(p));
  for (int64_t c = 0; c < n; ++c) {
    const float *row = logits + c * p;
    float *out = grad + c * p;
#pragma omp simd
    for (int64_t i = 0; i < p; ++i) {
      const float e = expf(row[i] - peak[i]);
      out[i] = e;
      scale[i] += e;
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < p; ++i) scale[i] = weight[i] / scale[i];
  for (int64_t c = 0; c < n; ++c) {
    float *out = grad + c * p;
#pragma omp simd
    for (int64_t i = 0; i < p; ++i) out[i] *= scale[i];
  }
  for (int64_t i = 0; i < p; ++i) grad[static_cast<int64_t>(labels[i]) * p + i] -= weight[i];
}

}  // namespace

extern "C" {

int LsegSoftmaxXentGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                        void *) {
  if (nparam != 4) return 11;
  if (std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "int32") != 0 ||
      std::strcmp(dtypes[2], "float32") != 0 || std::strcmp(dtypes[3], "float32") != 0) {
    return 12;
  }
  if (ndims[0] != 4 || ndims[1] != 3 || ndims[2] != 3 || ndims[3] != 4) return 13;
  const int64_t b = shapes[0][0], n = shapes[0][1], p = shapes[0][2] * shapes[0][3];
  for (int i = 0; i < 4; ++i) {
    if (shapes[3][i] != shapes[0][i]) return 14;
  }
  for (int k = 1; k <= 2; ++k) {
    if (shapes[k][0] != b || shapes[k][1] != shapes[0][2] || shapes[k][2] != shapes[0][3]) return 14;
  }
  const float *logits = static_cast<const float *>(params[0]);
  const int32_t *labels = static_cast<const int32_t *>(params[1]);
  const float *weight = static_cast<const float *>(params[2]);
  float *grad = static_cast<float *>(params[3]);
  for (int64_t i = 0; i < b * p; ++i) {
    if (labels[i] < 0 || labels[i] >= n) return 17;
  }
  if (n == 0 || p == 0) return 0;
  std::vector<float> scratch(static_cast<size_t>(2 * p));
  for (int64_t k = 0; k < b; ++k) {
    ImageGrad(logits + k * n * p, labels + k * p, weight + k * p, grad + k * n * p, n, p, scratch.data(),
              scratch.data() + p);
  }
  return 0;
}

}  // extern "C"
