// Run-time choice of the CPU kernel variant (see isa.h). Compiled with the default
// flags of the build, so it runs on any CPU the binary loads on.
#include "isa.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace solid_ext::cpu {
namespace {

struct Variant {
  const char* name;
  const Kernels& (*kernels)();
  bool (*cpu_can_run)();
};

#if defined(SOLID_EXT_X86_ISAS)
// The features of each variant's flags in isa_flags.txt. __builtin_cpu_supports
// also requires the OS to save the registers (XCR0), so a VM that hides AVX-512
// state reports no avx512f.
bool can_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool can_avx512() {
  return can_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw");
}
#endif
bool can_baseline() { return true; }

const Variant kVariants[] = {
#if defined(SOLID_EXT_X86_ISAS)
    {"avx512", &avx512::kernels, &can_avx512},
    {"avx2", &avx2::kernels, &can_avx2},
#endif
    {"baseline", &baseline::kernels, &can_baseline},
};

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const Variant& find_runnable(const std::string& name, const char* where) {
  for (const auto& v : kVariants)
    if (name == v.name) {
      TORCH_CHECK(v.cpu_can_run(), where, "=", name, ": this CPU cannot run the '", name,
                  "' kernels; it supports: ", joined(isas_supported()));
      return v;
    }
  TORCH_CHECK(false, where, "=", name, ": unknown CPU kernel variant; built: ",
              joined(isas_built()), "; this CPU supports: ", joined(isas_supported()),
              " (or 'auto')");
}

const Variant& resolve(const std::string& name, const char* where) {
  if (name.empty() || name == "auto") {
    for (const auto& v : kVariants)
      if (v.cpu_can_run()) return v;
  }
  return find_runnable(name, where);
}

// The variant SOLID_EXT_CPU_ISA asks for (unset, empty or "auto": the widest).
const Variant& from_env() {
  const char* env = std::getenv("SOLID_EXT_CPU_ISA");
  return resolve(env ? env : "", "SOLID_EXT_CPU_ISA");
}

std::mutex mu;
std::atomic<const Variant*> active{nullptr};

const Variant& current() {
  const Variant* v = active.load(std::memory_order_acquire);
  if (v) return *v;
  std::lock_guard<std::mutex> lock(mu);
  v = active.load(std::memory_order_relaxed);
  if (!v) {
    v = &from_env();
    active.store(v, std::memory_order_release);
  }
  return *v;
}

}  // namespace

std::vector<std::string> isas_built() {
  std::vector<std::string> out;
  for (const auto& v : kVariants) out.emplace_back(v.name);
  return out;
}

std::vector<std::string> isas_supported() {
  std::vector<std::string> out;
  for (const auto& v : kVariants)
    if (v.cpu_can_run()) out.emplace_back(v.name);
  return out;
}

std::string active_isa() { return current().name; }

void set_isa(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu);
  if (name.empty() || name == "auto") {
    active.store(&from_env(), std::memory_order_release);
  } else {
    active.store(&find_runnable(name, "cpu_isa"), std::memory_order_release);
  }
}

const Kernels& active_kernels() { return current().kernels(); }

template <>
const KernelOps<float>& active_ops<float>() {
  return active_kernels().f32;
}
template <>
const KernelOps<double>& active_ops<double>() {
  return active_kernels().f64;
}

double fma_flops(const std::string& isa, int64_t iters, int64_t threads) {
  const Kernels& k = resolve(isa, "cpu_isa").kernels();
  std::atomic<double> total{0.0};
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    double f = 0;
    for (int64_t t = t0; t < t1; ++t) f += k.fma_loop(iters);
    double cur = total.load();
    while (!total.compare_exchange_weak(cur, cur + f)) {
    }
  });
  return total.load();
}

}  // namespace solid_ext::cpu
