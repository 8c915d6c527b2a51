// The SIMD kernels, written once and compiled once per instruction set. The
// including unit (kernels_<isa>.cpp) defines:
//   SOLID_ISA          its namespace and name: baseline, avx2 or avx512
//   SOLID_VBYTES       vector width in bytes: 16, 32 or 64
//   SOLID_DL_ROWS      rows of a dynamic_linear register tile
//   SOLID_DL_VECS      vectors per row of a dynamic_linear register tile
//   SOLID_DX_ROWS      rows of l per dx tile (x 4 rows of i accumulators)
//   SOLID_GL_ROWS      samples of a generated_linear register tile
//   SOLID_GL_VECS      vectors of columns of a generated_linear register tile
//   SOLID_CQ_ROWS      rows of z per codebook micro-tile
//   SOLID_CQ_VECS      vectors of codes per codebook micro-tile
//   SOLID_CQ_PREBCAST  1: broadcast the tile's z values into scratch once, for ISAs
//                      with no broadcast-from-memory load (SSE2: a load + a shuffle
//                      per use, and the shuffles compete with the adds)
//   SOLID_FMA_CHAINS   independent accumulators of the FMA peak loop
// Tiles are sized so accumulators plus operands fit the register file of the ISA
// (16 xmm/ymm on SSE/AVX2, 32 zmm on AVX-512): a tile that does not fit spills on
// every multiply-add, which is how one fixed 64-byte design ran 10-50x slower on
// AVX2 than on AVX-512.
//
// Everything but kernels() has internal linkage (an anonymous namespace) and no
// standard-library function is used, so nothing compiled here with wide-ISA flags
// can be merged by the linker with a copy that another unit calls.
#include <cstdint>

#include "kernels.h"

// Register tiles are arrays indexed by loop counters; unless every such loop is
// unrolled completely the array lives on the stack and every access is a load or
// store (GCC stops unrolling the larger AVX-512 epilogues on its own).
#if defined(__clang__)
#define SOLID_UNROLL _Pragma("unroll")
#else
#define SOLID_UNROLL _Pragma("GCC unroll 64")
#endif

#define SOLID_STR2(x) #x
#define SOLID_STR(x) SOLID_STR2(x)

namespace solid_ext::cpu::SOLID_ISA {
namespace {

template <typename T>
struct VT;
template <>
struct VT<float> {
  typedef float v __attribute__((vector_size(SOLID_VBYTES)));
  typedef int32_t i __attribute__((vector_size(SOLID_VBYTES)));
  typedef int32_t ie;
  typedef float h16 __attribute__((vector_size(16)));
};
template <>
struct VT<double> {
  typedef double v __attribute__((vector_size(SOLID_VBYTES)));
  typedef int64_t i __attribute__((vector_size(SOLID_VBYTES)));
  typedef int64_t ie;
  typedef double h16 __attribute__((vector_size(16)));
};
template <typename T>
using Vec = typename VT<T>::v;
template <typename T>
using IVec = typename VT<T>::i;
template <typename T>
using IElem = typename VT<T>::ie;
template <typename T>
constexpr int lanes() {
  return SOLID_VBYTES / int(sizeof(T));
}

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void store(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
// s - 0 is s for every s (signed zeros and NaN included), so this folds to a plain
// broadcast; {} + s would cost an add per splat, as 0 + -0 is +0.
template <typename T>
inline Vec<T> splat(T s) {
  return s - Vec<T>{};
}
template <typename T>
inline T inf() {
  return static_cast<T>(__builtin_inf());
}
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Comparisons with NaN are false, so NaN passes through, as in torch.clamp.
template <typename T>
inline T clip(T v, T tau) {
  v = v < -tau ? -tau : v;
  return v > tau ? tau : v;
}
template <typename T>
inline Vec<T> vclip(Vec<T> v, Vec<T> lo, Vec<T> hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}
template <typename T>
inline bool inside(T v, T tau) {
  return v >= -tau && v <= tau;
}

template <typename E, int BYTES>
struct VecOf {
  typedef E t __attribute__((vector_size(BYTES)));
};

// Folds a vector of E in halves with op (a + b, min) down to 16 bytes: log2 steps.
template <typename E, int BYTES, typename Op>
inline typename VecOf<E, 16>::t fold16(typename VecOf<E, BYTES>::t v, Op op) {
  if constexpr (BYTES > 16) {
    typedef typename VecOf<E, BYTES / 2>::t H;
    H a, b;
    __builtin_memcpy(&a, &v, BYTES / 2);
    __builtin_memcpy(&b, reinterpret_cast<const char*>(&v) + BYTES / 2, BYTES / 2);
    return fold16<E, BYTES / 2>(op(a, b), op);
  } else {
    return v;
  }
}

constexpr auto add_op = [](auto a, auto b) { return a + b; };
constexpr auto min_op = [](auto a, auto b) { return b < a ? b : a; };
constexpr auto or_op = [](auto a, auto b) { return a | b; };

template <typename T>
inline typename VT<T>::h16 to16(Vec<T> v) {
  return fold16<T, SOLID_VBYTES>(v, add_op);
}

// Horizontal sum: fold to 16 bytes, then add the last lanes.
template <typename T>
inline T hsum(Vec<T> v) {
  const auto r = to16<T>(v);
  T s = 0;
  for (int k = 0; k < int(16 / sizeof(T)); ++k) s += r[k];
  return s;
}

// Smallest lane of a vector of E (NaN-free), folded the same way.
template <typename E>
inline E hmin(typename VecOf<E, SOLID_VBYTES>::t v) {
  const auto r = fold16<E, SOLID_VBYTES>(v, min_op);
  E m = r[0];
  for (int k = 1; k < int(16 / sizeof(E)); ++k) m = r[k] < m ? r[k] : m;
  return m;
}

// out[j] = hsum(a[j]) for j < 4: after halving to 16 bytes, pairs of vectors are
// interleaved and added (a transpose folded into the reduction).
template <typename T>
inline void hsum4(const Vec<T>* a, T* out) {
#if defined(__clang__) || __GNUC__ >= 12
  const auto x0 = to16<T>(a[0]), x1 = to16<T>(a[1]), x2 = to16<T>(a[2]), x3 = to16<T>(a[3]);
  if constexpr (sizeof(T) == 4) {
    // t01 = [x0_0+x0_2, x1_0+x1_2, x0_1+x0_3, x1_1+x1_3], t23 likewise
    const auto t01 = __builtin_shufflevector(x0, x1, 0, 4, 1, 5) +
                     __builtin_shufflevector(x0, x1, 2, 6, 3, 7);
    const auto t23 = __builtin_shufflevector(x2, x3, 0, 4, 1, 5) +
                     __builtin_shufflevector(x2, x3, 2, 6, 3, 7);
    const auto r = __builtin_shufflevector(t01, t23, 0, 1, 4, 5) +
                   __builtin_shufflevector(t01, t23, 2, 3, 6, 7);
    __builtin_memcpy(out, &r, sizeof(r));
  } else {
    const auto r01 = __builtin_shufflevector(x0, x1, 0, 2) + __builtin_shufflevector(x0, x1, 1, 3);
    const auto r23 = __builtin_shufflevector(x2, x3, 0, 2) + __builtin_shufflevector(x2, x3, 1, 3);
    __builtin_memcpy(out, &r01, sizeof(r01));
    __builtin_memcpy(out + 2, &r23, sizeof(r23));
  }
#else  // no __builtin_shufflevector before GCC 12
  SOLID_UNROLL
  for (int j = 0; j < 4; ++j) out[j] = hsum<T>(a[j]);
#endif
}

template <int N>
struct Rows {
  static constexpr int value = N;
};

// Calls f(Rows<n>{}) for 1 <= n <= N: a remainder tile with a compile-time size.
template <int N, typename F>
inline void with_rows(int64_t n, F&& f) {
  if constexpr (N > 0) {
    if (n == N)
      f(Rows<N>{});
    else
      with_rows<N - 1>(n, f);
  }
}

// ---------------------------------------------------------------- dynamic_linear
//
// One sample at a time. The sample's combined weight R = w + clamp(bw, -tau, tau)
// is formed once in an L1-resident scratch (I*O elements) and used by register
// tiles; the (B, I, O) combined weight is never written to memory.

constexpr int DL_ROWS = SOLID_DL_ROWS;
constexpr int DX_ROWS = SOLID_DX_ROWS;
constexpr int DL_VECS = SOLID_DL_VECS;

// R = w + clip(bw) for one sample; returns w itself when there is no branch.
template <typename T>
inline const T* combined(const T* w, const T* bw, T tau, int64_t n, T* R) {
  if (!bw) return w;
  constexpr int V = lanes<T>();
  const Vec<T> lo = splat<T>(-tau), hi = splat<T>(tau);
  int64_t j = 0;
  for (; j + V <= n; j += V) store(R + j, load(w + j) + vclip<T>(load(bw + j), lo, hi));
  for (; j < n; ++j) R[j] = w[j] + clip(bw[j], tau);
  return R;
}

// y[0..LR) x columns [o0, o0 + NV*V) = brow + x @ R, accumulated in registers over I.
template <typename T, int LR, int NV>
inline void fwd_tile(const T* x, const T* R, const T* brow, T* y, int64_t I, int64_t O,
                     int64_t o0) {
  constexpr int V = lanes<T>();
  Vec<T> acc[LR][NV];
  SOLID_UNROLL
  for (int v = 0; v < NV; ++v) {
    const Vec<T> b = load(brow + o0 + v * V);
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l) acc[l][v] = b;
  }
  for (int64_t i = 0; i < I; ++i) {
    Vec<T> r[NV];
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) r[v] = load(R + i * O + o0 + v * V);
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l) {
      const Vec<T> xs = splat<T>(x[l * I + i]);
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) acc[l][v] += r[v] * xs;
    }
  }
  SOLID_UNROLL
  for (int l = 0; l < LR; ++l)
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) store(y + l * O + o0 + v * V, acc[l][v]);
}

