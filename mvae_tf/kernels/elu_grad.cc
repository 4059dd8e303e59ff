// MvaeEluGrad: the ELU's gradient in bfloat16, the same function as TensorFlow's `EluGrad`,
// compiled for the machine it runs on (mvae_tf/native_ops.py builds it with -march=native).
//
// With y = elu(x) (alpha = 1), dL/dx = g where y >= 0 and g * (y + 1) where y < 0. TF runs
// `EluGrad` in Eigen, built for any x86-64 CPU with AVX, which converts bfloat16 to float
// and back in narrow steps: in mixed precision the op took longer in bf16 than in fp32
// (README, "Throughput"). This kernel rounds each element as Eigen does, t = bf16(y + 1),
// then bf16(t * g), to nearest even, so its result is TF's bit for bit
// (tests/test_native_ops.py). In float32 TF's own kernel is as fast, and is used.

#include <cstdint>

#include "kernel_util.h"

namespace mvae_tf {
namespace {

void EluGradRange(const uint16_t* g, const uint16_t* y, uint16_t* out, int64_t begin,
                  int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float y_value = Bf16ToFloat(y[i]);
    const float slope = Bf16ToFloat(FloatToBf16(y_value + 1.f));  // bf16(y + 1)
    out[i] = y_value < 0.f ? FloatToBf16(slope * Bf16ToFloat(g[i])) : g[i];
  }
}

class EluGradOp : public OpKernel {
 public:
  explicit EluGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& gradients = context->input(0);
    const Tensor& outputs = context->input(1);
    OP_REQUIRES(context, gradients.shape() == outputs.shape(),
                tensorflow::errors::InvalidArgument(
                    "MvaeEluGrad: gradients and outputs must have the same shape; received ",
                    gradients.shape().DebugString(), " and ", outputs.shape().DebugString()));
    Tensor* backprops = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output(
                                {0}, 0, gradients.shape(), &backprops));
    // bfloat16 is a 16-bit word: the loop reads and writes the words themselves.
    const auto* g = reinterpret_cast<const uint16_t*>(gradients.flat<Bfloat16>().data());
    const auto* y = reinterpret_cast<const uint16_t*>(outputs.flat<Bfloat16>().data());
    auto* out = reinterpret_cast<uint16_t*>(backprops->flat<Bfloat16>().data());
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // Each element costs a few cycles: shards of a few thousand amortise the hand-off.
    tensorflow::Shard(workers->num_threads, workers->workers, gradients.NumElements(),
                      /*cost_per_unit=*/4, [&](int64_t begin, int64_t end) {
                        EluGradRange(g, y, out, begin, end);
                      });
  }
};

}  // namespace
}  // namespace mvae_tf

REGISTER_OP("MvaeEluGrad")
    .Input("gradients: bfloat16")
    .Input("outputs: bfloat16")
    .Output("backprops: bfloat16")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      tensorflow::shape_inference::ShapeHandle shape;
      TF_RETURN_IF_ERROR(context->Merge(context->input(0), context->input(1), &shape));
      context->set_output(0, shape);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("MvaeEluGrad").Device(tensorflow::DEVICE_CPU), mvae_tf::EluGradOp);
