// MvaeSoftmaxPool and its gradient: the softmax pooling of `decoder._softmax_pool` in one
// pass each, for float32 or bfloat16 objects (computed in float32).
//
// objects o: [B, N, P..., C]. Forward, the weights w_n = softmax over n of the claims o_n,0
// (exp(o_n,0 - max_m o_m,0) / sum, at each position), then o_pool,c = sum_n w_n o_n,c; the
// op returns o_pool [B, P..., C] and w [B, N, P..., 1] (float32) for the gradient.
// Backward, with G = dL/do_pool,
//
//   dL/do_n,c = w_n (G_c + [c = 0] sum_c' G_c' (o_n,c' - o_pool,c')),
//
// the softmax's Jacobian folded in (decoder.py derives it); o_pool is recomputed in float32.
// TF runs these as a dozen elementwise ops over [B, N, P, C] (and, in bf16, casts to and
// from float32 around them).

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernel_util.h"

namespace mvae_tf {
namespace {

// The sizes of objects [B, N, P..., C]: P is the product of the dimensions between.
struct PoolShape {
  int64_t batch, objects, positions, channels;
};

// `objects`' sizes (rank >= 3).
void ReadShape(const Tensor& objects, PoolShape* shape) {
  shape->batch = objects.dim_size(0);
  shape->objects = objects.dim_size(1);
  shape->channels = objects.dim_size(objects.dims() - 1);
  shape->positions = 1;
  for (int d = 2; d < objects.dims() - 1; ++d) shape->positions *= objects.dim_size(d);
}

// o_pool at one position: pooled[c] = sum_n w_n o_n,c, in float32.
template <typename S>
void PoolAt(const S* objects, const float* weights, const PoolShape& s, int64_t b, int64_t p,
            float* pooled) {
  for (int64_t c = 0; c < s.channels; ++c) pooled[c] = 0.f;
  for (int64_t n = 0; n < s.objects; ++n) {
    const int64_t at = (b * s.objects + n) * s.positions + p;
    const float w = weights[at];
    const S* o = objects + at * s.channels;
    for (int64_t c = 0; c < s.channels; ++c) pooled[c] += w * Widen(o[c]);
  }
}

// The shapes of o_pool [B, P..., C] and of the weights [B, N, P..., 1] (`objects` of rank >= 3).
void OutputShapes(const TensorShape& objects, TensorShape* pooled, TensorShape* weights) {
  *pooled = objects;
  pooled->RemoveDim(1);
  *weights = objects;
  weights->set_dim(objects.dims() - 1, 1);
}

// The weights at one position: w_n = softmax over n of o_n,0, written to weights[at_n].
template <typename S>
void WeightsAt(const S* objects, const PoolShape& s, int64_t b, int64_t p, float* weights) {
  const int64_t first = b * s.objects * s.positions + p;  // [b, 0, p]
  float largest = Widen(objects[first * s.channels]);
  for (int64_t n = 1; n < s.objects; ++n) {
    const float claim = Widen(objects[(first + n * s.positions) * s.channels]);
    largest = claim > largest ? claim : largest;
  }
  float total = 0.f;
  for (int64_t n = 0; n < s.objects; ++n) {
    const int64_t at = first + n * s.positions;
    weights[at] = std::exp(Widen(objects[at * s.channels]) - largest);
    total += weights[at];
  }
  for (int64_t n = 0; n < s.objects; ++n) weights[first + n * s.positions] /= total;
}

template <typename T>
class SoftmaxPoolOp : public OpKernel {
 public:
  explicit SoftmaxPoolOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& objects = context->input(0);
    OP_REQUIRES(context, objects.dims() >= 3 && objects.dim_size(1) >= 1,
                tensorflow::errors::InvalidArgument(
                    "MvaeSoftmaxPool: expected objects [batch, objects >= 1, ..., channels]; "
                    "received shape ", objects.shape().DebugString()));
    PoolShape s;
    ReadShape(objects, &s);
    TensorShape pooled_shape, weights_shape;
    OutputShapes(objects.shape(), &pooled_shape, &weights_shape);
    Tensor *pooled_tensor = nullptr, *weights_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, pooled_shape, &pooled_tensor));
    OP_REQUIRES_OK(context, context->allocate_output(1, weights_shape, &weights_tensor));
    if (objects.NumElements() == 0) return;
    using S = typename Storage<T>::Type;
    const auto* o = reinterpret_cast<const S*>(objects.flat<T>().data());
    float* w = weights_tensor->flat<float>().data();
    auto* pooled = reinterpret_cast<S*>(pooled_tensor->flat<T>().data());
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // One unit is one position of one example: N exponentials and N * C products.
    tensorflow::Shard(workers->num_threads, workers->workers, s.batch * s.positions,
                      3 * s.objects * (s.channels + 10), [&](int64_t begin, int64_t end) {
                        std::vector<float> sum(s.channels);
                        for (int64_t unit = begin; unit < end; ++unit) {
                          const int64_t b = unit / s.positions, p = unit % s.positions;
                          WeightsAt(o, s, b, p, w);
                          PoolAt(o, w, s, b, p, sum.data());
                          NarrowRow(sum.data(), pooled + unit * s.channels, s.channels);
                        }
                      });
  }
};