template <typename T, int NV>
inline void fwd_cols(const T* x, const T* R, const T* brow, T* y, int64_t L, int64_t I,
                     int64_t O, int64_t o0) {
  int64_t l0 = 0;
  for (; l0 + DL_ROWS <= L; l0 += DL_ROWS)
    fwd_tile<T, DL_ROWS, NV>(x + l0 * I, R, brow, y + l0 * O, I, O, o0);
  with_rows<DL_ROWS - 1>(L - l0, [&](auto rows) {
    constexpr int LR = decltype(rows)::value;
    fwd_tile<T, LR, NV>(x + l0 * I, R, brow, y + l0 * O, I, O, o0);
  });
}

template <typename T>
void dl_forward(const DLArgs<T>& a, int64_t b0, int64_t b1, T* scratch) {
  constexpr int V = lanes<T>();
  const int64_t L = a.L, I = a.I, O = a.O;
  T* Rbuf = scratch;
  T* brow = scratch + I * O;
  for (int64_t b = b0; b < b1; ++b) {
    const T* x = a.x + b * L * I;
    const T* R = combined(a.w + b * I * O, a.bw ? a.bw + b * I * O : nullptr, a.tau, I * O,
                          Rbuf);
    T* y = a.y + b * L * O;
    for (int64_t o = 0; o < O; ++o) {
      T v = a.bias ? a.bias[b * O + o] : T(0);
      if (a.bb) v += clip(a.bb[b * O + o], a.tau);
      brow[o] = v;
    }
    int64_t o0 = 0;
    for (; o0 + DL_VECS * V <= O; o0 += DL_VECS * V)
      fwd_cols<T, DL_VECS>(x, R, brow, y, L, I, O, o0);
    for (; o0 + V <= O; o0 += V) fwd_cols<T, 1>(x, R, brow, y, L, I, O, o0);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t o = o0; o < O; ++o) {
        T acc = brow[o];
        for (int64_t i = 0; i < I; ++i) acc += x[l * I + i] * R[i * O + o];
        y[l * O + o] = acc;
      }
  }
}

// dW rows [i0, i0+IR) x columns [o0, o0 + NV*V) = x^T @ g over L; dbw the same where
// |bw| <= tau, else 0.
template <typename T, int IR, int NV>
inline void dw_tile(const T* x, const T* g, const T* bw, T tau, T* dw, T* dbw, int64_t L,
                    int64_t I, int64_t O, int64_t i0, int64_t o0) {
  constexpr int V = lanes<T>();
  Vec<T> acc[IR][NV];
  SOLID_UNROLL
  for (int r = 0; r < IR; ++r)
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) acc[r][v] = splat<T>(0);
  for (int64_t l = 0; l < L; ++l) {
    Vec<T> gv[NV];
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) gv[v] = load(g + l * O + o0 + v * V);
    SOLID_UNROLL
    for (int r = 0; r < IR; ++r) {
      const Vec<T> xs = splat<T>(x[l * I + i0 + r]);
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) acc[r][v] += gv[v] * xs;
    }
  }
  const Vec<T> lo = splat<T>(-tau), hi = splat<T>(tau), zero = splat<T>(0);
  SOLID_UNROLL
  for (int r = 0; r < IR; ++r)
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) {
      const int64_t off = (i0 + r) * O + o0 + v * V;
      if (dw) store(dw + off, acc[r][v]);
      if (dbw) {
        const Vec<T> bv = load(bw + off);
        store(dbw + off, (bv >= lo) & (bv <= hi) ? acc[r][v] : zero);
      }
    }
}

// dW and dbw rows [i0, i0 + IR), all columns: the rows are finished one block at a
// time (a few KB written contiguously) rather than one column strip of every row.
template <typename T, int IR>
inline void dw_rows(const T* x, const T* g, const T* bw, T tau, T* dw, T* dbw, int64_t L,
                    int64_t I, int64_t O, int64_t i0) {
  constexpr int V = lanes<T>();
  int64_t o0 = 0;
  for (; o0 + DL_VECS * V <= O; o0 += DL_VECS * V)
    dw_tile<T, IR, DL_VECS>(x, g, bw, tau, dw, dbw, L, I, O, i0, o0);
  for (; o0 + V <= O; o0 += V) dw_tile<T, IR, 1>(x, g, bw, tau, dw, dbw, L, I, O, i0, o0);
  for (int64_t i = i0; i < i0 + IR; ++i)
    for (int64_t o = o0; o < O; ++o) {
      T s = 0;
      for (int64_t l = 0; l < L; ++l) s += x[l * I + i] * g[l * O + o];
      if (dw) dw[i * O + o] = s;
      if (dbw) dbw[i * O + o] = inside(bw[i * O + o], tau) ? s : T(0);
    }
}

// dx rows [0, LR) (pointers already at the block's first row) = g @ R^T. Rows i
// of R are taken four at a time: LR x 4 vector accumulators over all of O, then one
// transposing reduction per l turns four accumulators into four adjacent dx values
// (about a third of the shuffles and adds of four separate horizontal sums, which
// otherwise cost as much as the multiply-adds when O spans only a few vectors).
template <typename T, int LR>
inline void dx_rows(const T* g, const T* R, T* dx, int64_t I, int64_t O) {
  constexpr int V = lanes<T>();
  const int64_t Ov = O / V * V;
  int64_t i = 0;
  for (; i + 4 <= I; i += 4) {
    Vec<T> acc[LR][4];
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l)
      SOLID_UNROLL
      for (int j = 0; j < 4; ++j) acc[l][j] = splat<T>(0);
    for (int64_t o = 0; o < Ov; o += V) {
      Vec<T> rv[4];
      SOLID_UNROLL
      for (int j = 0; j < 4; ++j) rv[j] = load(R + (i + j) * O + o);
      SOLID_UNROLL
      for (int l = 0; l < LR; ++l) {
        const Vec<T> gv = load(g + l * O + o);
        SOLID_UNROLL
        for (int j = 0; j < 4; ++j) acc[l][j] += gv * rv[j];
      }
    }
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l) {
      T s[4];
      hsum4<T>(acc[l], s);
      SOLID_UNROLL
      for (int j = 0; j < 4; ++j) {
        for (int64_t t = Ov; t < O; ++t) s[j] += g[l * O + t] * R[(i + j) * O + t];
        dx[l * I + i + j] = s[j];
      }
    }
  }
  for (; i < I; ++i) {
    const T* r = R + i * O;
    Vec<T> acc[LR];
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l) acc[l] = splat<T>(0);
    for (int64_t o = 0; o < Ov; o += V) {
      const Vec<T> rv = load(r + o);
      SOLID_UNROLL
      for (int l = 0; l < LR; ++l) acc[l] += load(g + l * O + o) * rv;
    }
    SOLID_UNROLL
    for (int l = 0; l < LR; ++l) {
      T s = hsum<T>(acc[l]);
      for (int64_t t = Ov; t < O; ++t) s += g[l * O + t] * r[t];
      dx[l * I + i] = s;
    }
  }
}

