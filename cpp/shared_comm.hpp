// Collectives between the K worker threads of one process: the communicator of the
// strategies' native epoch loop on the threads transport.
//
// Data moves as through harness/comm.py's Comm over harness/threads.py: each worker posts
// its send buffers, all meet at the barrier, each reads what is addressed to it straight
// from the sender's memory, all meet again. Every collective counts its bytes with the
// definitions of the same collective in comm.py (payload bytes, per phase, per worker);
// the tests hold the two paths equal phase by phase.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "barrier.hpp"
#include "communicator.hpp"
#include "kernels.hpp"
#include "parts.hpp"

namespace parrbm {

// A peer failed (its thread raised), or did not arrive within the timeout.
class CommFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The counters of harness/comm.py's PhaseStats that a threads run fills.
struct PhaseCounters {
  int64_t bytes_sent = 0;
  int64_t bytes_recv = 0;
  int64_t messages = 0;
  int64_t calls = 0;
  double seconds = 0.0;
  double wait_seconds = 0.0;
  int64_t logical_bytes_sent = 0;
  // each call's seconds, in order: the harness splits them into communication and
  // waiting the same way on every transport (harness/runner.py split_waits)
  std::vector<double> call_seconds;
};

// What the K threads of one run share: the barrier (the one harness/threads.py's hub
// holds, so a Python-side abort releases native waiters too), one mailbox slot per worker,
// and for error messages how far each worker got.
class SharedGroup {
 public:
  SharedGroup(Barrier* barrier, int size, double timeout)
      : barrier_(barrier),
        size_(size),
        timeout_(timeout),
        posted_(size_t(size), nullptr),
        arrivals_(new std::atomic<int64_t>[size_t(size)]),
        phase_(new std::atomic<const char*>[size_t(size)]),
        reading_(new std::atomic<bool>[size_t(size)]) {
    for (int r = 0; r < size; ++r) {
      arrivals_[size_t(r)].store(0);
      phase_[size_t(r)].store("");
      reading_[size_t(r)].store(false);
    }
  }
  int size() const { return size_; }
  double timeout() const { return timeout_; }

