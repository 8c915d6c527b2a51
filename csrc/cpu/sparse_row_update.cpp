// CPU op solid_ext::sparse_row_update: a row-wise optimizer step on the rows of an
// item table that a batch touched (lazy Adam or row-wise Adagrad), fused.
//
// One pass: the gradient's row indices are sorted (a stable LSD radix sort of the
// positions by row, O(nnz) per 11-bit digit of N), the sorted run of each distinct row
// is its segment, and threads take blocks of distinct rows, each summing its segment's
// gradient rows in position order and updating weight and state in place with the
// variant chosen for this CPU (kernels_impl.h: su_rows). Nothing of size N is read,
// written or allocated: the cost grows with nnz, never with the catalog. Duplicate
// rows are summed in a fixed order, so the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "../validate.h"
#include "isa.h"

namespace solid_ext::cpu {
namespace {

constexpr int kDigitBits = 11;

// Positions 0..n-1 sorted stably by idx (values in [0, N)); also the sorted keys.
void sort_by_row(const int64_t* idx, int64_t n, int64_t N, std::vector<int64_t>& pos,
                 std::vector<int64_t>& key) {
  pos.resize(n);
  key.assign(idx, idx + n);
  std::iota(pos.begin(), pos.end(), int64_t(0));
  int bits = 0;
  while (bits < 63 && (int64_t(1) << bits) < N) ++bits;
  std::vector<int64_t> pos2(n), key2(n);
  std::array<int64_t, (1 << kDigitBits)> count{};
  for (int shift = 0; shift < bits; shift += kDigitBits) {
    count.fill(0);
    const int64_t mask = (int64_t(1) << kDigitBits) - 1;
    for (int64_t j = 0; j < n; ++j) ++count[(key[j] >> shift) & mask];
    int64_t sum = 0;
    for (auto& c : count) {
      const int64_t c0 = c;
      c = sum;
      sum += c0;
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t at = count[(key[j] >> shift) & mask]++;
      key2[at] = key[j];
      pos2[at] = pos[j];
    }
    key.swap(key2);
    pos.swap(pos2);
  }
}

template <typename T>
void update(SUArgs<T> a, int64_t U) {
  const KernelOps<T>& ops = active_ops<T>();
  // A block of rows per task: enough work to hide the task's start, small enough to
  // balance (a row is a few hundred bytes of random traffic).
  at::parallel_for(0, U, 256, [&](int64_t u0, int64_t u1) {
    std::vector<T> scratch(std::max<int64_t>(a.D, 1));
    ops.su_rows(a, u0, u1, scratch.data());
  });
}

void sparse_row_update_cpu(const at::Tensor& weight, const at::Tensor& state1,
                           const at::Tensor& state2, const c10::optional<at::Tensor>& indices,
                           const at::Tensor& grad_, c10::string_view kind, double lr,
                           double beta1, double beta2, double eps, double weight_decay,
                           int64_t step) {
  const bool adagrad = validate::sparse_row_update(
      weight, state1, state2, indices, grad_, std::string(kind), lr, beta1, beta2, eps,
      weight_decay, step, validate::kCpu);
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor* idx = validate::present(indices);
  const int64_t N = weight.size(0), D = weight.size(1);
  std::vector<int64_t> pos, rows, seg;
  int64_t U = N;
  if (idx) {
    const at::Tensor ic = idx->contiguous();
    const int64_t n = ic.numel();
    if (n == 0) return;
    sort_by_row(ic.data_ptr<int64_t>(), n, N, pos, rows);
    // Compact the sorted keys into distinct rows and their segment starts.
    seg.reserve(n + 1);
    int64_t u = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j == 0 || rows[j] != rows[u - 1]) {
        rows[u++] = rows[j];
        seg.push_back(j);
      }
    }
    seg.push_back(n);
    U = u;
  }
  if (U == 0 || D == 0) return;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "sparse_row_update_cpu", [&] {
    using T = scalar_t;
    SUArgs<T> a{};
    a.w = weight.data_ptr<T>();
    a.s1 = state1.data_ptr<T>();
    a.s2 = adagrad ? nullptr : state2.data_ptr<T>();
    a.g = grad.data_ptr<T>();
    a.pos = idx ? pos.data() : nullptr;
    a.seg = idx ? seg.data() : nullptr;
    a.rows = idx ? rows.data() : nullptr;
    a.D = D;
    a.adagrad = adagrad;
    a.lr = T(lr);
    a.beta1 = T(beta1);
    a.beta2 = T(beta2);
    a.eps = T(eps);
    a.weight_decay = T(weight_decay);
    // Bias corrections in double, as torch.optim.Adam computes them in Python floats.
    a.step_size = T(lr / (1.0 - std::pow(beta1, double(step))));
    a.inv_bc2_sqrt = T(1.0 / std::sqrt(1.0 - std::pow(beta2, double(step))));
    update<T>(a, U);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("sparse_row_update", &sparse_row_update_cpu);
}

}  // namespace solid_ext::cpu
