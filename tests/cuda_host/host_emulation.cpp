// Host emulation of the CUDA kernels' index arithmetic (no GPU, no torch).
//
// The per-thread bodies in csrc/cuda/*_kernels.cuh are __host__ __device__; here the
// launch grid is replayed in loops (blockIdx/threadIdx passed explicitly, barrier
// phases run for every thread of a block before the next phase) with the same grid
// helpers the launchers use, and every output is compared with a naive loop on odd
// shapes (not multiples of any block size). Outputs start as NaN, so an element no
// thread writes is caught. Exit status 0 and "ALL OK" on success.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "codebook_quantize_kernels.cuh"
#include "dynamic_linear_kernels.cuh"

using namespace solid_ext::cuda;

namespace {

int failures = 0;

template <typename T>
void expect_close(const char* what, const std::vector<T>& got, const std::vector<T>& want,
                  double tol) {
  if (got.size() != want.size()) {
    std::printf("FAIL %s: size %zu vs %zu\n", what, got.size(), want.size());
    ++failures;
    return;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool both_nan = std::isnan(g) && std::isnan(w);
    if (!both_nan && !(std::fabs(g - w) <= tol * (1 + std::fabs(w)))) {
      std::printf("FAIL %s[%zu]: got %.17g want %.17g\n", what, i, g, w);
      ++failures;
      return;
    }
  }
}

template <typename T>
std::vector<T> randn(size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<T> v(n);
  for (auto& e : v) e = static_cast<T>(nd(rng));
  return v;
}

template <typename T>
std::vector<T> nans(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
void check_dynamic_linear(int64_t B, int64_t L, int64_t I, int64_t O, bool bias, bool branch,
                          uint32_t seed) {
  std::mt19937 rng(seed);
  const double tau = 0.01;
  auto x = randn<T>(B * L * I, rng), w = randn<T>(B * I * O, rng), g = randn<T>(B * L * O, rng);
  auto b = randn<T>(B * O, rng), bw = randn<T>(B * I * O, rng, 0.02), bb = randn<T>(B * O, rng, 0.02);
  bw[0] = static_cast<T>(tau);  // on the boundary: inside (inclusive)
  if (bw.size() > 3) bw[3] = static_cast<T>(-tau);
  DLParams<T> p{};
  p.x = x.data();
  p.w = w.data();
  p.bias = bias ? b.data() : nullptr;
  p.bw = branch ? bw.data() : nullptr;
  p.bb = branch ? bb.data() : nullptr;
  p.g = g.data();
  p.tau = tau;
  p.B = B;
  p.L = L;
  p.I = I;
  p.O = O;
  auto y = nans<T>(B * L * O), dx = nans<T>(B * L * I), dw = nans<T>(B * I * O),
       dbw = nans<T>(B * I * O), db = nans<T>(B * O), dbb = nans<T>(B * O);
  p.y = y.data();
  p.dx = dx.data();
  p.dw = dw.data();
  p.dbw = branch ? dbw.data() : nullptr;
  p.db = db.data();
  p.dbb = branch ? dbb.data() : nullptr;

  // Forward grid: (B, ceil(O/64)) x (64, 4).
  const Grid3 gf = dl_fwd_grid(B, O);
  for (int64_t bx = 0; bx < gf.x; ++bx)
    for (int64_t by = 0; by < gf.y; ++by)
      for (int ty = 0; ty < kFwdRows; ++ty)
        for (int tx = 0; tx < kFwdLanes; ++tx) dl_fwd_thread(p, bx, by, tx, ty);
  // dW grid: (B, ceil(max(I*O, O)/256)) x 256.
  const Grid3 gw = dl_dw_grid(B, I, O);
  for (int64_t bx = 0; bx < gw.x; ++bx)
    for (int64_t by = 0; by < gw.y; ++by)
      for (int tx = 0; tx < kDwThreads; ++tx) dl_dw_thread(p, bx, by, tx);
  // dx grid: (B, ceil(I/8)) x (32 lanes, 8 warps); a warp sums its lanes' partials.
  const Grid3 gx = dl_dx_grid(B, I);
  for (int64_t bx = 0; bx < gx.x; ++bx)
    for (int64_t by = 0; by < gx.y; ++by)
      for (int ty = 0; ty < kDxWarps; ++ty) {
        const int64_t i = by * kDxWarps + ty;
        if (i >= I) continue;
        for (int64_t l = 0; l < L; ++l) {
          double s = 0;
          for (int lane = 0; lane < kWarp; ++lane) s += dl_dx_partial(p, bx, l, i, lane);
          dx[(bx * L + l) * I + i] = static_cast<T>(s);
        }
      }

  // Naive reference in double.
  auto clipd = [&](double v) { return v < -tau ? -tau : (v > tau ? tau : v); };
  auto ind = [&](double v) { return v >= -tau && v <= tau; };
  const double t_in = static_cast<T>(tau);  // tau rounded to T, as the kernels do
  (void)t_in;
  std::vector<T> ry(B * L * O), rdx(B * L * I, 0), rdw(B * I * O), rdbw(B * I * O), rdb(B * O),
      rdbb(B * O);
  for (int64_t s = 0; s < B; ++s) {
    for (int64_t l = 0; l < L; ++l)
      for (int64_t o = 0; o < O; ++o) {
        double acc = (bias ? double(b[s * O + o]) : 0.0) + (branch ? clipd(bb[s * O + o]) : 0.0);
        for (int64_t i = 0; i < I; ++i) {
          const int64_t off = (s * I + i) * O + o;
          acc += double(x[(s * L + l) * I + i]) * (double(w[off]) + (branch ? clipd(bw[off]) : 0.0));
        }
        ry[(s * L + l) * O + o] = static_cast<T>(acc);
      }
    for (int64_t i = 0; i < I; ++i)
      for (int64_t o = 0; o < O; ++o) {
        const int64_t off = (s * I + i) * O + o;
        double a = 0;
        for (int64_t l = 0; l < L; ++l) a += double(x[(s * L + l) * I + i]) * double(g[(s * L + l) * O + o]);
        rdw[off] = static_cast<T>(a);
        rdbw[off] = static_cast<T>(ind(bw[off]) ? a : 0.0);
      }
    for (int64_t l = 0; l < L; ++l)
      for (int64_t i = 0; i < I; ++i) {
        double a = 0;
        for (int64_t o = 0; o < O; ++o) {
          const int64_t off = (s * I + i) * O + o;
          a += double(g[(s * L + l) * O + o]) * (double(w[off]) + (branch ? clipd(bw[off]) : 0.0));
        }
        rdx[(s * L + l) * I + i] = static_cast<T>(a);
      }
    for (int64_t o = 0; o < O; ++o) {
      double a = 0;
      for (int64_t l = 0; l < L; ++l) a += double(g[(s * L + l) * O + o]);
      rdb[s * O + o] = static_cast<T>(a);
      rdbb[s * O + o] = static_cast<T>(ind(bb[s * O + o]) ? a : 0.0);
    }
  }
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  char tag[160];
  std::snprintf(tag, sizeof tag, "dl<%s> B=%ld L=%ld I=%ld O=%ld bias=%d branch=%d",
                sizeof(T) == 4 ? "float" : "double", long(B), long(L), long(I), long(O), bias,
                branch);
  std::printf("%s\n", tag);
  expect_close("y", y, ry, tol);
  expect_close("dx", dx, rdx, tol);
  expect_close("dw", dw, rdw, tol);
  expect_close("db", db, rdb, tol);
  if (branch) {
    expect_close("dbw", dbw, rdbw, tol);
    expect_close("dbb", dbb, rdbb, tol);
  }
}

// Replays cq_fwd_kernel<T, DMAX>: blocks of kRows threads; per K tile, every thread
// runs its share of the cooperative load, then (after the barrier) its row update.
template <typename T, int DMAX>
void emulate_cq_forward(const CQParams<T>& p) {
  using A = typename AccOf<T>::type;
  const int64_t stride = DMAX > 0 ? DMAX : p.D;
  const int64_t tk = cq_tile_codes<A>(stride);
  std::vector<A> c2(tk), cs(tk * stride);
  const int64_t blocks = (p.M + kRows - 1) / kRows;
  for (int64_t bx = 0; bx < blocks; ++bx) {
    std::vector<std::vector<A>> zr(kRows, std::vector<A>(DMAX > 0 ? DMAX : 1));
    std::vector<ArgminState<A>> st(kRows);
    for (int t = 0; t < kRows; ++t) {
      st[t].init();
      const int64_t m = bx * kRows + t;
      if (DMAX > 0 && m < p.M) cq_load_row<T, DMAX>(p, m, zr[t].data());
    }
    for (int64_t k0 = 0; k0 < p.K; k0 += tk) {
      std::fill(cs.begin(), cs.end(), std::numeric_limits<A>::quiet_NaN());  // stale tile
      for (int t = 0; t < kRows; ++t) cq_load_tile(p, k0, tk, stride, t, kRows, cs.data(), c2.data());
      for (int t = 0; t < kRows; ++t) {
        const int64_t m = bx * kRows + t;
        if (m < p.M) cq_tile_update<T, DMAX>(p, m, zr[t].data(), k0, tk, cs.data(), c2.data(), st[t]);
      }
    }
    for (int t = 0; t < kRows; ++t) {
      const int64_t m = bx * kRows + t;
      if (m < p.M) cq_finish_row(p, m, st[t]);
    }
  }
}

template <typename T>
void check_codebook(int64_t M, int64_t K, int64_t D, bool st_flag, uint32_t seed, bool special) {
  using A = typename AccOf<T>::type;
  std::mt19937 rng(seed);
  auto z = randn<T>(M * D, rng), c = randn<T>(K * D, rng), gq = randn<T>(M * D, rng),
       gsq = randn<T>(M, rng);
  if (special) {
    // Ties: code 3 duplicated at K-1 (another tile); row 0 sits on code 3 -> index 3.
    for (int64_t d = 0; d < D; ++d) c[(K - 1) * D + d] = c[3 * D + d];
    for (int64_t d = 0; d < D; ++d) z[d] = c[3 * D + d];
    // A NaN row of z -> index 0, NaN distance.
    z[1 * D + 0] = std::numeric_limits<T>::quiet_NaN();
  }
  CQParams<T> p{};
  p.z = z.data();
  p.c = c.data();
  auto q = nans<T>(M * D), sq = nans<T>(M), gz = nans<T>(M * D);
  std::vector<int64_t> idx(M, -1);
  std::vector<A> gc(K * D, A(0));
  p.q = q.data();
  p.sq = sq.data();
  p.idx = idx.data();
  p.M = M;
  p.K = K;
  p.D = D;
  switch (cq_dmax<T>(D)) {
    case 32: emulate_cq_forward<T, 32>(p); break;
    case 64: emulate_cq_forward<T, 64>(p); break;
    case 128: emulate_cq_forward<T, 128>(p); break;
    default: emulate_cq_forward<T, 0>(p); break;
  }
  // Backward grid: ceil(M*D/256) x 256.
  p.gq = gq.data();
  p.gsq = gsq.data();
  p.bidx = idx.data();
  p.gz = gz.data();
  p.gc = gc.data();
  p.st = st_flag;
  const int64_t blocks = (M * D + kBwdThreads - 1) / kBwdThreads;
  for (int64_t bx = 0; bx < blocks; ++bx)
    for (int tx = 0; tx < kBwdThreads; ++tx) cq_bwd_thread(p, bx, tx);

  // Naive reference: exact distances in double, argmin with torch semantics.
  std::vector<int64_t> ridx(M);
  std::vector<T> rq(M * D), rsq(M), rgz(M * D);
  std::vector<A> rgc(K * D, A(0));
  for (int64_t m = 0; m < M; ++m) {
    double best = INFINITY;
    int64_t bk = 0;
    bool nan = false;
    for (int64_t k = 0; k < K && !nan; ++k) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double diff = double(z[m * D + d]) - double(c[k * D + d]);
        s += diff * diff;
      }
      if (std::isnan(s)) {
        nan = true;
        bk = k;
      } else if (s < best) {
        best = s;
        bk = k;
      }
    }
    ridx[m] = bk;
    double s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double diff = double(z[m * D + d]) - double(c[bk * D + d]);
      s += diff * diff;
      rq[m * D + d] = c[bk * D + d];
      const double t = 2.0 * double(gsq[m]) * diff;
      rgz[m * D + d] = static_cast<T>(double(gq[m * D + d]) + t);
      rgc[bk * D + d] += static_cast<A>((st_flag ? double(gq[m * D + d]) : 0.0) - t);
    }
    rsq[m] = static_cast<T>(s);
  }
  char tag[160];
  std::snprintf(tag, sizeof tag, "cq<%s> M=%ld K=%ld D=%ld st=%d special=%d dmax=%d",
                sizeof(T) == 4 ? "float" : "double", long(M), long(K), long(D), st_flag, special,
                cq_dmax<T>(D));
  std::printf("%s\n", tag);
  for (int64_t m = 0; m < M; ++m)
    if (idx[m] != ridx[m]) {
      std::printf("FAIL idx[%ld]: got %ld want %ld\n", long(m), long(idx[m]), long(ridx[m]));
      ++failures;
      break;
    }
  if (special && (idx[0] != 3 || idx[1] != 0 || !std::isnan(double(sq[1])))) {
    std::printf("FAIL special rows: idx0=%ld idx1=%ld\n", long(idx[0]), long(idx[1]));
    ++failures;
  }
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  expect_close("q", q, rq, 0.0);
  expect_close("sq", sq, rsq, tol);
  expect_close("gz", gz, rgz, tol);
  expect_close("gc", gc, rgc, tol);
}

}  // namespace

