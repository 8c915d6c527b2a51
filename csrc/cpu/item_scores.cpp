// CPU ops over the scores of queries against every item, never the (B, N) matrix:
// solid_ext::topk_scores, the k items of largest inner product with each query (ties to
// the lowest index, excluded items skipped), and solid_ext::score_ranks, each query's
// target's exact rank among the items it does not exclude (ties counted against it).
//
// Work is split into tasks of (a block of query rows) x (a range of items). A task packs
// its items once, a cost its rows share, so blocks are large and the items are split
// over the threads; rows are split too only past kRowBlock of them. Each task keeps
// a reservoir of its best candidates per row (the variant's register-tiled kernel,
// kernels_impl.h); the reservoirs of a row's item ranges are merged and sorted here.
// Memory: O(B x k x ranges) besides one packed chunk per thread, never O(B x N).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../validate.h"
#include "finite.h"
#include "isa.h"

namespace solid_ext::cpu {
namespace {

constexpr int64_t kRowBlock = 4096;  // packing an item costs about 30 rows' multiply-adds

// Reservoir entries per row: a compaction (O(cap)) every cap - k appends.
inline int64_t reservoir_cap(int64_t k) { return 2 * k + 32; }

// The task grid: row_blocks blocks of rb rows x splits ranges of per_split items.
struct Plan {
  int64_t Kc, row_blocks, rb, splits, per_split;
};

template <typename T>
Plan plan(int64_t B, int64_t N, int64_t D) {
  const int64_t tile = active_ops<T>().cq_tile;
  // Items per packed chunk: about 128 KiB.
  const int64_t target = (128 * 1024 / int64_t(sizeof(T))) / std::max<int64_t>(D, 1);
  const int64_t Kc = std::max<int64_t>(tile, target / tile * tile);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunks = (N + Kc - 1) / Kc;
  int64_t row_blocks = (B + kRowBlock - 1) / kRowBlock, splits = 1;
  if (row_blocks >= threads) {
    row_blocks = (row_blocks + threads - 1) / threads * threads;  // even shares
  } else {
    splits = std::min(chunks, (threads + row_blocks - 1) / row_blocks);
  }
  row_blocks = std::min(row_blocks, B);
  return {Kc, row_blocks, (B + row_blocks - 1) / row_blocks, splits,
          (chunks + splits - 1) / splits * Kc};
}

// Runs fn(r0, r1, n0, n1, split, work) over the grid in parallel, work's buffers the
// calling thread's own; false if a task saw NaN or infinity in the table.
template <typename T, typename F>
bool run_grid(const Plan& p, int64_t B, int64_t N, int64_t D, F&& fn) {
  const KernelOps<T>& ops = active_ops<T>();
  const int64_t tasks = p.row_blocks * p.splits;
  std::vector<char> finite(tasks, 1);
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> pack(p.Kc * D), thr(p.rb);
    std::vector<int64_t> thi(p.rb);
    std::vector<char> zb(ops.cq_scratch_bytes(D) + 64);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t blk = task / p.splits, s = task % p.splits;
      const int64_t r0 = blk * p.rb, r1 = std::min(B, r0 + p.rb);
      const int64_t n0 = s * p.per_split, n1 = std::min(N, n0 + p.per_split);
      if (r0 >= r1 || n0 >= n1) continue;
      finite[task] = fn(r0, r1, n0, n1, s, pack.data(), zb.data(), thr.data(), thi.data());
    }
  });
  return std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; });
}

