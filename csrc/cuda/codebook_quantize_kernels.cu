// codebook_quantize CUDA kernels and plain-pointer launchers (no torch headers).
#include "codebook_quantize_kernels.cuh"

namespace solid_ext::cuda {
namespace {

template <typename T, int DMAX>
__global__ void __launch_bounds__(kRows) cq_fwd_kernel(const CQParams<T> p, int64_t tk) {
  using A = typename AccOf<T>::type;
  extern __shared__ unsigned char smem_raw[];
  A* c2 = reinterpret_cast<A*>(smem_raw);
  A* cs = c2 + tk;
  const int64_t m = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x;
  const bool live = m < p.M;  // dead threads still help load tiles and hit barriers
  const int64_t stride = DMAX > 0 ? DMAX : p.D;
  A zr[DMAX > 0 ? DMAX : 1];
  if (DMAX > 0 && live) cq_load_row<T, DMAX>(p, m, zr);
  ArgminState<A> st;
  st.init();
  for (int64_t k0 = 0; k0 < p.K; k0 += tk) {
    cq_load_tile(p, k0, tk, stride, threadIdx.x, kRows, cs, c2);
    __syncthreads();
    if (live) cq_tile_update<T, DMAX>(p, m, zr, k0, tk, cs, c2, st);
    __syncthreads();
  }
  if (live) cq_finish_row(p, m, st);
}

template <typename T>
__global__ void __launch_bounds__(kBwdThreads) cq_bwd_kernel(const CQParams<T> p) {
  cq_bwd_thread(p, blockIdx.x, threadIdx.x);
}

template <typename T, int DMAX>
cudaError_t launch_fwd(const CQParams<T>& p, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  const int64_t stride = DMAX > 0 ? DMAX : p.D;
  const int64_t tk = cq_tile_codes<A>(stride);
  const size_t smem = static_cast<size_t>(tk * (stride + 1)) * sizeof(A);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        cq_fwd_kernel<T, DMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = static_cast<unsigned>((p.M + kRows - 1) / kRows);
  cq_fwd_kernel<T, DMAX><<<blocks, kRows, smem, stream>>>(p, tk);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t codebook_quantize_forward(const CQParams<T>& p, cudaStream_t stream) {
  if (p.M == 0) return cudaSuccess;
  switch (cq_dmax<T>(p.D)) {
    case 32: return launch_fwd<T, 32>(p, stream);
    case 64: return launch_fwd<T, 64>(p, stream);
    case 128:
      if constexpr (sizeof(typename AccOf<T>::type) == 4) return launch_fwd<T, 128>(p, stream);
      return launch_fwd<T, 0>(p, stream);
    default: return launch_fwd<T, 0>(p, stream);
  }
}

template <typename T>
cudaError_t codebook_quantize_backward(const CQParams<T>& p, cudaStream_t stream) {
  if (p.M == 0 || p.D == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((p.M * p.D + kBwdThreads - 1) / kBwdThreads);
  cq_bwd_kernel<T><<<blocks, kBwdThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

#define SX_INSTANTIATE(T)                                                              \
  template cudaError_t codebook_quantize_forward<T>(const CQParams<T>&, cudaStream_t); \
  template cudaError_t codebook_quantize_backward<T>(const CQParams<T>&, cudaStream_t);
SX_INSTANTIATE(float)
SX_INSTANTIATE(double)
SX_INSTANTIATE(__half)
SX_INSTANTIATE(__nv_bfloat16)
#undef SX_INSTANTIATE

}  // namespace solid_ext::cuda
