// CPU kernels for solid_ext::codebook_quantize and its backward.
//
// Search: argmin_k ||z - C_k||^2 = argmin_k (||C_k||^2 - 2 z.C_k). A register-blocked
// micro-kernel computes an MR x NR tile of dot products (MR rows of z against NR
// codes) and folds it straight into a running per-lane (best score, best index),
// so no distance tile ever leaves registers/L1. The codebook is transposed and
// padded once per call; the K loop is chunked so a chunk of it stays in L2 while
// a group of rows sweeps it. sq_dist is then recomputed exactly from the chosen
// code, so it does not inherit the cancellation of the expanded form.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "vec.h"

namespace solid_ext::cpu {
namespace {

constexpr int MR = 8;       // rows of z per micro-tile
constexpr int NV = 2;       // vectors of codes per micro-tile
constexpr int GROUP = 64;   // rows sharing one pass over a K chunk (multiple of MR)

template <typename T>
struct Search {
  static constexpr int V = VecT<T>::lanes;
  static constexpr int NR = V * NV;
  using Vt = Vec<T>;
  using It = IVec<T>;
  using IElem = std::remove_reference_t<decltype(It{}[0])>;

  const T* z;
  int64_t M, K, D, Kp, Kc;
  std::vector<T> ct;  // (D, Kp): codebook transposed, zero-padded
  std::vector<T> c2;  // (Kp): squared norms, +inf for padding

  Search(const T* z_, const T* c, int64_t M_, int64_t K_, int64_t D_)
      : z(z_), M(M_), K(K_), D(D_) {
    Kp = (K + NR - 1) / NR * NR;
    // K chunk: about 128 KiB of transposed codebook, a multiple of NR codes.
    const int64_t target = std::max<int64_t>(NR, (128 * 1024 / sizeof(T)) / std::max<int64_t>(D, 1));
    Kc = std::min<int64_t>(Kp, std::max<int64_t>(NR, target / NR * NR));
    ct.assign(D * Kp, T(0));
    c2.assign(Kp, std::numeric_limits<T>::infinity());
    for (int64_t k = 0; k < K; ++k) {
      T s = 0;
      for (int64_t d = 0; d < D; ++d) {
        const T v = c[k * D + d];
        ct[d * Kp + k] = v;
        s += v * v;
      }
      c2[k] = s;
    }
  }

  // One micro-tile: rows zr[0..MR) against codes [k0, k0 + NR); update best state.
  inline void tile(const T* const* zr, int64_t k0, T* bestv, IElem* besti) const {
    Vt acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = vsplat<T>(0);
    const T* cp = ct.data() + k0;
    for (int64_t d = 0; d < D; ++d) {
      Vt cv[NV];
      for (int v = 0; v < NV; ++v) cv[v] = vload(cp + d * Kp + v * V);
      for (int r = 0; r < MR; ++r) {
        const T zs = zr[r][d];
        for (int v = 0; v < NV; ++v) acc[r][v] += cv[v] * zs;
      }
    }
    It lane;
    for (int i = 0; i < V; ++i) lane[i] = static_cast<IElem>(i);
    for (int v = 0; v < NV; ++v) {
      const int64_t kb = k0 + v * V;
      const Vt c2v = vload(c2.data() + kb);
      const It kidx = lane + static_cast<IElem>(kb);
      const It valid = kidx < static_cast<IElem>(K);
      for (int r = 0; r < MR; ++r) {
        const Vt s = c2v - acc[r][v] * T(2);
        T* bvp = bestv + r * NR + v * V;
        IElem* bip = besti + r * NR + v * V;
        Vt bv = vload(bvp);
        It bi;
        std::memcpy(&bi, bip, sizeof(bi));
        // Strictly smaller wins (ties keep the lower k); NaN beats non-NaN, as in
        // torch.argmin. Padding codes never win.
        const It take = ((s < bv) | ((s != s) & (bv == bv))) & valid;
        bv = take ? s : bv;
        bi = take ? kidx : bi;
        vstore(bvp, bv);
        std::memcpy(bip, &bi, sizeof(bi));
      }
    }
  }

