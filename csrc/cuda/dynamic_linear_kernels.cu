// dynamic_linear CUDA kernels and plain-pointer launchers (no torch headers).
#include "dynamic_linear_kernels.cuh"

namespace solid_ext::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kFwdLanes* kFwdRows)
    dl_fwd_kernel(const DLParams<T> p) {
  dl_fwd_thread(p, blockIdx.x, blockIdx.y, threadIdx.x, threadIdx.y);
}

template <typename T>
__global__ void __launch_bounds__(kDwThreads) dl_dw_kernel(const DLParams<T> p) {
  dl_dw_thread(p, blockIdx.x, blockIdx.y, threadIdx.x);
}

template <typename T>
__global__ void __launch_bounds__(kWarp* kDxWarps) dl_dx_kernel(const DLParams<T> p) {
  using A = typename AccOf<T>::type;
  const int64_t b = blockIdx.x;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kDxWarps + threadIdx.y;
  if (i >= p.I) return;  // whole warp leaves together: the shuffles stay converged
  for (int64_t l = 0; l < p.L; ++l) {
    A acc = dl_dx_partial(p, b, l, i, threadIdx.x);
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (threadIdx.x == 0) p.dx[(b * p.L + l) * p.I + i] = from_acc<T>(acc);
  }
}

}  // namespace

template <typename T>
cudaError_t dynamic_linear_forward(const DLParams<T>& p, cudaStream_t stream) {
  if (p.B == 0 || p.L == 0 || p.O == 0) return cudaSuccess;
  const Grid3 g = dl_fwd_grid(p.B, p.O);
  dl_fwd_kernel<T><<<dim3(g.x, g.y), dim3(kFwdLanes, kFwdRows), 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t dynamic_linear_backward(const DLParams<T>& p, cudaStream_t stream) {
  if (p.B == 0 || p.O == 0) return cudaSuccess;
  const Grid3 gw = dl_dw_grid(p.B, p.I, p.O);
  dl_dw_kernel<T><<<dim3(gw.x, gw.y), kDwThreads, 0, stream>>>(p);
  if (p.dx && p.L > 0 && p.I > 0) {
    const Grid3 gx = dl_dx_grid(p.B, p.I);
    dl_dx_kernel<T><<<dim3(gx.x, gx.y), dim3(kWarp, kDxWarps), 0, stream>>>(p);
  }
  return cudaGetLastError();
}

#define SX_INSTANTIATE(T)                                                           \
  template cudaError_t dynamic_linear_forward<T>(const DLParams<T>&, cudaStream_t); \
  template cudaError_t dynamic_linear_backward<T>(const DLParams<T>&, cudaStream_t);
SX_INSTANTIATE(float)
SX_INSTANTIATE(double)
SX_INSTANTIATE(__half)
SX_INSTANTIATE(__nv_bfloat16)
#undef SX_INSTANTIATE

}  // namespace solid_ext::cuda
