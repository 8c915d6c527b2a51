// ATen binding of the CUDA kernels: implements the solid_ext schemas (csrc/ops.cpp)
// for the CUDA dispatch key. Arguments are checked first, by the same code as the
// CPU ops (../validate.h). Outputs and 0-element conventions match the fake
// kernels in solid_ext/_opmeta.py. Kernels launch on the current CUDA stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../validate.h"
#include "codebook_quantize_kernels.cuh"
#include "dynamic_linear_kernels.cuh"

namespace solid_ext::cuda {
namespace {

// ATen scalar type -> the CUDA type the kernels are instantiated for.
template <typename S>
struct Native {
  using type = S;
};
template <>
struct Native<at::Half> {
  using type = __half;
};
template <>
struct Native<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

at::Tensor contig(const c10::optional<at::Tensor>& t) {
  return validate::present(t) ? t->contiguous() : at::Tensor();
}

// tau for the kernels' DLParams (a double that tau_of<T> converts to the accumulation
// type): beyond float's range it becomes +inf, a defined conversion.
double kernel_tau(double tau, at::ScalarType s) {
  return s == at::kDouble ? tau : static_cast<double>(validate::tau_as<float>(tau));
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA error: ", cudaGetErrorString(err));
}

at::Tensor dynamic_linear_cuda(const at::Tensor& x_, const at::Tensor& weight_,
                               const c10::optional<at::Tensor>& bias_,
                               const c10::optional<at::Tensor>& branch_weight_,
                               const c10::optional<at::Tensor>& branch_bias_, double tau) {
  validate::dynamic_linear(x_, weight_, bias_, branch_weight_, branch_bias_, tau, validate::kCuda);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), w = weight_.contiguous();
  const at::Tensor bias = contig(bias_), bw = contig(branch_weight_), bb = contig(branch_bias_);
  at::Tensor y = at::empty({x.size(0), x.size(1), w.size(2)}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dynamic_linear_cuda", [&] {
    using T = typename Native<scalar_t>::type;
    DLParams<T> p{};
    p.x = ptr<T>(x);
    p.w = ptr<T>(w);
    p.bias = ptr<T>(bias);
    p.bw = ptr<T>(bw);
    p.bb = ptr<T>(bb);
    p.y = ptr<T>(y);
    p.tau = kernel_tau(tau, x.scalar_type());
    p.B = w.size(0);
    p.L = x.size(1);
    p.I = w.size(1);
    p.O = w.size(2);
    check(dynamic_linear_forward<T>(p, c10::cuda::getCurrentCUDAStream()), "dynamic_linear");
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
dynamic_linear_backward_cuda(const at::Tensor& grad_, const at::Tensor& x_,
                             const at::Tensor& weight_,
                             const c10::optional<at::Tensor>& branch_weight_,
                             const c10::optional<at::Tensor>& branch_bias_, double tau,
                             bool need_dx, bool need_dw, bool need_dbw) {
  const auto d = validate::dynamic_linear_backward(grad_, x_, weight_, branch_weight_,
                                                   branch_bias_, tau, validate::kCuda);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor g = grad_.contiguous(), x = x_.contiguous(), w = weight_.contiguous();
  const at::Tensor bw = contig(branch_weight_), bb = contig(branch_bias_);
  const int64_t B = d.B, L = d.L, I = d.I, O = d.O;
  const bool has_dbw = need_dbw && bw.defined();
  at::Tensor dx = need_dx ? at::empty_like(x) : x.new_empty({0});
  at::Tensor dw = need_dw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor dbw = has_dbw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor db = at::empty({B, O}, g.options());
  at::Tensor dbb = bb.defined() ? at::empty({B, O}, g.options()) : g.new_empty({0});
  if (need_dx && (L == 0 || I == 0)) dx.zero_();
  if (B == 0 || O == 0) return {dx, dw, dbw, db, dbb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dynamic_linear_backward_cuda", [&] {
    using T = typename Native<scalar_t>::type;
    DLParams<T> p{};
    p.x = ptr<T>(x);
    p.w = ptr<T>(w);
    p.bw = ptr<T>(bw);
    p.bb = ptr<T>(bb);
    p.g = ptr<T>(g);
    p.dx = need_dx ? ptr<T>(dx) : nullptr;
    p.dw = need_dw ? ptr<T>(dw) : nullptr;
    p.dbw = has_dbw ? ptr<T>(dbw) : nullptr;
    p.db = ptr<T>(db);
    p.dbb = bb.defined() ? ptr<T>(dbb) : nullptr;
    p.tau = kernel_tau(tau, x.scalar_type());
    p.B = B;
    p.L = L;
    p.I = I;
    p.O = O;
    check(dynamic_linear_backward<T>(p, c10::cuda::getCurrentCUDAStream()),
          "dynamic_linear_backward");
  });
  return {dx, dw, dbw, db, dbb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> codebook_quantize_cuda(
    const at::Tensor& z_, const at::Tensor& codebook_, bool /*straight_through_codebook*/) {
  validate::codebook_quantize(z_, codebook_, validate::kCuda);
  const c10::cuda::CUDAGuard guard(z_.device());
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const int64_t M = z.size(0), K = c.size(0), D = z.size(1);
  at::Tensor q = at::empty({M, D}, z.options());
  at::Tensor sq = at::empty({M}, z.options());
  at::Tensor idx = at::empty({M}, z.options().dtype(at::kLong));
  if (M == 0) return {q, sq, idx};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "codebook_quantize_cuda", [&] {
    using T = typename Native<scalar_t>::type;
    CQParams<T> p{};
    p.z = ptr<T>(z);
    p.c = ptr<T>(c);
    p.q = ptr<T>(q);
    p.sq = ptr<T>(sq);
    p.idx = idx.data_ptr<int64_t>();
    p.M = M;
    p.K = K;
    p.D = D;
    check(codebook_quantize_forward<T>(p, c10::cuda::getCurrentCUDAStream()),
          "codebook_quantize");
  });
  return {q, sq, idx};
}

std::tuple<at::Tensor, at::Tensor> codebook_quantize_backward_cuda(
    const c10::optional<at::Tensor>& grad_q, const c10::optional<at::Tensor>& grad_sq,
    const at::Tensor& z_, const at::Tensor& codebook_, const at::Tensor& indices_,
    bool straight_through_codebook) {
  const c10::cuda::CUDAGuard guard(z_.device());
  // After the guard: the index range check reduces on z's device.
  const auto d = validate::codebook_quantize_backward(grad_q, grad_sq, z_, codebook_, indices_,
                                                      validate::kCuda);
  const at::Tensor z = z_.contiguous(), c = codebook_.contiguous();
  const at::Tensor idx = indices_.contiguous(), gq = contig(grad_q), gs = contig(grad_sq);
  const int64_t M = d.M, D = d.D;
  // Accumulate the scattered codebook gradient in float (double for double).
  const auto acc_type = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor gz = at::empty_like(z);
  at::Tensor gc = at::zeros(c.sizes(), c.options().dtype(acc_type));
  if (M == 0 || D == 0) return {gz, gc.to(c.scalar_type())};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "codebook_quantize_backward_cuda", [&] {
    using T = typename Native<scalar_t>::type;
    using A = typename AccOf<T>::type;
    CQParams<T> p{};
    p.z = ptr<T>(z);
    p.c = ptr<T>(c);
    p.gq = ptr<T>(gq);
    p.gsq = ptr<T>(gs);
    p.bidx = idx.data_ptr<int64_t>();
    p.gz = ptr<T>(gz);
    p.gc = reinterpret_cast<A*>(gc.data_ptr());
    p.st = straight_through_codebook;
    p.M = M;
    p.K = c.size(0);
    p.D = D;
    check(codebook_quantize_backward<T>(p, c10::cuda::getCurrentCUDAStream()),
          "codebook_quantize_backward");
  });
  return {gz, gc.to(c.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CUDA, m) {
  m.impl("dynamic_linear", &dynamic_linear_cuda);
  m.impl("dynamic_linear_backward", &dynamic_linear_backward_cuda);
  m.impl("codebook_quantize", &codebook_quantize_cuda);
  m.impl("codebook_quantize_backward", &codebook_quantize_backward_cuda);
}

}  // namespace solid_ext::cuda
