// Argument checks of the solid_ext ops (schemas in ops.cpp), shared by the CPU
// (cpu/*.cpp) and CUDA (cuda/ops_cuda.cu) implementations.
//
// The ops are public (torch.ops.solid_ext.*), so they cannot rely on the Python
// wrappers (solid_ext/_validate.py) having checked anything: a kernel given an
// undersized bias reads past its end, and an out-of-range code index reads and writes
// outside the codebook. Each op therefore checks ranks, every tensor's shape against
// the dims the others define, dtypes, devices, code indices and tau before it touches
// memory. Messages start with the op's name and name the argument at fault together
// with the one it was compared with. (Contiguity is not checked: the glue makes every
// input contiguous.)
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

namespace solid_ext::validate {

// The implementation whose inputs are checked: its device type and whether it has
// kernels for float16/bfloat16 (CUDA) or float32/float64 only (CPU).
struct Impl {
  c10::DeviceType device;
  bool reduced_floats;
};
inline constexpr Impl kCpu{c10::DeviceType::CPU, false};
inline constexpr Impl kCuda{c10::DeviceType::CUDA, true};

// An optional tensor argument, or null when absent (None arrives as nullopt; an
// undefined tensor inside the optional is treated the same).
inline const at::Tensor* present(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

inline void rank(const char* op, const char* name, const at::Tensor& t, int64_t dims,
                 const char* layout) {
  TORCH_CHECK(t.dim() == dims, op, ": ", name, " must be ", layout, ", a ", dims,
              "-d tensor, got shape ", t.sizes());
}

// The op's first tensor fixes dtype and device for the rest: it must be a floating
// dtype this implementation has kernels for, on this implementation's device.
inline void lead(const char* op, const char* name, const at::Tensor& t, Impl impl) {
  const auto s = t.scalar_type();
  const bool ok = s == at::kFloat || s == at::kDouble ||
                  (impl.reduced_floats && (s == at::kHalf || s == at::kBFloat16));
  TORCH_CHECK(ok, op, ": ", name, " must be a ",
              impl.reduced_floats ? "float64, float32, float16 or bfloat16"
                                  : "float32 or float64",
              " tensor for the ", c10::DeviceTypeName(impl.device, true),
              " kernels, got dtype ", s);
  TORCH_CHECK(t.device().type() == impl.device, op, ": ", name, " is on ", t.device(),
              ", not on a ", c10::DeviceTypeName(impl.device, true),
              " device (another argument is: all tensors must be on one device)");
}

// Another tensor of the op: the lead tensor's dtype and device.
inline void like(const char* op, const char* name, const at::Tensor& t, const char* lead_name,
                 const at::Tensor& lead_t) {
  TORCH_CHECK(t.scalar_type() == lead_t.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), " but ", lead_name, " has dtype ", lead_t.scalar_type(),
              "; all floating-point tensors must share one dtype");
  TORCH_CHECK(t.device() == lead_t.device(), op, ": ", name, " is on ", t.device(), " but ",
              lead_name, " is on ", lead_t.device(), "; all tensors must be on one device");
}

// t has exactly the shape `want`; `layout` spells it in the op's dims and `source`
// names the tensors the dims come from.
inline void shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef want,
                  const char* layout, const std::string& source) {
  TORCH_CHECK(t.sizes() == want, op, ": ", name, " must have shape ", layout, " = ", want,
              " to match ", source, ", got ", t.sizes());
}

// tau >= 0 and finite (the contract of dynamic_linear: clamp to [-tau, tau]).
inline void tau(const char* op, double value) {
  TORCH_CHECK(std::isfinite(value) && value >= 0, op,
              ": tau must be a non-negative finite number, got ", value);
}

// tau in the kernels' type T (float or double). A finite tau beyond float's range
// rounds to +inf (as IEEE conversion does from the midpoint between float's largest
// value and 2^128 upwards) instead of the undefined behaviour of an out-of-range cast;
// either way no float exceeds it.
template <typename T>
T tau_as(double value) {
  if constexpr (std::is_same_v<T, double>) {
    return value;
  } else {
    static_assert(std::is_same_v<T, float>, "tau_as: float or double");
    const double overflow = std::ldexp(1.0, 128) - std::ldexp(1.0, 103);
    return value >= overflow ? std::numeric_limits<float>::infinity()
                             : static_cast<float>(value);
  }
}

// ------------------------------------------------------------------ dynamic_linear