template <typename T>
void topk_impl(const T* q, const T* t, const int64_t* excl, int64_t B, int64_t N, int64_t D,
               int64_t E, int64_t k, T* out_v, int64_t* out_i) {
  const KernelOps<T>& ops = active_ops<T>();
  const Plan p = plan<T>(B, N, D);
  const int64_t splits = p.splits, cap = reservoir_cap(k);
  std::vector<TKEntry<T>> res(splits * B * cap);
  std::vector<int64_t> cnt(splits * B, 0);
  const TKArgs<T> a{q, t, excl, D, E, k, p.Kc, cap};
  const bool finite = run_grid<T>(p, B, N, D,
                                  [&](int64_t r0, int64_t r1, int64_t n0, int64_t n1, int64_t s,
                                      T* pack, void* zb, T* thr, int64_t* thi) {
                                    std::vector<T> sel(2 * cap);
                                    const TKWork<T> w{pack, zb, thr, thi,
                                                      res.data() + (s * B + r0) * cap,
                                                      cnt.data() + s * B + r0, sel.data()};
                                    return ops.tk_block(a, r0, r1, n0, n1, w);
                                  });
  TORCH_CHECK(finite, "topk_scores: table holds NaN or infinity (no order of its scores is defined)");
  // Merge each row's reservoirs and sort them best first.
  at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
    std::vector<TKEntry<T>> all;
    const auto better = [](const TKEntry<T>& x, const TKEntry<T>& y) {
      return x.v > y.v || (x.v == y.v && x.i < y.i);
    };
    for (int64_t b = b0; b < b1; ++b) {
      all.clear();
      for (int64_t s = 0; s < splits; ++s) {
        const TKEntry<T>* r = res.data() + (s * B + b) * cap;
        all.insert(all.end(), r, r + cnt[s * B + b]);
      }
      const int64_t m = std::min<int64_t>(k, int64_t(all.size()));
      if (m < int64_t(all.size())) std::nth_element(all.begin(), all.begin() + m, all.end(), better);
      std::sort(all.begin(), all.begin() + m, better);
      for (int64_t j = 0; j < k; ++j) {
        out_v[b * k + j] = j < m ? all[j].v : -std::numeric_limits<T>::infinity();
        out_i[b * k + j] = j < m ? all[j].i : -1;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> topk_scores_cpu(const at::Tensor& queries_,
                                                   const at::Tensor& table_, int64_t k,
                                                   const c10::optional<at::Tensor>& exclude_) {
  const at::Tensor* ex = validate::present(exclude_);
  validate::topk_scores("topk_scores", queries_, table_, k, ex, validate::kCpu);
  const at::Tensor q = queries_.contiguous(), t = table_.contiguous();
  const int64_t B = q.size(0), N = t.size(0), D = q.size(1);
  at::Tensor values = at::empty({B, k}, q.options());
  at::Tensor indices = at::empty({B, k}, q.options().dtype(at::kLong));
  if (B == 0) return {values, indices};
  // Each row's exclusions sorted, for a binary search when a candidate qualifies.
  at::Tensor excl;
  int64_t E = 0;
  if (ex && ex->size(1) > 0) {
    excl = std::get<0>(ex->sort(1));
    E = excl.size(1);
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "topk_scores_cpu", [&] {
    TORCH_CHECK(all_finite(q.data_ptr<scalar_t>(), B * D),
                "topk_scores: queries holds NaN or infinity (no order of its scores is defined)");
    topk_impl<scalar_t>(q.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
                        E ? excl.data_ptr<int64_t>() : nullptr, B, N, D, E, k,
                        values.data_ptr<scalar_t>(), indices.data_ptr<int64_t>());
  });
  return {values, indices};
}

template <typename T>
void ranks_impl(const T* q, const T* t, const int64_t* target, const int64_t* excl, int64_t B,
                int64_t N, int64_t D, int64_t E, int64_t* ranks) {
  const KernelOps<T>& ops = active_ops<T>();
  const Plan p = plan<T>(B, N, D);
  std::vector<T> ts(B);
  std::vector<int64_t> sub(B), cnt(p.splits * B, 0);
  const RKArgs<T> a{q, t, target, excl, D, E, p.Kc, ts.data(), sub.data()};
  at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
    std::vector<char> scratch(D * ops.cq_tile * sizeof(T) + ops.cq_scratch_bytes(D) + 64);
    ops.rk_self(a, b0, b1, scratch.data());
  });
  const bool finite = run_grid<T>(
      p, B, N, D,
      [&](int64_t r0, int64_t r1, int64_t n0, int64_t n1, int64_t s, T* pack, void* zb, T*,
          int64_t*) {
        const TKWork<T> w{pack, zb, nullptr, nullptr, nullptr, cnt.data() + s * B + r0,
                          nullptr};
        return ops.rk_block(a, r0, r1, n0, n1, w);
      });
  TORCH_CHECK(finite, "score_ranks: table holds NaN or infinity (no order of its scores is defined)");
  // cnt counts the target itself (its score equals itself) and the excluded items.
  for (int64_t b = 0; b < B; ++b) {
    int64_t c = 0;
    for (int64_t s = 0; s < p.splits; ++s) c += cnt[s * B + b];
    ranks[b] = c - sub[b];
  }
}

at::Tensor score_ranks_cpu(const at::Tensor& queries_, const at::Tensor& table_,
                           const at::Tensor& target_, const c10::optional<at::Tensor>& exclude_) {
  const at::Tensor* ex = validate::present(exclude_);
  validate::score_ranks("score_ranks", queries_, table_, target_, ex, validate::kCpu);
  const at::Tensor q = queries_.contiguous(), t = table_.contiguous();
  const at::Tensor tgt = target_.contiguous();
  const int64_t B = q.size(0), N = t.size(0), D = q.size(1);
  at::Tensor ranks = at::empty({B}, q.options().dtype(at::kLong));
  if (B == 0) return ranks;
  at::Tensor excl;
  int64_t E = 0;
  if (ex && ex->size(1) > 0) {
    excl = std::get<0>(ex->sort(1));
    E = excl.size(1);
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "score_ranks_cpu", [&] {
    TORCH_CHECK(all_finite(q.data_ptr<scalar_t>(), B * D),
                "score_ranks: queries holds NaN or infinity (no order of its scores is defined)");
    ranks_impl<scalar_t>(q.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), tgt.data_ptr<int64_t>(),
                         E ? excl.data_ptr<int64_t>() : nullptr, B, N, D, E,
                         ranks.data_ptr<int64_t>());
  });
  return ranks;
}

}  // namespace

TORCH_LIBRARY_IMPL(solid_ext, CPU, m) {
  m.impl("topk_scores", &topk_scores_cpu);
  m.impl("score_ranks", &score_ranks_cpu);
}

}  // namespace solid_ext::cpu
