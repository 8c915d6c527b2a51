// CPU kernels for solid_ext::dynamic_linear and its backward.
//
// One sample at a time (parallel over the batch): each row i of the sample's
// combined weight  W_i = weight_i + clamp(branch_i, -tau, tau)  is formed in a
// small scratch row and used at once, so the (B, N_in, N_out) combined weight is
// never written to memory. Backward recomputes the clip mask |branch| <= tau from
// the input instead of saving it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "vec.h"

namespace solid_ext::cpu {
namespace {

template <typename T>
inline T clip(T v, T tau) {
  // std::max/min keep NaN (a NaN first argument is returned), as torch.clamp does.
  return std::min(std::max(v, -tau), tau);
}

// Row r (length n) = w + clamp(bw, ±tau); returns w itself when there is no branch.
template <typename T>
inline const T* combined_row(const T* w, const T* bw, T tau, T* scratch, int64_t n) {
  if (bw == nullptr) return w;
  for (int64_t o = 0; o < n; ++o) scratch[o] = w[o] + clip(bw[o], tau);
  return scratch;
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int V = VecT<T>::lanes;
  Vec<T> acc = vsplat<T>(0);
  int64_t o = 0;
  for (; o + V <= n; o += V) acc += vload(a + o) * vload(b + o);
  T s = 0;
  for (int k = 0; k < V; ++k) s += acc[k];
  for (; o < n; ++o) s += a[o] * b[o];
  return s;
}

struct Dims {
  int64_t B, L, I, O;
};

template <typename T>
void forward_impl(const T* x, const T* w, const T* bias, const T* bw, const T* bb,
                  T tau, T* y, Dims d) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d.I * d.O));
  at::parallel_for(0, d.B, grain, [&](int64_t b0, int64_t b1) {
    std::vector<T> row(d.O), b_row(d.O);
    for (int64_t b = b0; b < b1; ++b) {
      const T* xb = x + b * d.L * d.I;
      const T* wb = w + b * d.I * d.O;
      const T* bwb = bw ? bw + b * d.I * d.O : nullptr;
      T* yb = y + b * d.L * d.O;
      for (int64_t o = 0; o < d.O; ++o) {
        T v = bias ? bias[b * d.O + o] : T(0);
        if (bb) v += clip(bb[b * d.O + o], tau);
        b_row[o] = v;
      }
      for (int64_t l = 0; l < d.L; ++l) std::copy_n(b_row.data(), d.O, yb + l * d.O);
      for (int64_t i = 0; i < d.I; ++i) {
        const T* r = combined_row(wb + i * d.O, bwb ? bwb + i * d.O : nullptr, tau,
                                  row.data(), d.O);
        for (int64_t l = 0; l < d.L; ++l) {
          const T xv = xb[l * d.I + i];
          T* yl = yb + l * d.O;
          for (int64_t o = 0; o < d.O; ++o) yl[o] += xv * r[o];
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const T* g, const T* x, const T* w, const T* bw, const T* bb, T tau,
                   T* dx, T* dw, T* dbw, T* db, T* dbb, Dims d) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d.I * d.O));
  at::parallel_for(0, d.B, grain, [&](int64_t b0, int64_t b1) {
    std::vector<T> row(d.O), acc(d.O);
    for (int64_t b = b0; b < b1; ++b) {
      const T* gb = g + b * d.L * d.O;
      const T* xb = x + b * d.L * d.I;
      const T* wb = w + b * d.I * d.O;
      const T* bwb = bw ? bw + b * d.I * d.O : nullptr;
      // Bias gradients: sum of grad over L, masked for the clipped branch bias.
      for (int64_t o = 0; o < d.O; ++o) {
        T s = 0;
        for (int64_t l = 0; l < d.L; ++l) s += gb[l * d.O + o];
        db[b * d.O + o] = s;
        if (dbb) {
          const T v = bb[b * d.O + o];
          dbb[b * d.O + o] = (v >= -tau && v <= tau) ? s : T(0);
        }
      }
      for (int64_t i = 0; i < d.I; ++i) {
        if (dx) {
          const T* r = combined_row(wb + i * d.O, bwb ? bwb + i * d.O : nullptr, tau,
                                    row.data(), d.O);
          for (int64_t l = 0; l < d.L; ++l) dx[(b * d.L + l) * d.I + i] = dot(gb + l * d.O, r, d.O);
        }
        if (dw || dbw) {
          std::fill(acc.begin(), acc.end(), T(0));
          for (int64_t l = 0; l < d.L; ++l) {
            const T xv = xb[l * d.I + i];
            const T* gl = gb + l * d.O;
            for (int64_t o = 0; o < d.O; ++o) acc[o] += xv * gl[o];
          }
          const int64_t off = (b * d.I + i) * d.O;
          if (dw) std::copy_n(acc.data(), d.O, dw + off);
          if (dbw) {
            const T* bwr = bwb + i * d.O;
            for (int64_t o = 0; o < d.O; ++o) {
              const T v = bwr[o];
              dbw[off + o] = (v >= -tau && v <= tau) ? acc[o] : T(0);
            }
          }
        }
      }
    }
  });
}

template <typename T>
const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

c10::optional<at::Tensor> opt_contig(const c10::optional<at::Tensor>& t) {
  if (!t.has_value()) return c10::nullopt;
  return t->contiguous();
}

at::Tensor dynamic_linear_cpu(const at::Tensor& x_, const at::Tensor& weight_,
                              const c10::optional<at::Tensor>& bias_,
                              const c10::optional<at::Tensor>& branch_weight_,
                              const c10::optional<at::Tensor>& branch_bias_, double tau) {
  TORCH_CHECK(x_.dim() == 3, "dynamic_linear: x must be (B, L, N_in), got ", x_.sizes());
  TORCH_CHECK(weight_.dim() == 3, "dynamic_linear: weight must be (B, N_in, N_out), got ",
              weight_.sizes());
  const at::Tensor x = x_.contiguous(), w = weight_.contiguous();
  const auto bias = opt_contig(bias_), bw = opt_contig(branch_weight_),
             bb = opt_contig(branch_bias_);
  const Dims d{w.size(0), x.size(1), w.size(1), w.size(2)};
  TORCH_CHECK(x.size(0) == d.B && x.size(2) == d.I, "dynamic_linear: x ", x.sizes(),
              " does not match weight ", w.sizes());
  at::Tensor y = at::empty({d.B, d.L, d.O}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_linear_cpu", [&] {
    forward_impl<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                           opt_ptr<scalar_t>(bias), opt_ptr<scalar_t>(bw),
                           opt_ptr<scalar_t>(bb), static_cast<scalar_t>(tau),
                           y.data_ptr<scalar_t>(), d);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
dynamic_linear_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                            const at::Tensor& weight_,
                            const c10::optional<at::Tensor>& branch_weight_,
                            const c10::optional<at::Tensor>& branch_bias_, double tau,
                            bool need_dx, bool need_dw, bool need_dbw) {
  const at::Tensor g = grad_.contiguous(), x = x_.contiguous(), w = weight_.contiguous();
  const auto bw = opt_contig(branch_weight_), bb = opt_contig(branch_bias_);
  const Dims d{w.size(0), x.size(1), w.size(1), w.size(2)};
  TORCH_CHECK(g.dim() == 3 && g.size(0) == d.B && g.size(1) == d.L && g.size(2) == d.O,
              "dynamic_linear_backward: grad ", g.sizes(), " does not match output (",
              d.B, ", ", d.L, ", ", d.O, ")");
  const bool has_dbw = need_dbw && bw.has_value();
  at::Tensor dx = need_dx ? at::empty_like(x) : x.new_empty({0});
  at::Tensor dw = need_dw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor dbw = has_dbw ? at::empty_like(w) : w.new_empty({0});
  at::Tensor db = at::empty({d.B, d.O}, g.options());
  at::Tensor dbb = bb.has_value() ? at::empty({d.B, d.O}, g.options()) : g.new_empty({0});
  if (d.B == 0) return {dx, dw, dbw, db, dbb};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_linear_backward_cpu", [&] {
    backward_impl<scalar_t>(
        g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
        opt_ptr<scalar_t>(bw), opt_ptr<scalar_t>(bb), static_cast<scalar_t>(tau),
        need_dx ? dx.data_ptr<scalar_t>() : nullptr,
        need_dw ? dw.data_ptr<scalar_t>() : nullptr,
        has_dbw ? dbw.data_ptr<scalar_t>() : nullptr, db.data_ptr<scalar_t>(),
        bb.has_value() ? dbb.data_ptr<scalar_t>() : nullptr, d);
  });
  return {dx, dw, dbw, db, dbb};
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("dynamic_linear", &dynamic_linear_cpu);
  m.impl("dynamic_linear_backward", &dynamic_linear_backward_cpu);
}

}  // namespace solid_ext::cpu
