// MvaeBilinearUpsample2x and its gradient: `tf.image.resize(x, [2H, 2W], "bilinear")` and
// its adjoint in one pass each, in float32 or bfloat16 (mvae_tf/upsampling.py).
//
// With half-pixel centres, output row 2i takes 1/4 of input row i - 1 and 3/4 of row i, and
// row 2i + 1 takes 3/4 of row i and 1/4 of row i + 1, rows outside [0, H) clamped to the
// edge; columns likewise. Forward, each output row is a blend of two input rows, then of
// two columns. The adjoint sends each gradient back along the same weights: input row i
// receives 1/4, 3/4, 3/4, 1/4 of output rows 2i - 1 .. 2i + 2, with the clamped edges
// repeated (dy[-1] := dy[0], dy[2H] := dy[2H - 1]), then the same across columns. TF runs
// these as a resize, edge-padding copies and a depthwise convolution in float32, and as
// two batched matrix products in bf16; here each is one pass over memory. Arithmetic is in
// float32; bfloat16 is rounded once, at the end (to nearest even).

#include <cstdint>
#include <vector>

#include "kernel_util.h"

namespace mvae_tf {
namespace {

inline int64_t Clamp(int64_t i, int64_t size) { return i < 0 ? 0 : (i >= size ? size - 1 : i); }

template <typename T>
class UpsampleOp : public OpKernel {
 public:
  explicit UpsampleOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    using S = typename Storage<T>::Type;
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 4,
                tensorflow::errors::InvalidArgument(
                    "MvaeBilinearUpsample2x: expected features [batch, height, width, "
                    "channels]; received shape ", input.shape().DebugString()));
    const int64_t batch = input.dim_size(0), height = input.dim_size(1);
    const int64_t width = input.dim_size(2), channels = input.dim_size(3);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({batch, 2 * height, 2 * width, channels}),
                                &output));
    if (output->NumElements() == 0) return;
    const auto* x = reinterpret_cast<const S*>(input.flat<T>().data());
    auto* y = reinterpret_cast<S*>(output->flat<T>().data());
    const int64_t row = width * channels;  // Elements in one input row.
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // One unit is one output row: [2W, C], from two input rows.
    tensorflow::Shard(
        workers->num_threads, workers->workers, batch * 2 * height, 12 * row,
        [&](int64_t begin, int64_t end) {
          std::vector<float> top(row), bottom(row), out(2 * row);
          for (int64_t unit = begin; unit < end; ++unit) {
            const int64_t b = unit / (2 * height), r = unit % (2 * height), i = r / 2;
            // Row 2i: 1/4 x[i-1] + 3/4 x[i]; row 2i+1: 3/4 x[i] + 1/4 x[i+1].
            const bool even = r % 2 == 0;
            WidenRow(x + (b * height + Clamp(even ? i - 1 : i, height)) * row, top.data(), row);
            WidenRow(x + (b * height + Clamp(even ? i : i + 1, height)) * row, bottom.data(),
                     row);
            const float w_top = even ? 0.25f : 0.75f, w_bottom = 1.f - w_top;
            for (int64_t k = 0; k < row; ++k) top[k] = w_top * top[k] + w_bottom * bottom[k];
            for (int64_t j = 0; j < width; ++j) {
              const float* left = &top[Clamp(j - 1, width) * channels];
              const float* middle = &top[j * channels];
              const float* right = &top[Clamp(j + 1, width) * channels];
              float* even_out = &out[2 * j * channels];
              float* odd_out = even_out + channels;
              for (int64_t c = 0; c < channels; ++c) {
                even_out[c] = 0.25f * left[c] + 0.75f * middle[c];
                odd_out[c] = 0.75f * middle[c] + 0.25f * right[c];
              }
            }
            NarrowRow(out.data(), y + unit * 2 * row, 2 * row);
          }
        });
  }
};

