// CPU ops solid_ext::dynamic_linear and its backward: argument checks (validate.h),
// then the batch split over threads; each thread runs the SIMD kernels of the variant chosen
// for this CPU (kernels_impl.h, isa.h) on whole samples.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../validate.h"
#include "isa.h"

namespace solid_ext::cpu {
namespace {

struct Dims {
  int64_t B, L, I, O;
};

// Samples per task: about 16K weight elements, so small problems stay on one thread.
int64_t grain(const Dims& d) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d.I * d.O)); }

// Runs the forward or backward kernel of the variant in use over the batch.
template <typename T>
void run(const DLArgs<T>& a, int64_t B, bool backward) {
  const KernelOps<T>& ops = active_ops<T>();
  const auto kernel = backward ? ops.dl_backward : ops.dl_forward;
  const Dims d{B, a.L, a.I, a.O};
  at::parallel_for(0, B, grain(d), [&](int64_t b0, int64_t b1) {
    std::vector<T> scratch(SOLID_EXT_DL_SCRATCH_ELEMS(a.I, a.O));
    kernel(a, b0, b1, scratch.data());
  });
}

template <typename T>
const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

c10::optional<at::Tensor> opt_contig(const c10::optional<at::Tensor>& t) {
  if (!validate::present(t)) return c10::nullopt;
  return t->contiguous();
}

at::Tensor dynamic_linear_cpu(const at::Tensor& x_, const at::Tensor& weight_,
                              const c10::optional<at::Tensor>& bias_,
                              const c10::optional<at::Tensor>& branch_weight_,
                              const c10::optional<at::Tensor>& branch_bias_, double tau) {
  const auto v = validate::dynamic_linear(x_, weight_, bias_, branch_weight_, branch_bias_, tau,
                                          validate::kCpu);
  const Dims d{v.B, v.L, v.I, v.O};
  const at::Tensor x = x_.contiguous(), w = weight_.contiguous();
  const auto bias = opt_contig(bias_), bw = opt_contig(branch_weight_),
             bb = opt_contig(branch_bias_);
  at::Tensor y = at::empty({d.B, d.L, d.O}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_linear_cpu", [&] {
    DLArgs<scalar_t> a{};
    a.x = x.data_ptr<scalar_t>();
    a.w = w.data_ptr<scalar_t>();
    a.bias = opt_ptr<scalar_t>(bias);
    a.bw = opt_ptr<scalar_t>(bw);
    a.bb = opt_ptr<scalar_t>(bb);
    a.tau = validate::tau_as<scalar_t>(tau);
    a.L = d.L;
    a.I = d.I;
    a.O = d.O;
    a.y = y.data_ptr<scalar_t>();
    run(a, d.B, false);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
dynamic_linear_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                            const at::Tensor& weight_,
                            const c10::optional<at::Tensor>& branch_weight_,
                            const c10::optional<at::Tensor>& branch_bias_, double tau,
                            bool need_dx, bool need_dw, bool need_dbw) {
  const auto v = validate::dynamic_linear_backward(grad_, x_, weight_, branch_weight_,
                                                   branch_bias_, tau, validate::kCpu);
  const Dims d{v.B, v.L, v.I, v.O};
  const at::Tensor g = grad_.contiguous(), x = x_.contiguous(), w = weight_.contiguous();
  const auto bw = opt_contig(branch_weight_), bb = opt_contig(branch_bias_);
  const bool has_dbw = need_dbw && bw.has_value();
  at::Tensor dx = need_dx ? at::empty_like(x) : x.new_empty({0});
  at::Tensor dw = need_dw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor dbw = has_dbw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor db = at::empty({d.B, d.O}, g.options());
  at::Tensor dbb = bb.has_value() ? at::empty({d.B, d.O}, g.options()) : g.new_empty({0});
  if (d.B == 0) return {dx, dw, dbw, db, dbb};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_linear_backward_cpu", [&] {
    DLArgs<scalar_t> a{};
    a.x = x.data_ptr<scalar_t>();
    a.w = w.data_ptr<scalar_t>();
    a.bw = opt_ptr<scalar_t>(bw);
    a.bb = opt_ptr<scalar_t>(bb);
    a.g = g.data_ptr<scalar_t>();
    a.tau = validate::tau_as<scalar_t>(tau);
    a.L = d.L;
    a.I = d.I;
    a.O = d.O;
    a.dx = need_dx ? dx.data_ptr<scalar_t>() : nullptr;
    a.dw = need_dw ? dw.data_ptr<scalar_t>() : nullptr;
    a.dbw = has_dbw ? dbw.data_ptr<scalar_t>() : nullptr;
    a.db = db.data_ptr<scalar_t>();
    a.dbb = bb.has_value() ? dbb.data_ptr<scalar_t>() : nullptr;
    run(a, d.B, true);
  });
  return {dx, dw, dbw, db, dbb};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("dynamic_linear", &dynamic_linear_cpu);
  m.impl("dynamic_linear_backward", &dynamic_linear_backward_cpu);
}

}  // namespace solid_ext::cpu
