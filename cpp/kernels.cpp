#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "blas.hpp"

// Hot element-wise loops are compiled twice (AVX2 and baseline) and picked at run time.
// The core is built with -ffp-contract=off, so both clones do the same IEEE operations
// and give the same bits: sampling never depends on the machine a worker runs on.
#define PARRBM_INLINE inline __attribute__((always_inline))

// PARRBM_DISPATCH(ret, name, (params), (args)) defines name(params), which calls
// name_impl(args) compiled for AVX2 when the CPU has it, else for the baseline ISA.
// PARRBM_ISA=baseline in the environment picks the baseline clones on any CPU (so the
// tests can hold the two paths to the same bits).
// (Explicit dispatch: GCC's target_clones loses its vectorised clones under
// -fvisibility=hidden, which pybind11 modules use.)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
inline bool cpu_has_avx2() {
  static const bool yes = [] {
    const char* isa = std::getenv("PARRBM_ISA");
    if (isa != nullptr && std::string_view(isa) == "baseline") return false;
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}
#define PARRBM_DISPATCH(ret, name, params, args)                              \
  __attribute__((target("avx2,popcnt"))) ret name##_avx2 params { return name##_impl args; } \
  ret name##_base params { return name##_impl args; }                           \
  ret name params { return cpu_has_avx2() ? name##_avx2 args : name##_base args; }
#else
inline bool cpu_has_avx2() { return false; }
#define PARRBM_DISPATCH(ret, name, params, args) \
  ret name params { return name##_impl args; }
#endif

namespace parrbm {

namespace {

// ---- deterministic exp / sigmoid -------------------------------------------------
// Own polynomial exp so that results do not depend on libm or on vectorisation.

PARRBM_INLINE float exp_det(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float fx = x * 1.44269504088896341f + 0.5f;
  int n = static_cast<int>(fx);
  n -= (static_cast<float>(n) > fx);  // floor
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

PARRBM_INLINE double exp_det(double x) {
  x = std::min(std::max(x, -708.0), 709.0);
  const double fx = x * 1.4426950408889634074 + 0.5;
  int64_t n = static_cast<int64_t>(fx);
  n -= (static_cast<double>(n) > fx);
  const double nf = static_cast<double>(n);
  double r = x - nf * 6.93145751953125e-1;
  r = r - nf * 1.42860682030941723212e-6;
  // Taylor series to degree 13 on |r| <= 0.35: truncation below 1e-17 relative.
  double y = 1.0 / 6227020800.0;
  y = y * r + 1.0 / 479001600.0;
  y = y * r + 1.0 / 39916800.0;
  y = y * r + 1.0 / 3628800.0;
  y = y * r + 1.0 / 362880.0;
  y = y * r + 1.0 / 40320.0;
  y = y * r + 1.0 / 5040.0;
  y = y * r + 1.0 / 720.0;
  y = y * r + 1.0 / 120.0;
  y = y * r + 1.0 / 24.0;
  y = y * r + 1.0 / 6.0;
  y = y * r + 0.5;
  y = y * r + 1.0;
  y = y * r + 1.0;
  const int64_t bits = (n + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

template <class T>
PARRBM_INLINE T sigm(T x) {
  return T(1) / (T(1) + exp_det(-x));
}

// p[j] = sigm(pre[j] + bias[j])
template <class T>
PARRBM_INLINE void sigmoid_row_impl(const T* __restrict pre, const T* __restrict bias,
                                    T* __restrict p, int64_t n) {
  if (bias) {
    for (int64_t j = 0; j < n; ++j) p[j] = sigm(pre[j] + bias[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) p[j] = sigm(pre[j]);
  }
}

PARRBM_DISPATCH(void, sigmoid_row, (const float* pre, const float* bias, float* p, int64_t n),
                (pre, bias, p, n))
PARRBM_DISPATCH(void, sigmoid_row, (const double* pre, const double* bias, double* p, int64_t n),
                (pre, bias, p, n))

// ---- Philox streams ----------------------------------------------------------------

// out[4*(g - g0) + l] = lane l of block (g, case, step, phase), g in [g0, g0 + ng).
// Four blocks at a time in structure-of-arrays form: the 32x32->64 multiplies vectorise
// (this beats 8-wide AVX2 on CPUs that split 256-bit operations, so there is no dispatch).
void philox_row(uint32_t* __restrict out, uint64_t g0, int64_t ng, uint32_t case_idx,
                const StreamKey key) {
  constexpr int L = 4;
  const uint32_t k0 = uint32_t(key.seed), k1 = uint32_t(key.seed >> 32);
  int64_t i = 0;
  for (; i + L <= ng; i += L) {
    uint32_t x0[L], x1[L], x2[L], x3[L];
    for (int l = 0; l < L; ++l) {
      x0[l] = uint32_t(g0 + uint64_t(i + l));
      x1[l] = case_idx;
      x2[l] = key.step;
      x3[l] = key.phase;
    }
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      for (int l = 0; l < L; ++l) {
        const uint64_t p0 = uint64_t(Philox4x32::M0) * x0[l];
        const uint64_t p1 = uint64_t(Philox4x32::M1) * x2[l];
        const uint32_t y0 = uint32_t(p1 >> 32) ^ x1[l] ^ a;
        const uint32_t y2 = uint32_t(p0 >> 32) ^ x3[l] ^ b;
        x1[l] = uint32_t(p1);
        x3[l] = uint32_t(p0);
        x0[l] = y0;
        x2[l] = y2;
      }
      a += Philox4x32::W0;
      b += Philox4x32::W1;
    }
    for (int l = 0; l < L; ++l) {
      uint32_t* o = out + 4 * (i + l);
      o[0] = x0[l];
      o[1] = x1[l];
      o[2] = x2[l];
      o[3] = x3[l];
    }
  }
  for (; i < ng; ++i) {
    const uint32_t c[4] = {uint32_t(g0 + uint64_t(i)), case_idx, key.step, key.phase};
    const uint32_t k[2] = {k0, k1};
    Philox4x32::block(c, k, out + 4 * i);
  }
}

// u = (x + 0.5) * 2^-32, exactly, without an unsigned 64-bit conversion.
PARRBM_INLINE double to_unit(uint32_t x) {
  return (double(int32_t(x ^ 0x80000000u)) + 2147483648.5) * 2.3283064365386963e-10;
}

// states[j] = u_j < p_j ? v : 0 with u_j = lane (off + j) of the row's blocks
template <class T>
PARRBM_INLINE void bernoulli_row_impl(const uint32_t* __restrict bits, int64_t off,
                                      const T* __restrict p, T* __restrict states, T v,
                                      int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    states[j] = (to_unit(bits[off + j]) < double(p[j])) ? v : T(0);
}
PARRBM_DISPATCH(void, bernoulli_row,
                (const uint32_t* bits, int64_t off, const float* p, float* states, float v, int64_t n),
                (bits, off, p, states, v, n))
PARRBM_DISPATCH(void, bernoulli_row,
                (const uint32_t* bits, int64_t off, const double* p, double* states, double v, int64_t n),
                (bits, off, p, states, v, n))

// sum_j (a_j - b_j)^2 of one row: eight partial sums in T (vectorisable), then double.
// A monitoring figure, so its rounding may depend on where a row is cut.
template <class T>
PARRBM_INLINE double squared_distance_row_impl(const T* __restrict a, const T* __restrict b,
                                               int64_t n) {
  T acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const T r = a[j + l] - b[j + l];
      acc[l] += r * r;
    }
  double e = 0.0;
  for (; j < n; ++j) {
    const double r = double(a[j]) - double(b[j]);
    e += r * r;
  }
  for (int l = 0; l < 8; ++l) e += double(acc[l]);
  return e;
}
PARRBM_DISPATCH(double, squared_distance_row, (const float* a, const float* b, int64_t n), (a, b, n))
PARRBM_DISPATCH(double, squared_distance_row, (const double* a, const double* b, int64_t n), (a, b, n))

// Scratch reused across calls of the same thread (each worker thread has its own).
struct Scratch {
  std::vector<uint32_t> bits;
  std::vector<float> pf;
  std::vector<double> pd;
  std::vector<double> ud;
  uint32_t* bits_for(int64_t n) {
    if (int64_t(bits.size()) < n) bits.resize(n);
    return bits.data();
  }
  float* p_for(int64_t n, float*) {
    if (int64_t(pf.size()) < n) pf.resize(n);
    return pf.data();
  }
  double* p_for(int64_t n, double*) {
    if (int64_t(pd.size()) < n) pd.resize(n);
    return pd.data();
  }
};
thread_local Scratch scratch;

// Fills the lanes of one row: lane off + j (one per unit, units_per_block = 4) or lanes
// 2 (off + j), 2 (off + j) + 1 (two per unit, units_per_block = 2) belong to column j.
// Returns off.
int64_t fill_row_bits(uint32_t* bits, const Units& units, int64_t n, int units_per_block,
                      uint32_t case_idx, const StreamKey& key) {
  if (units.index) {  // scattered units: one block per unit
    const int lanes = 4 / units_per_block;
    const uint32_t k[2] = {uint32_t(key.seed), uint32_t(key.seed >> 32)};
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t u = uint64_t(units.index[j]);
      const uint32_t c[4] = {uint32_t(u / units_per_block), case_idx, key.step, key.phase};
      uint32_t out[4];
      Philox4x32::block(c, k, out);
      const int first = int(u % units_per_block) * lanes;
      for (int l = 0; l < lanes; ++l) bits[lanes * j + l] = out[first + l];
    }
    return 0;
  }
  const uint64_t unit0 = units.first;
  const uint64_t g0 = unit0 / units_per_block;
  const uint64_t g1 = (unit0 + n + units_per_block - 1) / units_per_block;
  philox_row(bits, g0, int64_t(g1 - g0), case_idx, key);
  return int64_t(unit0 - g0 * units_per_block);
}

}  // namespace

// ---- public kernels ------------------------------------------------------------------

template <class T>
void gemm(bool trans_a, bool trans_b, T alpha, MatView<const T> a, MatView<const T> b, T beta,
          MatView<T> c) {
  const int64_t k = trans_a ? a.rows : a.cols;
  if (c.rows == 0 || c.cols == 0) return;
  if (k == 0) {  // CBLAS leaves C untouched for k == 0 only when beta == 1
    for (int64_t i = 0; i < c.rows; ++i)
      for (int64_t j = 0; j < c.cols; ++j) c.row(i)[j] = beta == T(0) ? T(0) : beta * c.row(i)[j];
    return;
  }
  cblas_gemm(trans_a, trans_b, int(c.rows), int(c.cols), int(k), alpha, a.data,
             int(std::max<int64_t>(a.ld, 1)), b.data, int(std::max<int64_t>(b.ld, 1)), beta,
             c.data, int(std::max<int64_t>(c.ld, 1)));
}

void uniforms(MatView<double> out, const StreamKey& key, uint64_t case0, const Units& units) {
  uint32_t* bits = scratch.bits_for(out.cols + 8);
  for (int64_t i = 0; i < out.rows; ++i) {
    const int64_t off = fill_row_bits(bits, units, out.cols, 4, uint32_t(case0 + i), key);
    double* o = out.row(i);
    for (int64_t j = 0; j < out.cols; ++j) o[j] = to_unit(bits[off + j]);
  }
}

template <class T>
void sample_sigmoid(MatView<const T> pre, const T* bias, MatView<T> states, T state_value,
                    MatView<T> probs, T prob_scale, const StreamKey& key, uint64_t case0,
                    const Units& units) {
  const int64_t n = pre.cols;
  T* p = scratch.p_for(n, static_cast<T*>(nullptr));
  uint32_t* bits = states.empty() ? nullptr : scratch.bits_for(n + 8);
  for (int64_t i = 0; i < pre.rows; ++i) {
    sigmoid_row(pre.row(i), bias, p, n);
    if (!states.empty()) {
      const int64_t off = fill_row_bits(bits, units, n, 4, uint32_t(case0 + i), key);
      bernoulli_row(bits, off, p, states.row(i), state_value, n);
    }
    if (!probs.empty()) {
      T* q = probs.row(i);
      if (prob_scale == T(1))
        std::memcpy(q, p, sizeof(T) * n);
      else
        for (int64_t j = 0; j < n; ++j) q[j] = prob_scale * p[j];
    }
  }
}

template <class T>
void sample_bernoulli(MatView<const T> p, MatView<T> states, T state_value, const StreamKey& key,
                      uint64_t case0, const Units& units) {
  uint32_t* bits = scratch.bits_for(p.cols + 8);
  for (int64_t i = 0; i < p.rows; ++i) {
    const int64_t off = fill_row_bits(bits, units, p.cols, 4, uint32_t(case0 + i), key);
    bernoulli_row(bits, off, p.row(i), states.row(i), state_value, p.cols);
  }
}

template <class T>
double visible_activation(MatView<const T> pre, const T* bias, MatView<T> out,
                          VisibleKind kind, bool sample, MatView<const T> data,
                          const StreamKey& key, uint64_t case0, const Units& units, double err0) {
  const int64_t n = pre.cols;
  T* mean = scratch.p_for(n, static_cast<T*>(nullptr));
  // Bernoulli draws use one lane per unit, Box-Muller two: room for 2 lanes per unit.
  uint32_t* bits = sample ? scratch.bits_for(2 * n + 16) : nullptr;
  double err = err0;
  for (int64_t i = 0; i < pre.rows; ++i) {
    const T* x = pre.row(i);
    if (kind == VisibleKind::Binary) {
      sigmoid_row(x, bias, mean, n);
    } else if (bias) {
      for (int64_t j = 0; j < n; ++j) mean[j] = x[j] + bias[j];
    } else {
      for (int64_t j = 0; j < n; ++j) mean[j] = x[j];
    }
    if (!data.empty()) err += squared_distance_row(data.row(i), mean, n);
    T* o = out.row(i);
    if (!sample) {
      std::memcpy(o, mean, sizeof(T) * n);
    } else if (kind == VisibleKind::Binary) {
      const int64_t off = fill_row_bits(bits, units, n, 4, uint32_t(case0 + i), key);
      bernoulli_row(bits, off, mean, o, T(1), n);
    } else {
      // Box-Muller, one normal per unit from lanes (2(j%2), 2(j%2)+1) of block j/2.
      StreamKey nk = key;
      nk.phase = key.phase + kPhaseNoiseOffset;
      const int64_t off = fill_row_bits(bits, units, n, 2, uint32_t(case0 + i), nk);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t lane = 2 * (off + j);
        const double u1 = to_unit(bits[lane]);
        const double u2 = to_unit(bits[lane + 1]);
        const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        o[j] = mean[j] + T(z);
      }
    }
  }
  return err;
}

template <class T>
void pack_bits(MatView<const T> s, uint8_t* out) {
  const int64_t total = s.rows * s.cols;
  std::memset(out, 0, size_t((total + 7) / 8));
  int64_t e = 0;
  for (int64_t i = 0; i < s.rows; ++i) {
    const T* r = s.row(i);
    int64_t j = 0;
    // Fast path: whole bytes when the running element index is byte aligned.
    if ((e & 7) == 0) {
      for (; j + 8 <= s.cols; j += 8, e += 8) {
        uint8_t byte = 0;
        for (int b = 0; b < 8; ++b) byte |= uint8_t(r[j + b] != T(0)) << b;
        out[e >> 3] = byte;
      }
    }
    for (; j < s.cols; ++j, ++e)
      if (r[j] != T(0)) out[e >> 3] |= uint8_t(1u << (e & 7));
  }
}

template <class T>
void unpack_bits(const uint8_t* in, MatView<T> out, T one) {
  int64_t e = 0;
  for (int64_t i = 0; i < out.rows; ++i) {
    T* r = out.row(i);
    for (int64_t j = 0; j < out.cols; ++j, ++e) r[j] = ((in[e >> 3] >> (e & 7)) & 1u) ? one : T(0);
  }
}

namespace {
template <class T>
PARRBM_INLINE void apply_increment_row_impl(T* __restrict w, T* __restrict inc, T decay_lr,
                                            int64_t n) {
  if (decay_lr != T(0))
    for (int64_t j = 0; j < n; ++j) {
      inc[j] -= decay_lr * w[j];
      w[j] += inc[j];
    }
  else
    for (int64_t j = 0; j < n; ++j) w[j] += inc[j];
}
PARRBM_DISPATCH(void, apply_increment_row, (float* w, float* inc, float d, int64_t n), (w, inc, d, n))
PARRBM_DISPATCH(void, apply_increment_row, (double* w, double* inc, double d, int64_t n), (w, inc, d, n))
}  // namespace

namespace {
template <int WORDS>
PARRBM_INLINE int64_t and_popcount(const uint64_t* a, const uint64_t* b, int64_t words) {
  int64_t c = 0;
  if constexpr (WORDS > 0) {
    for (int q = 0; q < WORDS; ++q) c += __builtin_popcountll(a[q] & b[q]);
  } else {
    for (int64_t q = 0; q < words; ++q) c += __builtin_popcountll(a[q] & b[q]);
  }
  return c;
}

// One row v of the weight block: counts against every right unit j. The update mode is
// a template parameter so the inner loop carries no branches.
enum BitMode { kFull = 0, kFullInc = 1, kNeg = 2, kNegInc = 3 };

template <class T, int WORDS, int MODE>
PARRBM_INLINE void bitstat_row_mode(T* __restrict w, T* __restrict inc, const uint64_t* pl,
                                    const uint64_t* __restrict pr, const uint64_t* nl,
                                    const uint64_t* __restrict nr, int64_t words, int64_t n,
                                    T alpha, T neg_scale, T momentum, T decay_lr) {
  const int64_t stride = WORDS > 0 ? WORDS : words;
  for (int64_t j = 0; j < n; ++j) {
    const T neg = neg_scale * T(and_popcount<WORDS>(nl, nr + j * stride, words));
    if constexpr (MODE == kFull || MODE == kFullInc) {
      const T d = T(and_popcount<WORDS>(pl, pr + j * stride, words)) - neg;
      if constexpr (MODE == kFullInc) {
        inc[j] = momentum * inc[j] + alpha * d - decay_lr * w[j];
        w[j] += inc[j];
      } else {
        w[j] += alpha * d - decay_lr * w[j];
      }
    } else if constexpr (MODE == kNegInc) {
      inc[j] -= alpha * neg;
      inc[j] -= decay_lr * w[j];
      w[j] += inc[j];
    } else {
      w[j] -= alpha * neg;
    }
  }
}

template <class T, int WORDS>
PARRBM_INLINE void bitstat_row_words(T* w, T* inc, const uint64_t* pl, const uint64_t* pr,
                                     const uint64_t* nl, const uint64_t* nr, int64_t words,
                                     int64_t n, T alpha, T neg_scale, T momentum, T decay_lr) {
  const int mode = (pl ? 0 : 2) + (inc ? 1 : 0);
  switch (mode) {
    case kFull: bitstat_row_mode<T, WORDS, kFull>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    case kFullInc: bitstat_row_mode<T, WORDS, kFullInc>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    case kNeg: bitstat_row_mode<T, WORDS, kNeg>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    default: bitstat_row_mode<T, WORDS, kNegInc>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
  }
}

template <class T>
PARRBM_INLINE void bitstat_row_impl(T* w, T* inc, const uint64_t* pl, const uint64_t* pr,
                                    const uint64_t* nl, const uint64_t* nr, int64_t words,
                                    int64_t n, T alpha, T neg_scale, T momentum, T decay_lr) {
  switch (words) {  // minibatches up to 256 cases get unrolled counts
    case 1: bitstat_row_words<T, 1>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    case 2: bitstat_row_words<T, 2>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    case 3: bitstat_row_words<T, 3>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    case 4: bitstat_row_words<T, 4>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
    default: bitstat_row_words<T, 0>(w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr); break;
  }
}
PARRBM_DISPATCH(void, bitstat_row,
                (float* w, float* inc, const uint64_t* pl, const uint64_t* pr, const uint64_t* nl,
                 const uint64_t* nr, int64_t words, int64_t n, float alpha, float neg_scale,
                 float momentum, float decay_lr),
                (w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr))
PARRBM_DISPATCH(void, bitstat_row,
                (double* w, double* inc, const uint64_t* pl, const uint64_t* pr, const uint64_t* nl,
                 const uint64_t* nr, int64_t words, int64_t n, double alpha, double neg_scale,
                 double momentum, double decay_lr),
                (w, inc, pl, pr, nl, nr, words, n, alpha, neg_scale, momentum, decay_lr))
}  // namespace

namespace {
// 32 rows into one 32-bit word per column: acc[j] |= [r_i[j] != 0] << (i - i0).
template <class T>
PARRBM_INLINE bool pack32_impl(const T* base, int64_t ld, int64_t nrows, int64_t n,
                               uint32_t* __restrict acc) {
  for (int64_t j = 0; j < n; ++j) acc[j] = 0;
  uint32_t bad = 0;
  for (int64_t i = 0; i < nrows; ++i) {
    const T* __restrict r = base + i * ld;
    const uint32_t sh = uint32_t(i);
    for (int64_t j = 0; j < n; ++j) {
      const T x = r[j];
      acc[j] |= uint32_t(x != T(0)) << sh;
      bad |= uint32_t((x != T(0)) & (x != T(1)));
    }
  }
  return bad == 0;
}
PARRBM_DISPATCH(bool, pack32, (const float* b, int64_t ld, int64_t nr, int64_t n, uint32_t* acc),
                (b, ld, nr, n, acc))
PARRBM_DISPATCH(bool, pack32, (const double* b, int64_t ld, int64_t nr, int64_t n, uint32_t* acc),
                (b, ld, nr, n, acc))
thread_local std::vector<uint32_t> pack_scratch;
}  // namespace

template <class T>
bool pack_columns(MatView<const T> s, uint64_t* out, int64_t words) {
  std::memset(out, 0, sizeof(uint64_t) * size_t(s.cols * words));
  if (int64_t(pack_scratch.size()) < s.cols) pack_scratch.resize(size_t(s.cols));
  uint32_t* acc = pack_scratch.data();
  bool binary = true;
  for (int64_t i0 = 0; i0 < s.rows; i0 += 32) {
    const int64_t nr = std::min<int64_t>(32, s.rows - i0);
    binary &= pack32(s.row(i0), s.ld, nr, s.cols, acc);
    const int64_t q = i0 >> 6;
    const int shift = int(i0 & 63);  // 0 or 32
    for (int64_t j = 0; j < s.cols; ++j) out[j * words + q] |= uint64_t(acc[j]) << shift;
  }
  return binary;
}

template <class T>
void bit_statistics_update(MatView<T> w, MatView<T> inc, const uint64_t* pos_left,
                           const uint64_t* pos_right, const uint64_t* neg_left,
                           const uint64_t* neg_right, int64_t words, T alpha, T neg_scale,
                           T momentum, T decay_lr) {
  for (int64_t v = 0; v < w.rows; ++v)
    bitstat_row(w.row(v), inc.empty() ? nullptr : inc.row(v),
                pos_left ? pos_left + v * words : nullptr, pos_right, neg_left + v * words,
                neg_right, words, w.cols, alpha, neg_scale, momentum, decay_lr);
}

template <class T>
void apply_increment(MatView<T> w, MatView<T> inc, T decay_lr) {
  for (int64_t i = 0; i < w.rows; ++i) apply_increment_row(w.row(i), inc.row(i), decay_lr, w.cols);
}

namespace {
template <class T>
PARRBM_INLINE void apply_gradient_row_impl(T* __restrict w, T* __restrict inc,
                                           const T* __restrict g, T alpha, T momentum,
                                           T decay_lr, int64_t n) {
  if (inc)
    for (int64_t j = 0; j < n; ++j) {
      inc[j] = momentum * inc[j] + alpha * g[j] - decay_lr * w[j];
      w[j] += inc[j];
    }
  else
    for (int64_t j = 0; j < n; ++j) w[j] += alpha * g[j] - decay_lr * w[j];
}
PARRBM_DISPATCH(void, apply_gradient_row,
                (float* w, float* inc, const float* g, float a, float m, float d, int64_t n),
                (w, inc, g, a, m, d, n))
PARRBM_DISPATCH(void, apply_gradient_row,
                (double* w, double* inc, const double* g, double a, double m, double d, int64_t n),
                (w, inc, g, a, m, d, n))
}  // namespace

template <class T>
void apply_gradient(MatView<T> w, MatView<T> inc, MatView<const T> g, T alpha, T momentum,
                    T decay_lr) {
  for (int64_t i = 0; i < w.rows; ++i)
    apply_gradient_row(w.row(i), inc.empty() ? nullptr : inc.row(i), g.row(i), alpha, momentum,
                       decay_lr, w.cols);
}

template <class T>
void bias_update(T* bias, T* inc, MatView<const T> pos, MatView<const T> neg, T neg_scale,
                 T alpha, T momentum) {
  const int64_t n = pos.cols;
  // Column sums in the same row order on every worker: the order never depends on
  // how columns are split.
  std::vector<T> g(size_t(n), T(0));
  for (int64_t i = 0; i < pos.rows; ++i) {
    const T* r = pos.row(i);
    for (int64_t j = 0; j < n; ++j) g[j] += r[j];
  }
  if (!neg.empty() && neg.rows > 0) {
    std::vector<T> gn(size_t(n), T(0));
    for (int64_t i = 0; i < neg.rows; ++i) {
      const T* r = neg.row(i);
      for (int64_t j = 0; j < n; ++j) gn[j] += r[j];
    }
    for (int64_t j = 0; j < n; ++j) g[j] -= neg_scale * gn[j];
  }
  if (inc) {
    for (int64_t j = 0; j < n; ++j) {
      inc[j] = momentum * inc[j] + alpha * g[j];
      bias[j] += inc[j];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) bias[j] += alpha * g[j];
  }
}

template <class T>
void scaled_copy(MatView<const T> src, MatView<T> dst, T scale) {
  for (int64_t i = 0; i < src.rows; ++i) {
    const T* s = src.row(i);
    T* d = dst.row(i);
    for (int64_t j = 0; j < src.cols; ++j) d[j] = scale * s[j];
  }
}

template <class T>
void gather_rows(MatView<const T> src, const int64_t* index, MatView<T> dst) {
  for (int64_t i = 0; i < dst.rows; ++i)
    std::memcpy(dst.row(i), src.row(index[i]), sizeof(T) * size_t(dst.cols));
}

template <class T>
void sigmoid(MatView<const T> x, MatView<T> out) {
  for (int64_t i = 0; i < x.rows; ++i) sigmoid_row(x.row(i), static_cast<const T*>(nullptr), out.row(i), x.cols);
}

// ---- BLAS threads ----------------------------------------------------------------------


void set_blas_threads(int n) {
#if defined(PARRBM_OPENBLAS)
  PARRBM_BLAS_FN(openblas_set_num_threads)(n);
#else
  (void)n;
#endif
}

int get_blas_threads() {
#if defined(PARRBM_OPENBLAS)
  return PARRBM_BLAS_FN(openblas_get_num_threads)();
#else
  return -1;
#endif
}

const char* blas_name() { return PARRBM_BLAS_NAME; }

const char* simd_path() { return cpu_has_avx2() ? "avx2" : "baseline"; }

const char* blas_config() {
#if defined(PARRBM_OPENBLAS)
  return PARRBM_BLAS_FN(openblas_get_config)();
#else
  return PARRBM_BLAS_NAME;
#endif
}

// ---- instantiations ----------------------------------------------------------------------

#define PARRBM_INSTANTIATE(T)                                                                    \
  template void gemm<T>(bool, bool, T, MatView<const T>, MatView<const T>, T, MatView<T>);      \
  template void sample_sigmoid<T>(MatView<const T>, const T*, MatView<T>, T, MatView<T>, T,     \
                                  const StreamKey&, uint64_t, const Units&);                    \
  template void sample_bernoulli<T>(MatView<const T>, MatView<T>, T, const StreamKey&, uint64_t, \
                                    const Units&);                                              \
  template void apply_gradient<T>(MatView<T>, MatView<T>, MatView<const T>, T, T, T);           \
  template double visible_activation<T>(MatView<const T>, const T*, MatView<T>, VisibleKind,   \
                                        bool, MatView<const T>, const StreamKey&, uint64_t,     \
                                        const Units&, double);                                  \
  template void pack_bits<T>(MatView<const T>, uint8_t*);                                       \
  template void unpack_bits<T>(const uint8_t*, MatView<T>, T);                                  \
  template void apply_increment<T>(MatView<T>, MatView<T>, T);                                  \
  template void bias_update<T>(T*, T*, MatView<const T>, MatView<const T>, T, T, T);            \
  template void scaled_copy<T>(MatView<const T>, MatView<T>, T);                                \
  template void gather_rows<T>(MatView<const T>, const int64_t*, MatView<T>);                   \
  template void sigmoid<T>(MatView<const T>, MatView<T>);                                       \
  template bool pack_columns<T>(MatView<const T>, uint64_t*, int64_t);                          \
  template void bit_statistics_update<T>(MatView<T>, MatView<T>, const uint64_t*,               \
                                         const uint64_t*, const uint64_t*, const uint64_t*,     \
                                         int64_t, T, T, T, T);

PARRBM_INSTANTIATE(float)
PARRBM_INSTANTIATE(double)

}  // namespace parrbm
