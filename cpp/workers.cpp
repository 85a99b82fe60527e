#include "workers.hpp"

#include "phases.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string_view>

namespace parrbm {

namespace {

template <class T>
MatView<T> rows_of(MatView<T> a, int64_t r0, int64_t n) {
  return a.block(r0, n, 0, a.cols);
}

template <class T>
MatView<const T> rows_of(MatView<const T> a, int64_t r0, int64_t n) {
  return a.block(r0, n, 0, a.cols);
}

template <class T>
void require(const MatView<T>& a, int64_t rows, int64_t cols, const char* name) {
  if (a.empty() || a.rows != rows || a.cols != cols)
    throw std::invalid_argument(std::string("strategy worker: parameter '") + name +
                                "' must have shape (" + std::to_string(rows) + ", " +
                                std::to_string(cols) + ")");
}

template <class T>
void require_same(const MatView<T>& inc, const MatView<T>& w, const char* name) {
  if (!inc.empty()) require(inc, w.rows, w.cols, name);
}

// dst row i <- src row index[i] (index: a part's sorted global rows)
template <class T>
void take_rows(MatView<const T> src, const Parts& p, int k, MatView<T> dst) {
  if (p.is_range(k)) copy_into<T>(src.block(p.first(k), p.size(k), 0, src.cols), dst);
  else gather_rows<T>(src, p.index(k), dst);  // scattered rows
}

}  // namespace

// ---- what every strategy shares (strategies/base.py) -------------------------------------

template <class T>
StrategyWorker<T>::StrategyWorker(const StrategyConfig& cfg, const WorkerParams<T>& params,
                                  Parts vis, Parts hid, Communicator& comm,
                                  WorkerCounters counters)
    : cfg_(cfg), p_(params), vis_(std::move(vis)), hid_(std::move(hid)), comm_(comm),
      counters_(std::move(counters)), k_(cfg.rank), K_(cfg.workers) {
  if (comm.size() != K_ || comm.rank() != k_)
    throw std::invalid_argument("strategy worker: rank/workers differ from the communicator's");
  if (vis_.count() != K_ || hid_.count() != K_ || vis_.n() != cfg.cd.n_visible ||
      hid_.n() != cfg.cd.n_hidden)
    throw std::invalid_argument("strategy worker: unit partitions do not fit the model");
}

template <class T>
MatView<T> StrategyWorker<T>::buffer(int64_t rows, int64_t cols) {
  storage_.emplace_back(size_t(std::max<int64_t>(rows * cols, 1)), T(0));
  return MatView<T>{storage_.back().data(), rows, cols, std::max<int64_t>(cols, 1)};
}

template <class T>
void StrategyWorker<T>::sample_hidden(MatView<const T> pre, const T* bias, const Units& units,
                                      uint32_t step, uint32_t phase, MatView<T> states,
                                      MatView<T> probs, uint64_t case0, double prob_scale) {
  sample_sigmoid<T>(pre, bias, states, T(1), probs, T(prob_scale), key(step, phase), case0, units);
}

template <class T>
double StrategyWorker<T>::visible_units(MatView<const T> pre, const T* bias, MatView<T> out,
                                        const Units& units, uint32_t step, int t,
                                        MatView<const T> data, uint64_t case0) {
  return visible_activation<T>(pre, bias, out, cd().visible, sample_visible(), data,
                               key(step, phase_visible(uint32_t(t))), case0, units);
}

template <class T>
void StrategyWorker<T>::apply_statistics(MatView<T> w, MatView<T> inc, MatView<const T> left,
                                         MatView<const T> right, int64_t mb, double neg_scale) {
  const CDConfig& c = cd();
  // Scalars are rounded to T from double exactly where the Python reference rounds them.
  const double alpha = c.learning_rate / double(mb);
  const double decay_lr = c.learning_rate * c.weight_decay;
  const bool momentum = !inc.empty();
  if (visible_as_bits()) {
    const int64_t words = (std::max(mb, left.rows - mb) + 63) / 64;
    bits_v_.resize(size_t(left.cols * words));
    bits_x_.resize(size_t(left.cols * words));
    bits_hn_.resize(size_t(right.cols * words));
    bits_h_.resize(size_t(right.cols * words));
    pack_columns<T>(rows_of(left, mb, left.rows - mb), bits_v_.data(), words);
    pack_columns<T>(rows_of(right, mb, right.rows - mb), bits_hn_.data(), words);
    pack_columns<T>(rows_of(right, 0, mb), bits_h_.data(), words);
    const bool binary = pack_columns<T>(rows_of(left, 0, mb), bits_x_.data(), words);
    if (!binary) {
      const double beta = momentum ? c.momentum : 1.0 - decay_lr;
      gemm<T>(true, false, T(alpha), rows_of(left, 0, mb), rows_of(right, 0, mb), T(beta),
              momentum ? inc : w);
    }
    bit_statistics_update<T>(w, inc, binary ? bits_x_.data() : nullptr, bits_h_.data(),
                             bits_v_.data(), bits_hn_.data(), words, T(alpha), T(neg_scale),
                             T(c.momentum), T(decay_lr));
  } else if (momentum) {
    gemm<T>(true, false, T(alpha), left, right, T(c.momentum), inc);
    apply_increment<T>(w, inc, T(decay_lr));
  } else {
    gemm<T>(true, false, T(alpha), left, right, T(1.0 - decay_lr), w);
  }
}

template <class T>
void StrategyWorker<T>::update_bias(T* bias, T* inc, MatView<const T> pos, MatView<const T> neg,
                                    int64_t mb, double neg_scale) {
  bias_update<T>(bias, inc, pos, neg, T(neg_scale), T(cd().learning_rate / double(mb)),
                 T(cd().momentum));
}

template <class T>
void StrategyWorker<T>::exchange_visible(MatView<const T> local, MatView<T> out) {
  if (visible_as_bits()) comm_.allgather_bits(local, out, vis_, phase_name::kVisible);
  else comm_.allgather(local, out, vis_, phase_name::kVisible);
}

template <class T>
std::pair<MatView<T>, MatView<T>> StrategyWorker<T>::exchange_hidden(
    MatView<const T> pre, const T* bias, uint32_t step, uint32_t phase, const char* name,
    MatView<T> local, MatView<T> full_act, MatView<T> full_states) {
  const int64_t rows = pre.rows;
  const Units units = hid_.units(k_);
  MatView<T> out_states = rows_of(full_states, 0, rows);
  MatView<T> mine = rows_of(local, 0, rows);
  if (hidden_as_bits()) {
    sample_hidden(pre, bias, units, step, phase, mine, MatView<T>{});
    comm_.allgather_bits(as_const(mine), out_states, hid_, name);
    return {out_states, out_states};
  }
  MatView<T> out_act = rows_of(full_act, 0, rows);
  sample_hidden(pre, bias, units, step, phase, MatView<T>{}, mine);
  comm_.allgather(as_const(mine), out_act, hid_, name);
  // every worker draws the same states from the same probabilities
  sample_bernoulli<T>(as_const(out_act), out_states, T(1), key(step, phase), 0, Units{});
  return {out_act, out_states};
}

// ---- unit-partitioned (strategies/unit_partitioned.py, docs/design.md 5.1) ----------------------

template <class T>
class UnitPartitioned final : public StrategyWorker<T> {
  using B = StrategyWorker<T>;
  using B::cd; using B::p_; using B::vis_; using B::hid_; using B::comm_; using B::k_; using B::K_;
  using B::counters_; using B::cfg_;