template <typename T>
class UpsampleGradOp : public OpKernel {
 public:
  explicit UpsampleGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    using S = typename Storage<T>::Type;
    const Tensor& gradients = context->input(0);
    OP_REQUIRES(context, gradients.dims() == 4 && gradients.dim_size(1) % 2 == 0 &&
                             gradients.dim_size(2) % 2 == 0,
                tensorflow::errors::InvalidArgument(
                    "MvaeBilinearUpsample2xGrad: expected gradients [batch, 2 * height, 2 * "
                    "width, channels]; received shape ", gradients.shape().DebugString()));
    const int64_t batch = gradients.dim_size(0), height = gradients.dim_size(1) / 2;
    const int64_t width = gradients.dim_size(2) / 2, channels = gradients.dim_size(3);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({batch, height, width, channels}), &output));
    if (output->NumElements() == 0) return;
    const auto* dy = reinterpret_cast<const S*>(gradients.flat<T>().data());
    auto* dx = reinterpret_cast<S*>(output->flat<T>().data());
    const int64_t row = width * channels, wide = 2 * row;  // Elements in dx's, dy's rows.
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // One unit is one row of dx: [W, C], from four rows of dy.
    tensorflow::Shard(
        workers->num_threads, workers->workers, batch * height, 20 * wide,
        [&](int64_t begin, int64_t end) {
          std::vector<float> sum(wide), next(wide), out(row);
          for (int64_t unit = begin; unit < end; ++unit) {
            const int64_t b = unit / height, i = unit % height;
            const float weights[4] = {0.25f, 0.75f, 0.75f, 0.25f};
            for (int q = 0; q < 4; ++q) {  // dy rows 2i - 1 .. 2i + 2, edges repeated.
              const int64_t r = Clamp(2 * i - 1 + q, 2 * height);
              WidenRow(dy + (b * 2 * height + r) * wide, next.data(), wide);
              if (q == 0) {
                for (int64_t k = 0; k < wide; ++k) sum[k] = weights[0] * next[k];
              } else {
                for (int64_t k = 0; k < wide; ++k) sum[k] += weights[q] * next[k];
              }
            }
            for (int64_t j = 0; j < width; ++j) {
              const float* taps[4];
              for (int q = 0; q < 4; ++q) {
                taps[q] = &sum[Clamp(2 * j - 1 + q, 2 * width) * channels];
              }
              float* dx_j = &out[j * channels];
              for (int64_t c = 0; c < channels; ++c) {
                dx_j[c] = 0.25f * taps[0][c] + 0.75f * taps[1][c] + 0.75f * taps[2][c] +
                          0.25f * taps[3][c];
              }
            }
            NarrowRow(out.data(), dx + unit * row, row);
          }
        });
  }
};

}  // namespace
}  // namespace mvae_tf

REGISTER_OP("MvaeBilinearUpsample2x")
    .Input("features: T")
    .Output("upsampled: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      tensorflow::shape_inference::ShapeHandle features;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 4, &features));
      tensorflow::shape_inference::DimensionHandle height, width;
      TF_RETURN_IF_ERROR(context->Multiply(context->Dim(features, 1), 2, &height));
      TF_RETURN_IF_ERROR(context->Multiply(context->Dim(features, 2), 2, &width));
      context->set_output(0, context->MakeShape({context->Dim(features, 0), height, width,
                                                 context->Dim(features, 3)}));
      return absl::OkStatus();
    });

REGISTER_OP("MvaeBilinearUpsample2xGrad")
    .Input("gradients: T")
    .Output("backprops: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      tensorflow::shape_inference::ShapeHandle gradients;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 4, &gradients));
      tensorflow::shape_inference::DimensionHandle height, width;
      TF_RETURN_IF_ERROR(context->Divide(context->Dim(gradients, 1), 2, true, &height));
      TF_RETURN_IF_ERROR(context->Divide(context->Dim(gradients, 2), 2, true, &width));
      context->set_output(0, context->MakeShape({context->Dim(gradients, 0), height, width,
                                                 context->Dim(gradients, 3)}));
      return absl::OkStatus();
    });

MVAE_TF_REGISTER_FLOAT_AND_BFLOAT16("MvaeBilinearUpsample2x", mvae_tf::UpsampleOp)
MVAE_TF_REGISTER_FLOAT_AND_BFLOAT16("MvaeBilinearUpsample2xGrad", mvae_tf::UpsampleGradOp)