  void run(const T* c, int64_t* idx, T* q, T* sq) const {
    const int64_t groups = (M + GROUP - 1) / GROUP;
    at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
      std::vector<T> bestv(GROUP * NR);
      std::vector<IElem> besti(GROUP * NR);
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t m0 = g * GROUP;
        const int64_t rows = std::min<int64_t>(GROUP, M - m0);
        std::fill(bestv.begin(), bestv.end(), std::numeric_limits<T>::infinity());
        std::fill(besti.begin(), besti.end(), IElem(0));
        for (int64_t kc = 0; kc < Kp; kc += Kc) {
          const int64_t kend = std::min(Kp, kc + Kc);
          for (int64_t r0 = 0; r0 < rows; r0 += MR) {
            const T* zr[MR];
            // Rows past M repeat the last row: wasted work, never written back.
            for (int r = 0; r < MR; ++r)
              zr[r] = z + std::min<int64_t>(m0 + r0 + r, M - 1) * D;
            for (int64_t k0 = kc; k0 < kend; k0 += NR)
              tile(zr, k0, bestv.data() + r0 * NR, besti.data() + r0 * NR);
          }
        }
        for (int64_t r = 0; r < rows; ++r) finish(m0 + r, bestv.data() + r * NR,
                                                  besti.data() + r * NR, c, idx, q, sq);
      }
    });
  }

  // Reduce one row's per-lane bests, then write index, code and exact distance.
  inline void finish(int64_t m, const T* bv, const IElem* bi, const T* c, int64_t* idx,
                     T* q, T* sq) const {
    T best = bv[0];
    int64_t bk = bi[0];
    for (int j = 1; j < NR; ++j) {
      const T s = bv[j];
      const int64_t k = bi[j];
      const bool s_nan = s != s, b_nan = best != best;
      if (b_nan ? (s_nan && k < bk) : (s_nan || s < best || (s == best && k < bk))) {
        best = s;
        bk = k;
      }
    }
    idx[m] = bk;
    const T* zm = z + m * D;
    const T* cm = c + bk * D;
    T* qm = q + m * D;
    T acc = 0;
    for (int64_t d = 0; d < D; ++d) {
      const T diff = zm[d] - cm[d];
      acc += diff * diff;
      qm[d] = cm[d];
    }
    sq[m] = acc;
  }
};

template <typename T>
void backward_impl(const T* gq, const T* gsq, const T* z, const T* c, const int64_t* idx,
                   bool st, int64_t M, int64_t D, T* gz, T* gc) {
  // Parallel over column strips: each task owns columns [d0, d1) of both gz and gc,
  // so the scatter into gc needs no atomics or per-thread copies.
  constexpr int64_t strip = VecT<T>::lanes;
  const int64_t strips = (D + strip - 1) / strip;
  at::parallel_for(0, strips, 1, [&](int64_t s0, int64_t s1) {
    const int64_t d0 = s0 * strip, d1 = std::min(D, s1 * strip);
    for (int64_t m = 0; m < M; ++m) {
      const int64_t k = idx[m];
      const T g2 = gsq ? T(2) * gsq[m] : T(0);
      const T* zm = z + m * D;
      const T* cm = c + k * D;
      const T* gqm = gq ? gq + m * D : nullptr;
      T* gzm = gz + m * D;
      T* gcm = gc + k * D;
      for (int64_t d = d0; d < d1; ++d) {
        const T t = g2 * (zm[d] - cm[d]);
        const T q = gqm ? gqm[d] : T(0);
        gzm[d] = q + t;
        gcm[d] += (st ? q : T(0)) - t;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> codebook_quantize_cpu(
    const at::Tensor& z_, const at::Tensor& codebook_, bool /*straight_through_codebook*/) {
  TORCH_CHECK(z_.dim() == 2, "codebook_quantize: z must be (M, D), got ", z_.sizes());
  TORCH_CHECK(codebook_.dim() == 2 && codebook_.size(0) > 0 &&
                  codebook_.size(1) == z_.size(1),
              "codebook_quantize: codebook must be (K>0, D=", z_.size(1), "), got ",
              codebook_.sizes());
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const int64_t M = z.size(0), K = c.size(0), D = z.size(1);
  at::Tensor q = at::empty({M, D}, z.options());
  at::Tensor sq = at::empty({M}, z.options());
  at::Tensor idx = at::empty({M}, z.options().dtype(at::kLong));
  if (M == 0) return {q, sq, idx};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "codebook_quantize_cpu", [&] {
    Search<scalar_t> s(z.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), M, K, D);
    s.run(c.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), q.data_ptr<scalar_t>(),
          sq.data_ptr<scalar_t>());
  });
  return {q, sq, idx};
}

std::tuple<at::Tensor, at::Tensor> codebook_quantize_backward_cpu(
    const c10::optional<at::Tensor>& grad_q, const c10::optional<at::Tensor>& grad_sq,
    const at::Tensor& z_, const at::Tensor& codebook_, const at::Tensor& indices_,
    bool straight_through_codebook) {
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const at::Tensor idx = indices_.contiguous();
  const int64_t M = z.size(0), D = z.size(1);
  at::Tensor gz = at::empty_like(z);
  at::Tensor gc = at::zeros_like(c);
  at::Tensor gq, gs;
  if (grad_q.has_value()) gq = grad_q->contiguous();
  if (grad_sq.has_value()) gs = grad_sq->contiguous();
  if (M == 0) return {gz, gc};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "codebook_quantize_backward_cpu", [&] {
    backward_impl<scalar_t>(gq.defined() ? gq.data_ptr<scalar_t>() : nullptr,
                            gs.defined() ? gs.data_ptr<scalar_t>() : nullptr,
                            z.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                            idx.data_ptr<int64_t>(), straight_through_codebook, M, D,
                            gz.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>());
  });
  return {gz, gc};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("codebook_quantize", &codebook_quantize_cpu);
  m.impl("codebook_quantize_backward", &codebook_quantize_backward_cpu);
}

}  // namespace solid_ext::cpu