 public:
  template <class... A>
  explicit UnitPartitioned(A&&... a) : B(std::forward<A>(a)...) {
    const int64_t V = cd().n_visible, H = cd().n_hidden, m = cd().batch_size;
    const int64_t Vk = vis_.size(k_), Hk = hid_.size(k_);
    require(p_.green, V, Hk, "green");
    require(p_.purple, Vk, H, "purple");
    require_same(p_.green_inc, p_.green, "green_inc");
    require_same(p_.purple_inc, p_.purple, "purple_inc");
    if (cd().persistent) require(p_.chains, m, H, "chains");
    left_ = this->buffer(2 * m, V);
    right_ = this->buffer(2 * m, H);
    hidden_act_ = this->buffer(m, H);
    hidden_states_ = this->buffer(m, H);
    pre_h_ = this->buffer(m, Hk);
    h_local_ = this->buffer(m, Hk);
    pre_v_ = this->buffer(m, Vk);
    v_local_ = this->buffer(m, Vk);
    x_k_ = this->buffer(m, Vk);
    hid_k_ = this->buffer(2 * m, Hk);
    vis_k_ = this->buffer(2 * m, Vk);
    for (int j = 0; j < K_; ++j) {
      sync_out_.push_back(this->buffer(Vk, hid_.size(j)));
      sync_in_.push_back(this->buffer(vis_.size(j), Hk));
    }
  }

  bool is_sync_phase(std::string_view phase) const override { return phase == phase_name::kWeightSync; }

  double step(MatView<const T> X, uint32_t step) override {
    const CDConfig& s = cd();
    const int64_t mb = X.rows, c = this->chain_rows(mb);
    const double neg_scale = double(mb) / double(c);
    MatView<T> left = rows_of(left_, 0, mb + c), right = rows_of(right_, 0, mb + c);
    copy_into<T>(X, rows_of(left, 0, mb));
    MatView<const T> X_k = this->cols(X, vis_, x_k_);

    // 1. h_k ~ p(h_k | x); allgather -> every worker has h.
    gemm<T>(false, false, T(1), X, as_const(p_.green), T(0), rows_of(pre_h_, 0, mb));
    auto [act, states] = this->exchange_hidden(as_const(rows_of(pre_h_, 0, mb)), p_.c, step,
                                               kPhasePositiveHidden, phase_name::kHidden, h_local_,
                                               hidden_act_, hidden_states_);
    copy_into<T>(as_const(act), rows_of(right, 0, mb));
    MatView<T> driver = s.persistent ? p_.chains : states;

    double err = 0.0;
    for (int t = 1; t <= s.cd_k; ++t) {
      // 2. v'_k = act(h P_k^T + b_k); allgather -> every worker has v'.
      gemm<T>(false, true, T(1), as_const(driver), as_const(p_.purple), T(0), rows_of(pre_v_, 0, c));
      MatView<const T> data = (t == 1 && !s.persistent) ? X_k : MatView<const T>{};
      err += this->visible_units(as_const(rows_of(pre_v_, 0, c)), p_.b, rows_of(v_local_, 0, c),
                                 vis_.units(k_), step, t, data);
      this->exchange_visible(as_const(rows_of(v_local_, 0, c)), rows_of(left, mb, c));
      // 3. h'_k ~ p(h_k | v'); allgather -> every worker has h'.
      gemm<T>(false, false, T(1), as_const(rows_of(left, mb, c)), as_const(p_.green), T(0),
              rows_of(pre_h_, 0, c));
      std::tie(act, states) = this->exchange_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, step,
                                                    phase_hidden(uint32_t(t)), phase_name::kNegativeHidden,
                                                    h_local_, hidden_act_, hidden_states_);
      driver = states;
    }
    scaled_copy<T>(as_const(act), rows_of(right, mb, c), T(-neg_scale));
    if (s.persistent) copy_into<T>(as_const(states), p_.chains);

