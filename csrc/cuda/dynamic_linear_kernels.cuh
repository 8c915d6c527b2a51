// dynamic_linear CUDA kernels: per-thread bodies (host+device) and launchers.
//
// y[b,l,o] = sum_i x[b,l,i] * (w[b,i,o] + clip(bw[b,i,o])) + bias[b,o] + clip(bb[b,o]).
// The combined weight is formed per element in registers, never stored. Mapping:
// - forward: block (64 o-lanes, 4 l-rows) per (sample, 64-column tile); lanes read
//   consecutive o (coalesced) and the 4 row-groups re-read the sample's weight tile
//   from L1, so DRAM sees each weight element once.
// - dW/dbranch/dbias: one thread per (b, i, o) element of the sample's weight,
//   consecutive o per lane (coalesced), summing over L; threads with e < O also
//   produce the bias grads.
// - dx: one warp per (b, i): lanes stride over o (coalesced rows of w and grad) and
//   reduce with shuffles.
// The backward recomputes the clip mask from bw instead of saving one.
#pragma once

#include <cstdint>

#include "common.cuh"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace solid_ext::cuda {

template <typename T>
struct DLParams {
  const T* x;   // (B, L, I)
  const T* w;   // (B, I, O)
  const T* bias;  // (B, O) or null
  const T* bw;  // (B, I, O) or null
  const T* bb;  // (B, O) or null
  const T* g;   // (B, L, O) output grad (backward)
  T* y;         // (B, L, O) forward output
  T* dx;        // (B, L, I) or null
  T* dw;        // (B, I, O) or null
  T* dbw;       // (B, I, O) or null
  T* db;        // (B, O) (backward)
  T* dbb;       // (B, O) or null
  double tau;
  int64_t B, L, I, O;
};

constexpr int kFwdLanes = 64;   // o per block (blockDim.x)
constexpr int kFwdRows = 4;     // l row-groups per block (blockDim.y)
constexpr int kDwThreads = 256; // weight elements per block
constexpr int kDxWarps = 8;     // i rows per block (one warp each)
constexpr int kWarp = 32;

// tau rounded to the input type first, as torch.clamp compares in the tensor dtype.
template <typename T>
SX_HD typename AccOf<T>::type tau_of(double tau) {
  using A = typename AccOf<T>::type;
  return to_acc<A>(from_acc<T>(static_cast<A>(tau)));
}

template <typename T>
SX_HD typename AccOf<T>::type combined(const DLParams<T>& p, int64_t off) {
  using A = typename AccOf<T>::type;
  A v = to_acc<A>(p.w[off]);
  if (p.bw) v += clip(to_acc<A>(p.bw[off]), tau_of<T>(p.tau));
  return v;
}

// Forward thread (bx = sample, by = column tile, tx = lane, ty = row group).
template <typename T>
SX_HD void dl_fwd_thread(const DLParams<T>& p, int64_t bx, int64_t by, int tx, int ty) {
  using A = typename AccOf<T>::type;
  const int64_t b = bx, o = by * kFwdLanes + tx;
  if (o >= p.O) return;
  const A tau = tau_of<T>(p.tau);
  A base = p.bias ? to_acc<A>(p.bias[b * p.O + o]) : A(0);
  if (p.bb) base += clip(to_acc<A>(p.bb[b * p.O + o]), tau);
  const T* xb = p.x + b * p.L * p.I;
  const int64_t wb = b * p.I * p.O + o;
  for (int64_t l = ty; l < p.L; l += kFwdRows) {
    A acc = base;
    for (int64_t i = 0; i < p.I; ++i) acc += to_acc<A>(xb[l * p.I + i]) * combined(p, wb + i * p.O);
    p.y[(b * p.L + l) * p.O + o] = from_acc<T>(acc);
  }
}

// dW / dbranch / dbias thread: flat element e of sample bx's (I, O) weight.
template <typename T>
SX_HD void dl_dw_thread(const DLParams<T>& p, int64_t bx, int64_t by, int tx) {
  using A = typename AccOf<T>::type;
  const int64_t b = bx, e = by * kDwThreads + tx;
  const A tau = tau_of<T>(p.tau);
  const T* xb = p.x + b * p.L * p.I;
  const T* gb = p.g + b * p.L * p.O;
  if (e < p.I * p.O && (p.dw || p.dbw)) {
    const int64_t i = e / p.O, o = e % p.O;
    A acc = 0;
    for (int64_t l = 0; l < p.L; ++l) acc += to_acc<A>(xb[l * p.I + i]) * to_acc<A>(gb[l * p.O + o]);
    const int64_t off = b * p.I * p.O + e;
    if (p.dw) p.dw[off] = from_acc<T>(acc);
    if (p.dbw) p.dbw[off] = from_acc<T>(inside(to_acc<A>(p.bw[off]), tau) ? acc : A(0));
  }
  if (e < p.O) {  // the first O threads of the sample also own the bias grads
    A s = 0;
    for (int64_t l = 0; l < p.L; ++l) s += to_acc<A>(gb[l * p.O + e]);
    p.db[b * p.O + e] = from_acc<T>(s);
    if (p.dbb) p.dbb[b * p.O + e] = from_acc<T>(inside(to_acc<A>(p.bb[b * p.O + e]), tau) ? s : A(0));
  }
}

// dx partial of one lane: sum over o = lane, lane+32, ... of g[b,l,o] * W[b,i,o].
// The 32 partials of a warp are summed by the caller (shuffles on the device).
template <typename T>
SX_HD typename AccOf<T>::type dl_dx_partial(const DLParams<T>& p, int64_t b, int64_t l,
                                            int64_t i, int lane) {
  using A = typename AccOf<T>::type;
  A acc = 0;
  const T* gr = p.g + (b * p.L + l) * p.O;
  const int64_t wr = (b * p.I + i) * p.O;
  for (int64_t o = lane; o < p.O; o += kWarp) acc += to_acc<A>(gr[o]) * combined(p, wr + o);
  return acc;
}

// Launch geometry, shared by the launchers and the host emulation.
struct Grid3 {
  int64_t x, y;
};
inline Grid3 dl_fwd_grid(int64_t B, int64_t O) { return {B, (O + kFwdLanes - 1) / kFwdLanes}; }
inline Grid3 dl_dw_grid(int64_t B, int64_t I, int64_t O) {
  const int64_t n = I * O > O ? I * O : O;  // >= O threads: the bias grads need them
  return {B, (n + kDwThreads - 1) / kDwThreads};
}
inline Grid3 dl_dx_grid(int64_t B, int64_t I) { return {B, (I + kDxWarps - 1) / kDxWarps}; }

#if defined(__CUDACC__)
// Plain-pointer launchers (T = float, double, __half, __nv_bfloat16). Outputs whose
// pointer is null are skipped. Return the launch error (cudaSuccess if none).
template <typename T>
cudaError_t dynamic_linear_forward(const DLParams<T>& p, cudaStream_t stream);
template <typename T>
cudaError_t dynamic_linear_backward(const DLParams<T>& p, cudaStream_t stream);
#endif

}  // namespace solid_ext::cuda
