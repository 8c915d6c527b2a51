// The baseline variant of the CPU kernels (see kernels_impl.h), compiled with the flags
// isa_flags.txt gives it. Register budget: 16 vector registers of 16 bytes.

#define SOLID_ISA baseline
#define SOLID_VBYTES 16
#define SOLID_DL_ROWS 5
#define SOLID_DL_VECS 2
#define SOLID_DX_ROWS 2
#define SOLID_GL_ROWS 4
#define SOLID_GL_VECS 2
#define SOLID_CQ_ROWS 6
#define SOLID_CQ_VECS 2
#define SOLID_CQ_PREBCAST 1
#define SOLID_FMA_CHAINS 12
#include "kernels_impl.h"
