#include "trainer.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace parrbm {

template <class T>
static MatView<const T> cv(MatView<T> v) {
  return {v.data, v.rows, v.cols, v.ld};
}

template <class T>
CDTrainer<T>::CDTrainer(const CDConfig& cfg) : cfg_(cfg) {
  if (cfg.n_visible <= 0 || cfg.n_hidden <= 0 || cfg.batch_size <= 0 || cfg.cd_k < 1)
    throw std::invalid_argument("CDTrainer: sizes and cd_k must be positive");
  const int64_t V = cfg.n_visible, H = cfg.n_hidden, m = cfg.batch_size;
  w_.assign(size_t(V * H), T(0));
  b_.assign(size_t(V), T(0));
  c_.assign(size_t(H), T(0));
  if (cfg.momentum != 0.0) {
    w_inc_.assign(size_t(V * H), T(0));
    b_inc_.assign(size_t(V), T(0));
    c_inc_.assign(size_t(H), T(0));
  }
  if (cfg.persistent) chains_.assign(size_t(m * H), T(0));
  left_.assign(size_t(2 * m * V), T(0));
  right_.assign(size_t(2 * m * H), T(0));
  pre_.assign(size_t(m * H), T(0));
  const bool separate_states = cfg.statistics == Statistics::Probabilities || cfg.cd_k > 1;
  if (separate_states) states_.assign(size_t(m * H), T(0));
  if (uses_binary_statistics()) {
    words_ = (m + 63) / 64;
    bits_x_.assign(size_t(V * words_), 0);
    bits_v_.assign(size_t(V * words_), 0);
    bits_h_.assign(size_t(H * words_), 0);
    bits_hn_.assign(size_t(H * words_), 0);
  }
}

template <class T>
typename CDTrainer<T>::StepViews CDTrainer<T>::step_views(int64_t mb) {
  const int64_t V = cfg_.n_visible, H = cfg_.n_hidden;
  StepViews s;
  s.mb = mb;
  s.chain_rows = cfg_.persistent ? cfg_.batch_size : mb;
  // Positive and negative statistics share one GEMM scale eps / mb; PCD's chains are
  // averaged over their own count, folded into the value written for each state.
  s.neg_scale = T(double(mb) / double(s.chain_rows));
  s.left = view(left_, mb + s.chain_rows, V);
  s.right = view(right_, mb + s.chain_rows, H);
  s.left_pos = s.left.block(0, mb, 0, V);
  s.left_neg = s.left.block(mb, s.chain_rows, 0, V);
  s.right_pos = s.right.block(0, mb, 0, H);
  s.right_neg = s.right.block(mb, s.chain_rows, 0, H);
  s.pre = view(pre_, s.chain_rows, H);
  s.pre_pos = s.pre.block(0, mb, 0, H);
  return s;
}

template <class T>
double CDTrainer<T>::step(MatView<const T> x, uint32_t step) {
  if (x.rows <= 0 || x.rows > cfg_.batch_size || x.cols != cfg_.n_visible)
    throw std::invalid_argument("CDTrainer::step: minibatch shape does not fit the trainer");
  const StepViews s = step_views(x.rows);
  const MatView<T> driver = positive_phase(x, s, step);
  const double err = negative_phase(x, s, driver, step);
  update(s);
  return err;
}

// h ~ p(h | x) into the positive statistics. Returns the hidden states that drive the
// first visible sample: the data's (CD) or the persistent chains (PCD).
template <class T>
MatView<T> CDTrainer<T>::positive_phase(MatView<const T> x, const StepViews& s, uint32_t step) {
  if (x.data != s.left_pos.data) scaled_copy(x, s.left_pos, T(1));
  gemm<T>(false, false, T(1), cv(s.left_pos), cv(weights()), T(0), s.pre_pos);
  const StreamKey key{cfg_.seed, step, kPhasePositiveHidden};
  MatView<T> driver = s.right_pos;
  if (cfg_.statistics == Statistics::Probabilities && cfg_.persistent) {
    // the chains drive the negative phase and the statistics take probabilities: the
    // data's hidden states would be drawn for nothing (a third of a step's draws)
    sample_sigmoid<T>(cv(s.pre_pos), c_.data(), MatView<T>{}, T(1), s.right_pos, T(1), key, 0,
                      Units{});
  } else if (cfg_.statistics == Statistics::Probabilities) {
    driver = view(states_, s.mb, cfg_.n_hidden);
    sample_sigmoid<T>(cv(s.pre_pos), c_.data(), driver, T(1), s.right_pos, T(1), key, 0, Units{});
  } else {
    sample_sigmoid<T>(cv(s.pre_pos), c_.data(), s.right_pos, T(1), MatView<T>{}, T(1), key, 0,
                      Units{});
  }
  return cfg_.persistent ? persistent_chains() : driver;
}