template <typename T>
void dl_backward(const DLArgs<T>& a, int64_t b0, int64_t b1, T* scratch) {
  const int64_t L = a.L, I = a.I, O = a.O;
  for (int64_t b = b0; b < b1; ++b) {
    const T* x = a.x + b * L * I;
    const T* g = a.g + b * L * O;
    const T* bw = a.bw ? a.bw + b * I * O : nullptr;
    // Bias gradients: grad summed over L (row by row, so it vectorises); the branch
    // bias's masked by |bb| <= tau.
    T* db = a.db + b * O;
    for (int64_t o = 0; o < O; ++o) db[o] = T(0);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t o = 0; o < O; ++o) db[o] += g[l * O + o];
    if (a.dbb)
      for (int64_t o = 0; o < O; ++o)
        a.dbb[b * O + o] = inside(a.bb[b * O + o], a.tau) ? db[o] : T(0);
    T* dw = a.dw ? a.dw + b * I * O : nullptr;
    T* dbw = a.dbw ? a.dbw + b * I * O : nullptr;
    if (dw || dbw) {
      int64_t i0 = 0;
      for (; i0 + DL_ROWS <= I; i0 += DL_ROWS)
        dw_rows<T, DL_ROWS>(x, g, bw, a.tau, dw, dbw, L, I, O, i0);
      with_rows<DL_ROWS - 1>(I - i0, [&](auto rows) {
        constexpr int IR = decltype(rows)::value;
        dw_rows<T, IR>(x, g, bw, a.tau, dw, dbw, L, I, O, i0);
      });
    }
    if (a.dx) {
      const T* R = combined(a.w + b * I * O, bw, a.tau, I * O, scratch);
      T* dx = a.dx + b * L * I;
      int64_t l0 = 0;
      for (; l0 + DX_ROWS <= L; l0 += DX_ROWS)
        dx_rows<T, DX_ROWS>(g + l0 * O, R, dx + l0 * I, I, O);
      with_rows<DX_ROWS - 1>(L - l0, [&](auto rows) {
    constexpr int LR = decltype(rows)::value;
        dx_rows<T, LR>(g + l0 * O, R, dx + l0 * I, I, O);
      });
    }
  }
}

// ---------------------------------------------------------------- codebook search
//
// argmin_k ||z - C_k||^2 = argmin_k (||C_k||^2 - 2 z.C_k). A micro-tile of CQ_ROWS
// rows of z x CQ_VECS vectors of codes starts from ||C_k||^2 and accumulates
// z . (-2 C_k) in registers (scaling by -2 is exact), then folds the scores into a
// per-lane running (best score, best index) kept in L1; no distance tile is stored.
// The codebook comes packed in panels of one tile's codes, (D, NR) each, so a tile
// streams contiguous memory (a (D, K) layout strides by K and thrashes L1 sets).
// A group of rows sweeps one L2-sized chunk of codes before the next chunk.
// With finite inputs a score can only be NaN if the squared norms overflow, so the
// NaN rules of torch.argmin are applied (at some cost per tile) only when z or the
// codebook holds a NaN or an infinity.

constexpr int CQ_ROWS = SOLID_CQ_ROWS;
constexpr int CQ_VECS = SOLID_CQ_VECS;
constexpr int CQ_GROUP = CQ_ROWS * 8;

template <typename T>
constexpr int cq_tile_codes() {
  return lanes<T>() * CQ_VECS;
}

template <typename T, bool Last, bool NaNs>
inline void cq_tile(const CQArgs<T>& a, const T* const* zr, const T* zb, int64_t k0, T* bestv,
                    IElem<T>* besti) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  (void)zr;
  (void)zb;
  Vec<T> acc[CQ_ROWS][CQ_VECS];
  SOLID_UNROLL
  for (int v = 0; v < CQ_VECS; ++v) {
    const Vec<T> c2v = load(a.c2 + k0 + v * V);
    SOLID_UNROLL
    for (int r = 0; r < CQ_ROWS; ++r) acc[r][v] = c2v;
  }
  const T* cp = a.ct + k0 * a.D;  // this tile's (D, NR) panel
  for (int64_t d = 0; d < a.D; ++d) {
    Vec<T> cv[CQ_VECS];
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) cv[v] = load(cp + d * NR + v * V);
    SOLID_UNROLL
    for (int r = 0; r < CQ_ROWS; ++r) {
#if SOLID_CQ_PREBCAST
      const Vec<T> zs = load(zb + (r * a.D + d) * V);
#else
      const Vec<T> zs = splat<T>(zr[r][d]);
#endif
      SOLID_UNROLL
      for (int v = 0; v < CQ_VECS; ++v) acc[r][v] += cv[v] * zs;
    }
  }
  IVec<T> lane;
  SOLID_UNROLL
  for (int i = 0; i < V; ++i) lane[i] = static_cast<IElem<T>>(i);
  SOLID_UNROLL
  for (int v = 0; v < CQ_VECS; ++v) {
    const IVec<T> kidx = lane + static_cast<IElem<T>>(k0 + v * V);
    SOLID_UNROLL
    for (int r = 0; r < CQ_ROWS; ++r) {
      const Vec<T> s = acc[r][v];
      T* bvp = bestv + r * NR + v * V;
      IElem<T>* bip = besti + r * NR + v * V;
      Vec<T> bv = load(bvp);
      IVec<T> bi;
      __builtin_memcpy(&bi, bip, sizeof(bi));
      // Strictly smaller wins (ties keep the lower k); NaN beats non-NaN, as in
      // torch.argmin. Padding codes (only in the last tile) never win.
      IVec<T> take = s < bv;
      if constexpr (NaNs) take |= (s != s) & (bv == bv);
      if constexpr (Last) take &= kidx < static_cast<IElem<T>>(a.K);
      bv = take ? s : bv;
      bi = take ? kidx : bi;
      store(bvp, bv);
      __builtin_memcpy(bip, &bi, sizeof(bi));
    }
  }
}

// Reduce one row's per-lane bests to (best score, lowest index among equals; NaN
// beats everything and the first NaN wins), then write its index, code and exact
// distance (recomputed from the chosen code, free of the expanded form's
// cancellation).
template <typename T>
inline void cq_finish(const CQArgs<T>& a, int64_t m, const T* bv, const IElem<T>* bi) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  Vec<T> vals[CQ_VECS];
  IVec<T> idxs[CQ_VECS];
  IVec<T> nan = IVec<T>{};
  SOLID_UNROLL
  for (int v = 0; v < CQ_VECS; ++v) {
    vals[v] = load(bv + v * V);
    __builtin_memcpy(&idxs[v], bi + v * V, sizeof(IVec<T>));
    nan |= vals[v] != vals[v];
  }
  int64_t bk;
  if (hmin<IElem<T>>(nan) != 0) {  // some lane holds a NaN (-1)
    bk = a.K;
    SOLID_UNROLL
    for (int j = 0; j < NR; ++j)
      if (bv[j] != bv[j] && bi[j] < bk) bk = bi[j];
  } else {
    Vec<T> mv = vals[0];
    SOLID_UNROLL
    for (int v = 1; v < CQ_VECS; ++v) mv = vals[v] < mv ? vals[v] : mv;
    const Vec<T> best = splat<T>(hmin<T>(mv));
    const IVec<T> none = IVec<T>{} + static_cast<IElem<T>>(a.K);
    IVec<T> cand = none;
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) {
      const IVec<T> c = vals[v] == best ? idxs[v] : none;
      cand = c < cand ? c : cand;
    }
    bk = hmin<IElem<T>>(cand);
  }
  a.idx[m] = bk;
  const T* zm = a.z + m * a.D;
  const T* cm = a.c + bk * a.D;
  T* qm = a.q + m * a.D;
  // Lane-parallel partial sums: a sequential sum would be a chain of D dependent adds.
  Vec<T> accv = splat<T>(0);
  int64_t d = 0;
  for (; d + V <= a.D; d += V) {
    const Vec<T> cv = load(cm + d), diff = load(zm + d) - cv;
    accv += diff * diff;
    store(qm + d, cv);
  }
  T acc = hsum<T>(accv);
  for (; d < a.D; ++d) {
    const T diff = zm[d] - cm[d];
    acc += diff * diff;
    qm[d] = cm[d];
  }
  a.sq[m] = acc;
}

