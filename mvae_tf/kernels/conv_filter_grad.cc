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
// (docs/throughput.md), so here it is computed directly. For one kh, the three taps kw of
// an output pixel p read input pixels p - 1, p and p + 1: 3 * I consecutive floats, whose
// terms are 3 * I consecutive rows of dW [3, 3, I, O]. So for each kh and each pass over
// about 64 pixels (one image row, or several of a narrow image; the pixels whose taps all
// lie in the image), register tiles of dW, 6 rows by 16 columns where the rows are that
// many, are summed from zero, one fused multiply-add per pixel and element, and added to
// the image's dW; the first and last columns of the image, which lack a tap, take one pass
// each over the image's rows. The columns are the output channels where they are a
// multiple of 8, else the input channels with their taps, 8 to a vector; the rows are the
// others. A pass's operands (a few KB) stay in the L1 cache across the tiles. Each thread
// sums its share of the images, image by image, into its own dW; the shares are added in
// a fixed order, so the result does not depend on how the threads were scheduled.

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

constexpr int kLanes = 8;             // floats per vector
constexpr int kMaxAccumulators = 12;  // vectors of a register tile: rows x vectors per row
constexpr int kMaxRows = 6;           // rows of a register tile

// The most rows a register tile of `vecs` vectors per row takes.
constexpr int MaxRows(int vecs) { return std::min(kMaxRows, kMaxAccumulators / vecs); }

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
  // At most 12 accumulators, the column vectors and a broadcast: 15 of the 16 vector
  // registers at 6 rows by 2 vectors, 16 at 4 by 3; at 3 by 4 GCC takes the columns from
  // memory in the FMAs (`objdump`), and it serves only where there are 3 rows or fewer. The
  // loops over r and v must be unrolled before GCC places `sum` in registers: without the
  // pragmas it stored every accumulator to the stack on every pixel.
  __m256 sum[Rows][Vecs];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vecs; ++v) sum[r][v] = _mm256_setzero_ps();
  for (int64_t line = 0; line < q.lines; ++line) {
    const float* rows = q.rows + line * q.row_line;
    const float* cols = q.cols + line * q.col_line;
    for (int64_t p = 0; p < q.pixels; ++p) {
      __m256 col[Vecs];
#pragma GCC unroll 4
      for (int v = 0; v < Vecs; ++v) col[v] = _mm256_loadu_ps(cols + p * q.col_pixel + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m256 row = _mm256_broadcast_ss(rows + p * q.row_pixel + r);
#pragma GCC unroll 4
        for (int v = 0; v < Vecs; ++v) sum[r][v] = _mm256_fmadd_ps(row, col[v], sum[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 4
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

// Tile<rows, Vecs>, rows <= Rows.
template <int Vecs, int Rows = MaxRows(Vecs)>
void TileRows(int rows, const Pixels& q, float* acc, int64_t acc_stride) {
  if constexpr (Rows > 1) {
    if (rows < Rows) return TileRows<Vecs, Rows - 1>(rows, q, acc, acc_stride);
  }
  Tile<Rows, Vecs>(q, acc, acc_stride);
}

// Tile<rows, vecs>, rows <= MaxRows(vecs), vecs <= 4.
void AnyTile(int rows, int vecs, const Pixels& q, float* acc, int64_t acc_stride) {
  switch (vecs) {
    case 4: return TileRows<4>(rows, q, acc, acc_stride);
    case 3: return TileRows<3>(rows, q, acc, acc_stride);
    case 2: return TileRows<2>(rows, q, acc, acc_stride);
    default: return TileRows<1>(rows, q, acc, acc_stride);
  }
}

// The sizes of `count` things split into `parts` as evenly as they go, the larger first:
// part `index`'s size and where it starts.
struct Split {
  int64_t count, parts;
  int64_t size(int64_t index) const { return count / parts + (index < count % parts); }
  int64_t start(int64_t index) const {
    return index * (count / parts) + std::min(index, count % parts);
  }
};

// acc [num_rows, num_cols] (rows acc_stride apart) += sum over the pixels q of
// rows[q, :]^T cols[q, :], num_cols a multiple of 8, one register tile at a time. A tile
// is at most 6 rows by 2 vectors, or 4 by 3 or 3 by 4 where there are that few rows, so
// that 12 accumulators hide the FMAs' latency; rows and vectors split into tiles as evenly
// as they go (9 rows as 5 and 4, not 6 and 3).
void Product(const Pixels& q, int64_t num_rows, int64_t num_cols, float* acc,
             int64_t acc_stride) {
  const int max_vecs = num_rows <= MaxRows(4) ? 4 : num_rows <= MaxRows(3) ? 3 : 2;
  const int64_t max_rows = MaxRows(max_vecs), vecs = num_cols / kLanes;
  const Split rows{num_rows, (num_rows + max_rows - 1) / max_rows};
  const Split cols{vecs, (vecs + max_vecs - 1) / max_vecs};
  for (int64_t i = 0; i < rows.parts; ++i) {
    for (int64_t j = 0; j < cols.parts; ++j) {
      Pixels tile_q = q;
      tile_q.rows += rows.start(i);
      tile_q.cols += cols.start(j) * kLanes;
      AnyTile(static_cast<int>(rows.size(i)), static_cast<int>(cols.size(j)), tile_q,
              acc + rows.start(i) * acc_stride + cols.start(j) * kLanes, acc_stride);
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

// One image's terms of taps (kh, kw_begin) to (kh, kw_end - 1), kh = 0, 1, 2, at output
// pixels [x_begin, x_end) of rows [y_begin, y_end), added to image_acc. Such a pixel p
// reads input pixels p + kw - 1: for one kh, the taps' rows (kw, i) are (kw_end - kw_begin)
// * I consecutive floats of x, and consecutive rows of dW [3, 3, I, O] (columns: the output
// channels), or consecutive columns of its transpose [3, O, 3, I] (columns: (kw, i)).
struct Taps {
  int kw_begin, kw_end;
  int64_t x_begin, x_end, y_begin, y_end;
};

void AddTaps(const float* x_image, const float* dy_image, const ConvShape& s, const Taps& t,
             bool columns_out, float* image_acc) {
  const int64_t in_c = s.in_channels, out_c = s.out_channels;
  const int64_t pixels = t.x_end - t.x_begin, taps = (t.kw_end - t.kw_begin) * in_c;
  if (pixels <= 0 || taps <= 0) return;
  for (int kh = 0; kh < 3; ++kh) {
    // Output rows [y0, y1) read input rows [y0 + kh - 1, y1 + kh - 1).
    const int64_t y0 = std::max<int64_t>(t.y_begin, 1 - kh);
    const int64_t y1 = std::min<int64_t>(t.y_end, s.height + 1 - kh);
    if (y0 >= y1) continue;
    const float* x_at =
        x_image + ((y0 + kh - 1) * s.width + t.x_begin + t.kw_begin - 1) * in_c;
    const float* dy_at = dy_image + (y0 * s.width + t.x_begin) * out_c;
    const int64_t lines = y1 - y0;
    if (columns_out) {
      float* acc = image_acc + (kh * 3 + t.kw_begin) * in_c * out_c;  // [kw, i, o]
      Product({x_at, in_c, s.width * in_c, dy_at, out_c, s.width * out_c, lines, pixels},
              taps, out_c, acc, out_c);
    } else {
      float* acc = image_acc + kh * out_c * 3 * in_c + t.kw_begin * in_c;  // [o, kw, i]
      Product({dy_at, out_c, s.width * out_c, x_at, in_c, s.width * in_c, lines, pixels},
              out_c, taps, acc, 3 * in_c);
    }
  }
}

// Adds images [begin, end)'s terms to acc and to bias [O]. acc is [3, 3, I, O] when O is a
// multiple of 8 (the columns), else [3, O, 3, I] (3 * I, a multiple of 8, the columns;
// transposed by the caller). The pixels with all three taps kw in the image, in passes of
// about kPixelsPerPass; then the first and last column of the image, whose taps kw = 0 and
// kw = 2 meet the zero padding, each in one pass over the image's rows.
void Accumulate(const float* x, const float* dy, const ConvShape& s, int64_t begin,
                int64_t end, float* acc, float* bias) {
  const int64_t in_c = s.in_channels, out_c = s.out_channels, w = s.width;
  const bool columns_out = out_c % kLanes == 0;
  const int64_t block = std::max<int64_t>(1, kPixelsPerPass / w);
  const int64_t size = 9 * in_c * out_c;
  std::vector<float> image_acc(size), image_bias(out_c);  // one image's sums
  for (int64_t b = begin; b < end; ++b) {
    std::fill(image_acc.begin(), image_acc.end(), 0.f);
    std::fill(image_bias.begin(), image_bias.end(), 0.f);
    const float* x_image = x + b * s.height * w * in_c;
    const float* dy_image = dy + b * s.height * w * out_c;
    for (int64_t p = 0; p < s.height * w; ++p)
      for (int64_t o = 0; o < out_c; ++o) image_bias[o] += dy_image[p * out_c + o];
    for (int64_t y = 0; y < s.height; y += block) {
      AddTaps(x_image, dy_image, s, {0, 3, 1, w - 1, y, std::min(y + block, s.height)},
              columns_out, image_acc.data());
    }
    // Column 0 lacks the tap kw = 0; column w - 1, kw = 2 (both, when w = 1).
    AddTaps(x_image, dy_image, s, {1, w > 1 ? 3 : 2, 0, 1, 0, s.height}, columns_out,
            image_acc.data());
    if (w > 1) {
      AddTaps(x_image, dy_image, s, {0, 2, w - 1, w, 0, s.height}, columns_out,
              image_acc.data());
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
      for (int64_t kh = 0; kh < 3; ++kh) {
        for (int64_t kw = 0; kw < 3; ++kw) {
          for (int64_t i = 0; i < s.in_channels; ++i) {
            for (int64_t o = 0; o < s.out_channels; ++o) {
              // [3, 3, I, O], or [3, O, 3, I] where the columns are the input channels.
              const int64_t to = ((kh * 3 + kw) * s.in_channels + i) * s.out_channels + o;
              const int64_t from =
                  columns_out ? to
                              : ((kh * s.out_channels + o) * 3 + kw) * s.in_channels + i;
              filter[to] += sum[from];
            }
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
