// codebook_quantize CUDA kernels: per-thread bodies (host+device) and launchers.
//
// Forward: one thread per row of z, a block of kRows rows. The block stages a tile
// of codes (and their squared norms) in shared memory; each thread scores its row
// against the tile, s_k = ||C_k||^2 - 2 z.C_k, and folds the scores into a running
// (best, index) in registers: the (M, K) distance matrix never exists. With
// D <= DMAX (32/64/128) the row lives in registers and the tile rows are padded to
// DMAX, so the dot product is fully unrolled. The chosen code is then gathered and
// sq_dist recomputed exactly as sum((z - C_k)^2).
// Argmin semantics as torch.argmin over the reference's scores: strictly smaller
// wins (codes are visited in increasing k, so ties keep the lowest k); a NaN score
// wins over numbers and the first NaN is kept (a NaN row of z -> index 0).
// Backward: one thread per element (m, d); the codebook gradient is scattered with
// atomicAdd (float/double) into an accumulation-type buffer. The ATen binding has
// checked every index lies in [0, K) (../validate.h).
#pragma once

#include <cstdint>

#include "common.cuh"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace solid_ext::cuda {

template <typename T>
struct CQParams {
  const T* z;          // (M, D)
  const T* c;          // (K, D)
  T* q;                // (M, D)
  T* sq;               // (M)
  int64_t* idx;        // (M)
  const T* gq;         // (M, D) or null (backward)
  const T* gsq;        // (M) or null (backward)
  const int64_t* bidx; // (M) chosen indices (backward)
  T* gz;               // (M, D) (backward)
  typename AccOf<T>::type* gc;  // (K, D) accumulation buffer, zeroed (backward)
  bool st;             // straight-through to the codebook
  int64_t M, K, D;
};

constexpr int kRows = 128;        // rows (threads) per search block
constexpr int kBwdThreads = 256;  // elements per backward block

// Codes per shared tile for a given row stride: about 16 KiB of codes.
template <typename A>
SX_HD int64_t cq_tile_codes(int64_t stride) {
  const int64_t t = static_cast<int64_t>(16384 / sizeof(A)) / (stride > 0 ? stride : 1);
  return t < 1 ? 1 : (t > 128 ? 128 : t);
}

template <typename A>
struct ArgminState {
  A best;
  int64_t k;
  bool nan;
  SX_HD void init() {
    best = A(1) / A(0);  // +inf
    k = 0;
    nan = false;
  }
  SX_HD void update(A s, int64_t kk) {
    if (nan) return;  // the first NaN is final
    if (s != s) {
      nan = true;
      k = kk;
    } else if (s < best) {
      best = s;
      k = kk;
    }
  }
};

// Cooperative tile load, thread tid of nthreads: codes [k0, k0+tk) into cs with row
// stride `stride` (zero padding beyond D and beyond K), squared norms into c2.
template <typename T>
SX_HD void cq_load_tile(const CQParams<T>& p, int64_t k0, int64_t tk, int64_t stride, int tid,
                        int nthreads, typename AccOf<T>::type* cs,
                        typename AccOf<T>::type* c2) {
  using A = typename AccOf<T>::type;
  for (int64_t e = tid; e < tk * stride; e += nthreads) {
    const int64_t t = e / stride, d = e % stride, k = k0 + t;
    cs[e] = (k < p.K && d < p.D) ? to_acc<A>(p.c[k * p.D + d]) : A(0);
  }
  for (int64_t t = tid; t < tk; t += nthreads) {
    A s = 0;
    if (k0 + t < p.K)
      for (int64_t d = 0; d < p.D; ++d) {
        const A v = to_acc<A>(p.c[(k0 + t) * p.D + d]);
        s += v * v;
      }
    c2[t] = s;
  }
}

// Load row m of z into zr (DMAX > 0: DMAX slots, zero padded).
template <typename T, int DMAX>
SX_HD void cq_load_row(const CQParams<T>& p, int64_t m, typename AccOf<T>::type* zr) {
  using A = typename AccOf<T>::type;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int d = 0; d < DMAX; ++d) zr[d] = d < p.D ? to_acc<A>(p.z[m * p.D + d]) : A(0);
}