int main() {
  // Odd shapes: none a multiple of 64 lanes, 4 rows, 256 threads, 8 warps or 32 lanes.
  for (bool bias : {false, true})
    for (bool branch : {false, true}) {
      check_dynamic_linear<float>(3, 1, 5, 7, bias, branch, 1);
      check_dynamic_linear<double>(2, 10, 33, 70, bias, branch, 2);
    }
  check_dynamic_linear<float>(2, 7, 37, 130, true, true, 3);
  check_dynamic_linear<double>(1, 3, 1, 1, true, true, 4);
  check_dynamic_linear<float>(2, 5, 3, 300, true, true, 5);  // O > I*O / 256 boundary
  // Codebook: D in each register variant (32, 64, 128) and the generic path.
  for (bool st : {false, true}) {
    check_codebook<float>(131, 70, 5, st, 10, true);
    check_codebook<float>(257, 300, 33, st, 11, true);
    check_codebook<float>(129, 100, 100, st, 12, false);
    check_codebook<float>(70, 40, 130, st, 13, true);
    check_codebook<double>(131, 150, 64, st, 14, true);
    check_codebook<double>(3, 1, 65, st, 15, false);
  }
  if (failures) {
    std::printf("%d FAILURES\n", failures);
    return 1;
  }
  std::printf("ALL OK\n");
  return 0;
}
