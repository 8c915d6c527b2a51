// CPU ops solid_ext::generated_linear and its backward: argument checks (validate.h),
// packing of the generator map, then the batch split over threads running the SIMD
// kernels of the variant chosen for this CPU (kernels_impl.h, isa.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../validate.h"
#include "isa.h"

namespace solid_ext::cpu {
namespace {

constexpr const char* kOp = "generated_linear";
constexpr const char* kBackwardOp = "generated_linear_backward";

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Samples per task: about 64K multiply-adds of generation, so small batches stay on
// one thread.
int64_t grain(const validate::GLDims& d) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, d.I * d.O * std::max<int64_t>(d.C, 1)));
}

// t (..., O) zero-padded to (..., Op) (t itself, contiguous, when Op == O).
at::Tensor pad_cols(const at::Tensor& t, int64_t O, int64_t Op) {
  if (Op == O) return t.contiguous();
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  sizes.back() = Op;
  at::Tensor out = at::zeros(sizes, t.options());
  out.narrow(-1, 0, O).copy_(t);
  return out;
}

// gen_weight (I*O, C), row i*O + o -> (I, C, Op): the rows of one i contiguous per k.
at::Tensor pack_gen(const at::Tensor& gen, const validate::GLDims& d, int64_t Op) {
  return pad_cols(gen.reshape({d.I, d.O, d.C}).permute({0, 2, 1}), d.O, Op);
}

template <typename T>
GLArgs<T> args(const at::Tensor& x, const at::Tensor& c, const at::Tensor& gp,
               const at::Tensor& base, c10::optional<double> tau, const validate::GLDims& d,
               int64_t Op) {
  GLArgs<T> a{};
  a.x = x.data_ptr<T>();
  a.c = c.data_ptr<T>();
  a.gp = gp.data_ptr<T>();
  a.base = base.data_ptr<T>();
  a.clip = tau.has_value();
  a.tau = a.clip ? validate::tau_as<T>(*tau) : T(0);
  a.L = d.L;
  a.I = d.I;
  a.O = Op;
  a.C = d.C;
  return a;
}

at::Tensor generated_linear_cpu(const at::Tensor& x_, const at::Tensor& cond_,
                                const at::Tensor& gen_, const at::Tensor& base_,
                                c10::optional<double> tau) {
  const auto d = validate::generated_linear(kOp, x_, cond_, gen_, base_, tau, validate::kCpu);
  if (d.B * d.L * d.O == 0) return at::zeros({d.B, d.L, d.O}, x_.options());
  at::Tensor y;
  AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), kOp, [&] {
    const KernelOps<scalar_t>& ops = active_ops<scalar_t>();
    const int64_t Op = round_up(d.O, ops.gl_lanes);
    const at::Tensor x = x_.contiguous(), c = cond_.contiguous();
    const at::Tensor gp = pack_gen(gen_, d, Op), base = pad_cols(base_, d.O, Op);
    y = at::empty({d.B, d.L, Op}, x.options());
    GLArgs<scalar_t> a = args<scalar_t>(x, c, gp, base, tau, d, Op);
    a.y = y.data_ptr<scalar_t>();
    at::parallel_for(0, d.B, grain(d), [&](int64_t b0, int64_t b1) { ops.gl_forward(a, b0, b1); });
  });
  return y.size(2) == d.O ? y : y.narrow(2, 0, d.O).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> generated_linear_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& cond_,
    const at::Tensor& gen_, const at::Tensor& base_, c10::optional<double> tau, bool need_dx,
    bool need_dcond, bool need_dgen, bool need_dbase) {
  const auto d = validate::generated_linear(kBackwardOp, x_, cond_, gen_, base_, tau,
                                            validate::kCpu, &grad_);
  const auto none = x_.new_empty({0});
  at::Tensor dx = need_dx ? at::zeros_like(x_, at::MemoryFormat::Contiguous) : none;
  at::Tensor dc = need_dcond ? at::zeros_like(cond_, at::MemoryFormat::Contiguous) : none;
  at::Tensor dgen = need_dgen ? at::zeros_like(gen_, at::MemoryFormat::Contiguous) : none;
  at::Tensor dbase = need_dbase ? at::zeros_like(base_, at::MemoryFormat::Contiguous) : none;
  // Nothing to compute: every gradient asked for is zero (or has no element).
  if (d.B * d.L * d.I * d.O == 0) return {dx, dc, dgen, dbase};
  AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), kBackwardOp, [&] {
    const KernelOps<scalar_t>& ops = active_ops<scalar_t>();
    const int64_t Op = round_up(d.O, ops.gl_lanes);
    const at::Tensor x = x_.contiguous(), c = cond_.contiguous();
    const at::Tensor gp = pack_gen(gen_, d, Op), base = pad_cols(base_, d.O, Op);
    const at::Tensor g = pad_cols(grad_, d.O, Op);
    GLArgs<scalar_t> a = args<scalar_t>(x, c, gp, base, tau, d, Op);
    a.g = g.data_ptr<scalar_t>();
    const at::Tensor gq = need_dcond ? pad_cols(gen_.t().reshape({d.C, d.I, d.O}), d.O, Op) : none;
    a.gq = need_dcond ? gq.data_ptr<scalar_t>() : nullptr;
    a.dx = need_dx ? dx.data_ptr<scalar_t>() : nullptr;
    a.dc = need_dcond ? dc.data_ptr<scalar_t>() : nullptr;
    // The generator's gradients sum over the batch: one partial sum per task, added
    // in a fixed order afterwards (the result depends on the thread count only).
    const bool sums = need_dgen || need_dbase;
    const int64_t tasks =
        std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), d.B / grain(d)));
    const int64_t part = d.I * d.C * Op + d.I * Op;
    at::Tensor parts = sums ? at::zeros({tasks, part}, x.options()) : none;
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> scratch(ops.gl_scratch_elems(d.L, d.I, Op));
      for (int64_t t = t0; t < t1; ++t) {
        GLArgs<scalar_t> at = a;
        if (sums) {
          scalar_t* p = parts.data_ptr<scalar_t>() + t * part;
          at.dgp = need_dgen ? p : nullptr;
          at.dbase = need_dbase ? p + d.I * d.C * Op : nullptr;
        }
        ops.gl_backward(at, d.B * t / tasks, d.B * (t + 1) / tasks, scratch.data());
      }
    });
    if (sums) {
      const at::Tensor total = tasks == 1 ? parts[0] : parts.sum(0);
      if (need_dgen)
        dgen.copy_(total.narrow(0, 0, d.I * d.C * Op)
                       .view({d.I, d.C, Op})
                       .narrow(2, 0, d.O)
                       .permute({0, 2, 1})
                       .reshape({d.I * d.O, d.C}));
      if (need_dbase)
        dbase.copy_(total.narrow(0, d.I * d.C * Op, d.I * Op).view({d.I, Op}).narrow(1, 0, d.O));
    }
  });
  return {dx, dc, dgen, dbase};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("generated_linear", &generated_linear_cpu);
  m.impl("generated_linear_backward", &generated_linear_backward_cpu);
}

}  // namespace solid_ext::cpu