template <typename T>
void cq_search(const CQArgs<T>& a, int64_t g0, int64_t g1, void* scratch) {
  constexpr int NR = cq_tile_codes<T>();
  T* bestv = static_cast<T*>(scratch);
  IElem<T>* besti = reinterpret_cast<IElem<T>*>(bestv + CQ_GROUP * NR);
  // (CQ_ROWS, D, V): the micro-tile's z values, each broadcast to a full vector.
  T* zb = reinterpret_cast<T*>(besti + CQ_GROUP * NR);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t m0 = g * CQ_GROUP;
    const int64_t rows = min64(CQ_GROUP, a.M - m0);
    for (int j = 0; j < CQ_GROUP * NR; ++j) {
      bestv[j] = inf<T>();
      besti[j] = 0;
    }
    for (int64_t kc = 0; kc < a.Kp; kc += a.Kc) {
      const int64_t kend = min64(a.Kp, kc + a.Kc);
      for (int64_t r0 = 0; r0 < rows; r0 += CQ_ROWS) {
        const T* zr[CQ_ROWS];
        // Rows past M repeat the last row: wasted work, never written back.
        SOLID_UNROLL
        for (int r = 0; r < CQ_ROWS; ++r) zr[r] = a.z + min64(m0 + r0 + r, a.M - 1) * a.D;
#if SOLID_CQ_PREBCAST
        SOLID_UNROLL
        for (int r = 0; r < CQ_ROWS; ++r)
          for (int64_t d = 0; d < a.D; ++d) store(zb + (r * a.D + d) * lanes<T>(), splat<T>(zr[r][d]));
#endif
        T* bv = bestv + r0 * NR;
        IElem<T>* bi = besti + r0 * NR;
        int64_t k0 = kc;
        if (a.finite) {
          for (; k0 < kend && k0 + NR <= a.K; k0 += NR) cq_tile<T, false, false>(a, zr, zb, k0, bv, bi);
          for (; k0 < kend; k0 += NR) cq_tile<T, true, false>(a, zr, zb, k0, bv, bi);
        } else {
          for (; k0 < kend && k0 + NR <= a.K; k0 += NR) cq_tile<T, false, true>(a, zr, zb, k0, bv, bi);
          for (; k0 < kend; k0 += NR) cq_tile<T, true, true>(a, zr, zb, k0, bv, bi);
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) cq_finish(a, m0 + r, bestv + r * NR, besti + r * NR);
  }
}

template <typename T>
int64_t cq_scratch_bytes(int64_t D) {
  const int64_t best = int64_t(CQ_GROUP) * cq_tile_codes<T>() * int64_t(sizeof(T) + sizeof(IElem<T>));
  return best + (SOLID_CQ_PREBCAST ? int64_t(CQ_ROWS) * D * lanes<T>() * int64_t(sizeof(T)) : 0);
}

// ---------------------------------------------------------------- top-k scores
//
// The k largest q_b . t_n of each query row, never storing a score matrix. A chunk of
// items is packed into panels of one tile (the codebook search's layout and register
// tile: CQ_ROWS rows x one panel of codes, accumulated in registers from zero). Each
// row keeps its candidates in a reservoir of cap > k entries and a threshold, the k-th
// best entry at its last compaction (-inf before the first): an item better than the
// threshold is appended; a full reservoir is cut back to its best k (a branch-free
// selection on its values, O(cap): tk_compact) and the threshold rises to the k-th. An append is O(1), amortized over cap - k of them,
// where a heap's insertion costs log k sift steps, which made k = 100 several times
// slower than k = 10. A tile's scores are compared with the thresholds in vectors; a row
// with a lane at or above its threshold gathers those lanes' positions without branches
// (the pass lanes) and offers only them (exclusion lookup, append). On data without
// structure that is O(k log(N / k)) appends per row, so the multiply-adds are the cost.
//
// The order is (value descending, index ascending), and tk_worse is its converse, so
// what a row keeps does not depend on the order items are visited in (how the items
// are split over threads): ties go to the lowest index.

template <typename T>
inline bool tk_worse(T av, int64_t ai, T bv, int64_t bi) {
  return av < bv || (av == bv && ai > bi);
}

template <typename T>
inline bool tk_better(const TKEntry<T>& x, const TKEntry<T>& y) {
  return tk_worse(y.v, y.i, x.v, x.i);
}

template <typename T>
inline void tk_swap(TKEntry<T>& x, TKEntry<T>& y) {
  const TKEntry<T> z = x;
  x = y;
  y = z;
}

// Reorders e[0, n) so that e[m] is the entry a best-first sort would put there, the
// better ones before it and the worse after: quickselect with a median-of-three pivot,
// O(n) expected. Written out rather than std::nth_element: no standard-library template
// is instantiated here (see the top of this file). Entries are distinct (one per item).
template <typename T>
inline void tk_select(TKEntry<T>* e, int64_t n, int64_t m) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tk_better(e[mid], e[lo])) tk_swap(e[mid], e[lo]);
    if (tk_better(e[hi], e[lo])) tk_swap(e[hi], e[lo]);
    if (tk_better(e[hi], e[mid])) tk_swap(e[hi], e[mid]);
    const TKEntry<T> pivot = e[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (tk_better(e[i], pivot)) ++i;
      while (tk_better(pivot, e[j])) --j;
      if (i <= j) tk_swap(e[i++], e[j--]);
    }
    if (m <= j) {
      hi = j;
    } else if (m >= i) {
      lo = i;
    } else {
      return;  // j < m < i: e[m] is the pivot, in place
    }
  }
}

// The m-th largest (from 0) of the n values x, reading x and y (n each) as scratch:
// three-way partitions around a median-of-three pivot, each element written to both
// ends of the other buffer and the ends advanced by its comparisons, so no branch
// depends on the data (a quickselect over (value, index) entries mispredicted about
// every other comparison and was most of a k = 100 scan). Values are not NaN (a NaN
// score fails the threshold test and never enters a reservoir).
template <typename T>
inline T tk_kth_value(T* x, T* y, int64_t n, int64_t m) {
  while (n > 16) {
    const T a = x[0], b = x[n / 2], c = x[n - 1];
    const T lo_ab = a < b ? a : b, hi_ab = a < b ? b : a;
    const T hc = hi_ab < c ? hi_ab : c;
    const T p = lo_ab < hc ? hc : lo_ab;  // the median of a, b, c
    int64_t gt = 0, lt = n;  // y[0, gt) > p, y[lt, n) < p
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      y[gt] = v;  // lt - 1 >= gt: neither write lands on a kept element
      y[lt - 1] = v;
      gt += v > p;
      lt -= v < p;
    }
    if (m < gt) {
      n = gt;
    } else if (m < lt) {
      return p;
    } else {
      m -= lt;
      n -= lt;
      y += lt;
    }
    T* z = x;
    x = y;
    y = z;
  }
  // Insertion sort, descending, of the last few.
  for (int64_t i = 1; i < n; ++i) {
    const T v = x[i];
    int64_t j = i;
    for (; j > 0 && x[j - 1] < v; --j) x[j] = x[j - 1];
    x[j] = v;
  }
  return x[m];
}

