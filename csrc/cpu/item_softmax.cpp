// CPU ops solid_ext::item_softmax_xent and its backward: softmax cross-entropy of
// query rows against every row of an item table, never holding the (B, N) logits.
//
// Items are visited in blocks of `chunk`: one (B, chunk) block of logits from a GEMM,
// folded into a running max and sum of exponentials per row (an online log-sum-exp).
// The backward recomputes each block, turns it into probabilities with the saved
// log-sum-exp, and feeds two GEMMs (dhidden += P T_c, dtable_c = P^T H); the target
// and label-smoothing terms are rank-1 or row-sparse and added outside the loop.
// Scratch is two (B, chunk) blocks whatever N. The GEMMs and the exponentials are
// ATen's, which pick their own kernels for this CPU (BLAS, vectorised exp), so this
// file has no per-ISA variant of its own: it is glue that bounds memory.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "../validate.h"

namespace solid_ext::cpu {
namespace {

// Mean of the table's rows (D), the smoothing term's item side.
at::Tensor row_mean(const at::Tensor& table) { return table.mean(0); }

std::tuple<at::Tensor, at::Tensor> item_softmax_xent_cpu(const at::Tensor& hidden_,
                                                          const at::Tensor& table_,
                                                          const at::Tensor& target,
                                                          double label_smoothing,
                                                          int64_t chunk) {
  validate::item_softmax("item_softmax_xent", hidden_, table_, target, label_smoothing, chunk,
                         validate::kCpu);
  const at::Tensor hidden = hidden_.contiguous(), table = table_.contiguous();
  const int64_t B = hidden.size(0), N = table.size(0);
  const double s = label_smoothing;
  at::Tensor lse = at::empty({B}, hidden.options());
  if (B == 0) return {at::empty({0}, hidden.options()), lse};
  const int64_t c = std::min(chunk, N);
  at::Tensor block = at::empty({B, c}, hidden.options());
  at::Tensor run_max = at::full({B}, -std::numeric_limits<double>::infinity(), hidden.options());
  at::Tensor run_sum = at::zeros({B}, hidden.options());
  for (int64_t j0 = 0; j0 < N; j0 += c) {
    const int64_t n = std::min(c, N - j0);
    at::Tensor l = block.narrow(1, 0, n);
    at::mm_out(l, hidden, table.narrow(0, j0, n).t());
    const at::Tensor m = at::maximum(run_max, std::get<0>(l.max(1)));
    // exp(-inf - -inf) is NaN: a row whose maximum is still -inf has sum 0.
    const at::Tensor rescale = at::where(run_max == m, at::ones_like(m), at::exp(run_max - m));
    l.sub_(m.unsqueeze(1)).exp_();
    run_sum.mul_(rescale).add_(l.sum(1));
    run_max = m;
  }
  lse = run_max + run_sum.log();
  const at::Tensor tgt = (hidden * table.index_select(0, target)).sum(1);
  at::Tensor loss = lse - (1.0 - s) * tgt;
  if (s != 0.0) loss = loss - s * at::mv(hidden, row_mean(table));
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> item_softmax_xent_backward_cpu(
    const at::Tensor& grad_loss_, const at::Tensor& hidden_, const at::Tensor& table_,
    const at::Tensor& target, const at::Tensor& lse_, double label_smoothing, int64_t chunk,
    bool need_dhidden, bool need_dtable) {
  const char* op = "item_softmax_xent_backward";
  validate::item_softmax(op, hidden_, table_, target, label_smoothing, chunk, validate::kCpu);
  validate::like(op, "grad_loss", grad_loss_, "hidden", hidden_);
  validate::like(op, "lse", lse_, "hidden", hidden_);
  validate::shape(op, "grad_loss", grad_loss_, {hidden_.size(0)}, "(B)", "hidden");
  validate::shape(op, "lse", lse_, {hidden_.size(0)}, "(B)", "hidden");
  const at::Tensor hidden = hidden_.contiguous(), table = table_.contiguous();
  const at::Tensor g = grad_loss_.contiguous(), lse = lse_.contiguous();
  const int64_t B = hidden.size(0), N = table.size(0);
  const double s = label_smoothing;
  at::Tensor dh = need_dhidden ? at::zeros_like(hidden) : hidden.new_empty({0});
  at::Tensor dt = need_dtable ? at::empty_like(table) : table.new_empty({0});
  if (!need_dhidden && !need_dtable) return {dh, dt};
  if (B == 0) {
    if (need_dtable) dt.zero_();
    return {dh, dt};
  }
  const int64_t c = std::min(chunk, N);
  at::Tensor block = at::empty({B, c}, hidden.options());
  const at::Tensor shift = lse.unsqueeze(1);
  const at::Tensor scale = g.unsqueeze(1);
  for (int64_t j0 = 0; j0 < N; j0 += c) {
    const int64_t n = std::min(c, N - j0);
    const at::Tensor tc = table.narrow(0, j0, n);
    at::Tensor p = block.narrow(1, 0, n);
    at::mm_out(p, hidden, tc.t());
    p.sub_(shift).exp_().mul_(scale);  // g_b softmax_bj
    if (need_dhidden) dh.addmm_(p, tc);
    if (need_dtable) {
      at::Tensor out = dt.narrow(0, j0, n);
      at::mm_out(out, p.t(), hidden);
    }
  }
  // The target term: -(1 - s) g_b at (b, target_b); the smoothing term: -s g_b / N on
  // every column (rank 1).
  const at::Tensor gt = g * (1.0 - s);
  if (need_dhidden) {
    dh.sub_(table.index_select(0, target) * gt.unsqueeze(1));
    if (s != 0.0) dh.sub_(at::outer(g * s, row_mean(table)));
  }
  if (need_dtable) {
    dt.index_add_(0, target, hidden * gt.unsqueeze(1), -1.0);
    if (s != 0.0) dt.sub_((at::mv(hidden.t(), g) * (s / double(N))).unsqueeze(0));
  }
  return {dh, dt};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("item_softmax_xent", &item_softmax_xent_cpu);
  m.impl("item_softmax_xent_backward", &item_softmax_xent_backward_cpu);
}

}  // namespace solid_ext::cpu