    // 4. Both copies of every weight are updated: green with x^T h_k - v'^T h'_k,
    //    purple with x_k^T h - v'_k^T h'.
    MatView<const T> hid_k = this->cols(as_const(right), hid_, hid_k_);
    MatView<const T> vis_k = this->cols(as_const(left), vis_, vis_k_);
    this->apply_statistics(p_.green, p_.green_inc, as_const(left), hid_k, mb, neg_scale);
    this->apply_statistics(p_.purple, p_.purple_inc, vis_k, as_const(right), mb, neg_scale);
    this->update_bias(p_.b, p_.b_inc, rows_of(vis_k, 0, mb), rows_of(vis_k, mb, c), mb, neg_scale);
    this->update_bias(p_.c, p_.c_inc, hid_k, MatView<const T>{}, mb);

    // 5. Purple is authoritative: overwrite green every sync_every minibatches.
    counters_.steps_done += 1;
    if (cfg_.sync_every && counters_.steps_done % cfg_.sync_every == 0) sync();
    return err;
  }

 private:
  // alltoall: worker j sends P_j[:, H_k] to worker k, which overwrites G_k[V_j, :].
  void sync() {
    counters_.syncs += 1;
    std::vector<MatView<const T>> sends;
    std::vector<MatView<T>> outs;
    for (int j = 0; j < K_; ++j) {
      sends.push_back(columns_of<T>(as_const(p_.purple), hid_, j, sync_out_[size_t(j)]));
      outs.push_back(sync_in_[size_t(j)]);
    }
    comm_.alltoall(sends, outs, phase_name::kWeightSync);
    double drift = 0.0;
    for (int j = 0; j < K_; ++j) {
      const MatView<T>& in = outs[size_t(j)];
      for (int64_t r = 0; r < in.rows; ++r) {
        T* g = p_.green.row(vis_.unit(j, r));
        const T* src = in.row(r);
        for (int64_t col = 0; col < in.cols; ++col) {
          drift = std::max(drift, double(std::abs(T(g[col] - src[col]))));
          g[col] = src[col];
        }
      }
    }
    counters_.divergence.push_back(drift);
  }

  MatView<T> left_, right_, hidden_act_, hidden_states_, pre_h_, h_local_, pre_v_, v_local_;
  MatView<T> x_k_, hid_k_, vis_k_;
  std::vector<MatView<T>> sync_out_, sync_in_;
};

// ---- per-update weight sync (strategies/per_update_sync.py, docs/design.md 5.2) -----------------

template <class T>
class PerUpdateSync final : public StrategyWorker<T> {
  using B = StrategyWorker<T>;
  using B::cd; using B::p_; using B::vis_; using B::hid_; using B::comm_; using B::k_; using B::K_;
  using B::counters_; using B::cfg_;

 public:
  template <class... A>
  explicit PerUpdateSync(A&&... a) : B(std::forward<A>(a)...) {
    const int64_t V = cd().n_visible, H = cd().n_hidden, m = cd().batch_size;
    const int64_t Vk = vis_.size(k_), Hk = hid_.size(k_);
    require(p_.green, V, Hk, "green");
    require(p_.purple, Vk, H, "purple");
    require_same(p_.green_inc, p_.green, "green_inc");
    if (cd().persistent) require(p_.chains, m, H, "chains");
    left_ = this->buffer(2 * m, V);
    right_k_ = this->buffer(2 * m, Hk);
    hidden_act_ = this->buffer(m, H);
    hidden_states_ = this->buffer(m, H);
    pre_h_ = this->buffer(m, Hk);
    h_local_ = this->buffer(m, Hk);
    pre_v_ = this->buffer(m, Vk);
    v_local_ = this->buffer(m, Vk);
    x_k_ = this->buffer(m, Vk);
    act_k_ = this->buffer(m, Hk);
    vis_k_ = this->buffer(2 * m, Vk);
    for (int j = 0; j < K_; ++j) {
      sync_out_.push_back(this->buffer(vis_.size(j), Hk));
      sync_in_.push_back(this->buffer(Vk, hid_.size(j)));
    }
  }

  bool is_sync_phase(std::string_view phase) const override { return phase == phase_name::kWeightSync; }