struct DLDims {
  int64_t B, L, I, O;
};

namespace detail {
// What dynamic_linear and its backward share: x, weight, the branch tensors, tau.
inline DLDims dynamic_linear_common(const char* op, const at::Tensor& x, const at::Tensor& w,
                                    const at::Tensor* bw, const at::Tensor* bb, double tau_v,
                                    Impl impl) {
  rank(op, "x", x, 3, "(B, L, N_in)");
  rank(op, "weight", w, 3, "(B, N_in, N_out)");
  lead(op, "x", x, impl);
  like(op, "weight", w, "x", x);
  const DLDims d{w.size(0), x.size(1), w.size(1), w.size(2)};
  TORCH_CHECK(x.size(0) == d.B, op, ": x ", x.sizes(), " and weight ", w.sizes(),
              " disagree on B (x is (B, L, N_in), weight (B, N_in, N_out))");
  TORCH_CHECK(x.size(2) == d.I, op, ": x ", x.sizes(), " and weight ", w.sizes(),
              " disagree on N_in (x is (B, L, N_in), weight (B, N_in, N_out))");
  const std::string from_w = c10::str("weight ", w.sizes());
  if (bw) {
    like(op, "branch_weight", *bw, "x", x);
    shape(op, "branch_weight", *bw, w.sizes(), "(B, N_in, N_out)", from_w);
  }
  if (bb) {
    like(op, "branch_bias", *bb, "x", x);
    shape(op, "branch_bias", *bb, {d.B, d.O}, "(B, N_out)", from_w);
  }
  tau(op, tau_v);
  return d;
}
}  // namespace detail

inline DLDims dynamic_linear(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& branch_weight,
                             const c10::optional<at::Tensor>& branch_bias, double tau_v,
                             Impl impl) {
  constexpr const char* op = "dynamic_linear";
  const DLDims d = detail::dynamic_linear_common(op, x, weight, present(branch_weight),
                                                 present(branch_bias), tau_v, impl);
  if (const at::Tensor* b = present(bias)) {
    like(op, "bias", *b, "x", x);
    shape(op, "bias", *b, {d.B, d.O}, "(B, N_out)", c10::str("weight ", weight.sizes()));
  }
  return d;
}

inline DLDims dynamic_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& branch_weight,
                                      const c10::optional<at::Tensor>& branch_bias,
                                      double tau_v, Impl impl) {
  constexpr const char* op = "dynamic_linear_backward";
  const DLDims d = detail::dynamic_linear_common(op, x, weight, present(branch_weight),
                                                 present(branch_bias), tau_v, impl);
  like(op, "grad", grad, "x", x);
  shape(op, "grad", grad, {d.B, d.L, d.O}, "(B, L, N_out)",
        c10::str("x ", x.sizes(), " and weight ", weight.sizes()));
  return d;
}

// ------------------------------------------------------------------ generated_linear

struct GLDims {
  int64_t B, L, I, O, C;
};

// generated_linear (grad null) or its backward: x (B, L, N_in), cond (B, C),
// gen_weight (N_in*N_out, C), base (N_in, N_out), tau absent or >= 0 and finite.
inline GLDims generated_linear(const char* op, const at::Tensor& x, const at::Tensor& cond,
                               const at::Tensor& gen, const at::Tensor& base,
                               c10::optional<double> tau_v, Impl impl,
                               const at::Tensor* grad = nullptr) {
  rank(op, "x", x, 3, "(B, L, N_in)");
  rank(op, "cond", cond, 2, "(B, C)");
  rank(op, "gen_weight", gen, 2, "(N_in*N_out, C)");
  rank(op, "base", base, 2, "(N_in, N_out)");
  lead(op, "x", x, impl);
  like(op, "cond", cond, "x", x);
  like(op, "gen_weight", gen, "x", x);
  like(op, "base", base, "x", x);
  const GLDims d{x.size(0), x.size(1), x.size(2), base.size(1), cond.size(1)};
  shape(op, "base", base, {d.I, d.O}, "(N_in, N_out)", c10::str("x ", x.sizes()));
  shape(op, "cond", cond, {d.B, d.C}, "(B, C)", c10::str("x ", x.sizes()));
  shape(op, "gen_weight", gen, {d.I * d.O, d.C}, "(N_in*N_out, C)",
        c10::str("base ", base.sizes(), " and cond ", cond.sizes()));
  if (tau_v.has_value()) tau(op, *tau_v);
  if (grad) {
    like(op, "grad", *grad, "x", x);
    shape(op, "grad", *grad, {d.B, d.L, d.O}, "(B, L, N_out)",
          c10::str("x ", x.sizes(), " and base ", base.sizes()));
  }
  return d;
}