 private:
  friend class SharedComm;
  Barrier* barrier_;
  int size_;
  double timeout_;
  std::vector<const std::vector<const void*>*> posted_;  // posted_[r][j]: r's buffer for j
  std::unique_ptr<std::atomic<int64_t>[]> arrivals_;
  std::unique_ptr<std::atomic<const char*>[]> phase_;
  // reading_[r]: worker r may be reading its peers' posted buffers (from before it meets
  // them until its reads are done)
  std::unique_ptr<std::atomic<bool>[]> reading_;
};

// One worker's end of the group: the collectives of comm.py's Comm over shared memory, and
// their counters.
class SharedComm final : public Communicator {
 public:
  SharedComm(SharedGroup& group, int rank) : group_(group), rank_(rank), size_(group.size()) {
    if (rank < 0 || rank >= size_) throw std::invalid_argument("SharedComm: rank out of range");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

#define PARRBM_SHARED_COLLECTIVES_OF(T)                                                         \
  void allgather(MatView<const T> block, MatView<T> out, const Parts& parts,                   \
                 const char* phase) override {                                                 \
    allgather_impl<T>(block, out, parts, phase);                                               \
  }                                                                                            \
  void allgather_bits(MatView<const T> states, MatView<T> out, const Parts& parts,             \
                      const char* phase) override {                                            \
    allgather_bits_impl<T>(states, out, parts, phase);                                         \
  }                                                                                            \
  void reduce_scatter(MatView<const T> partial, MatView<T> out, const Parts& parts,            \
                      const char* phase) override {                                            \
    reduce_scatter_impl<T>(partial, out, parts, phase);                                        \
  }                                                                                            \
  void alltoall(const std::vector<MatView<const T>>& sends, const std::vector<MatView<T>>& outs, \
                const char* phase) override {                                                  \
    alltoall_impl<T>(sends, outs, phase);                                                      \
  }                                                                                            \
  void allreduce(T* flat, int64_t n, const char* phase) override { allreduce_impl<T>(flat, n, phase); } \
  void gather_sum(T* flat, int64_t n, const char* phase) override { gather_sum_impl<T>(flat, n, phase); } \
  void bcast(T* flat, int64_t n, const char* phase) override { bcast_impl<T>(flat, n, phase); }

  PARRBM_SHARED_COLLECTIVES_OF(float)
  PARRBM_SHARED_COLLECTIVES_OF(double)
#undef PARRBM_SHARED_COLLECTIVES_OF

  SentBytes sent(const std::function<bool(std::string_view)>& counted) const override {
    SentBytes n;
    for (const auto& [phase, s] : stats_)
      if (counted(phase)) n.payload += s.bytes_sent;
    return n;
  }
  const std::map<std::string, PhaseCounters, std::less<>>& stats() const { return stats_; }

  void shared_sync(int64_t logical_bytes_sent, const char* phase) override {
    const auto t0 = begin(phase);
    const double wait = sync();
    record(phase, t0, wait, 0, 0, 0, logical_bytes_sent);
  }

 private:
  // out[:, parts[j]] = block of worker j for every j. block: (m x |part rank|), out: (m x N).
  template <class T>
  void allgather_impl(MatView<const T> block, MatView<T> out, const Parts& parts, const char* phase) {
    const auto t0 = begin(phase);
    // Peers read a contiguous block where it is; a strided one is packed first.
    const void* payload = block.data;
    if (block.rows > 1 && block.ld != block.cols) {
      pack_rows(block, send_bytes_);
      payload = send_bytes_.data();
    }
    put_block<T>(out, parts, rank_, block);
    const double wait = exchange_same(payload, [&](int j, const void* buf) {
      const T* p = static_cast<const T*>(buf);
      put_block<T>(out, parts, j, MatView<const T>{p, out.rows, parts.size(j), parts.size(j)});
    });
    int64_t recv = 0;
    for (int j = 0; j < size_; ++j)
      if (j != rank_) recv += out.rows * parts.size(j) * int64_t(sizeof(T));
    record(phase, t0, wait, int64_t(size_ - 1) * int64_t(block.rows * block.cols * sizeof(T)), recv,
           size_ - 1);
  }

  // allgather of 0/1 states, sent bit-packed: ceil(m n / 8) bytes a block.
  template <class T>
  void allgather_bits_impl(MatView<const T> states, MatView<T> out, const Parts& parts, const char* phase) {
    const auto t0 = begin(phase);
    const int64_t m = out.rows;
    const int64_t packed = (states.rows * states.cols + 7) / 8;
    send_bytes_.resize(size_t(std::max<int64_t>(packed, 1)));
    pack_bits<T>(states, reinterpret_cast<uint8_t*>(send_bytes_.data()));
    put_block<T>(out, parts, rank_, states);
    const double wait = exchange_same(send_bytes_.data(), [&](int j, const void* buf) {
      const auto* bits = static_cast<const uint8_t*>(buf);
      if (parts.is_range(j)) {
        unpack_bits<T>(bits, column_block(out, parts, j), T(1));
      } else {
        MatView<T> tmp = scratch<T>(m, parts.size(j));
        unpack_bits<T>(bits, tmp, T(1));
        put_columns<T>(out, parts, j, as_const(tmp));
      }
    });
    int64_t recv = 0;
    for (int j = 0; j < size_; ++j)
      if (j != rank_) recv += (m * parts.size(j) + 7) / 8;
    record(phase, t0, wait, int64_t(size_ - 1) * packed, recv, size_ - 1);
  }

  // out = sum over workers j, in rank order, of partial_j[:, parts[rank]].
  // partial: (m x N), this worker's addend; out: (m x |part rank|).
  template <class T>
  void reduce_scatter_impl(MatView<const T> partial, MatView<T> out, const Parts& parts, const char* phase) {
    const auto t0 = begin(phase);
    // Each peer's block, contiguous, one after another in send_bytes_.
    int64_t total = 0;
    for (int j = 0; j < size_; ++j)
      if (j != rank_) total += partial.rows * parts.size(j);
    send_bytes_.resize(size_t(std::max<int64_t>(total * int64_t(sizeof(T)), 1)));
    T* base = reinterpret_cast<T*>(send_bytes_.data());
    sends_.assign(size_t(size_), nullptr);
    int64_t sent = 0;
    int64_t off = 0;
    for (int j = 0; j < size_; ++j) {
      if (j == rank_) continue;
      MatView<T> dst{base + off, partial.rows, parts.size(j), parts.size(j)};
      copy_block<T>(partial, parts, j, dst);
      sends_[size_t(j)] = dst.data;
      off += partial.rows * parts.size(j);
      sent += partial.rows * parts.size(j) * int64_t(sizeof(T));
    }
    // Summed in rank order, rank 0 first, as every transport does: the same bits anywhere.
    const double wait = exchange(sends_, [&](int, const void*) {}, [&](auto read) {
      for (int j = 0; j < size_; ++j) {
        MatView<const T> block;
        if (j == rank_) {
          block = own_block<T>(partial, parts, rank_, out.rows);
        } else {
          const T* p = static_cast<const T*>(read(j));
          block = MatView<const T>{p, out.rows, out.cols, out.cols};
        }
        if (j == 0) copy_into<T>(block, out);
        else add_into<T>(block, out);
      }
    });
    record(phase, t0, wait, sent, int64_t(size_ - 1) * out.rows * out.cols * int64_t(sizeof(T)),
           size_ - 1);
  }

  // outs[j] = what worker j sent to this worker; sends[j] is addressed to worker j.
  template <class T>
  void alltoall_impl(const std::vector<MatView<const T>>& sends, const std::vector<MatView<T>>& outs,
                const char* phase) {
    const auto t0 = begin(phase);
    copy_into<T>(sends[size_t(rank_)], outs[size_t(rank_)]);
    int64_t total = 0;
    for (int j = 0; j < size_; ++j)
      if (j != rank_) total += sends[size_t(j)].rows * sends[size_t(j)].cols;
    send_bytes_.resize(size_t(std::max<int64_t>(total * int64_t(sizeof(T)), 1)));
    T* base = reinterpret_cast<T*>(send_bytes_.data());
    sends_.assign(size_t(size_), nullptr);
    int64_t sent = 0, recv = 0;
    int64_t off = 0;
    for (int j = 0; j < size_; ++j) {
      if (j == rank_) continue;
      const MatView<const T>& s = sends[size_t(j)];
      copy_into<T>(s, MatView<T>{base + off, s.rows, s.cols, s.cols});
      sends_[size_t(j)] = base + off;
      off += s.rows * s.cols;
      sent += s.rows * s.cols * int64_t(sizeof(T));
      recv += outs[size_t(j)].rows * outs[size_t(j)].cols * int64_t(sizeof(T));
    }
    const double wait = exchange(sends_, [&](int j, const void* buf) {
      const MatView<T>& o = outs[size_t(j)];
      copy_into<T>(MatView<const T>{static_cast<const T*>(buf), o.rows, o.cols, o.cols}, o);
    });
    record(phase, t0, wait, sent, recv, size_ - 1);
  }

  // In-place sum over workers of flat (n elements) as reduce-scatter + allgather of K
  // near-equal chunks (comm.py's allreduce).
  template <class T>
  void allreduce_impl(T* flat, int64_t n, const char* phase) {
    const Parts chunks = Parts::contiguous(n, size_);
    std::vector<T>& mine = chunk(static_cast<T*>(nullptr));
    mine.resize(size_t(std::max<int64_t>(chunks.size(rank_), 1)));
    MatView<T> whole{flat, 1, n, std::max<int64_t>(n, 1)};
    MatView<T> part{mine.data(), 1, chunks.size(rank_), std::max<int64_t>(chunks.size(rank_), 1)};
    reduce_scatter_impl<T>(as_const(whole), part, chunks, phase);
    allgather_impl<T>(as_const(part), whole, chunks, phase);
  }

  // Root (rank 0) sums every worker's flat array in rank order into its own (comm.py's
  // gather, summed by the parameter-averaging master).
  template <class T>
  void gather_sum_impl(T* flat, int64_t n, const char* phase) {
    const auto t0 = begin(phase);
    const int64_t nbytes = n * int64_t(sizeof(T));
    sends_.assign(size_t(size_), nullptr);
    if (rank_ != 0) sends_[0] = flat;
    const double wait = exchange(sends_, [](int, const void*) {}, [&](auto read) {
      if (rank_ != 0) return;
      for (int j = 1; j < size_; ++j) {
        const T* p = static_cast<const T*>(read(j));
        for (int64_t i = 0; i < n; ++i) flat[i] += p[i];
      }
    });
    if (rank_ == 0) record(phase, t0, wait, 0, int64_t(size_ - 1) * nbytes, 0);
    else record(phase, t0, wait, nbytes, 0, 1);
  }

  // flat <- root's flat, in place.
  template <class T>
  void bcast_impl(T* flat, int64_t n, const char* phase) {
    const auto t0 = begin(phase);
    const int64_t nbytes = n * int64_t(sizeof(T));
    sends_.assign(size_t(size_), nullptr);
    if (rank_ == 0)
      for (int j = 1; j < size_; ++j) sends_[size_t(j)] = flat;
    const double wait = exchange(sends_, [&](int, const void* buf) {
      std::memcpy(flat, buf, size_t(nbytes));
    });
    if (rank_ == 0) record(phase, t0, wait, int64_t(size_ - 1) * nbytes, 0, size_ - 1);
    else record(phase, t0, wait, 0, nbytes, 0);
  }

  using clock = std::chrono::steady_clock;

  clock::time_point begin(const char* phase) {
    phase_ = phase;
    return clock::now();
  }

  void record(const char* phase, clock::time_point t0, double wait, int64_t sent, int64_t recv,
              int64_t messages, int64_t logical = 0) {
    // phase names are literals: look them up without building a string every collective
    auto it = stats_.find(std::string_view(phase));
    if (it == stats_.end()) it = stats_.emplace(phase, PhaseCounters{}).first;
    PhaseCounters& s = it->second;
    s.bytes_sent += sent;
    s.bytes_recv += recv;
    s.messages += messages;
    s.calls += 1;
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    s.seconds += dt;
    s.call_seconds.push_back(dt);
    s.wait_seconds += wait;
    s.logical_bytes_sent += logical;
  }

  // Every worker at the barrier; on a timeout or a broken barrier, the laggards are named
  // as harness/threads.py names them.
  double sync() {
    SharedGroup& g = group_;
    const int64_t mine = g.arrivals_[size_t(rank_)].fetch_add(1) + 1;
    g.phase_[size_t(rank_)].store(phase_);
    const auto t0 = clock::now();
    if (g.barrier_->wait(g.timeout_) != Barrier::Result::Passed) {
      std::ostringstream who;
      int late = 0;
      for (int r = 0; r < size_; ++r) {
        if (g.arrivals_[size_t(r)].load() < mine) {
          who << (late++ ? ", " : "") << "worker " << r << " (last in phase '"
              << g.phase_[size_t(r)].load() << "')";
        }
      }
      std::ostringstream msg;
      msg << (late ? who.str() : std::string("a peer")) << " did not reach phase '" << phase_
          << "' within " << g.timeout_ << " s (seen by worker " << rank_ << ")";
      throw CommFailure(msg.str());
    }
    return std::chrono::duration<double>(clock::now() - t0).count();
  }

  // Post sends (sends[j]: this worker's buffer for j, or null), meet, read, meet.
  // receive(j, buf) is called for each peer that sent this worker something; then
  // after(read) may read any peer's buffer for this worker in an order of its choosing.
  //
  // A worker that leaves by failure (a broken barrier: a peer failed, Ctrl-C, a timeout)
  // first waits until no peer still reads its buffers: they are freed as its exception
  // unwinds, and a peer that met it at the first barrier may still be copying from them.
  template <class Receive, class After>
  double exchange(const std::vector<const void*>& sends, Receive receive, After after) {
    SharedGroup& g = group_;
    std::atomic<bool>& reading = g.reading_[size_t(rank_)];
    g.posted_[size_t(rank_)] = &sends;
    reading.store(true, std::memory_order_release);  // before the barrier: no peer can miss it
    double wait = 0.0;
    try {
      try {
        wait = sync();  // every mailbox is filled
        for (int j = 0; j < size_; ++j) {
          if (j == rank_) continue;
          const void* buf = (*g.posted_[size_t(j)])[size_t(rank_)];
          if (buf) receive(j, buf);
        }
        after([&](int j) { return (*g.posted_[size_t(j)])[size_t(rank_)]; });
      } catch (...) {
        reading.store(false, std::memory_order_release);
        throw;
      }
      reading.store(false, std::memory_order_release);
      wait += sync();  // every peer has read this worker's buffers
    } catch (...) {
      wait_for_readers();
      throw;
    }
    return wait;
  }

  // Until no peer is between posting and the end of its reads. Reads are copies of at most
  // a block: this ends as soon as the peers are scheduled.
  void wait_for_readers() const {
    for (int j = 0; j < size_; ++j) {
      if (j == rank_) continue;
      for (uint32_t i = 0; group_.reading_[size_t(j)].load(std::memory_order_acquire); ++i)
        if ((i & 63) == 63) std::this_thread::yield();
    }
  }
  template <class Receive>
  double exchange(const std::vector<const void*>& sends, Receive receive) {
    return exchange(sends, receive, [](auto) {});
  }
  template <class Receive>
  double exchange_same(const void* payload, Receive receive) {
    sends_.assign(size_t(size_), payload);
    sends_[size_t(rank_)] = nullptr;
    return exchange(sends_, receive);
  }

  template <class T>
  void pack_rows(MatView<const T> block, std::vector<unsigned char>& bytes) {
    bytes.resize(size_t(std::max<int64_t>(block.rows * block.cols * int64_t(sizeof(T)), 1)));
    copy_into<T>(block, MatView<T>{reinterpret_cast<T*>(bytes.data()), block.rows, block.cols, block.cols});
  }

  template <class T>
  void put_block(MatView<T> out, const Parts& parts, int j, MatView<const T> block) {
    if (parts.is_range(j)) copy_into<T>(block, column_block(out, parts, j));
    else put_columns<T>(out, parts, j, block);
  }

  template <class T>
  void copy_block(MatView<const T> a, const Parts& parts, int j, MatView<T> dst) {
    if (parts.is_range(j)) copy_into<T>(column_block(a, parts, j), dst);
    else take_columns<T>(a, parts, j, dst);
  }

  template <class T>
  MatView<const T> own_block(MatView<const T> partial, const Parts& parts, int k, int64_t rows) {
    if (parts.is_range(k)) return partial.block(0, rows, parts.first(k), parts.size(k));
    MatView<T> tmp = scratch<T>(rows, parts.size(k));
    take_columns<T>(partial, parts, k, tmp);
    return as_const(tmp);
  }

  template <class T>
  static void add_into(MatView<const T> src, MatView<T> dst) {
    for (int64_t i = 0; i < src.rows; ++i) {
      const T* s = src.row(i);
      T* d = dst.row(i);
      for (int64_t j = 0; j < src.cols; ++j) d[j] += s[j];
    }
  }

  template <class T>
  MatView<T> scratch(int64_t rows, int64_t cols) {
    scratch_.resize(size_t(std::max<int64_t>(rows * cols * int64_t(sizeof(T)), 1)));
    return MatView<T>{reinterpret_cast<T*>(scratch_.data()), rows, cols, std::max<int64_t>(cols, 1)};
  }

  SharedGroup& group_;
  const int rank_, size_;
  const char* phase_ = "";
  std::map<std::string, PhaseCounters, std::less<>> stats_;
  // Reused between collectives: a step allocates nothing once they have grown.
  std::vector<const void*> sends_;
  std::vector<unsigned char> send_bytes_;
  std::vector<unsigned char> scratch_;
  std::vector<float> chunk_f_;   // allreduce: the chunk this worker reduces
  std::vector<double> chunk_d_;
  std::vector<float>& chunk(float*) { return chunk_f_; }
  std::vector<double>& chunk(double*) { return chunk_d_; }
};

}  // namespace parrbm