  double step(MatView<const T> X, uint32_t step) override {
    const CDConfig& s = cd();
    const int64_t mb = X.rows, c = this->chain_rows(mb);
    const double neg_scale = double(mb) / double(c);
    MatView<T> left = rows_of(left_, 0, mb + c), right_k = rows_of(right_k_, 0, mb + c);
    copy_into<T>(X, rows_of(left, 0, mb));
    const Units hid_units = hid_.units(k_);

    // 1. h_k ~ p(h_k | x); allgather -> every worker has h.
    gemm<T>(false, false, T(1), X, as_const(p_.green), T(0), rows_of(pre_h_, 0, mb));
    auto [act, states] = this->exchange_hidden(as_const(rows_of(pre_h_, 0, mb)), p_.c, step,
                                               kPhasePositiveHidden, phase_name::kHidden, h_local_,
                                               hidden_act_, hidden_states_);
    copy_into<T>(this->cols(as_const(act), hid_, act_k_), rows_of(right_k, 0, mb));
    MatView<T> driver = s.persistent ? p_.chains : states;

    double err = 0.0;
    MatView<const T> final_k;
    for (int t = 1; t <= s.cd_k; ++t) {
      // 2. v'_k = act(h P_k^T + b_k); allgather -> every worker has v'.
      gemm<T>(false, true, T(1), as_const(driver), as_const(p_.purple), T(0), rows_of(pre_v_, 0, c));
      MatView<const T> data = (t == 1 && !s.persistent) ? this->cols(X, vis_, x_k_) : MatView<const T>{};
      err += this->visible_units(as_const(rows_of(pre_v_, 0, c)), p_.b, rows_of(v_local_, 0, c),
                                 vis_.units(k_), step, t, data);
      this->exchange_visible(as_const(rows_of(v_local_, 0, c)), rows_of(left, mb, c));
      // 3. h'_k ~ p(h_k | v'), local: only this worker's green block needs it -- unless it
      //    drives another Gibbs step or a persistent chain.
      gemm<T>(false, false, T(1), as_const(rows_of(left, mb, c)), as_const(p_.green), T(0),
              rows_of(pre_h_, 0, c));
      const uint32_t phase = phase_hidden(uint32_t(t));
      if (t < s.cd_k || s.persistent) {
        std::tie(act, states) = this->exchange_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, step,
                                                      phase, phase_name::kNegativeHidden, h_local_,
                                                      hidden_act_, hidden_states_);
        driver = states;
        final_k = this->cols(as_const(act), hid_, act_k_);
      } else if (this->hidden_as_bits()) {
        this->sample_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, hid_units, step, phase,
                            rows_of(h_local_, 0, c), MatView<T>{});
        final_k = as_const(rows_of(h_local_, 0, c));
      } else {
        this->sample_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, hid_units, step, phase,
                            MatView<T>{}, rows_of(h_local_, 0, c));
        final_k = as_const(rows_of(h_local_, 0, c));
      }
    }
    scaled_copy<T>(final_k, rows_of(right_k, mb, c), T(-neg_scale));
    if (s.persistent) copy_into<T>(as_const(states), p_.chains);

    // 4. Only green is updated (each weight once), and the biases.
    MatView<const T> vis_k = this->cols(as_const(left), vis_, vis_k_);
    this->apply_statistics(p_.green, p_.green_inc, as_const(left), as_const(right_k), mb, neg_scale);
    this->update_bias(p_.b, p_.b_inc, rows_of(vis_k, 0, mb), rows_of(vis_k, mb, c), mb, neg_scale);
    this->update_bias(p_.c, p_.c_inc, as_const(right_k), MatView<const T>{}, mb);

    // 5. Green -> purple after every minibatch.
    sync();
    return err;
  }

 private:
  int64_t sync_bytes() const {
    int64_t n = 0;
    for (int j = 0; j < K_; ++j)
      if (j != k_) n += vis_.size(j) * hid_.size(k_);
    return n * int64_t(sizeof(T));
  }

  // worker k sends G_k[V_j, :] to worker j, which overwrites P_j[:, H_k]; with shared
  // weights green and purple are one array and the sync is a barrier.
  void sync() {
    counters_.syncs += 1;
    if (cfg_.shared_weights) {
      comm_.shared_sync(sync_bytes(), phase_name::kWeightSync);
      return;
    }
    std::vector<MatView<const T>> sends;
    std::vector<MatView<T>> outs;
    for (int j = 0; j < K_; ++j) {
      if (vis_.is_range(j)) {
        sends.push_back(as_const(p_.green).block(vis_.first(j), vis_.size(j), 0, p_.green.cols));
      } else {
        take_rows<T>(as_const(p_.green), vis_, j, sync_out_[size_t(j)]);
        sends.push_back(as_const(sync_out_[size_t(j)]));
      }
      outs.push_back(hid_.is_range(j) ? column_block(p_.purple, hid_, j) : sync_in_[size_t(j)]);
    }
    comm_.alltoall(sends, outs, phase_name::kWeightSync);
    for (int j = 0; j < K_; ++j)
      if (!hid_.is_range(j)) put_columns<T>(p_.purple, hid_, j, as_const(sync_in_[size_t(j)]));
  }

  MatView<T> left_, right_k_, hidden_act_, hidden_states_, pre_h_, h_local_, pre_v_, v_local_;
  MatView<T> x_k_, act_k_, vis_k_;
  std::vector<MatView<T>> sync_out_, sync_in_;
};

// ---- data-partitioned, purple-only (strategies/purple_only.py, docs/design.md 5.3) --------------

template <class T>
class PurpleOnly final : public StrategyWorker<T> {
  using B = StrategyWorker<T>;
  using B::cd; using B::p_; using B::vis_; using B::hid_; using B::comm_; using B::k_;

