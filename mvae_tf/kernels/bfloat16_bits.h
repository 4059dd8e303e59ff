// bfloat16 <-> float32 on the 16-bit words, rounding as Eigen does (TF's bfloat16).
//
// A bfloat16 is the top half of a float32. Widening shifts the word up; narrowing rounds to
// nearest, ties to even, and turns a NaN into Eigen's quiet NaN of the same sign. Written
// on plain integers so that the compiler vectorises loops of them (-march=native).

#ifndef MVAE_TF_KERNELS_BFLOAT16_BITS_H_
#define MVAE_TF_KERNELS_BFLOAT16_BITS_H_

#include <cstdint>

namespace mvae_tf {

// __builtin_bit_cast (GCC 11, Clang 9) and integer arithmetic throughout: GCC vectorises
// loops of these (checked with -fopt-info-vec), not a memcpy or a choice between constants.
inline float Bf16ToFloat(uint16_t bits) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
}

inline uint16_t FloatToBf16(float value) {
  const uint32_t word = __builtin_bit_cast(uint32_t, value);
  const uint32_t rounded = (word + 0x7fffu + ((word >> 16) & 1u)) >> 16;
  const uint32_t nan = ((word >> 16) & 0x8000u) | 0x7fc0u;  // The sign, then a quiet NaN.
  return static_cast<uint16_t>((word & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

}  // namespace mvae_tf

#endif  // MVAE_TF_KERNELS_BFLOAT16_BITS_H_
