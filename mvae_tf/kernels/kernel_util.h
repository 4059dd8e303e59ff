// What every mvae_tf kernel shares: TF's kernel types, element types as plain words, rows
// widened to float32 and narrowed back, and the registration of float and bfloat16 kernels.

#ifndef MVAE_TF_KERNELS_KERNEL_UTIL_H_
#define MVAE_TF_KERNELS_KERNEL_UTIL_H_

#include <cstdint>

#include "bfloat16_bits.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mvae_tf {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using Bfloat16 = ::tensorflow::bfloat16;

static_assert(sizeof(Bfloat16) == sizeof(uint16_t), "bfloat16 is one 16-bit word");

// Each element type as the plain type its words are read as: bfloat16 as uint16_t, so that
// loops over them compile to vector code (bfloat16_bits.h).
template <typename T>
struct Storage {
  using Type = T;
};
template <>
struct Storage<Bfloat16> {
  using Type = uint16_t;
};

inline float Widen(float value) { return value; }
inline float Widen(uint16_t bits) { return Bf16ToFloat(bits); }
inline void Narrow(float value, float* out) { *out = value; }
inline void Narrow(float value, uint16_t* out) { *out = FloatToBf16(value); }

template <typename S>
void WidenRow(const S* in, float* out, int64_t n) {
  for (int64_t k = 0; k < n; ++k) out[k] = Widen(in[k]);
}

template <typename S>
void NarrowRow(const float* in, S* out, int64_t n) {
  for (int64_t k = 0; k < n; ++k) Narrow(in[k], out + k);
}

}  // namespace mvae_tf

// Registers KERNEL<float> and KERNEL<bfloat16> as op NAME's CPU kernels (attribute "T").
#define MVAE_TF_REGISTER_FLOAT_AND_BFLOAT16(NAME, KERNEL)                          \
  REGISTER_KERNEL_BUILDER(                                                         \
      Name(NAME).Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),      \
      KERNEL<float>);                                                              \
  REGISTER_KERNEL_BUILDER(Name(NAME)                                               \
                              .Device(::tensorflow::DEVICE_CPU)                    \
                              .TypeConstraint<::tensorflow::bfloat16>("T"),        \
                          KERNEL<::tensorflow::bfloat16>);

#endif  // MVAE_TF_KERNELS_KERNEL_UTIL_H_