 public:
  template <class... A>
  explicit PurpleOnly(A&&... a) : B(std::forward<A>(a)...) {
    const int64_t H = cd().n_hidden, m = cd().batch_size;
    const int64_t Vk = vis_.size(k_), Hk = hid_.size(k_);
    require(p_.purple, Vk, H, "purple");
    require_same(p_.purple_inc, p_.purple, "purple_inc");
    if (cd().persistent) require(p_.chains, m, H, "chains");
    left_k_ = this->buffer(2 * m, Vk);
    right_ = this->buffer(2 * m, H);
    partial_ = this->buffer(m, H);
    hidden_act_ = this->buffer(m, H);
    hidden_states_ = this->buffer(m, H);
    pre_h_ = this->buffer(m, Hk);
    h_local_ = this->buffer(m, Hk);
    x_k_ = this->buffer(m, Vk);
    hid_k_ = this->buffer(2 * m, Hk);
  }

  double step(MatView<const T> X, uint32_t step) override {
    const CDConfig& s = cd();
    const int64_t mb = X.rows, c = this->chain_rows(mb);
    const double neg_scale = double(mb) / double(c);
    MatView<T> left_k = rows_of(left_k_, 0, mb + c), right = rows_of(right_, 0, mb + c);
    copy_into<T>(this->cols(X, vis_, x_k_), rows_of(left_k, 0, mb));

    // 1. Inputs of h_k by reduce-scatter; h_k ~ p(h_k | x); allgather -> h.
    gemm<T>(false, false, T(1), as_const(rows_of(left_k, 0, mb)), as_const(p_.purple), T(0),
            rows_of(partial_, 0, mb));
    comm_.reduce_scatter(as_const(rows_of(partial_, 0, mb)), rows_of(pre_h_, 0, mb), hid_,
                            phase_name::kHiddenInput);
    auto [act, states] = this->exchange_hidden(as_const(rows_of(pre_h_, 0, mb)), p_.c, step,
                                               kPhasePositiveHidden, phase_name::kHidden, h_local_,
                                               hidden_act_, hidden_states_);
    copy_into<T>(as_const(act), rows_of(right, 0, mb));
    MatView<T> driver = s.persistent ? p_.chains : states;

    double err = 0.0;
    for (int t = 1; t <= s.cd_k; ++t) {
      // 2. v'_k = act(h P_k^T + b_k): local.
      MatView<T> v_k = rows_of(left_k, mb, c);
      gemm<T>(false, true, T(1), as_const(driver), as_const(p_.purple), T(0), v_k);
      MatView<const T> data = (t == 1 && !s.persistent) ? as_const(rows_of(left_k, 0, mb))
                                                         : MatView<const T>{};
      err += this->visible_units(as_const(v_k), p_.b, v_k, vis_.units(k_), step, t, data);
      // 3. Inputs of h'_k by reduce-scatter; h'_k; allgather -> h'.
      gemm<T>(false, false, T(1), as_const(v_k), as_const(p_.purple), T(0), rows_of(partial_, 0, c));
      comm_.reduce_scatter(as_const(rows_of(partial_, 0, c)), rows_of(pre_h_, 0, c), hid_,
                              phase_name::kNegativeHiddenInput);
      std::tie(act, states) = this->exchange_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, step,
                                                    phase_hidden(uint32_t(t)), phase_name::kNegativeHidden,
                                                    h_local_, hidden_act_, hidden_states_);
      driver = states;
    }
    scaled_copy<T>(as_const(act), rows_of(right, mb, c), T(-neg_scale));
    if (s.persistent) copy_into<T>(as_const(states), p_.chains);

    // 4. P_k <- P_k + eps/m (x_k^T h - v'_k^T h'); biases.
    this->apply_statistics(p_.purple, p_.purple_inc, as_const(left_k), as_const(right), mb, neg_scale);
    this->update_bias(p_.b, p_.b_inc, as_const(rows_of(left_k, 0, mb)), as_const(rows_of(left_k, mb, c)),
                      mb, neg_scale);
    this->update_bias(p_.c, p_.c_inc, this->cols(as_const(right), hid_, hid_k_), MatView<const T>{}, mb);
    return err;
  }

 private:
  MatView<T> left_k_, right_, partial_, hidden_act_, hidden_states_, pre_h_, h_local_, x_k_, hid_k_;
};

// ---- green-only (strategies/green_only.py, docs/design.md 5.4) ----------------------------------

template <class T>
class GreenOnly final : public StrategyWorker<T> {
  using B = StrategyWorker<T>;
  using B::cd; using B::p_; using B::vis_; using B::hid_; using B::comm_; using B::k_;

 public:
  template <class... A>
  explicit GreenOnly(A&&... a) : B(std::forward<A>(a)...) {
    const int64_t V = cd().n_visible, m = cd().batch_size;
    const int64_t Vk = vis_.size(k_), Hk = hid_.size(k_);
    require(p_.green, V, Hk, "green");
    require_same(p_.green_inc, p_.green, "green_inc");
    if (cd().persistent) require(p_.chains, m, Hk, "chains");
    left_ = this->buffer(2 * m, V);
    right_k_ = this->buffer(2 * m, Hk);
    states_k_ = this->buffer(m, Hk);
    partial_ = this->buffer(m, V);
    pre_v_ = this->buffer(m, Vk);
    v_local_ = this->buffer(m, Vk);
    pre_h_ = this->buffer(m, Hk);
    x_k_ = this->buffer(m, Vk);
    vis_k_ = this->buffer(2 * m, Vk);
  }