// Cut a full reservoir back to its best k; its k-th best becomes the threshold. The k-th
// largest value v is found on the values alone; the entries at or above v move to the
// front in order, without branches. Only when several entries tie at v and not all of
// them fit does the (value, index) quickselect decide which (the lowest indices) stay.
template <typename T>
inline void tk_compact(const TKArgs<T>& a, const TKWork<T>& w, int64_t r) {
  TKEntry<T>* res = w.res + r * a.cap;
  const int64_t n = w.cnt[r], k = a.k;
  T* x = w.sel;
  for (int64_t j = 0; j < n; ++j) x[j] = res[j].v;
  const T v = tk_kth_value(x, x + a.cap, n, k - 1);
  int64_t kept = 0, last = -1;
  for (int64_t j = 0; j < n; ++j) {
    const TKEntry<T> e = res[j];
    res[kept] = e;  // kept <= j
    kept += e.v >= v;
    last = e.v == v && e.i > last ? e.i : last;
  }
  if (kept > k) {
    tk_select(res, kept, k - 1);
    last = res[k - 1].i;
  }
  w.cnt[r] = k;
  w.thr[r] = v;
  w.thi[r] = last;
}

// n among the E ascending entries of ex (binary search).
inline bool tk_excluded(const int64_t* ex, int64_t E, int64_t n) {
  int64_t lo = 0, hi = E;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (ex[mid] < n)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < E && ex[lo] == n;
}

// Offer item n with score s to local row r (global row g).
template <typename T>
inline void tk_offer(const TKArgs<T>& a, const TKWork<T>& w, int64_t r, int64_t g, T s, int64_t n) {
  if (tk_worse(s, n, w.thr[r], w.thi[r])) return;
  if (a.excl && tk_excluded(a.excl + g * a.E, a.E, n)) return;
  TKEntry<T>* res = w.res + r * a.cap;
  res[w.cnt[r]++] = TKEntry<T>{s, n};
  if (w.cnt[r] == a.cap) tk_compact(a, w, r);
}

// Pack items [c0, c0 + cn) as panels (D, NR), zero-padded to whole panels; false if
// an element is NaN or infinite (x * 0 is then NaN; an OR of comparisons, no chain).
template <typename T>
inline bool tk_pack(const T* t, int64_t c0, int64_t cn, int64_t D, T* pack) {
  constexpr int NR = cq_tile_codes<T>();
  const int64_t panels = (cn + NR - 1) / NR;
  bool bad = false;
  for (int64_t n = 0; n < panels * NR; ++n) {
    T* dst = pack + (n / NR) * D * NR + n % NR;
    if (n < cn) {
      const T* src = t + (c0 + n) * D;
      for (int64_t d = 0; d < D; ++d) {
        const T v = src[d];
        bad |= !(v * T(0) == T(0));
        dst[d * NR] = v;
      }
    } else {
      for (int64_t d = 0; d < D; ++d) dst[d * NR] = T(0);
    }
  }
  return !bad;
}

// acc[r][v] = scores of rows zr[r] (or their broadcasts zb) against the panel cp,
// each lane one fused multiply-add per d in ascending order from zero: rk_self
// reproduces exactly this arithmetic for single items.
template <typename T>
inline void tk_acc(int64_t D, const T* const* zr, const T* zb, const T* cp,
                   Vec<T> (&acc)[CQ_ROWS][CQ_VECS]) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  (void)zr;
  (void)zb;
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r)
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) acc[r][v] = splat<T>(0);
  for (int64_t d = 0; d < D; ++d) {
    Vec<T> cv[CQ_VECS];
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) cv[v] = load(cp + d * NR + v * V);
    SOLID_UNROLL
    for (int r = 0; r < CQ_ROWS; ++r) {
#if SOLID_CQ_PREBCAST
      const Vec<T> zs = load(zb + (r * D + d) * V);
#else
      const Vec<T> zs = splat<T>(zr[r][d]);
#endif
      SOLID_UNROLL
      for (int v = 0; v < CQ_VECS; ++v) acc[r][v] += cv[v] * zs;
    }
  }
}

// A comparison's lanes (-1 or 0 each) as bits, lane i at bit i: each lane's own bit
// kept and the vector folded with OR in log2 steps (the bits are distinct), which a
// compiler may turn into the ISA's move-mask.
template <typename T>
inline uint64_t lane_bits(IVec<T> hit) {
  constexpr int V = lanes<T>();
  static_assert(V <= 32, "a lane's bit must fit in its element");
  IVec<T> bit;
  SOLID_UNROLL
  for (int i = 0; i < V; ++i) bit[i] = static_cast<IElem<T>>(IElem<T>(1) << i);
  const auto f = fold16<IElem<T>, SOLID_VBYTES>(hit & bit, or_op);
  uint64_t m = 0;
  for (int i = 0; i < int(16 / sizeof(IElem<T>)); ++i) m |= static_cast<uint64_t>(f[i]);
  return m;
}

// One micro-tile: rows [m0, m0 + rows) (zr / zb) x the panel cp of items first...,
// then each row's pass lanes (at or above its threshold, below valid) offered to its
// reservoir, visited by their bits (count-trailing-zeros) rather than a test per lane.
template <typename T>
inline void tk_tile(const TKArgs<T>& a, const TKWork<T>& w, const T* const* zr, const T* zb,
                    const T* cp, int64_t m0, int64_t rows, int64_t r0, int64_t first,
                    int64_t valid) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  static_assert(NR <= 64, "a panel's lanes must fit in 64 bits");
  const uint64_t in_panel = valid >= 64 ? ~uint64_t(0) : (uint64_t(1) << valid) - 1;
  Vec<T> acc[CQ_ROWS][CQ_VECS];
  tk_acc(a.D, zr, zb, cp, acc);
  T buf[NR];
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r) {
    if (r >= rows) break;
    const int64_t lr = m0 - r0 + r;
    const Vec<T> th = splat<T>(w.thr[lr]);
    IVec<T> hit[CQ_VECS];
    IVec<T> any = hit[0] = acc[r][0] >= th;
    SOLID_UNROLL
    for (int v = 1; v < CQ_VECS; ++v) {
      hit[v] = acc[r][v] >= th;
      any |= hit[v];
    }
    if (hmin<IElem<T>>(any) == 0) continue;  // no lane reaches the threshold
    uint64_t bits = 0;
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) {
      bits |= lane_bits<T>(hit[v]) << (v * V);
      store(buf + v * V, acc[r][v]);
    }
    for (bits &= in_panel; bits; bits &= bits - 1) {
      const int j = __builtin_ctzll(bits);
      tk_offer(a, w, lr, m0 + r, buf[j], first + j);
    }
  }
}

template <typename T>
inline void tk_rows(const TKArgs<T>& a, int64_t m0, int64_t r1, const T* (&zr)[CQ_ROWS]) {
  // Rows past r1 repeat the last row: wasted work, never offered.
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r) zr[r] = a.q + min64(m0 + r, r1 - 1) * a.D;
}

