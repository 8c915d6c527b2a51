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

template <typename T>
inline Vec<T> vclip(Vec<T> v, Vec<T> lo, Vec<T> hi) {
  // Comparisons with NaN are false, so NaN passes through unchanged.
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Horizontal sum by halving (64 -> 32 -> 16 bytes), then four scalar adds: a few
// vector instructions instead of a lane-by-lane loop (it runs once per (l, i) pair).
template <typename T>
inline T hsum(Vec<T> v) {
  typedef T H32 __attribute__((vector_size(32)));
  typedef T H16 __attribute__((vector_size(16)));
  H32 a, b;
  std::memcpy(&a, &v, 32);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + 32, 32);
  a += b;
  H16 c, e;
  std::memcpy(&c, &a, 16);
  std::memcpy(&e, reinterpret_cast<const char*>(&a) + 16, 16);
  c += e;
  T s = 0;
  for (int k = 0; k < int(16 / sizeof(T)); ++k) s += c[k];
  return s;
}

struct Dims {
  int64_t B, L, I, O;
};

// Pointers of one sample.
template <typename T>
struct Sample {
  const T* x;   // (L, I)
  const T* w;   // (I, O)
  const T* bw;  // (I, O) or null
  const T* g;   // (L, O) grad of the output (backward only)
};

// Forward micro-kernel: rows [l0, l0+LB) x columns [o0, o0 + NV*V) of y, accumulated
// in registers over all I; the combined weight row exists only in registers.
template <typename T, int LB, int NV>
inline void fwd_tile(const Sample<T>& s, const T* brow, T tau, T* y, const Dims& d,
                     int64_t l0, int64_t o0) {
  constexpr int V = VecT<T>::lanes;
  const Vec<T> lo = vsplat<T>(-tau), hi = vsplat<T>(tau);
  Vec<T> acc[LB][NV];
  for (int v = 0; v < NV; ++v) {
    const Vec<T> b = vload(brow + o0 + v * V);
    for (int l = 0; l < LB; ++l) acc[l][v] = b;
  }
  for (int64_t i = 0; i < d.I; ++i) {
    Vec<T> r[NV];
    const T* wr = s.w + i * d.O + o0;
    for (int v = 0; v < NV; ++v) r[v] = vload(wr + v * V);
    if (s.bw) {
      const T* br = s.bw + i * d.O + o0;
      for (int v = 0; v < NV; ++v) r[v] += vclip<T>(vload(br + v * V), lo, hi);
    }
    for (int l = 0; l < LB; ++l) {
      const T xs = s.x[(l0 + l) * d.I + i];
      for (int v = 0; v < NV; ++v) acc[l][v] += r[v] * xs;
    }
  }
  for (int l = 0; l < LB; ++l)
    for (int v = 0; v < NV; ++v) vstore(y + (l0 + l) * d.O + o0 + v * V, acc[l][v]);
}

template <typename T, int NV>
inline void fwd_cols(const Sample<T>& s, const T* brow, T tau, T* y, const Dims& d,
                     int64_t o0) {
  constexpr int LB = 4;
  int64_t l0 = 0;
  for (; l0 + LB <= d.L; l0 += LB) fwd_tile<T, LB, NV>(s, brow, tau, y, d, l0, o0);
  switch (d.L - l0) {
    case 3: fwd_tile<T, 3, NV>(s, brow, tau, y, d, l0, o0); break;
    case 2: fwd_tile<T, 2, NV>(s, brow, tau, y, d, l0, o0); break;
    case 1: fwd_tile<T, 1, NV>(s, brow, tau, y, d, l0, o0); break;
    default: break;
  }
}

template <typename T>
void forward_impl(const T* x, const T* w, const T* bias, const T* bw, const T* bb,
                  T tau, T* y, Dims d) {
  constexpr int V = VecT<T>::lanes;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d.I * d.O));
  at::parallel_for(0, d.B, grain, [&](int64_t b0, int64_t b1) {
    std::vector<T> brow(d.O);
    for (int64_t b = b0; b < b1; ++b) {
      const Sample<T> s{x + b * d.L * d.I, w + b * d.I * d.O,
                        bw ? bw + b * d.I * d.O : nullptr, nullptr};
      T* yb = y + b * d.L * d.O;
      for (int64_t o = 0; o < d.O; ++o) {
        T v = bias ? bias[b * d.O + o] : T(0);
        if (bb) v += clip(bb[b * d.O + o], tau);
        brow[o] = v;
      }
      int64_t o0 = 0;
      for (; o0 + 4 * V <= d.O; o0 += 4 * V) fwd_cols<T, 4>(s, brow.data(), tau, yb, d, o0);
      for (; o0 + V <= d.O; o0 += V) fwd_cols<T, 1>(s, brow.data(), tau, yb, d, o0);
      // Scalar tail for the last O % V columns.
      for (int64_t l = 0; l < d.L; ++l)
        for (int64_t o = o0; o < d.O; ++o) {
          T acc = brow[o];
          for (int64_t i = 0; i < d.I; ++i) {
            T wv = s.w[i * d.O + o];
            if (s.bw) wv += clip(s.bw[i * d.O + o], tau);
            acc += s.x[l * d.I + i] * wv;
          }
          yb[l * d.O + o] = acc;
        }
    }
  });
}