  double step(MatView<const T> X, uint32_t step) override {
    const CDConfig& s = cd();
    const int64_t mb = X.rows, c = this->chain_rows(mb);
    const double neg_scale = double(mb) / double(c);
    MatView<T> left = rows_of(left_, 0, mb + c), right_k = rows_of(right_k_, 0, mb + c);
    copy_into<T>(X, rows_of(left, 0, mb));

    // 1. h_k ~ p(h_k | x): local.
    gemm<T>(false, false, T(1), X, as_const(p_.green), T(0), rows_of(pre_h_, 0, mb));
    sample_local_hidden(as_const(rows_of(pre_h_, 0, mb)), step, kPhasePositiveHidden,
                        rows_of(right_k, 0, mb), rows_of(states_k_, 0, mb), 1.0);
    MatView<T> driver = s.persistent ? p_.chains : rows_of(states_k_, 0, mb);

    double err = 0.0;
    for (int t = 1; t <= s.cd_k; ++t) {
      // 2. Inputs of v'_k by reduce-scatter of h_k G_k^T; v'_k; allgather -> v'.
      gemm<T>(false, true, T(1), as_const(driver), as_const(p_.green), T(0), rows_of(partial_, 0, c));
      comm_.reduce_scatter(as_const(rows_of(partial_, 0, c)), rows_of(pre_v_, 0, c), vis_,
                              phase_name::kVisibleInput);
      MatView<const T> data = (t == 1 && !s.persistent) ? this->cols(X, vis_, x_k_) : MatView<const T>{};
      err += this->visible_units(as_const(rows_of(pre_v_, 0, c)), p_.b, rows_of(v_local_, 0, c),
                                 vis_.units(k_), step, t, data);
      this->exchange_visible(as_const(rows_of(v_local_, 0, c)), rows_of(left, mb, c));
      // 3. h'_k ~ p(h_k | v'): local.
      gemm<T>(false, false, T(1), as_const(rows_of(left, mb, c)), as_const(p_.green), T(0),
              rows_of(pre_h_, 0, c));
      MatView<T> states_out = s.persistent ? p_.chains : rows_of(states_k_, 0, c);
      sample_local_hidden(as_const(rows_of(pre_h_, 0, c)), step, phase_hidden(uint32_t(t)),
                          rows_of(right_k, mb, c), states_out, -neg_scale);
      driver = states_out;
    }

    // 4. G_k <- G_k + eps/m (x^T h_k - v'^T h'_k); biases.
    MatView<const T> vis_k = this->cols(as_const(left), vis_, vis_k_);
    this->apply_statistics(p_.green, p_.green_inc, as_const(left), as_const(right_k), mb, neg_scale);
    this->update_bias(p_.b, p_.b_inc, rows_of(vis_k, 0, mb), rows_of(vis_k, mb, c), mb, neg_scale);
    this->update_bias(p_.c, p_.c_inc, as_const(right_k), MatView<const T>{}, mb);
    return err;
  }

 private:
  // This worker's hidden units: states (drive the chain) and the activities the
  // statistics use (states, or probabilities with statistics='probabilities').
  void sample_local_hidden(MatView<const T> pre, uint32_t step, uint32_t phase, MatView<T> act_out,
                           MatView<T> states_out, double act_scale) {
    const Units units = hid_.units(k_);
    if (this->hidden_as_bits()) {
      this->sample_hidden(pre, p_.c, units, step, phase, states_out, MatView<T>{});
      scaled_copy<T>(as_const(states_out), act_out, T(act_scale));
    } else {
      this->sample_hidden(pre, p_.c, units, step, phase, states_out, act_out, 0, act_scale);
    }
  }

  MatView<T> left_, right_k_, states_k_, partial_, pre_v_, v_local_, pre_h_, x_k_, vis_k_;
};

// ---- parameter averaging (strategies/parameter_averaging.py, docs/design.md 5.5) -----------------

template <class T>
class ParameterAveraging final : public StrategyWorker<T> {
  using B = StrategyWorker<T>;
  using B::cd; using B::p_; using B::comm_; using B::k_; using B::K_; using B::counters_;
  using B::cfg_;

 public:
  template <class... A>
  explicit ParameterAveraging(A&&... a) : B(std::forward<A>(a)...) {
    const int64_t V = cd().n_visible, H = cd().n_hidden, m = cd().batch_size;
    require(p_.W, V, H, "W");
    require_same(p_.W_inc, p_.W, "W_inc");
    chain_cases_ = Parts::contiguous(m, K_);
    if (cd().persistent) require(p_.chains, chain_cases_.size(k_), H, "chains");
    const int64_t mk = (m + K_ - 1) / K_;  // the most cases a worker gets
    left_ = this->buffer(2 * mk, V);
    right_ = this->buffer(2 * mk, H);
    pre_h_ = this->buffer(mk, H);
    states_ = this->buffer(mk, H);
    grad_.assign(size_t(V * H + V + H), T(0));
    s1_.assign(size_t(V), T(0));
    s2_.assign(size_t(V), T(0));
  }

