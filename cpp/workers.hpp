// The parallel strategies' workers in C++: a worker's whole epoch runs here, its
// collectives through a Communicator (shared memory on threads, harness/comm.py's Comm over
// the Python transport on tcp and mpi), so a minibatch's compute costs no Python at all,
// whatever the transport.
//
// Each class follows its Python module in strategies/ statement for statement: the same
// kernels on the same blocks, the same collectives with the same phase names, the same
// rounding of every scalar. The Python modules stay the readable reference; the tests
// hold this path to them bit for bit, bytes included.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels.hpp"
#include "communicator.hpp"
#include "parts.hpp"
#include "trainer.hpp"

namespace parrbm {

// CDSpec and StrategyOptions of strategies/base.py, as the workers read them.
struct StrategyConfig {
  CDConfig cd;
  int rank = 0;
  int workers = 1;
  int64_t sync_every = 1;        // unit-partitioned: minibatches between syncs (0 = never)
  bool shared_weights = false;   // per-update-sync: one W, sync = barrier
  bool reduce_allreduce = true;  // parameter averaging: allreduce, else through rank 0
  bool average_weights = false;  // parameter averaging: local SGD instead of summed gradients
  int64_t average_every = 1;
};

// The parameters a worker holds: views of the arrays of its Python object, which stays
// their owner (so gathering the model, checkpoints and the other transports see them).
// Unused ones are empty.
template <class T>
struct WorkerParams {
  MatView<T> W, W_inc;                // parameter averaging: the full replica
  MatView<T> green, green_inc;        // W[:, H_k] (V x |H_k|)
  MatView<T> purple, purple_inc;      // W[V_k, :] (|V_k| x H)
  MatView<T> chains;                  // persistent hidden states
  T* b = nullptr;                     // b[V_k] (parameter averaging: all of b)
  T* c = nullptr;                     // c[H_k] (parameter averaging: all of c)
  T* b_inc = nullptr;
  T* c_inc = nullptr;
};

// What a worker carries from one epoch to the next besides its parameters.
struct WorkerCounters {
  int64_t steps_done = 0;
  int64_t syncs = 0;
  std::vector<double> divergence;  // replica drift measured before each sync
};

template <class T>
class StrategyWorker {
 public:
  StrategyWorker(const StrategyConfig& cfg, const WorkerParams<T>& params, Parts vis, Parts hid,
                 Communicator& comm, WorkerCounters counters);
  virtual ~StrategyWorker() = default;

  // One CD-k step on minibatch x (mb x V); returns this worker's share of the
  // reconstruction error sum.
  virtual double step(MatView<const T> x, uint32_t step) = 0;
  // Phases whose bytes are weight synchronisation, not per-step training traffic.
  virtual bool is_sync_phase(std::string_view phase) const { (void)phase; return false; }

  const WorkerCounters& counters() const { return counters_; }

 protected:
  const CDConfig& cd() const { return cfg_.cd; }
  bool hidden_as_bits() const { return cd().statistics == Statistics::Samples; }
  bool visible_as_bits() const {
    return cd().visible == VisibleKind::Binary && cd().statistics == Statistics::Samples;
  }
  bool sample_visible() const {
    if (cd().visible == VisibleKind::Binary)
      return cd().statistics == Statistics::Samples || cd().sample_visible;
    return cd().gaussian_noise;
  }
  int64_t chain_rows(int64_t mb) const { return cd().persistent ? cd().batch_size : mb; }
  StreamKey key(uint32_t step, uint32_t phase) const { return {cd().seed, step, phase}; }
  MatView<T> buffer(int64_t rows, int64_t cols);  // zeroed, owned by the worker

  void sample_hidden(MatView<const T> pre, const T* bias, const Units& units, uint32_t step,
                     uint32_t phase, MatView<T> states, MatView<T> probs, uint64_t case0 = 0,
                     double prob_scale = 1.0);
  double visible_units(MatView<const T> pre, const T* bias, MatView<T> out, const Units& units,
                       uint32_t step, int t, MatView<const T> data, uint64_t case0 = 0);
  // W (+ inc) <- update with eps / mb (left_pos^T right_pos + left_neg^T right_neg).
  void apply_statistics(MatView<T> w, MatView<T> inc, MatView<const T> left,
                        MatView<const T> right, int64_t mb, double neg_scale);
  void update_bias(T* bias, T* inc, MatView<const T> pos, MatView<const T> neg, int64_t mb,
                   double neg_scale = 1.0);
  // Allgather v'_k -> v': bits for binary samples, floats otherwise.
  void exchange_visible(MatView<const T> local, MatView<T> out);
  // Sample this worker's hidden units and allgather them; returns the activities for the
  // statistics (first) and the states driving the chain (second), both rows x H.
  std::pair<MatView<T>, MatView<T>> exchange_hidden(MatView<const T> pre, const T* bias,
                                                    uint32_t step, uint32_t phase,
                                                    const char* name, MatView<T> local,
                                                    MatView<T> full_act, MatView<T> full_states);
  // a[:, part k]: a view of a range part, or a copy in the given scratch.
  MatView<const T> cols(MatView<const T> a, const Parts& p, MatView<T> scratch) const {
    return columns_of<T>(a, p, cfg_.rank, scratch);
  }

  StrategyConfig cfg_;
  WorkerParams<T> p_;
  Parts vis_, hid_;
  Communicator& comm_;
  WorkerCounters counters_;
  const int k_;  // this worker's rank
  const int K_;

 private:
  std::vector<std::vector<T>> storage_;
  std::vector<uint64_t> bits_x_, bits_h_, bits_v_, bits_hn_;
};

// The worker of a strategy by its name in strategies/ ("unit-partitioned", ...).
template <class T>
std::unique_ptr<StrategyWorker<T>> make_worker(const std::string& strategy,
                                               const StrategyConfig& cfg,
                                               const WorkerParams<T>& params, Parts vis,
                                               Parts hid, Communicator& comm,
                                               WorkerCounters counters);

// harness/runner.py's train_on: the minibatches of X taken in `order` (consecutive chunks
// of batch_size), step indices first_step, first_step + 1, ...; per minibatch the error
// sum, the step's seconds, and the training bytes this worker sent (syncs excluded): as
// comm.py counts them (traffic) and as the transport wrote them (wire). before_step, if
// set, is called with each step's index before the step (the harness's fault injection).
template <class T>
void run_epoch(StrategyWorker<T>& worker, const Communicator& comm, MatView<const T> X,
               const int64_t* order, int64_t n_order, int64_t batch_size, uint32_t first_step,
               double* errors, double* seconds, int64_t* traffic, int64_t* wire,
               const std::function<void(uint32_t)>& before_step = {});

}  // namespace parrbm
