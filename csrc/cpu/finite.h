// all_finite for the torch-facing CPU sources (never the per-ISA kernel units: see the
// note at the top of kernels.h).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace solid_ext::cpu {

// No NaN or infinity in p[0, n): the exponent bits are not all ones. An integer OR
// reduction, so it vectorises (a floating-point sum would be one long dependent chain).
template <typename T>
inline bool all_finite(const T* p, int64_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U exp_mask = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U bits;
    std::memcpy(&bits, p + i, sizeof(U));
    bad |= U((bits & exp_mask) == exp_mask);
  }
  return bad == 0;
}

}  // namespace solid_ext::cpu
