// MvaeConv3x3FilterGrad: the filter and bias gradients of a 3x3 convolution, stride 1,
// "SAME" padding, channels last, in float32 (mvae_tf/conv.py).
//
// For x [B, H, W, I] and the output's gradient dy [B, H, W, O],
//
//   dW[kh, kw, i, o] = sum_{b, y, x} x[b, y + kh - 1, x + kw - 1, i] * dy[b, y, x, o],
//   db[o] = sum_{b, y, x} dy[b, y, x, o],
//
// the terms whose input pixel falls outside the image left out (they meet the zero padding):
// TF's Conv2DBackpropFilter and BiasAddGrad (which oneDNN fuses; Eigen's BiasAddGrad alone
// took 6% of a step). dW is a matrix product with the B*H*W pixels as the summed
// dimension, one per tap (kh, kw), each pixel's input row shifted by the tap. oneDNN's
// AVX2 kernel for it ran at 0.14-0.62 of the matmul's rate on an AVX2-only CPU
// (docs/throughput.md), so here it is computed directly: for each tap and each pass over
// about 64 pixels (one image row, or several of a narrow image), a register tile of 6 rows
// by 16 columns of dW is summed from zero, one fused multiply-add per pixel and element,
// and added to the image's dW. The columns are the output channels where they are a
// multiple of 8, else the input channels, 8 to a vector; the rows are the other channels.
// A pass's operands (a few KB) stay in the L1 cache across the tiles. Each thread sums its
// share of the images, image by image, into its own dW; the shares are added in a fixed
// order, so the result does not depend on how the threads were scheduled.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "kernel_util.h"

