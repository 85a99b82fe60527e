// The serial, fused CD-k trainer: the single-worker reference path (docs/design.md 5.6).
// It owns the parameters and every work buffer, so one minibatch step allocates nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.hpp"

namespace parrbm {

enum class Statistics : int { Samples = 0, Probabilities = 1 };

struct CDConfig {
  int64_t n_visible = 0;
  int64_t n_hidden = 0;
  int64_t batch_size = 0;  // largest minibatch; also the number of persistent chains
  VisibleKind visible = VisibleKind::Binary;
  bool gaussian_noise = false;  // sample Gaussian visible units instead of using the mean
  // Binary visible units with probability statistics: sample the negative-phase visible
  // states (as scikit-learn's BernoulliRBM) instead of using their probabilities.
  // Sampled statistics always sample them.
  bool sample_visible = false;
  Statistics statistics = Statistics::Samples;
  int cd_k = 1;
  bool persistent = false;
  double learning_rate = 0.1;
  double momentum = 0.0;
  double weight_decay = 0.0;
  uint64_t seed = 0;
  // Count binary-binary statistics with AND + popcount instead of a GEMM whenever both
  // operands are 0/1 states (samples statistics, binary visible units; the positive
  // term also needs binary data). The result is the same up to rounding of the update.
  bool binary_statistics = true;
};

template <class T>
class CDTrainer {
 public:
  explicit CDTrainer(const CDConfig& cfg);

  const CDConfig& config() const { return cfg_; }

  // One CD-k step on minibatch x (m x V, m <= batch_size), with step index `step`
  // keying the random streams. Returns the summed squared reconstruction error
  // sum (x - E[v | h])^2 of the first Gibbs step (0 for PCD, whose chain is not a
  // reconstruction of x).
  double step(MatView<const T> x, uint32_t step);

  // Steps over the minibatches of x taken in the given row order (n_order rows,
  // consecutive chunks of batch_size, the last one possibly shorter), with step indices
  // first_step, first_step + 1, ... Writes each batch's error sum to errors and, if
  // seconds is given, each step's seconds (the step alone, as the parallel workers time
  // theirs: gathering the minibatch's rows is outside).
  void run(MatView<const T> x, const int64_t* order, int64_t n_order, uint32_t first_step,
           double* errors, double* seconds = nullptr);

  // Mean-field reconstruction (no sampling): out = E[v | h = sigm(x W + c)].
  void reconstruct(MatView<const T> x, MatView<T> out) const;
  // out = sigm(x W + c)
  void hidden_probabilities(MatView<const T> x, MatView<T> out) const;

  MatView<T> weights() { return {w_.data(), cfg_.n_visible, cfg_.n_hidden, cfg_.n_hidden}; }
  MatView<T> weight_increments() {
    return {w_inc_.data(), w_inc_.empty() ? 0 : cfg_.n_visible, cfg_.n_hidden, cfg_.n_hidden};
  }
  T* visible_bias() { return b_.data(); }
  T* hidden_bias() { return c_.data(); }
  T* visible_bias_increments() { return b_inc_.empty() ? nullptr : b_inc_.data(); }
  T* hidden_bias_increments() { return c_inc_.empty() ? nullptr : c_inc_.data(); }
  MatView<T> persistent_chains() {
    return {chains_.data(), chains_.empty() ? 0 : cfg_.batch_size, cfg_.n_hidden, cfg_.n_hidden};
  }
  bool has_momentum() const { return !w_inc_.empty(); }
  bool uses_binary_statistics() const {
    return cfg_.binary_statistics && cfg_.statistics == Statistics::Samples &&
           cfg_.visible == VisibleKind::Binary;
  }

 private:
  // One step's views of the work buffers: mb data rows, chain_rows negative rows (mb, or
  // the persistent chains' count).
  struct StepViews {
    int64_t mb = 0, chain_rows = 0;
    T neg_scale = T(1);
    MatView<T> left, right, left_pos, left_neg, right_pos, right_neg, pre, pre_pos;
  };
  StepViews step_views(int64_t mb);
  MatView<T> positive_phase(MatView<const T> x, const StepViews& s, uint32_t step);
  double negative_phase(MatView<const T> x, const StepViews& s, MatView<T> driver, uint32_t step);
  void update(const StepViews& s);

  MatView<T> view(std::vector<T>& v, int64_t rows, int64_t cols) {
    return {v.data(), rows, cols, cols};
  }

  CDConfig cfg_;
  std::vector<T> w_, b_, c_;
  std::vector<T> w_inc_, b_inc_, c_inc_;  // only with momentum
  std::vector<T> chains_;                 // persistent hidden states (PCD)
  // Stacked statistics operands: left = [x; v'] (2m x V), right = [h; -h'] (2m x H), so
  // x^T h - v'^T h' is one GEMM of depth 2m straight into the weights or increments.
  std::vector<T> left_, right_;
  std::vector<T> pre_;     // m x H hidden inputs
  std::vector<T> states_;  // m x H hidden states driving the chain when right_ holds others
  // Column bit-packed operands of the binary statistics (units x words of cases).
  int64_t words_ = 0;
  std::vector<uint64_t> bits_x_, bits_h_, bits_v_, bits_hn_;
};

}  // namespace parrbm