  bool is_sync_phase(std::string_view phase) const override {
    return cfg_.average_weights && phase == phase_name::kAverage;
  }

  double step(MatView<const T> X, uint32_t step) override {
    const CDConfig& s = cd();
    const int64_t mb = X.rows;
    const Parts mine = Parts::contiguous(mb, K_);
    const int64_t case0 = mine.first(k_), n = mine.size(k_);
    const int64_t chain0 = s.persistent ? chain_cases_.first(k_) : case0;
    const int64_t c = s.persistent ? chain_cases_.size(k_) : n;
    const double neg_scale = double(mb) / double(this->chain_rows(mb));
    MatView<T> left = rows_of(left_, 0, n + c), right = rows_of(right_, 0, n + c);
    MatView<const T> x = rows_of(X, case0, n);
    copy_into<T>(x, rows_of(left, 0, n));

    // Serial CD on this worker's cases, with their global case indices.
    gemm<T>(false, false, T(1), x, as_const(p_.W), T(0), rows_of(pre_h_, 0, n));
    const bool probs = s.statistics == Statistics::Probabilities;
    this->sample_hidden(as_const(rows_of(pre_h_, 0, n)), p_.c, Units{}, step, kPhasePositiveHidden,
                        rows_of(states_, 0, n), probs ? rows_of(right, 0, n) : MatView<T>{}, case0);
    if (!probs) copy_into<T>(as_const(rows_of(states_, 0, n)), rows_of(right, 0, n));
    MatView<T> driver = s.persistent ? p_.chains : rows_of(states_, 0, n);
    double err = 0.0;
    for (int t = 1; t <= s.cd_k; ++t) {
      MatView<T> v = rows_of(left, n, c);
      gemm<T>(false, true, T(1), as_const(driver), as_const(p_.W), T(0), v);
      MatView<const T> data = (t == 1 && !s.persistent) ? x : MatView<const T>{};
      err += this->visible_units(as_const(v), p_.b, v, Units{}, step, t, data, uint64_t(chain0));
      gemm<T>(false, false, T(1), as_const(v), as_const(p_.W), T(0), rows_of(pre_h_, 0, c));
      MatView<T> states_out = s.persistent ? p_.chains : rows_of(states_, 0, c);
      this->sample_hidden(as_const(rows_of(pre_h_, 0, c)), p_.c, Units{}, step,
                          phase_hidden(uint32_t(t)), states_out,
                          probs ? rows_of(right, n, c) : MatView<T>{}, uint64_t(chain0), -neg_scale);
      driver = states_out;
    }
    if (!probs) scaled_copy<T>(as_const(driver), rows_of(right, n, c), T(-neg_scale));

    counters_.steps_done += 1;
    if (!cfg_.average_weights) {
      sum_gradients(as_const(left), as_const(right), n, neg_scale);
      apply_summed_gradient(mb);
    } else {
      if (n > 0) {  // a short last minibatch may leave a worker no cases: no local step then
        this->apply_statistics(p_.W, p_.W_inc, as_const(left), as_const(right), n, neg_scale);
        this->update_bias(p_.b, p_.b_inc, as_const(rows_of(left, 0, n)),
                          as_const(rows_of(left, n, c)), n, neg_scale);
        this->update_bias(p_.c, p_.c_inc, as_const(right), MatView<const T>{}, n);
      }
      if (counters_.steps_done % cfg_.average_every == 0) average_weights();
    }
    return err;
  }

 private:
  // sums over the rows of a, one row after another (numpy's sum(axis=0) on C-order rows)
  static void column_sums(MatView<const T> a, T* out) {
    std::fill(out, out + a.cols, T(0));
    for (int64_t i = 0; i < a.rows; ++i) {
      const T* r = a.row(i);
      for (int64_t j = 0; j < a.cols; ++j) out[j] += r[j];
    }
  }

  void sum_gradients(MatView<const T> left, MatView<const T> right, int64_t n, double neg_scale) {
    const int64_t V = cd().n_visible, H = cd().n_hidden;
    MatView<T> gW{grad_.data(), V, H, H};
    gemm<T>(true, false, T(1), left, right, T(0), gW);
    column_sums(rows_of(left, 0, n), s1_.data());
    column_sums(rows_of(left, n, left.rows - n), s2_.data());
    const T scale = T(neg_scale);
    T* gb = grad_.data() + V * H;
    for (int64_t j = 0; j < V; ++j) gb[j] = s1_[size_t(j)] - T(scale * s2_[size_t(j)]);
    column_sums(right, grad_.data() + V * H + V);
    reduce(phase_name::kGradient);
  }

  void apply_summed_gradient(int64_t mb) {
    const CDConfig& s = cd();
    const int64_t V = s.n_visible, H = s.n_hidden;
    const T alpha = T(s.learning_rate / double(mb)), momentum = T(s.momentum);
    apply_gradient<T>(p_.W, p_.W_inc, MatView<const T>{grad_.data(), V, H, H}, alpha, momentum,
                      T(s.learning_rate * s.weight_decay));
    apply_gradient<T>(MatView<T>{p_.b, 1, V, V}, p_.b_inc ? MatView<T>{p_.b_inc, 1, V, V} : MatView<T>{},
                      MatView<const T>{grad_.data() + V * H, 1, V, V}, alpha, momentum, T(0));
    apply_gradient<T>(MatView<T>{p_.c, 1, H, H}, p_.c_inc ? MatView<T>{p_.c_inc, 1, H, H} : MatView<T>{},
                      MatView<const T>{grad_.data() + V * H + V, 1, H, H}, alpha, momentum, T(0));
  }