namespace mvae_tf {
namespace {

constexpr int kLanes = 8;    // floats per vector
constexpr int kMaxRows = 6;  // rows of a register tile
constexpr int kMaxVecs = 2;  // vectors per row of a register tile

// The pixels one pass of a register tile sums over: `lines` image rows of `pixels` each,
// and where each pixel's two operands lie: its row operand (`rows`, broadcast) and its
// column operand (`cols`, vectors), with the strides between pixels and between lines.
struct Pixels {
  const float* rows;
  int64_t row_pixel, row_line;
  const float* cols;
  int64_t col_pixel, col_line;
  int64_t lines, pixels;
};

// acc[r, 0 : 8 * Vecs] += sum over the pixels q of rows[q + r] * cols[q + 0 : 8 * Vecs],
// for r < Rows: one register tile of dW. The pass's sum starts from zero and is added to
// acc at the end: sums of a pass, then of an image, then of the images (`Accumulate`), so
// that no float32 sum runs sequentially over the whole batch (a rounding error that grew
// with the batch made one replica and two disagree; tests/test_training.py).
template <int Rows, int Vecs>
void Tile(const Pixels& q, float* acc, int64_t acc_stride) {
#if defined(__AVX2__) && defined(__FMA__)
  // 12 accumulators, 2 column vectors and a broadcast: 15 of the 16 vector registers. The
  // loops over r and v must be unrolled before GCC places `sum` in registers: without the
  // pragmas it stored every accumulator to the stack on every pixel.
  __m256 sum[Rows][Vecs];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < Vecs; ++v) sum[r][v] = _mm256_setzero_ps();
  for (int64_t line = 0; line < q.lines; ++line) {
    const float* rows = q.rows + line * q.row_line;
    const float* cols = q.cols + line * q.col_line;
    for (int64_t p = 0; p < q.pixels; ++p) {
      __m256 col[Vecs];
#pragma GCC unroll 2
      for (int v = 0; v < Vecs; ++v) col[v] = _mm256_loadu_ps(cols + p * q.col_pixel + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m256 row = _mm256_broadcast_ss(rows + p * q.row_pixel + r);
#pragma GCC unroll 2
        for (int v = 0; v < Vecs; ++v) sum[r][v] = _mm256_fmadd_ps(row, col[v], sum[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < Vecs; ++v) {
      float* at = acc + r * acc_stride + v * kLanes;
      _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), sum[r][v]));
    }
  }
#else
  // Without AVX2 and FMA: the same sums, in the order above, left to the compiler.
  float sum[Rows][Vecs * kLanes] = {};
  for (int64_t line = 0; line < q.lines; ++line)
    for (int64_t p = 0; p < q.pixels; ++p)
      for (int r = 0; r < Rows; ++r)
        for (int k = 0; k < Vecs * kLanes; ++k)
          sum[r][k] += q.rows[line * q.row_line + p * q.row_pixel + r] *
                       q.cols[line * q.col_line + p * q.col_pixel + k];
  for (int r = 0; r < Rows; ++r)
    for (int k = 0; k < Vecs * kLanes; ++k) acc[r * acc_stride + k] += sum[r][k];
#endif
}

template <int Vecs>
void TileRows(int rows_in_tile, const Pixels& q, float* acc, int64_t acc_stride) {
  switch (rows_in_tile) {
    case 6: return Tile<6, Vecs>(q, acc, acc_stride);
    case 5: return Tile<5, Vecs>(q, acc, acc_stride);
    case 4: return Tile<4, Vecs>(q, acc, acc_stride);
    case 3: return Tile<3, Vecs>(q, acc, acc_stride);
    case 2: return Tile<2, Vecs>(q, acc, acc_stride);
    default: return Tile<1, Vecs>(q, acc, acc_stride);
  }
}

// acc [num_rows, num_cols] += sum over the pixels q of rows[q, :]^T cols[q, :], num_cols a
// multiple of 8, one register tile at a time.
void Product(const Pixels& q, int64_t num_rows, int64_t num_cols, float* acc) {
  for (int64_t r = 0; r < num_rows; r += kMaxRows) {
    const int rows_in_tile = static_cast<int>(std::min<int64_t>(kMaxRows, num_rows - r));
    for (int64_t c = 0; c < num_cols; c += kMaxVecs * kLanes) {
      Pixels tile_q = q;
      tile_q.rows += r;
      tile_q.cols += c;
      float* tile = acc + r * num_cols + c;
      if (num_cols - c >= kMaxVecs * kLanes) {
        TileRows<kMaxVecs>(rows_in_tile, tile_q, tile, num_cols);
      } else {
        TileRows<1>(rows_in_tile, tile_q, tile, num_cols);
      }
    }
  }
}

// The sizes of one filter gradient.
struct ConvShape {
  int64_t batch, height, width, in_channels, out_channels;
};

// Output rows per pass of a register tile: enough for about this many pixels, so that a
// narrow image's tile is added to the image's dW once per several rows; the rows' operands
// stay in the L1 and L2 caches across the tiles.
constexpr int64_t kPixelsPerPass = 64;

// Adds images [begin, end)'s terms to acc: [3, 3, I, O] when O is a multiple of 8 (the
// columns), else [3, 3, O, I] (I a multiple of 8; transposed by the caller), and to
// bias [O].
void Accumulate(const float* x, const float* dy, const ConvShape& s, int64_t begin,
                int64_t end, float* acc, float* bias) {
  const int64_t in_c = s.in_channels, out_c = s.out_channels;
  const bool columns_out = out_c % kLanes == 0;
  const int64_t block = std::max<int64_t>(1, kPixelsPerPass / s.width);
  const int64_t size = 9 * in_c * out_c;
  std::vector<float> image_acc(size), image_bias(out_c);  // one image's sums
  for (int64_t b = begin; b < end; ++b) {
    std::fill(image_acc.begin(), image_acc.end(), 0.f);
    std::fill(image_bias.begin(), image_bias.end(), 0.f);
    const float* dy_image = dy + b * s.height * s.width * out_c;
    for (int64_t p = 0; p < s.height * s.width; ++p)
      for (int64_t o = 0; o < out_c; ++o) image_bias[o] += dy_image[p * out_c + o];
    for (int64_t block_y = 0; block_y < s.height; block_y += block) {
      for (int kh = 0; kh < 3; ++kh) {
        // Output rows [y0, y1) of this block read input rows [y0 + kh - 1, y1 + kh - 1).
        const int64_t y0 = std::max<int64_t>(block_y, 1 - kh);
        const int64_t y1 = std::min<int64_t>({block_y + block, s.height, s.height + 1 - kh});
        if (y0 >= y1) continue;
        for (int kw = 0; kw < 3; ++kw) {
          // Output pixels [x0, x1) read input pixels [x0 + kw - 1, x1 + kw - 1).
          const int64_t x0 = std::max<int64_t>(0, 1 - kw);
          const int64_t x1 = std::min<int64_t>(s.width, s.width + 1 - kw);
          const float* x_at = x + ((b * s.height + y0 + kh - 1) * s.width + x0 + kw - 1) * in_c;
          const float* dy_at = dy + ((b * s.height + y0) * s.width + x0) * out_c;
          float* tap = image_acc.data() + (kh * 3 + kw) * in_c * out_c;
          const int64_t lines = y1 - y0, pixels = x1 - x0;
          if (columns_out) {
            Product({x_at, in_c, s.width * in_c, dy_at, out_c, s.width * out_c, lines, pixels},
                    in_c, out_c, tap);
          } else {
            Product({dy_at, out_c, s.width * out_c, x_at, in_c, s.width * in_c, lines, pixels},
                    out_c, in_c, tap);
          }
        }
      }
    }
    for (int64_t k = 0; k < size; ++k) acc[k] += image_acc[k];
    for (int64_t o = 0; o < out_c; ++o) bias[o] += image_bias[o];
  }
}

class Conv3x3FilterGradOp : public OpKernel {
 public:
  explicit Conv3x3FilterGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& gradients = context->input(1);
    OP_REQUIRES(
        context,
        input.dims() == 4 && gradients.dims() == 4 &&
            input.dim_size(0) == gradients.dim_size(0) &&
            input.dim_size(1) == gradients.dim_size(1) &&
            input.dim_size(2) == gradients.dim_size(2) &&
            (input.dim_size(3) % kLanes == 0 || gradients.dim_size(3) % kLanes == 0),
        tensorflow::errors::InvalidArgument(
            "MvaeConv3x3FilterGrad: expected inputs [batch, height, width, in_channels] and "
            "gradients [batch, height, width, out_channels] of the same batch, height and "
            "width, in_channels or out_channels a multiple of 8; received shapes ",
            input.shape().DebugString(), " and ", gradients.shape().DebugString()));
    const ConvShape s{input.dim_size(0), input.dim_size(1), input.dim_size(2),
                      input.dim_size(3), gradients.dim_size(3)};
    Tensor *output = nullptr, *bias_output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({3, 3, s.in_channels, s.out_channels}),
                                &output));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, TensorShape({s.out_channels}), &bias_output));
    const int64_t size = 9 * s.in_channels * s.out_channels;
    float* filter = output->flat<float>().data();
    float* bias = bias_output->flat<float>().data();
    std::fill(filter, filter + size, 0.f);
    std::fill(bias, bias + s.out_channels, 0.f);
    if (s.batch == 0 || size == 0) return;
    const float* x = input.flat<float>().data();
    const float* dy = gradients.flat<float>().data();
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // One share of the images per thread, each summed into its own slice of `partial` and
    // of `partial_bias`.
    const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(workers->num_threads,
                                                                  s.batch));
    std::vector<float> partial(shares * size, 0.f), partial_bias(shares * s.out_channels, 0.f);
    const int64_t cost = 2 * size * s.height * s.width * s.batch / shares;
    tensorflow::Shard(shares, workers->workers, shares, cost, [&](int64_t begin, int64_t end) {
      for (int64_t share = begin; share < end; ++share) {
        Accumulate(x, dy, s, share * s.batch / shares, (share + 1) * s.batch / shares,
                   partial.data() + share * size,
                   partial_bias.data() + share * s.out_channels);
      }
    });
    const bool columns_out = s.out_channels % kLanes == 0;
    for (int64_t share = 0; share < shares; ++share) {
      for (int64_t o = 0; o < s.out_channels; ++o)
        bias[o] += partial_bias[share * s.out_channels + o];
      const float* sum = partial.data() + share * size;
      for (int64_t tap = 0; tap < 9; ++tap) {
        for (int64_t i = 0; i < s.in_channels; ++i) {
          for (int64_t o = 0; o < s.out_channels; ++o) {
            // [3, 3, I, O], or [3, 3, O, I] where the columns are the input channels.
            const int64_t from = columns_out ? (tap * s.in_channels + i) * s.out_channels + o
                                             : (tap * s.out_channels + o) * s.in_channels + i;
            filter[(tap * s.in_channels + i) * s.out_channels + o] += sum[from];
          }
        }
      }
    }
  }
};

}  // namespace
}  // namespace mvae_tf

REGISTER_OP("MvaeConv3x3FilterGrad")
    .Input("input: float")
    .Input("gradients: float")
    .Output("filter_backprop: float")
    .Output("bias_backprop: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* context) {
      tensorflow::shape_inference::ShapeHandle input, gradients;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 4, &input));
      TF_RETURN_IF_ERROR(context->WithRank(context->input(1), 4, &gradients));
      context->set_output(0, context->MakeShape({3, 3, context->Dim(input, 3),
                                                 context->Dim(gradients, 3)}));
      context->set_output(1, context->MakeShape({context->Dim(gradients, 3)}));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("MvaeConv3x3FilterGrad").Device(::tensorflow::DEVICE_CPU),
                        mvae_tf::Conv3x3FilterGradOp);