template <typename T>
bool tk_block(const TKArgs<T>& a, int64_t r0, int64_t r1, int64_t n0, int64_t n1,
              const TKWork<T>& w) {
  constexpr int NR = cq_tile_codes<T>();
  const int64_t D = a.D;
  T* zb = static_cast<T*>(w.zb);
  (void)zb;
  bool finite = true;
  for (int64_t r = 0; r < r1 - r0; ++r) {
    w.thr[r] = -inf<T>();
    w.thi[r] = INT64_MAX;  // scores are finite: every item beats (-inf, any index)
  }
  for (int64_t c0 = n0; c0 < n1; c0 += a.Kc) {
    const int64_t cn = min64(a.Kc, n1 - c0);
    finite &= tk_pack(a.t, c0, cn, D, w.pack);
    const int64_t panels = (cn + NR - 1) / NR;
    const T* zr[CQ_ROWS];
#if SOLID_CQ_PREBCAST
    // Rows outer: a row tile's broadcast values are written once per chunk.
    for (int64_t m0 = r0; m0 < r1; m0 += CQ_ROWS) {
      tk_rows(a, m0, r1, zr);
      SOLID_UNROLL
      for (int r = 0; r < CQ_ROWS; ++r)
        for (int64_t d = 0; d < D; ++d) store(zb + (r * D + d) * lanes<T>(), splat<T>(zr[r][d]));
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t first = c0 + p * NR;
        tk_tile(a, w, zr, zb, w.pack + p * D * NR, m0, min64(CQ_ROWS, r1 - m0), r0, first,
                min64(NR, c0 + cn - first));
      }
    }
#else
    // Panels outer: a panel (D x NR) stays in L1 while every row tile of the block
    // reads it, rather than streaming the chunk from L2 once per row tile.
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t first = c0 + p * NR;
      const int64_t valid = min64(NR, c0 + cn - first);
      for (int64_t m0 = r0; m0 < r1; m0 += CQ_ROWS) {
        tk_rows(a, m0, r1, zr);
        tk_tile(a, w, zr, zb, w.pack + p * D * NR, m0, min64(CQ_ROWS, r1 - m0), r0, first, valid);
      }
    }
#endif
  }
  return finite;
}

// ---------------------------------------------------------------- score ranks
//
// The exact rank of each row's target among all items, ties counted against it:
// 1 + #{n != target, n not excluded : s_n >= s_target}. rk_block counts every item
// scoring at least the target's score with the top-k tile (a compare and a lane count
// per row and panel, no scalar path); rk_self scores the target and the excluded
// items one by one with the same per-lane arithmetic (fused multiply-adds over d in
// ascending order from zero), so an item tied with the target in rk_block is tied in
// rk_self too, and the target and excluded items can be taken out of the count.

// Scores of row z against up to NR items (panel packed from the item rows `items`,
// n of them), through tk_acc itself: the same loads, broadcasts and multiply-adds as
// the tiles, so equal inputs give bit-equal scores (a separate scalar loop may be
// compiled differently, e.g. a multiply of two broadcasts folded to a scalar one and
// not fused with the add).
template <typename T>
inline void rk_scores(const RKArgs<T>& a, const T* z, const int64_t* items, int64_t n, T* panel,
                      T* zb, T* out) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  const int64_t D = a.D;
  for (int64_t d = 0; d < D; ++d)
    for (int j = 0; j < NR; ++j) panel[d * NR + j] = j < n ? a.t[items[j] * D + d] : T(0);
  const T* zr[CQ_ROWS];
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r) zr[r] = z;
#if SOLID_CQ_PREBCAST
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r)
    for (int64_t d = 0; d < D; ++d) store(zb + (r * D + d) * V, splat<T>(z[d]));
#endif
  Vec<T> acc[CQ_ROWS][CQ_VECS];
  tk_acc(D, zr, zb, panel, acc);
  SOLID_UNROLL
  for (int v = 0; v < CQ_VECS; ++v) store(out + v * V, acc[0][v]);
}

// scratch: D * cq_tile elements (one panel) and then cq_scratch_bytes(D) bytes.
template <typename T>
void rk_self(const RKArgs<T>& a, int64_t b0, int64_t b1, void* scratch) {
  constexpr int NR = cq_tile_codes<T>();
  T* panel = static_cast<T*>(scratch);
  T* zb = panel + a.D * NR;
  int64_t items[NR];
  T out[NR];
  for (int64_t b = b0; b < b1; ++b) {
    const T* z = a.q + b * a.D;
    const int64_t tgt = a.target[b];
    const int64_t* ex = a.excl ? a.excl + b * a.E : nullptr;
    // Lane 0 of the first panel is the target; then the distinct excluded items.
    items[0] = tgt;
    int64_t n = 1, sub = 0, j = 0;
    bool first = true;
    T st = 0;
    for (;;) {
      for (; ex && j < a.E && n < NR; ++j) {
        const int64_t e = ex[j];
        if (e < 0 || e == tgt || (j > 0 && ex[j - 1] == e)) continue;
        items[n++] = e;
      }
      rk_scores(a, z, items, n, panel, zb, out);
      if (first) st = out[0];
      for (int64_t k = first ? 1 : 0; k < n; ++k) sub += out[k] >= st;
      first = false;
      n = 0;
      if (!ex || j >= a.E) break;
    }
    a.ts[b] = st;
    a.sub[b] = sub;
  }
}

template <typename T>
inline void rk_tile(const RKArgs<T>& a, const TKWork<T>& w, const T* const* zr, const T* zb,
                    const T* cp, int64_t m0, int64_t rows, int64_t r0, int64_t valid) {
  constexpr int V = lanes<T>(), NR = cq_tile_codes<T>();
  Vec<T> acc[CQ_ROWS][CQ_VECS];
  tk_acc(a.D, zr, zb, cp, acc);
  IVec<T> lane;
  SOLID_UNROLL
  for (int i = 0; i < V; ++i) lane[i] = static_cast<IElem<T>>(i);
  SOLID_UNROLL
  for (int r = 0; r < CQ_ROWS; ++r) {
    if (r >= rows) break;
    const Vec<T> th = splat<T>(a.ts[m0 + r]);
    IVec<T> n = IVec<T>{};
    SOLID_UNROLL
    for (int v = 0; v < CQ_VECS; ++v) {
      IVec<T> hit = acc[r][v] >= th;
      if (valid < NR) hit &= (lane + static_cast<IElem<T>>(v * V)) < static_cast<IElem<T>>(valid);
      n += hit;  // -1 per lane at or above the threshold
    }
    const auto f = fold16<IElem<T>, SOLID_VBYTES>(n, add_op);
    int64_t s = 0;
    for (int k = 0; k < int(16 / sizeof(IElem<T>)); ++k) s += f[k];
    w.cnt[m0 - r0 + r] -= s;
  }
}

template <typename T>
bool rk_block(const RKArgs<T>& a, int64_t r0, int64_t r1, int64_t n0, int64_t n1,
              const TKWork<T>& w) {
  constexpr int NR = cq_tile_codes<T>();
  const int64_t D = a.D;
  T* zb = static_cast<T*>(w.zb);
  (void)zb;
  const TKArgs<T> ra{a.q, a.t, nullptr, D, 0, 1, a.Kc, 2};
  bool finite = true;
  for (int64_t c0 = n0; c0 < n1; c0 += a.Kc) {
    const int64_t cn = min64(a.Kc, n1 - c0);
    finite &= tk_pack(a.t, c0, cn, D, w.pack);
    const int64_t panels = (cn + NR - 1) / NR;
    const T* zr[CQ_ROWS];
#if SOLID_CQ_PREBCAST
    for (int64_t m0 = r0; m0 < r1; m0 += CQ_ROWS) {
      tk_rows(ra, m0, r1, zr);
      SOLID_UNROLL
      for (int r = 0; r < CQ_ROWS; ++r)
        for (int64_t d = 0; d < D; ++d) store(zb + (r * D + d) * lanes<T>(), splat<T>(zr[r][d]));
      for (int64_t p = 0; p < panels; ++p)
        rk_tile(a, w, zr, zb, w.pack + p * D * NR, m0, min64(CQ_ROWS, r1 - m0), r0,
                min64(NR, cn - p * NR));
    }
#else
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t m0 = r0; m0 < r1; m0 += CQ_ROWS) {
        tk_rows(ra, m0, r1, zr);
        rk_tile(a, w, zr, zb, w.pack + p * D * NR, m0, min64(CQ_ROWS, r1 - m0), r0,
                min64(NR, cn - p * NR));
      }
#endif
  }
  return finite;
}

// ---------------------------------------------------------------- generated_linear
//
// y_b = x_b @ f(P_b), P_b[i, :] = base[i, :] + sum_k c_b[k] gp[i, k, :], f = clip to
// +-tau or the identity: a layer whose weights a full-rank generator makes. A register
// tile holds P for GL_ROWS samples x GL_VECS vectors of row i; it is consumed at once
// (y += x[:, i] f(P); in the backward dW, dx, dc and the generator's gradient), so
// neither the (B, I, O) weights nor their gradient is ever written to memory. Each load
// of the generator map serves GL_ROWS samples.