  // grad <- sum over workers, by allreduce or through the master (rank 0).
  void reduce(const char* phase) {
    const int64_t n = int64_t(grad_.size());
    if (cfg_.reduce_allreduce) {
      comm_.allreduce(grad_.data(), n, phase);
      return;
    }
    comm_.gather_sum(grad_.data(), n, phase);
    comm_.bcast(grad_.data(), n, phase);
  }

  void average_weights() {
    counters_.syncs += 1;
    const int64_t V = cd().n_visible, H = cd().n_hidden;
    T* g = grad_.data();
    for (int64_t i = 0; i < V; ++i) std::copy(p_.W.row(i), p_.W.row(i) + H, g + i * H);
    std::copy(p_.b, p_.b + V, g + V * H);
    std::copy(p_.c, p_.c + H, g + V * H + V);
    reduce(phase_name::kAverage);
    const T K = T(K_);
    for (auto& e : grad_) e = e / K;
    for (int64_t i = 0; i < V; ++i) std::copy(g + i * H, g + (i + 1) * H, p_.W.row(i));
    std::copy(g + V * H, g + V * H + V, p_.b);
    std::copy(g + V * H + V, g + V * H + V + H, p_.c);
  }

  Parts chain_cases_;
  MatView<T> left_, right_, pre_h_, states_;
  std::vector<T> grad_;  // (W, b, c) in one buffer: one collective per step
  std::vector<T> s1_, s2_;
};

// ---- factory and epoch loop ---------------------------------------------------------------

template <class T>
std::unique_ptr<StrategyWorker<T>> make_worker(const std::string& strategy,
                                               const StrategyConfig& cfg,
                                               const WorkerParams<T>& params, Parts vis,
                                               Parts hid, Communicator& comm,
                                               WorkerCounters counters) {
  if (strategy == "unit-partitioned")
    return std::make_unique<UnitPartitioned<T>>(cfg, params, std::move(vis), std::move(hid), comm, std::move(counters));
  if (strategy == "per-update-sync")
    return std::make_unique<PerUpdateSync<T>>(cfg, params, std::move(vis), std::move(hid), comm, std::move(counters));
  if (strategy == "purple-only")
    return std::make_unique<PurpleOnly<T>>(cfg, params, std::move(vis), std::move(hid), comm, std::move(counters));
  if (strategy == "green-only")
    return std::make_unique<GreenOnly<T>>(cfg, params, std::move(vis), std::move(hid), comm, std::move(counters));
  if (strategy == "parameter-averaging")
    return std::make_unique<ParameterAveraging<T>>(cfg, params, std::move(vis), std::move(hid), comm, std::move(counters));
  throw std::invalid_argument("strategy worker: unknown strategy '" + strategy + "'");
}

template <class T>
void run_epoch(StrategyWorker<T>& worker, const Communicator& comm, MatView<const T> X,
               const int64_t* order, int64_t n_order, int64_t batch_size, uint32_t first_step,
               double* errors, double* seconds, int64_t* traffic, int64_t* wire,
               const std::function<void(uint32_t)>& before_step) {
  using clock = std::chrono::steady_clock;
  const std::function<bool(std::string_view)> training = [&](std::string_view phase) {
    return !worker.is_sync_phase(phase) && phase.rfind(phase_name::kGatherPrefix, 0) != 0;
  };
  std::vector<T> buf(size_t(std::max<int64_t>(batch_size * X.cols, 1)));
  SentBytes before = comm.sent(training);
  int64_t batch = 0;
  for (int64_t start = 0; start < n_order; start += batch_size, ++batch) {
    const int64_t mb = std::min(batch_size, n_order - start);
    MatView<T> xb{buf.data(), mb, X.cols, std::max<int64_t>(X.cols, 1)};
    gather_rows<T>(X, order + start, xb);
    if (before_step) before_step(first_step + uint32_t(batch));
    const auto t0 = clock::now();
    errors[batch] = worker.step(as_const(xb), first_step + uint32_t(batch));
    seconds[batch] = std::chrono::duration<double>(clock::now() - t0).count();
    const SentBytes after = comm.sent(training);
    traffic[batch] = after.payload - before.payload;
    wire[batch] = after.wire - before.wire;
    before = after;
  }
}

#define PARRBM_INSTANTIATE_WORKERS(T)                                                             \
  template class StrategyWorker<T>;                                                               \
  template std::unique_ptr<StrategyWorker<T>> make_worker<T>(                                     \
      const std::string&, const StrategyConfig&, const WorkerParams<T>&, Parts, Parts,             \
      Communicator&, WorkerCounters);                                                             \
  template void run_epoch<T>(StrategyWorker<T>&, const Communicator&, MatView<const T>,           \
                             const int64_t*, int64_t, int64_t, uint32_t, double*, double*, int64_t*, \
                             int64_t*, const std::function<void(uint32_t)>&);

PARRBM_INSTANTIATE_WORKERS(float)
PARRBM_INSTANTIATE_WORKERS(double)

}  // namespace parrbm
