// Portable SIMD via GCC/Clang vector extensions: one 64-byte register of T.
// With -march=native on an AVX-512 machine each Vec is one zmm register; on
// narrower ISAs the compiler splits it, so the code stays portable.
#pragma once
#include <cstdint>
#include <cstring>

namespace solid_ext::cpu {

template <typename T>
struct VecT;

template <>
struct VecT<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t itype __attribute__((vector_size(64)));
  static constexpr int lanes = 16;
};

template <>
struct VecT<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t itype __attribute__((vector_size(64)));
  static constexpr int lanes = 8;
};

template <typename T>
using Vec = typename VecT<T>::type;
template <typename T>
using IVec = typename VecT<T>::itype;

template <typename T>
inline Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void vstore(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline Vec<T> vsplat(T s) {
  return Vec<T>{} + s;
}

}  // namespace solid_ext::cpu
