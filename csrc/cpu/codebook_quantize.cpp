// CPU ops solid_ext::codebook_quantize and its backward. Both check their arguments
// first (validate.h: the backward also that every index lies in [0, K)).
//
// Search: the codebook is scaled by -2, packed in panels of the kernel's code tile
// and padded once per call, its
// squared norms computed, and the K loop chunked so a chunk stays in L2 while a
// group of rows sweeps it; row groups are split over threads, each running the
// register-tiled search of the variant chosen for this CPU (kernels_impl.h, isa.h).
// The backward is a memory-bound gather/scatter, the same for every variant.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

#include "../validate.h"
#include "finite.h"
#include "isa.h"

namespace solid_ext::cpu {
namespace {

template <typename T>
void search(const T* z, const T* c, int64_t M, int64_t K, int64_t D, int64_t* idx, T* q,
            T* sq) {
  const KernelOps<T>& ops = active_ops<T>();
  const int64_t tile = ops.cq_tile;
  const int64_t Kp = (K + tile - 1) / tile * tile;
  // K chunk: about 128 KiB of transposed codebook, a multiple of the code tile.
  const int64_t target = std::max<int64_t>(tile, (128 * 1024 / sizeof(T)) / std::max<int64_t>(D, 1));
  const int64_t Kc = std::min<int64_t>(Kp, std::max<int64_t>(tile, target / tile * tile));
  std::vector<T> ct(D * Kp, T(0));
  std::vector<T> c2(Kp, std::numeric_limits<T>::infinity());
  for (int64_t k = 0; k < K; ++k) {
    T s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const T v = c[k * D + d];
      ct[(k / tile) * D * tile + d * tile + k % tile] = T(-2) * v;
      s += v * v;
    }
    c2[k] = s;
  }
  const CQArgs<T> a{z, c, ct.data(), c2.data(), M, K, D, Kp, Kc,
                    all_finite(z, M * D) && all_finite(c, K * D), idx, q, sq};
  const int64_t groups = (M + ops.cq_group - 1) / ops.cq_group;
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<char> scratch(ops.cq_scratch_bytes(D));
    ops.cq_search(a, g0, g1, scratch.data());
  });
}

template <typename T>
void backward_impl(const T* gq, const T* gsq, const T* z, const T* c, const int64_t* idx,
                   bool st, int64_t M, int64_t D, T* gz, T* gc) {
  // Parallel over column strips: each task owns columns [d0, d1) of both gz and gc,
  // so the scatter into gc needs no atomics or per-thread copies.
  constexpr int64_t strip = 64 / sizeof(T);  // one cache line
  const int64_t strips = (D + strip - 1) / strip;
  at::parallel_for(0, strips, 1, [&](int64_t s0, int64_t s1) {
    const int64_t d0 = s0 * strip, d1 = std::min(D, s1 * strip);
    for (int64_t m = 0; m < M; ++m) {
      const int64_t k = idx[m];
      const T g2 = gsq ? T(2) * gsq[m] : T(0);
      // A zero sq_dist gradient contributes exactly zero, also where z - C_k is
      // infinite (0 * inf would be NaN): an unused sq_dist must not turn quantized's
      // straight-through gradient into NaN. NaN in grad_sq still propagates.
      const bool dist = g2 != T(0);  // true for NaN
      const T* zm = z + m * D;
      const T* cm = c + k * D;
      const T* gqm = gq ? gq + m * D : nullptr;
      T* gzm = gz + m * D;
      T* gcm = gc + k * D;
      for (int64_t d = d0; d < d1; ++d) {
        const T t = dist ? g2 * (zm[d] - cm[d]) : T(0);
        const T q = gqm ? gqm[d] : T(0);
        gzm[d] = q + t;
        gcm[d] += (st ? q : T(0)) - t;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> codebook_quantize_cpu(
    const at::Tensor& z_, const at::Tensor& codebook_, bool /*straight_through_codebook*/) {
  validate::codebook_quantize(z_, codebook_, validate::kCpu);
  // The search keeps code indices in 32-bit lanes for float32.
  TORCH_CHECK(codebook_.size(0) < (int64_t(1) << 30), "codebook_quantize: codebook has ",
              codebook_.size(0), " rows; at most 2^30 are supported");
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const int64_t M = z.size(0), K = c.size(0), D = z.size(1);
  at::Tensor q = at::empty({M, D}, z.options());
  at::Tensor sq = at::empty({M}, z.options());
  at::Tensor idx = at::empty({M}, z.options().dtype(at::kLong));
  if (M == 0) return {q, sq, idx};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "codebook_quantize_cpu", [&] {
    search<scalar_t>(z.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), M, K, D,
                     idx.data_ptr<int64_t>(), q.data_ptr<scalar_t>(), sq.data_ptr<scalar_t>());
  });
  return {q, sq, idx};
}

std::tuple<at::Tensor, at::Tensor> codebook_quantize_backward_cpu(
    const c10::optional<at::Tensor>& grad_q, const c10::optional<at::Tensor>& grad_sq,
    const at::Tensor& z_, const at::Tensor& codebook_, const at::Tensor& indices_,
    bool straight_through_codebook) {
  const auto v = validate::codebook_quantize_backward(grad_q, grad_sq, z_, codebook_, indices_,
                                                      validate::kCpu);
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const at::Tensor idx = indices_.contiguous();
  const int64_t M = v.M, D = v.D;
  at::Tensor gz = at::empty_like(z);
  at::Tensor gc = at::zeros_like(c);
  at::Tensor gq, gs;
  if (validate::present(grad_q)) gq = grad_q->contiguous();
  if (validate::present(grad_sq)) gs = grad_sq->contiguous();
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