template <typename T>
class SoftmaxPoolGradOp : public OpKernel {
 public:
  explicit SoftmaxPoolGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& objects = context->input(0);
    const Tensor& weights = context->input(1);
    const Tensor& gradients = context->input(2);
    TensorShape pooled_shape, weights_shape;
    if (objects.dims() >= 3) OutputShapes(objects.shape(), &pooled_shape, &weights_shape);
    OP_REQUIRES(context, objects.dims() >= 3 && weights.shape() == weights_shape &&
                             gradients.shape() == pooled_shape,
                tensorflow::errors::InvalidArgument(
                    "MvaeSoftmaxPoolGrad: expected objects [batch, objects, ..., channels], "
                    "their weights [batch, objects, ..., 1] and gradients [batch, ..., "
                    "channels]; received shapes ", objects.shape().DebugString(), ", ",
                    weights.shape().DebugString(), " and ", gradients.shape().DebugString()));
    PoolShape s;
    ReadShape(objects, &s);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, objects.shape(), &output));
    if (output->NumElements() == 0) return;
    using S = typename Storage<T>::Type;
    const auto* o = reinterpret_cast<const S*>(objects.flat<T>().data());
    const float* w = weights.flat<float>().data();
    const auto* g = reinterpret_cast<const S*>(gradients.flat<T>().data());
    auto* backprops = reinterpret_cast<S*>(output->flat<T>().data());
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(
        workers->num_threads, workers->workers, s.batch * s.positions,
        8 * s.objects * s.channels, [&](int64_t begin, int64_t end) {
          std::vector<float> pooled(s.channels), upstream(s.channels), terms(s.channels);
          for (int64_t unit = begin; unit < end; ++unit) {
            const int64_t b = unit / s.positions, p = unit % s.positions;
            PoolAt(o, w, s, b, p, pooled.data());
            WidenRow(g + unit * s.channels, upstream.data(), s.channels);
            for (int64_t n = 0; n < s.objects; ++n) {
              const int64_t at = (b * s.objects + n) * s.positions + p;
              const S* o_n = o + at * s.channels;
              // The terms G_c (o_n,c - o_pool,c) in one vector pass, then their sum, the
              // claim's gradient, in order (GCC keeps a float sum's order, so won't
              // vectorise it).
              for (int64_t c = 0; c < s.channels; ++c) {
                terms[c] = upstream[c] * (Widen(o_n[c]) - pooled[c]);
              }
              float claim = 0.f;
              for (int64_t c = 0; c < s.channels; ++c) claim += terms[c];
              // Then dL/do_n = w_n (G + e_0 claim).
              S* out = backprops + at * s.channels;
              for (int64_t c = 0; c < s.channels; ++c) Narrow(w[at] * upstream[c], out + c);
              Narrow(w[at] * (upstream[0] + claim), out);
            }
          }
        });
  }
};

}  // namespace
}  // namespace mvae_tf

REGISTER_OP("MvaeSoftmaxPool")
    .Input("objects: T")
    .Output("pooled: T")
    .Output("weights: float")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      tensorflow::shape_inference::ShapeHandle objects, before, after;
      TF_RETURN_IF_ERROR(context->WithRankAtLeast(context->input(0), 3, &objects));
      TF_RETURN_IF_ERROR(context->Subshape(objects, 0, 1, &before));
      TF_RETURN_IF_ERROR(context->Subshape(objects, 2, &after));
      tensorflow::shape_inference::ShapeHandle pooled;
      TF_RETURN_IF_ERROR(context->Concatenate(before, after, &pooled));
      context->set_output(0, pooled);
      tensorflow::shape_inference::ShapeHandle weights;
      TF_RETURN_IF_ERROR(context->ReplaceDim(objects, -1, context->MakeDim(1), &weights));
      context->set_output(1, weights);
      return absl::OkStatus();
    });

REGISTER_OP("MvaeSoftmaxPoolGrad")
    .Input("objects: T")
    .Input("weights: float")
    .Input("gradients: T")
    .Output("backprops: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(0));
      return absl::OkStatus();
    });

MVAE_TF_REGISTER_FLOAT_AND_BFLOAT16("MvaeSoftmaxPool", mvae_tf::SoftmaxPoolOp)
MVAE_TF_REGISTER_FLOAT_AND_BFLOAT16("MvaeSoftmaxPoolGrad", mvae_tf::SoftmaxPoolGradOp)