// Score row m against tile codes [k0, k0+tk) and update its state. DMAX > 0: zr holds
// the row and cs rows have stride DMAX; DMAX == 0: the row is read from global.
template <typename T, int DMAX>
SX_HD void cq_tile_update(const CQParams<T>& p, int64_t m, const typename AccOf<T>::type* zr,
                          int64_t k0, int64_t tk, const typename AccOf<T>::type* cs,
                          const typename AccOf<T>::type* c2,
                          ArgminState<typename AccOf<T>::type>& st) {
  using A = typename AccOf<T>::type;
  const int64_t stride = DMAX > 0 ? DMAX : p.D;
  for (int64_t t = 0; t < tk && k0 + t < p.K; ++t) {
    const A* cr = cs + t * stride;
    A dot = 0;
    if constexpr (DMAX > 0) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int d = 0; d < DMAX; ++d) dot += zr[d] * cr[d];
    } else {
      for (int64_t d = 0; d < p.D; ++d) dot += to_acc<A>(p.z[m * p.D + d]) * cr[d];
    }
    st.update(c2[t] - A(2) * dot, k0 + t);
  }
}

// Write index, gathered code and exact squared distance of row m.
template <typename T>
SX_HD void cq_finish_row(const CQParams<T>& p, int64_t m,
                         const ArgminState<typename AccOf<T>::type>& st) {
  using A = typename AccOf<T>::type;
  const int64_t k = st.k;
  p.idx[m] = k;
  A s = 0;
  for (int64_t d = 0; d < p.D; ++d) {
    const T cv = p.c[k * p.D + d];
    const A diff = to_acc<A>(p.z[m * p.D + d]) - to_acc<A>(cv);
    s += diff * diff;
    p.q[m * p.D + d] = cv;
  }
  p.sq[m] = from_acc<T>(s);
}

// Backward element e = m * D + d.
template <typename T>
SX_HD void cq_bwd_thread(const CQParams<T>& p, int64_t bx, int tx) {
  using A = typename AccOf<T>::type;
  const int64_t e = bx * kBwdThreads + tx;
  if (e >= p.M * p.D) return;
  const int64_t m = e / p.D, d = e % p.D;
  const int64_t k = p.bidx[m];
  const A gq = p.gq ? to_acc<A>(p.gq[e]) : A(0);
  // Checked here rather than on the host, which would cost a device sync per backward:
  // an index outside [0, K) never touches memory and adds only quantized's term (as
  // the Triton kernel).
  if (k < 0 || k >= p.K) {
    p.gz[e] = from_acc<T>(gq);
    return;
  }
  A t = 0;
  // A zero sq_dist gradient contributes exactly zero, also where z - C_k is infinite
  // (0 * inf would be NaN in quantized's straight-through gradient); NaN propagates.
  const A gs = p.gsq ? to_acc<A>(p.gsq[m]) : A(0);
  if (gs != A(0)) t = A(2) * gs * (to_acc<A>(p.z[e]) - to_acc<A>(p.c[k * p.D + d]));
  p.gz[e] = from_acc<T>(gq + t);
  const A gcv = (p.st ? gq : A(0)) - t;
  if (p.gsq || (p.st && p.gq)) atomic_add(p.gc + k * p.D + d, gcv);
}

// Which register-row variant a given D uses (0: generic). double stops at 64: the
// 128-slot double row spills (ptxas: 255 registers + stack).
template <typename T>
inline int cq_dmax(int64_t D) {
  const int64_t top = sizeof(typename AccOf<T>::type) == 8 ? 64 : 128;
  return D <= 32 ? 32 : D <= 64 ? 64 : D <= top ? 128 : 0;
}

#if defined(__CUDACC__)
// Plain-pointer launchers (T = float, double, __half, __nv_bfloat16). The caller
// zeroes p.gc before the backward. Return the launch error (cudaSuccess if none).
template <typename T>
cudaError_t codebook_quantize_forward(const CQParams<T>& p, cudaStream_t stream);
template <typename T>
cudaError_t codebook_quantize_backward(const CQParams<T>& p, cudaStream_t stream);
#endif

}  // namespace solid_ext::cuda