// ------------------------------------------------------------------ codebook_quantize

struct CQDims {
  int64_t M, K, D;
};

namespace detail {
inline CQDims codebook_common(const char* op, const at::Tensor& z, const at::Tensor& c,
                              Impl impl) {
  rank(op, "z", z, 2, "(M, D)");
  rank(op, "codebook", c, 2, "(K, D)");
  lead(op, "z", z, impl);
  like(op, "codebook", c, "z", z);
  TORCH_CHECK(c.size(1) == z.size(1), op, ": z ", z.sizes(), " and codebook ", c.sizes(),
              " disagree on D (z is (M, D), codebook (K, D))");
  return {z.size(0), c.size(0), z.size(1)};
}
}  // namespace detail

inline CQDims codebook_quantize(const at::Tensor& z, const at::Tensor& codebook, Impl impl) {
  constexpr const char* op = "codebook_quantize";
  const CQDims d = detail::codebook_common(op, z, codebook, impl);
  TORCH_CHECK(d.K > 0, op, ": codebook must have at least one code (K > 0), got shape ",
              codebook.sizes());
  return d;
}

// Also checks (on the CPU) that every index lies in [0, K): the backward gathers
// codebook rows and scatters into the codebook gradient through them.
inline CQDims codebook_quantize_backward(const c10::optional<at::Tensor>& grad_q,
                                         const c10::optional<at::Tensor>& grad_sq,
                                         const at::Tensor& z, const at::Tensor& codebook,
                                         const at::Tensor& indices, Impl impl) {
  constexpr const char* op = "codebook_quantize_backward";
  const CQDims d = detail::codebook_common(op, z, codebook, impl);
  const std::string from_z = c10::str("z ", z.sizes());
  if (const at::Tensor* g = present(grad_q)) {
    like(op, "grad_q", *g, "z", z);
    shape(op, "grad_q", *g, {d.M, d.D}, "(M, D)", from_z);
  }
  if (const at::Tensor* g = present(grad_sq)) {
    like(op, "grad_sq", *g, "z", z);
    shape(op, "grad_sq", *g, {d.M}, "(M)", from_z);
  }
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got dtype ",
              indices.scalar_type());
  TORCH_CHECK(indices.device() == z.device(), op, ": indices is on ", indices.device(),
              " but z is on ", z.device(), "; all tensors must be on one device");
  shape(op, "indices", indices, {d.M}, "(M)", from_z);
  // On CUDA the backward kernel skips an out-of-range index instead (a host check
  // would sync the device on every backward): memory-safe, but no error is raised.
  if (d.M > 0 && impl.device == c10::DeviceType::CPU) {
    // A plain scan: three dispatched ops (aminmax, stack, copy) cost more than the whole
    // backward of a small batch.
    const at::Tensor idx = indices.contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    int64_t lo = p[0], hi = p[0];
    for (int64_t m = 1; m < d.M; ++m) {
      lo = std::min(lo, p[m]);
      hi = std::max(hi, p[m]);
    }
    TORCH_CHECK(lo >= 0 && hi < d.K, op, ": indices must lie in [0, K) = [0, ", d.K,
                ") for codebook ", codebook.sizes(), ", got values in [", lo, ", ", hi, "]");
  }
  return d;
}

