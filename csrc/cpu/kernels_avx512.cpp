// The avx512 variant of the CPU kernels (see kernels_impl.h), compiled with the flags
// isa_flags.txt gives it. Register budget: 32 vector registers of 64 bytes.
#if !defined(__AVX512F__) || !defined(__AVX512DQ__)
#error "kernels_avx512.cpp needs the flags of isa_flags.txt (-mavx512f -mavx512dq ...)"
#endif
#define SOLID_ISA avx512
#define SOLID_VBYTES 64
#define SOLID_DL_ROWS 5
#define SOLID_DL_VECS 4
#define SOLID_DX_ROWS 4
#define SOLID_GL_ROWS 6
#define SOLID_GL_VECS 2
#define SOLID_CQ_ROWS 4
#define SOLID_CQ_VECS 4
#define SOLID_CQ_PREBCAST 0
#define SOLID_FMA_CHAINS 16
#include "kernels_impl.h"
