// Shared helpers for the solid_ext CUDA kernels. No torch headers: every kernel body
// is a __host__ __device__ function so tests/cuda_host can run the same index
// arithmetic on the CPU (g++), emulating the launch grid in loops.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SX_HD __host__ __device__ __forceinline__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#define SX_HD inline
#endif

namespace solid_ext::cuda {

// Accumulation type: float for float/half/bf16 inputs, double for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

template <typename A, typename T>
SX_HD A to_acc(T v) {
  return static_cast<A>(v);
}
template <typename T, typename A>
SX_HD T from_acc(A v) {
  return static_cast<T>(v);
}
#if defined(__CUDACC__)
template <>
SX_HD float to_acc<float, __half>(__half v) {
  return __half2float(v);
}
template <>
SX_HD float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
SX_HD __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
SX_HD __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
#endif

// clamp(v, -tau, tau) that keeps NaN, as torch.clamp (comparisons with NaN are false).
template <typename A>
SX_HD A clip(A v, A tau) {
  return v < -tau ? -tau : (v > tau ? tau : v);
}

// Gradient mask of clamp: inclusive at |v| == tau; NaN -> outside.
template <typename A>
SX_HD bool inside(A v, A tau) {
  return v >= -tau && v <= tau;
}

template <typename A>
SX_HD void atomic_add(A* p, A v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;  // host emulation runs threads one after another
#endif
}

}  // namespace solid_ext::cuda
