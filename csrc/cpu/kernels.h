// The interface between the torch-facing CPU ops (dynamic_linear.cpp,
// codebook_quantize.cpp) and the SIMD kernels, which are built once per instruction
// set (kernels_<isa>.cpp, each compiled with its own -m flags; see isa.h).
//
// This header is included by translation units compiled for different ISAs, so it
// holds plain structs and declarations only: an inline function defined here could
// be emitted with AVX-512 instructions by one unit and picked by the linker for all.
#pragma once
#include <cstdint>

namespace solid_ext::cpu {

// dynamic_linear of one batch range, raw row-major pointers. Optional inputs and
// unwanted outputs are null.
template <typename T>
struct DLArgs {
  const T* x;     // (B, L, I)
  const T* w;     // (B, I, O)
  const T* bias;  // (B, O)
  const T* bw;    // (B, I, O)
  const T* bb;    // (B, O)
  const T* g;     // (B, L, O) output gradient (backward)
  T tau;
  int64_t L, I, O;
  T* y;    // (B, L, O) forward output
  T* dx;   // (B, L, I)
  T* dw;   // (B, I, O)
  T* dbw;  // (B, I, O)
  T* db;   // (B, O), always written by backward
  T* dbb;  // (B, O)
};

// codebook_quantize search over groups of rows. ct is the codebook scaled by -2 and
// packed in panels of one code tile: (Kp / tile, D, tile), Kp a multiple of the
// kernel's code tile (zero padding);
// c2 (Kp) the squared norms (+inf padding). Kc: codes per cache chunk (multiple of
// the code tile).
template <typename T>
struct CQArgs {
  const T* z;   // (M, D)
  const T* c;   // (K, D)
  const T* ct;  // (Kp / tile, D, tile)
  const T* c2;  // (Kp)
  int64_t M, K, D, Kp, Kc;
  bool finite;   // z and the codebook hold no NaN or infinity
  int64_t* idx;  // (M)
  T* q;          // (M, D)
  T* sq;         // (M)
};

// generated_linear of one batch range (see kernels_impl.h). gp is the generator map
// packed (I, C, O) (gq: (C, I, O), for dc) and base (I, O), all zero-padded to O columns, O a multiple of the
// variant's lanes (gl_lanes); g and y are padded likewise. dgp and dbase are the
// calling thread's own (I, C, O) and (I, O) partial sums (added to, not overwritten).
template <typename T>
struct GLArgs {
  const T* x;     // (B, L, I)
  const T* c;     // (B, C)
  const T* gp;    // (I, C, O)
  const T* gq;    // (C, I, O): the same map, read by the backward's dc
  const T* base;  // (I, O)
  const T* g;     // (B, L, O) output gradient (backward)
  bool clip;
  T tau;
  int64_t L, I, O, C;
  T* y;      // (B, L, O) forward output
  T* dx;     // (B, L, I)
  T* dc;     // (B, C)
  T* dgp;    // (I, C, O), accumulated
  T* dbase;  // (I, O), accumulated
};

// sparse_row_update over distinct rows [u0, u1) (see sparse_row_update.cpp). Row u is
// rows[u] (or u when rows is null); its gradient is the sum of g rows pos[seg[u]],
// ..., pos[seg[u + 1] - 1] in that order (or g row u when pos is null).
template <typename T>
struct SUArgs {
  T* w;                 // (N, D) weights, updated in place
  T* s1;                // lazy_adam: (N, D) first moment; rowwise_adagrad: (N) accumulator
  T* s2;                // lazy_adam: (N, D) second moment; else null
  const T* g;           // (nnz, D) gradient rows
  const int64_t* pos;   // (nnz) positions of g sorted by row, or null
  const int64_t* seg;   // (U + 1) segment starts into pos, or null
  const int64_t* rows;  // (U) distinct rows, or null
  int64_t D;
  bool adagrad;         // false: lazy_adam
  T lr, beta1, beta2, eps, weight_decay;
  T step_size;          // lazy_adam: lr / (1 - beta1^step)
  T inv_bc2_sqrt;       // lazy_adam: 1 / sqrt(1 - beta2^step)
};

// topk_scores (see kernels_impl.h): the k largest q_b . t_n of query rows [r0, r1)
// over items [n0, n1), each row's candidates in a reservoir of cap entries.
template <typename T>
struct TKEntry {
  T v;
  int64_t i;
};

template <typename T>
struct TKArgs {
  const T* q;           // (B, D) queries
  const T* t;           // (N, D) table
  const int64_t* excl;  // (B, E) items excluded per row, each row ascending; or null
  int64_t D, E, k;
  int64_t Kc;           // items per packed chunk (a multiple of cq_tile)
  int64_t cap;          // reservoir entries per row (> k)
};

// One task's buffers; rows are counted from the task's first row r0.
template <typename T>
struct TKWork {
  T* pack;           // (Kc * D) the chunk of items packed in panels of cq_tile
  void* zb;          // cq_scratch_bytes(D) bytes (the baseline's broadcast rows)
  T* thr;            // (r1 - r0) each row's threshold value: its k-th best kept, or -inf
  int64_t* thi;      // (r1 - r0) the threshold's item index
  TKEntry<T>* res;   // (r1 - r0, cap) each row's reservoir
  int64_t* cnt;      // (r1 - r0) reservoir fill, zero on entry
  T* sel;            // (2 * cap) a compaction's scratch
};

// score_ranks (see kernels_impl.h): how many items score at least the target's score.
template <typename T>
struct RKArgs {
  const T* q;             // (B, D) queries
  const T* t;             // (N, D) table
  const int64_t* target;  // (B) each row's target item
  const int64_t* excl;    // (B, E) items excluded per row, each row ascending; or null
  int64_t D, E;
  int64_t Kc;             // items per packed chunk (a multiple of cq_tile)
  T* ts;                  // (B) the target's score (written by rk_self)
  int64_t* sub;           // (B) distinct excluded items, not the target, scoring >= ts (rk_self)
};

template <typename T>
struct KernelOps {
  // Samples [b0, b1); scratch holds SOLID_EXT_DL_SCRATCH_ELEMS(I, O) elements.
  void (*dl_forward)(const DLArgs<T>& a, int64_t b0, int64_t b1, T* scratch);
  void (*dl_backward)(const DLArgs<T>& a, int64_t b0, int64_t b1, T* scratch);
  // Samples [b0, b1); the backward's scratch holds gl_scratch_elems(L, I, O) elements.
  void (*gl_forward)(const GLArgs<T>& a, int64_t b0, int64_t b1);
  void (*gl_backward)(const GLArgs<T>& a, int64_t b0, int64_t b1, T* scratch);
  int64_t (*gl_scratch_elems)(int64_t L, int64_t I, int64_t O);
  int gl_lanes;   // O is padded to a multiple of it
  // Row groups [g0, g1) of cq_group rows; scratch holds cq_scratch_bytes(D) bytes.
  void (*cq_search)(const CQArgs<T>& a, int64_t g0, int64_t g1, void* scratch);
  int cq_tile;    // codes per micro-tile: Kp and Kc are multiples of it
  int cq_group;   // rows of z per group
  int64_t (*cq_scratch_bytes)(int64_t D);
  // Distinct rows [u0, u1); scratch holds D elements.
  void (*su_rows)(const SUArgs<T>& a, int64_t u0, int64_t u1, T* scratch);
  // Query rows [r0, r1) x items [n0, n1); false if a table row read holds NaN or inf.
  bool (*tk_block)(const TKArgs<T>& a, int64_t r0, int64_t r1, int64_t n0, int64_t n1,
                   const TKWork<T>& w);
  // Rows [b0, b1): ts and sub, with the arithmetic rk_block's tiles use; scratch holds
  // D * cq_tile elements and then cq_scratch_bytes(D) bytes.
  void (*rk_self)(const RKArgs<T>& a, int64_t b0, int64_t b1, void* scratch);
  // Adds to w.cnt[b - r0] the items of [n0, n1) scoring >= ts[b] (pack, zb used);
  // false if a table row read holds NaN or inf.
  bool (*rk_block)(const RKArgs<T>& a, int64_t r0, int64_t r1, int64_t n0, int64_t n1,
                   const TKWork<T>& w);
};

struct Kernels {
  const char* isa;
  KernelOps<float> f32;
  KernelOps<double> f64;
  // Runs `iters` rounds of independent float32 multiply-adds on one thread with
  // this ISA's widest vectors; returns the floating-point operations done (the
  // variant's compute peak, timed by the caller).
  double (*fma_loop)(int64_t iters);
};

// Scratch elements dynamic_linear needs per thread: the combined weight of one
// sample and one bias row. A macro, not a function: see the note at the top.
#define SOLID_EXT_DL_SCRATCH_ELEMS(I, O) ((I) * (O) + (O))

namespace baseline {
const Kernels& kernels();
}
#if defined(SOLID_EXT_X86_ISAS)
namespace avx2 {
const Kernels& kernels();
}
namespace avx512 {
const Kernels& kernels();
}
#endif

}  // namespace solid_ext::cpu