constexpr int GL_ROWS = SOLID_GL_ROWS;
constexpr int GL_VECS = SOLID_GL_VECS;

// acc[s] = P of sample b + s, row i, columns [o0, o0 + NV*V).
template <typename T, int S, int NV>
inline void gl_pre(const GLArgs<T>& a, int64_t b, int64_t i, int64_t o0, Vec<T> (&acc)[S][NV]) {
  constexpr int V = lanes<T>();
  const int64_t O = a.O, C = a.C;
  SOLID_UNROLL
  for (int v = 0; v < NV; ++v) {
    const Vec<T> bv = load(a.base + i * O + o0 + v * V);
    SOLID_UNROLL
    for (int s = 0; s < S; ++s) acc[s][v] = bv;
  }
  const T* gi = a.gp + i * C * O + o0;
  const T* c = a.c + b * C;
  for (int64_t k = 0; k < C; ++k) {
    Vec<T> gv[NV];
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) gv[v] = load(gi + k * O + v * V);
    SOLID_UNROLL
    for (int s = 0; s < S; ++s) {
      const Vec<T> cs = splat<T>(c[s * C + k]);
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) acc[s][v] += gv[v] * cs;
    }
  }
}

template <typename T, int S, int NV>
inline void gl_fwd_tile(const GLArgs<T>& a, int64_t b, int64_t i, int64_t o0) {
  constexpr int V = lanes<T>();
  const int64_t L = a.L, I = a.I, O = a.O;
  Vec<T> w[S][NV];
  gl_pre<T, S, NV>(a, b, i, o0, w);
  if (a.clip) {
    const Vec<T> lo = splat<T>(-a.tau), hi = splat<T>(a.tau);
    SOLID_UNROLL
    for (int s = 0; s < S; ++s)
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) w[s][v] = vclip<T>(w[s][v], lo, hi);
  }
  SOLID_UNROLL
  for (int s = 0; s < S; ++s)
    for (int64_t l = 0; l < L; ++l) {
      const int64_t row = (b + s) * L + l;
      const Vec<T> xs = splat<T>(a.x[row * I + i]);
      T* y = a.y + row * O + o0;
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) store(y + v * V, load(y + v * V) + w[s][v] * xs);
    }
}

template <typename T, int S>
inline void gl_fwd_group(const GLArgs<T>& a, int64_t b) {
  constexpr int V = lanes<T>();
  const int64_t O = a.O;
  T* y = a.y + b * a.L * O;
  for (int64_t j = 0; j < S * a.L * O; ++j) y[j] = T(0);
  for (int64_t i = 0; i < a.I; ++i) {
    int64_t o0 = 0;
    for (; o0 + GL_VECS * V <= O; o0 += GL_VECS * V) gl_fwd_tile<T, S, GL_VECS>(a, b, i, o0);
    for (; o0 < O; o0 += V) gl_fwd_tile<T, S, 1>(a, b, i, o0);
  }
}

template <typename T>
void gl_forward(const GLArgs<T>& a, int64_t b0, int64_t b1) {
  int64_t b = b0;
  for (; b + GL_ROWS <= b1; b += GL_ROWS) gl_fwd_group<T, GL_ROWS>(a, b);
  with_rows<GL_ROWS - 1>(b1 - b, [&](auto rows) {
    gl_fwd_group<T, decltype(rows)::value>(a, b);
  });
}

// One tile of the backward: dW = x^T g (masked where P is clipped), then
// dx partials += g f(P) (dxv: (S, L) vectors), dbase += sum_s dW, dgp[i, k] += c_k dW;
// dW is kept in dws (S, I, O), an L1/L2-sized scratch of the group, for dc. Each
// sample's P is replaced by its dW in the same registers once dx has used it: one
// S x NV tile, not two, so the tile fits AVX2's 16 registers.
template <typename T, int S, int NV>
inline void gl_bwd_tile(const GLArgs<T>& a, int64_t b, int64_t i, int64_t o0, T* dxv, T* dws) {
  constexpr int V = lanes<T>();
  const int64_t L = a.L, I = a.I, O = a.O, C = a.C;
  Vec<T> dw[S][NV];
  gl_pre<T, S, NV>(a, b, i, o0, dw);
  const Vec<T> lo = splat<T>(-a.tau), hi = splat<T>(a.tau), zero = splat<T>(0);
  SOLID_UNROLL
  for (int s = 0; s < S; ++s) {
    Vec<T> w[NV], acc[NV];
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) {
      w[v] = a.clip ? vclip<T>(dw[s][v], lo, hi) : dw[s][v];
      acc[v] = zero;
    }
    for (int64_t l = 0; l < L; ++l) {
      const int64_t row = (b + s) * L + l;
      const Vec<T> xs = splat<T>(a.x[row * I + i]);
      const T* g = a.g + row * O + o0;
      Vec<T> t = splat<T>(0);
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) {
        const Vec<T> gv = load(g + v * V);
        acc[v] += gv * xs;
        t += gv * w[v];
      }
      if (a.dx) {
        T* p = dxv + (s * L + l) * V;
        store(p, load(p) + t);
      }
    }
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v)
      dw[s][v] = a.clip ? ((dw[s][v] >= lo) & (dw[s][v] <= hi) ? acc[v] : zero) : acc[v];
  }
  if (a.dbase) {
    T* db = a.dbase + i * O + o0;
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) {
      Vec<T> t = load(db + v * V);
      SOLID_UNROLL
      for (int s = 0; s < S; ++s) t += dw[s][v];
      store(db + v * V, t);
    }
  }
  if (a.dc) {  // kept for gl_dc_tile, which needs every row i of the group's dW
    SOLID_UNROLL
    for (int s = 0; s < S; ++s)
      SOLID_UNROLL
      for (int v = 0; v < NV; ++v) store(dws + (s * I + i) * O + o0 + v * V, dw[s][v]);
  }
  if (!a.dgp) return;
  // dgp[i, k] += sum_s c_sk dW_s, in two chains (even and odd s) to halve the latency.
  const T* c = a.c + b * C;
  T* dgi = a.dgp + i * C * O + o0;
  for (int64_t k = 0; k < C; ++k) {
    SOLID_UNROLL
    for (int v = 0; v < NV; ++v) {
      Vec<T> t0 = load(dgi + k * O + v * V), t1 = splat<T>(0);
      SOLID_UNROLL
      for (int s = 0; s < S; s += 2) {
        t0 += dw[s][v] * splat<T>(c[s * C + k]);
        if (s + 1 < S) t1 += dw[s + 1][v] * splat<T>(c[(s + 1) * C + k]);
      }
      store(dgi + k * O + v * V, t0 + t1);
    }
  }
}

// dc of the group's S samples, codes [k0, k0 + KB): sum over i and o of dW (in dws
// (S, I, O)) times the map, read as gq (C, I, O) (rows k0 .. k0 + KB contiguous,
// streamed in order); accumulated in registers, left as (S, KB) vectors in red.
template <typename T, int S, int KB>
inline void gl_dc_tile(const GLArgs<T>& a, const T* dws, int64_t k0, T* red) {
  constexpr int V = lanes<T>();
  // dws (S, I, O) and gq's rows (I, O) are walked as flat runs of I*O.
  const int64_t n = a.I * a.O;
  const T* gq = a.gq + k0 * n;
  Vec<T> acc[S][KB];
  SOLID_UNROLL
  for (int s = 0; s < S; ++s)
    SOLID_UNROLL
    for (int j = 0; j < KB; ++j) acc[s][j] = splat<T>(0);
  for (int64_t e = 0; e < n; e += V) {
    Vec<T> gv[KB];
    SOLID_UNROLL
    for (int j = 0; j < KB; ++j) gv[j] = load(gq + j * n + e);
    SOLID_UNROLL
    for (int s = 0; s < S; ++s) {
      const Vec<T> d = load(dws + s * n + e);
      SOLID_UNROLL
      for (int j = 0; j < KB; ++j) acc[s][j] += d * gv[j];
    }
  }
  // Reduced by the caller from scratch: reducing the accumulators here (hsum takes its
  // argument's address) made GCC keep them on the stack through the whole loop.
  SOLID_UNROLL
  for (int s = 0; s < S; ++s)
    SOLID_UNROLL
    for (int j = 0; j < KB; ++j) store(red + (s * KB + j) * V, acc[s][j]);
}