// sparse_row_update: weight (N, D) and its state updated in place (so contiguous),
// indices (nnz) in [0, N) or absent (grad (N, D)), grad (nnz, D), finite hyper-
// parameters. Returns whether the kind is rowwise_adagrad.
inline bool sparse_row_update(const at::Tensor& weight, const at::Tensor& state1,
                              const at::Tensor& state2, const c10::optional<at::Tensor>& indices,
                              const at::Tensor& grad, const std::string& kind, double lr,
                              double beta1, double beta2, double eps, double weight_decay,
                              int64_t step, Impl impl) {
  const char* op = "sparse_row_update";
  TORCH_CHECK(kind == "lazy_adam" || kind == "rowwise_adagrad", op,
              ": kind must be 'lazy_adam' or 'rowwise_adagrad', got '", kind, "'");
  const bool adagrad = kind == "rowwise_adagrad";
  lead(op, "weight", weight, impl);
  rank(op, "weight", weight, 2, "(N, D)");
  const int64_t N = weight.size(0), D = weight.size(1);
  like(op, "grad", grad, "weight", weight);
  like(op, "state1", state1, "weight", weight);
  like(op, "state2", state2, "weight", weight);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"weight", &weight},
                                {"state1", &state1},
                                {"state2", &state2}})
    TORCH_CHECK(t->is_contiguous(), op, ": ", name,
                " must be contiguous (it is updated in place)");
  if (adagrad) {
    shape(op, "state1", state1, {N}, "(N)", "weight (rowwise_adagrad)");
    shape(op, "state2", state2, {0}, "(0)", "kind rowwise_adagrad (unused)");
  } else {
    shape(op, "state1", state1, {N, D}, "(N, D)", "weight (lazy_adam)");
    shape(op, "state2", state2, {N, D}, "(N, D)", "weight (lazy_adam)");
  }
  if (const at::Tensor* idx = present(indices)) {
    TORCH_CHECK(idx->scalar_type() == at::kLong && idx->dim() == 1, op,
                ": indices must be a 1-d int64 tensor, got dtype ", idx->scalar_type(),
                " and shape ", idx->sizes());
    TORCH_CHECK(idx->device() == weight.device(), op, ": indices is on ", idx->device(),
                " but weight is on ", weight.device(), "; all tensors must be on one device");
    shape(op, "grad", grad, {idx->size(0), D}, "(nnz, D)", "indices and weight");
    if (idx->numel() > 0 && impl.device == c10::DeviceType::CPU) {
      const at::Tensor ic = idx->contiguous();
      const int64_t* p = ic.data_ptr<int64_t>();
      int64_t lo = p[0], hi = p[0];
      for (int64_t j = 1; j < ic.numel(); ++j) {
        lo = std::min(lo, p[j]);
        hi = std::max(hi, p[j]);
      }
      TORCH_CHECK(lo >= 0 && hi < N, op, ": indices must lie in [0, N) = [0, ", N,
                  ") for weight ", weight.sizes(), ", got values in [", lo, ", ", hi, "]");
    }
  } else {
    shape(op, "grad", grad, {N, D}, "(N, D)", "weight (indices is None)");
  }
  const auto finite = [&](const char* name, double v, double lo, bool open_lo, double hi) {
    const bool ok = std::isfinite(v) && (open_lo ? v > lo : v >= lo) && v < hi;
    TORCH_CHECK(ok, op, ": ", name, " must be a finite number ", open_lo ? "> " : ">= ", lo,
                hi < std::numeric_limits<double>::infinity() ? " and < 1" : "", ", got ", v);
  };
  const double inf = std::numeric_limits<double>::infinity();
  finite("lr", lr, 0, false, inf);
  finite("beta1", beta1, 0, false, 1);
  finite("beta2", beta2, 0, false, 1);
  finite("eps", eps, 0, true, inf);
  finite("weight_decay", weight_decay, 0, false, inf);
  TORCH_CHECK(step >= 1, op, ": step must be >= 1 (Adam's bias correction), got ", step);
  return adagrad;
}

// item_softmax_xent (and its backward's common arguments): hidden (B, D), table (N, D)
// with N >= 1, target (B) int64 in [0, N), label_smoothing in [0, 1], chunk >= 1.
inline void item_softmax(const char* op, const at::Tensor& hidden, const at::Tensor& table,
                         const at::Tensor& target, double label_smoothing, int64_t chunk,
                         Impl impl) {
  lead(op, "hidden", hidden, impl);
  rank(op, "hidden", hidden, 2, "(B, D)");
  like(op, "table", table, "hidden", hidden);
  rank(op, "table", table, 2, "(N, D)");
  TORCH_CHECK(table.size(1) == hidden.size(1), op, ": table ", table.sizes(), " and hidden ",
              hidden.sizes(), " must share D (their last dim)");
  TORCH_CHECK(table.size(0) >= 1, op, ": table must have at least one row (item)");
  TORCH_CHECK(target.scalar_type() == at::kLong && target.dim() == 1, op,
              ": target must be a 1-d int64 tensor, got dtype ", target.scalar_type(),
              " and shape ", target.sizes());
  TORCH_CHECK(target.device() == hidden.device(), op, ": target is on ", target.device(),
              " but hidden is on ", hidden.device(), "; all tensors must be on one device");
  shape(op, "target", target, {hidden.size(0)}, "(B)", "hidden");
  if (target.numel() > 0 && impl.device == c10::DeviceType::CPU) {
    const at::Tensor tc = target.contiguous();
    const int64_t* p = tc.data_ptr<int64_t>();
    const int64_t N = table.size(0);
    for (int64_t j = 0; j < tc.numel(); ++j)
      TORCH_CHECK(p[j] >= 0 && p[j] < N, op, ": target must lie in [0, N) = [0, ", N,
                  ") for table ", table.sizes(), ", got ", p[j], " at position ", j);
  }
  TORCH_CHECK(std::isfinite(label_smoothing) && label_smoothing >= 0 && label_smoothing <= 1,
              op, ": label_smoothing must be in [0, 1], got ", label_smoothing);
  TORCH_CHECK(chunk >= 1, op, ": chunk must be >= 1 (items per block), got ", chunk);
}

