// Which variant of the CPU kernels runs: chosen at run time from the CPU (cpuid),
// overridable with SOLID_EXT_CPU_ISA=avx512|avx2|baseline or set_isa().
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace solid_ext::cpu {

// Variants compiled into this binary, widest first.
std::vector<std::string> isas_built();
// Variants built and runnable on this CPU, widest first (baseline is always last).
std::vector<std::string> isas_supported();
// The variant in use. The first call resolves it from SOLID_EXT_CPU_ISA (unset,
// empty or "auto": the widest supported); an unknown or unsupported value throws
// c10::Error naming the value and what this CPU supports.
std::string active_isa();
// Select a variant for the whole process ("auto": back to the environment/default).
void set_isa(const std::string& name);
// The kernels of the variant in use, all dtypes or one (float or double).
const Kernels& active_kernels();
template <typename T>
const KernelOps<T>& active_ops();
// Float32 FLOPs done by `iters` rounds of the variant's FMA loop on each of
// `threads` threads (at::parallel_for); timed by the caller.
double fma_flops(const std::string& isa, int64_t iters, int64_t threads);

}  // namespace solid_ext::cpu