template <typename T, int S>
inline void gl_bwd_group(const GLArgs<T>& a, int64_t b, T* scratch) {
  constexpr int V = lanes<T>();
  constexpr int KB = 2;
  const int64_t L = a.L, I = a.I, O = a.O, C = a.C;
  T* dxv = scratch;
  T* dws = scratch + GL_ROWS * L * V;
  for (int64_t i = 0; i < I; ++i) {
    if (a.dx)
      for (int64_t j = 0; j < S * L * V; ++j) dxv[j] = T(0);
    int64_t o0 = 0;
    for (; o0 + GL_VECS * V <= O; o0 += GL_VECS * V)
      gl_bwd_tile<T, S, GL_VECS>(a, b, i, o0, dxv, dws);
    for (; o0 < O; o0 += V) gl_bwd_tile<T, S, 1>(a, b, i, o0, dxv, dws);
    if (a.dx)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t l = 0; l < L; ++l)
          a.dx[((b + s) * L + l) * I + i] = hsum<T>(load(dxv + (s * L + l) * V));
  }
  if (!a.dc) return;
  T* red = dws + GL_ROWS * I * O;
  for (int64_t k0 = 0; k0 < C; k0 += KB) {
    const int kb = C - k0 >= KB ? KB : 1;
    if (kb == KB)
      gl_dc_tile<T, S, KB>(a, dws, k0, red);
    else
      gl_dc_tile<T, S, 1>(a, dws, k0, red);
    for (int64_t s = 0; s < S; ++s)
      for (int j = 0; j < kb; ++j) a.dc[(b + s) * C + k0 + j] = hsum<T>(load(red + (s * kb + j) * V));
  }
}

template <typename T>
void gl_backward(const GLArgs<T>& a, int64_t b0, int64_t b1, T* scratch) {
  int64_t b = b0;
  for (; b + GL_ROWS <= b1; b += GL_ROWS) gl_bwd_group<T, GL_ROWS>(a, b, scratch);
  with_rows<GL_ROWS - 1>(b1 - b, [&](auto rows) {
    gl_bwd_group<T, decltype(rows)::value>(a, b, scratch);
  });
}

template <typename T>
int64_t gl_scratch_elems(int64_t L, int64_t I, int64_t O) {
  return int64_t(GL_ROWS) * (L * lanes<T>() + I * O + 2 * lanes<T>());
}

// ---------------------------------------------------------------- sparse_row_update

// sqrt in T's own precision (__builtin_sqrt of a float would round-trip through double).
template <typename T>
inline T vsqrt(T x) {
  if constexpr (sizeof(T) == 4)
    return __builtin_sqrtf(x);
  else
    return __builtin_sqrt(x);
}

// One distinct row: its gradient rows summed in order into acc, then the row-wise
// optimizer step on w, s1 (and s2). Plain loops over D: the compiler vectorises them
// with this variant's width (sqrt included: the kernels are built -fno-math-errno), and
// the row is memory-bound, so register tiling buys nothing here.
template <typename T>
inline void su_row(const SUArgs<T>& a, int64_t u, T* __restrict acc) {
  const int64_t D = a.D;
  const int64_t r = a.rows ? a.rows[u] : u;
  if (a.pos) {
    const int64_t p0 = a.seg[u], p1 = a.seg[u + 1];
    const T* g0 = a.g + a.pos[p0] * D;
    for (int64_t d = 0; d < D; ++d) acc[d] = g0[d];
    for (int64_t p = p0 + 1; p < p1; ++p) {
      const T* gp = a.g + a.pos[p] * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += gp[d];
    }
  } else {
    const T* gr = a.g + r * D;
    for (int64_t d = 0; d < D; ++d) acc[d] = gr[d];
  }
  T* __restrict w = a.w + r * D;
  const T wd = a.weight_decay;
  if (wd != T(0))
    for (int64_t d = 0; d < D; ++d) acc[d] += wd * w[d];
  if (a.adagrad) {
    T ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += acc[d] * acc[d];
    const T s = a.s1[r] + (D > 0 ? ss / T(D) : T(0));
    a.s1[r] = s;
    const T scale = a.lr / (vsqrt(s) + a.eps);
    for (int64_t d = 0; d < D; ++d) w[d] -= scale * acc[d];
    return;
  }
  T* __restrict m = a.s1 + r * D;
  T* __restrict v = a.s2 + r * D;
  const T b1 = a.beta1, b2 = a.beta2, c1 = T(1) - b1, c2 = T(1) - b2;
  const T step = a.step_size, ib = a.inv_bc2_sqrt, eps = a.eps;
  for (int64_t d = 0; d < D; ++d) {
    const T gd = acc[d];
    const T md = b1 * m[d] + c1 * gd;
    const T vd = b2 * v[d] + c2 * gd * gd;
    m[d] = md;
    v[d] = vd;
    w[d] -= step * md / (vsqrt(vd) * ib + eps);
  }
}

inline void prefetch_bytes(const void* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64)
    __builtin_prefetch(static_cast<const char*>(p) + o, 1, 3);
}

// Rows are scattered over a table far larger than the caches: a row's three lines of
// state would each be a DRAM round trip, one after the other. Prefetching the rows (and
// the first gradient rows) a few distinct rows ahead keeps that many misses in flight.
template <typename T>
void su_rows(const SUArgs<T>& a, int64_t u0, int64_t u1, T* scratch) {
  constexpr int64_t ahead = 8;
  const int64_t bytes = a.D * int64_t(sizeof(T));
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t f = u + ahead;
    if (f < u1) {
      const int64_t r = a.rows ? a.rows[f] : f;
      prefetch_bytes(a.w + r * a.D, bytes);
      if (a.s2) {
        prefetch_bytes(a.s1 + r * a.D, bytes);
        prefetch_bytes(a.s2 + r * a.D, bytes);
      } else {
        prefetch_bytes(a.s1 + r, int64_t(sizeof(T)));
      }
      if (a.pos) {
        const int64_t p1 = a.seg[f + 1] < a.seg[f] + 2 ? a.seg[f + 1] : a.seg[f] + 2;
        for (int64_t p = a.seg[f]; p < p1; ++p) prefetch_bytes(a.g + a.pos[p] * a.D, bytes);
      }
    }
    su_row(a, u, scratch);
  }
}

// ---------------------------------------------------------------- FMA peak

double fma_loop(int64_t iters) {
  constexpr int N = SOLID_FMA_CHAINS;
  Vec<float> acc[N];
  SOLID_UNROLL
  for (int j = 0; j < N; ++j) acc[j] = splat<float>(1e-3f * float(j + 1));
  const Vec<float> m = splat<float>(0.999999f), c = splat<float>(1e-6f);
  for (int64_t it = 0; it < iters; ++it)
    SOLID_UNROLL
    for (int j = 0; j < N; ++j) acc[j] = acc[j] * m + c;
  Vec<float> s = acc[0];
  SOLID_UNROLL
  for (int j = 1; j < N; ++j) s += acc[j];
  volatile float sink = s[0];
  (void)sink;
  return 2.0 * double(iters) * N * lanes<float>();
}

template <typename T>
constexpr KernelOps<T> ops_of() {
  return KernelOps<T>{&dl_forward<T>,     &dl_backward<T>,      &gl_forward<T>,
                      &gl_backward<T>,    &gl_scratch_elems<T>, lanes<T>(),
                      &cq_search<T>,      cq_tile_codes<T>(),   CQ_GROUP,
                      &cq_scratch_bytes<T>, &su_rows<T>,      &tk_block<T>,
                      &rk_self<T>,        &rk_block<T>};
}

const Kernels table{SOLID_STR(SOLID_ISA), ops_of<float>(), ops_of<double>(), &fma_loop};

}  // namespace

const Kernels& kernels() { return table; }

}  // namespace solid_ext::cpu::SOLID_ISA