// topk_scores: queries (B, D), table (N, D) with N >= 1, 1 <= k <= N, exclude absent or
// (B, E) int64 with every entry in [-1, N) (-1: padding). score_ranks passes k = 1.
inline void topk_scores(const char* op, const at::Tensor& queries, const at::Tensor& table,
                        int64_t k, const at::Tensor* exclude, Impl impl) {
  lead(op, "queries", queries, impl);
  rank(op, "queries", queries, 2, "(B, D)");
  like(op, "table", table, "queries", queries);
  rank(op, "table", table, 2, "(N, D)");
  TORCH_CHECK(table.size(1) == queries.size(1), op, ": table ", table.sizes(), " and queries ",
              queries.sizes(), " must share D (their last dim)");
  const int64_t N = table.size(0);
  TORCH_CHECK(N >= 1, op, ": table must have at least one row (item)");
  TORCH_CHECK(k >= 1 && k <= N, op, ": k must be in [1, N] = [1, ", N, "] for table ",
              table.sizes(), ", got ", k);
  if (!exclude) return;
  TORCH_CHECK(exclude->scalar_type() == at::kLong && exclude->dim() == 2, op,
              ": exclude must be a 2-d int64 tensor (B, E), got dtype ", exclude->scalar_type(),
              " and shape ", exclude->sizes());
  TORCH_CHECK(exclude->device() == queries.device(), op, ": exclude is on ", exclude->device(),
              " but queries is on ", queries.device(), "; all tensors must be on one device");
  TORCH_CHECK(exclude->size(0) == queries.size(0), op, ": exclude ", exclude->sizes(),
              " must have B = ", queries.size(0), " rows (queries' rows)");
  if (exclude->numel() > 0 && impl.device == c10::DeviceType::CPU) {
    const at::Tensor ec = exclude->contiguous();
    const int64_t* p = ec.data_ptr<int64_t>();
    for (int64_t j = 0; j < ec.numel(); ++j)
      TORCH_CHECK(p[j] >= -1 && p[j] < N, op, ": exclude must lie in [-1, N) = [-1, ", N,
                  ") (-1 pads a row), got ", p[j], " at flat position ", j);
  }
}

// score_ranks: as topk_scores, and target (B) int64 in [0, N).
inline void score_ranks(const char* op, const at::Tensor& queries, const at::Tensor& table,
                        const at::Tensor& target, const at::Tensor* exclude, Impl impl) {
  topk_scores(op, queries, table, 1, exclude, impl);
  TORCH_CHECK(target.scalar_type() == at::kLong && target.dim() == 1, op,
              ": target must be a 1-d int64 tensor, got dtype ", target.scalar_type(),
              " and shape ", target.sizes());
  TORCH_CHECK(target.device() == queries.device(), op, ": target is on ", target.device(),
              " but queries is on ", queries.device(), "; all tensors must be on one device");
  shape(op, "target", target, {queries.size(0)}, "(B)", "queries");
  if (target.numel() > 0 && impl.device == c10::DeviceType::CPU) {
    const at::Tensor tc = target.contiguous();
    const int64_t* p = tc.data_ptr<int64_t>();
    const int64_t N = table.size(0);
    for (int64_t j = 0; j < tc.numel(); ++j)
      TORCH_CHECK(p[j] >= 0 && p[j] < N, op, ": target must lie in [0, N) = [0, ", N,
                  ") for table ", table.sizes(), ", got ", p[j], " at position ", j);
  }
}

}  // namespace solid_ext::validate
