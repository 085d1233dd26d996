// Checks of the arguments MindSpore passes to an AOT custom operator (ops.Custom, func_type="aot"): every kernel
// library of this folder validates its parameters' dtypes and shapes with these before touching the data.
#ifndef MINDCV_LSEG_KERNELS_LSEG_AOT_H_
#define MINDCV_LSEG_KERNELS_LSEG_AOT_H_

#include <cstdint>
#include <cstring>

namespace lseg {

// true when the first `count` parameters are all float32
inline bool AllFloat32(int count, const char **dtypes) {
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

// true when the two shapes have the same rank and sizes
inline bool SameShape(int ndim_a, const int64_t *a, int ndim_b, const int64_t *b) {
  if (ndim_a != ndim_b) return false;
  for (int i = 0; i < ndim_a; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace lseg

#endif  // MINDCV_LSEG_KERNELS_LSEG_AOT_H_