// k Gibbs steps from `driver`; the last one's hidden statistics go into right_neg, scaled
// by -neg_scale. Returns the first reconstruction's squared error (0 for PCD).
template <class T>
double CDTrainer<T>::negative_phase(MatView<const T> x, const StepViews& s, MatView<T> driver,
                                    uint32_t step) {
  const CDConfig& c = cfg_;
  const bool probs_stats = c.statistics == Statistics::Probabilities;
  const bool sample_visible =
      c.visible == VisibleKind::Binary ? !probs_stats || c.sample_visible : c.gaussian_noise;
  MatView<const T> w = cv(weights());
  StreamKey key{c.seed, step, 0};
  double err = 0.0;
  for (int t = 1; t <= c.cd_k; ++t) {
    key.phase = phase_visible(uint32_t(t));
    gemm<T>(false, true, T(1), cv(driver), w, T(0), s.left_neg);
    const bool monitor = t == 1 && !c.persistent;
    err += visible_activation<T>(cv(s.left_neg), b_.data(), s.left_neg, c.visible, sample_visible,
                                 monitor ? x : MatView<const T>{}, key, 0, Units{});
    gemm<T>(false, false, T(1), cv(s.left_neg), w, T(0), s.pre);
    key.phase = phase_hidden(uint32_t(t));
    MatView<T> chains = c.persistent ? persistent_chains() : MatView<T>{};
    if (t < c.cd_k) {
      driver = c.persistent ? chains : view(states_, s.chain_rows, c.n_hidden);
      sample_sigmoid<T>(cv(s.pre), c_.data(), driver, T(1), MatView<T>{}, T(1), key, 0, Units{});
    } else if (probs_stats) {
      sample_sigmoid<T>(cv(s.pre), c_.data(), chains, T(1), s.right_neg, -s.neg_scale, key, 0,
                        Units{});
    } else if (c.persistent) {
      sample_sigmoid<T>(cv(s.pre), c_.data(), chains, T(1), MatView<T>{}, T(1), key, 0, Units{});
      scaled_copy<T>(cv(chains), s.right_neg, -s.neg_scale);
    } else {
      sample_sigmoid<T>(cv(s.pre), c_.data(), s.right_neg, -s.neg_scale, MatView<T>{}, T(1), key,
                        0, Units{});
    }
  }
  return err;
}

// W <- W + eps/m (x^T h - v'^T h') (+ momentum, - weight decay), and the biases.
template <class T>
void CDTrainer<T>::update(const StepViews& s) {
  const CDConfig& c = cfg_;
  const T alpha = T(c.learning_rate / double(s.mb));
  const T decay_lr = T(c.learning_rate * c.weight_decay);
  const T momentum = T(c.momentum);
  MatView<T> w = weights();
  MatView<T> inc = has_momentum() ? weight_increments() : MatView<T>{};
  if (uses_binary_statistics()) {
    pack_columns<T>(cv(s.left_neg), bits_v_.data(), words_);
    pack_columns<T>(cv(s.right_neg), bits_hn_.data(), words_);
    pack_columns<T>(cv(s.right_pos), bits_h_.data(), words_);
    const bool binary_data = pack_columns<T>(cv(s.left_pos), bits_x_.data(), words_);
    if (!binary_data) {  // x^T h by GEMM, then only the negative counts
      if (has_momentum())
        gemm<T>(true, false, alpha, cv(s.left_pos), cv(s.right_pos), momentum, inc);
      else
        gemm<T>(true, false, alpha, cv(s.left_pos), cv(s.right_pos), T(1) - decay_lr, w);
    }
    bit_statistics_update<T>(w, inc, binary_data ? bits_x_.data() : nullptr, bits_h_.data(),
                             bits_v_.data(), bits_hn_.data(), words_, alpha, s.neg_scale,
                             momentum, decay_lr);
  } else if (has_momentum()) {
    gemm<T>(true, false, alpha, cv(s.left), cv(s.right), momentum, inc);
    apply_increment<T>(w, inc, decay_lr);
  } else {
    gemm<T>(true, false, alpha, cv(s.left), cv(s.right), T(1) - decay_lr, w);
  }
  bias_update<T>(b_.data(), visible_bias_increments(), cv(s.left_pos), cv(s.left_neg),
                 s.neg_scale, alpha, momentum);
  bias_update<T>(c_.data(), hidden_bias_increments(), cv(s.right), MatView<const T>{}, T(0),
                 alpha, momentum);
}

template <class T>
void CDTrainer<T>::run(MatView<const T> x, const int64_t* order, int64_t n_order,
                       uint32_t first_step, double* errors, double* seconds) {
  using clock = std::chrono::steady_clock;
  const int64_t m = cfg_.batch_size;
  int64_t batch = 0;
  for (int64_t start = 0; start < n_order; start += m, ++batch) {
    const int64_t mb = std::min(m, n_order - start);
    MatView<T> dst = view(left_, mb, cfg_.n_visible);
    gather_rows<T>(x, order + start, dst);
    const auto t0 = clock::now();
    errors[batch] = step(cv(dst), first_step + uint32_t(batch));
    if (seconds) seconds[batch] = std::chrono::duration<double>(clock::now() - t0).count();
  }
}

template <class T>
void CDTrainer<T>::hidden_probabilities(MatView<const T> x, MatView<T> out) const {
  MatView<const T> w{w_.data(), cfg_.n_visible, cfg_.n_hidden, cfg_.n_hidden};
  gemm<T>(false, false, T(1), x, w, T(0), out);
  sample_sigmoid<T>(cv(out), c_.data(), MatView<T>{}, T(1), out, T(1), StreamKey{}, 0, Units{});
}

template <class T>
void CDTrainer<T>::reconstruct(MatView<const T> x, MatView<T> out) const {
  std::vector<T> h(size_t(x.rows * cfg_.n_hidden));
  MatView<T> hv{h.data(), x.rows, cfg_.n_hidden, cfg_.n_hidden};
  hidden_probabilities(x, hv);
  MatView<const T> w{w_.data(), cfg_.n_visible, cfg_.n_hidden, cfg_.n_hidden};
  gemm<T>(false, true, T(1), cv(hv), w, T(0), out);
  visible_activation<T>(cv(out), b_.data(), out, cfg_.visible, false, MatView<const T>{},
                        StreamKey{}, 0, Units{});
}

template class CDTrainer<float>;
template class CDTrainer<double>;

}  // namespace parrbm
