// The avx2 variant of the CPU kernels (see kernels_impl.h), compiled with the flags
// isa_flags.txt gives it. Register budget: 16 vector registers of 32 bytes.
#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels_avx2.cpp needs the flags of isa_flags.txt (-mavx2 -mfma)"
#endif
#define SOLID_ISA avx2
#define SOLID_VBYTES 32
#define SOLID_DL_ROWS 5
#define SOLID_DL_VECS 2
#define SOLID_DX_ROWS 2
#define SOLID_GL_ROWS 4
#define SOLID_GL_VECS 2
#define SOLID_CQ_ROWS 6
#define SOLID_CQ_VECS 2
#define SOLID_CQ_PREBCAST 0
#define SOLID_FMA_CHAINS 12
#include "kernels_impl.h"
