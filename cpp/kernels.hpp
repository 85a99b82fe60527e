// The numerical kernels of parrbm: float and double, no Python, no allocation in loops.
// Every matrix argument is a row-major view with its own leading dimension, so a worker
// multiplies or samples a sub-block of a larger array in place (docs/design.md section 8).
#pragma once

#include <cstddef>
#include <cstdint>

#include "philox.hpp"

namespace parrbm {

template <class T>
struct MatView {
  T* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;  // elements between the starts of consecutive rows
  T* row(int64_t i) const { return data + i * ld; }
  bool empty() const { return data == nullptr; }
  MatView<T> block(int64_t r0, int64_t nr, int64_t c0, int64_t nc) const {
    return MatView<T>{data + r0 * ld + c0, nr, nc, ld};
  }
};

enum class VisibleKind : int { Binary = 0, Gaussian = 1 };

// Global indices of the columns of a block: first + j, or index[j] when index is set
// (a random partition gives a worker units whose global indices are not contiguous).
struct Units {
  uint64_t first = 0;
  const int64_t* index = nullptr;
};

// C = alpha * op(A) op(B) + beta * C through CBLAS.
template <class T>
void gemm(bool trans_a, bool trans_b, T alpha, MatView<const T> a, MatView<const T> b, T beta,
          MatView<T> c);

// Raw uniforms u in (0, 1) for cases [case0, case0 + rows) and the given units:
// u = (x + 0.5) / 2^32, x the lane of the Philox block.
void uniforms(MatView<double> out, const StreamKey& key, uint64_t case0, const Units& units);

// p = sigm(pre + bias) for each element; then optionally
//   probs  <- prob_scale * p
//   states <- (u < p) ? state_value : 0   with u from the stream (key, case, unit).
// pre may alias probs or states. bias may be null. Any output may be empty.
template <class T>
void sample_sigmoid(MatView<const T> pre, const T* bias, MatView<T> states, T state_value,
                    MatView<T> probs, T prob_scale, const StreamKey& key, uint64_t case0,
                    const Units& units);

// states <- (u < p) ? state_value : 0 from given probabilities: the same bits
// sample_sigmoid draws for the same stream, case and unit.
template <class T>
void sample_bernoulli(MatView<const T> p, MatView<T> states, T state_value, const StreamKey& key,
                      uint64_t case0, const Units& units);

// Visible units from their total input pre + bias, written to out (may alias pre):
//   binary:   mean = sigm(.), out = sample ? Bernoulli(mean) : mean
//   gaussian: mean = .,       out = sample ? mean + N(0, 1) : mean
// If data is given, returns err0 + the sum over elements of (data - mean)^2, added row
// by row (so rows taken in chunks, each continuing the last one's sum, give the same
// bits as all of them at once), else err0.
template <class T>
double visible_activation(MatView<const T> pre, const T* bias, MatView<T> out,
                          VisibleKind kind, bool sample, MatView<const T> data,
                          const StreamKey& key, uint64_t case0, const Units& units,
                          double err0 = 0.0);

// Bit packing of binary states (any nonzero value is a 1): row-major element e goes to
// bit e % 8 (little-endian bit order) of byte e / 8; out has ceil(rows*cols/8) bytes.
template <class T>
void pack_bits(MatView<const T> states, uint8_t* out);
template <class T>
void unpack_bits(const uint8_t* in, MatView<T> out, T one);

// Column bit-packing for binary statistics: out[j * words + w] holds, in bit b, whether
// s[64 w + b][j] is nonzero (words = ceil(rows / 64), unused bits zero). Returns true iff
// every value is exactly 0 or 1, i.e. the statistics may be computed with bit counts.
template <class T>
bool pack_columns(MatView<const T> s, uint64_t* out, int64_t words);

// Weight update from binary statistics by AND + popcount instead of a GEMM: for the
// block w (rows = left units, cols = right units), with counts
//   cp[v][j] = |pos_left[v] & pos_right[j]|,  cn[v][j] = |neg_left[v] & neg_right[j]|
// and d = cp - neg_scale * cn (exact integers for neg_scale = 1):
//   with inc: inc = momentum * inc + alpha * d - decay_lr * W;  W += inc
//   else:     W += alpha * d - decay_lr * W
// If pos_left is null the positive term was already accumulated (by a GEMM with
// beta = momentum into inc, or beta = 1 - decay_lr into W); then only
//   with inc: inc -= alpha * (neg_scale * cn); inc -= decay_lr * W; W += inc
//   else:     W -= alpha * (neg_scale * cn)
template <class T>
void bit_statistics_update(MatView<T> w, MatView<T> inc, const uint64_t* pos_left,
                           const uint64_t* pos_right, const uint64_t* neg_left,
                           const uint64_t* neg_right, int64_t words, T alpha, T neg_scale,
                           T momentum, T decay_lr);

// One pass over a weight block after its statistics were accumulated into inc:
//   inc -= decay_lr * W;  W += inc
template <class T>
void apply_increment(MatView<T> w, MatView<T> inc, T decay_lr);

// Weight update from a gradient g (e.g. summed over workers):
//   with inc: inc = momentum * inc + alpha * g - decay_lr * W;  W += inc
//   else:     W += alpha * g - decay_lr * W
template <class T>
void apply_gradient(MatView<T> w, MatView<T> inc, MatView<const T> g, T alpha, T momentum,
                    T decay_lr);

// Bias update from column sums: g = colsum(pos) - neg_scale * colsum(neg);
//   with inc: inc = momentum * inc + alpha * g; bias += inc   else bias += alpha * g.
template <class T>
void bias_update(T* bias, T* inc, MatView<const T> pos, MatView<const T> neg, T neg_scale,
                 T alpha, T momentum);

// dst = scale * src, element-wise over two views of the same shape.
template <class T>
void scaled_copy(MatView<const T> src, MatView<T> dst, T scale);

// Row gather: dst row i = src row index[i].
template <class T>
void gather_rows(MatView<const T> src, const int64_t* index, MatView<T> dst);

// Deterministic sigmoid, identical on every instruction set (exposed for the tests).
template <class T>
void sigmoid(MatView<const T> x, MatView<T> out);

void set_blas_threads(int n);
int get_blas_threads();
const char* blas_name();
const char* simd_path();  // the element-wise clones in use: "avx2" or "baseline"
const char* blas_config();

}  // namespace parrbm