// Backward for one row i of one sample, columns [o0, o0 + NV*V):
// partial dx[l, i] over these columns (added to dxi[l]), and dW[i, cols].
template <typename T, int NV>
inline void bwd_cols(const Sample<T>& s, T tau, const Dims& d, int64_t i, int64_t o0,
                     T* dxi, T* dw, T* dbw) {
  constexpr int V = VecT<T>::lanes;
  const Vec<T> lo = vsplat<T>(-tau), hi = vsplat<T>(tau), zero = vsplat<T>(0);
  Vec<T> r[NV], bwv[NV], a[NV];
  const int64_t off = i * d.O + o0;
  for (int v = 0; v < NV; ++v) {
    r[v] = vload(s.w + off + v * V);
    bwv[v] = zero;  // read only when dbw is wanted, which implies a branch
    if (s.bw) {
      bwv[v] = vload(s.bw + off + v * V);
      r[v] += vclip<T>(bwv[v], lo, hi);
    }
    a[v] = zero;
  }
  for (int64_t l = 0; l < d.L; ++l) {
    const T xs = s.x[l * d.I + i];
    Vec<T> p = zero;
    for (int v = 0; v < NV; ++v) {
      const Vec<T> gv = vload(s.g + l * d.O + o0 + v * V);
      p += gv * r[v];
      a[v] += gv * xs;
    }
    if (dxi) dxi[l] += hsum<T>(p);
  }
  for (int v = 0; v < NV; ++v) {
    if (dw) vstore(dw + off + v * V, a[v]);
    if (dbw) {
      const auto inside = (bwv[v] >= lo) & (bwv[v] <= hi);
      vstore(dbw + off + v * V, inside ? a[v] : zero);
    }
  }
}

template <typename T>
void backward_impl(const T* g, const T* x, const T* w, const T* bw, const T* bb, T tau,
                   T* dx, T* dw, T* dbw, T* db, T* dbb, Dims d) {
  constexpr int V = VecT<T>::lanes;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d.I * d.O));
  at::parallel_for(0, d.B, grain, [&](int64_t b0, int64_t b1) {
    std::vector<T> dxi(d.L);
    for (int64_t b = b0; b < b1; ++b) {
      const Sample<T> s{x + b * d.L * d.I, w + b * d.I * d.O,
                        bw ? bw + b * d.I * d.O : nullptr, g + b * d.L * d.O};
      T* dwb = dw ? dw + b * d.I * d.O : nullptr;
      T* dbwb = dbw ? dbw + b * d.I * d.O : nullptr;
      // Bias gradients: sum of grad over L, masked for the clipped branch bias.
      for (int64_t o = 0; o < d.O; ++o) {
        T acc = 0;
        for (int64_t l = 0; l < d.L; ++l) acc += s.g[l * d.O + o];
        db[b * d.O + o] = acc;
        if (dbb) {
          const T v = bb[b * d.O + o];
          dbb[b * d.O + o] = (v >= -tau && v <= tau) ? acc : T(0);
        }
      }
      for (int64_t i = 0; i < d.I; ++i) {
        std::fill(dxi.begin(), dxi.end(), T(0));
        T* dxp = dx ? dxi.data() : nullptr;
        int64_t o0 = 0;
        for (; o0 + 4 * V <= d.O; o0 += 4 * V) bwd_cols<T, 4>(s, tau, d, i, o0, dxp, dwb, dbwb);
        for (; o0 + V <= d.O; o0 += V) bwd_cols<T, 1>(s, tau, d, i, o0, dxp, dwb, dbwb);
        // Scalar tail for the last O % V columns.
        for (int64_t o = o0; o < d.O; ++o) {
          const int64_t off = i * d.O + o;
          const T bv = s.bw ? s.bw[off] : T(0);
          const T r = s.w[off] + (s.bw ? clip(bv, tau) : T(0));
          T a = 0;
          for (int64_t l = 0; l < d.L; ++l) {
            const T gv = s.g[l * d.O + o];
            if (dxp) dxp[l] += gv * r;
            a += s.x[l * d.I + i] * gv;
          }
          if (dwb) dwb[off] = a;
          if (dbwb) dbwb[off] = (bv >= -tau && bv <= tau) ? a : T(0);
        }
        if (dx)
          for (int64_t l = 0; l < d.L; ++l) dx[(b * d.L + l) * d.I + i] = dxi[l];
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
