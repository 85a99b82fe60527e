// A reusable barrier for the K worker threads of one run (the threads transport).
//
// Workers of a small model meet at a barrier every few microseconds of work, so a
// barrier that puts the early arrivals to sleep costs each of them a wake-up (tens of
// microseconds on a virtual machine) at every collective. Early arrivals here spin for
// a while first, then sleep on a condition variable; a timeout or an abort breaks the
// barrier for every party, as Python's threading.Barrier does.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace parrbm {

class Barrier {
 public:
  enum class Result { Passed, TimedOut, Broken };

  Barrier(int parties, double spin_seconds) : parties_(parties), spin_seconds_(spin_seconds) {}

  Result wait(double timeout_seconds) {
    using clock = std::chrono::steady_clock;
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken()) return Result::Broken;
    const uint64_t generation = generation_.load(std::memory_order_relaxed);
    if (++arrived_ == parties_) {
      arrived_ = 0;
      generation_.store(generation + 1, std::memory_order_release);
      lock.unlock();
      wake_.notify_all();
      return Result::Passed;
    }
    lock.unlock();
    const auto start = clock::now();
    const auto spin_until = start + std::chrono::duration<double>(spin_seconds_);
    for (uint32_t i = 0;; ++i) {
      if (generation_.load(std::memory_order_acquire) != generation) return Result::Passed;
      if (broken()) return Result::Broken;
      if ((i & 63) == 63) {
        if (clock::now() >= spin_until) break;
        std::this_thread::yield();  // more workers than cores: let a late peer run
      }
    }
    lock.lock();
    const auto deadline = start + std::chrono::duration<double>(timeout_seconds);
    const bool woken = wake_.wait_until(lock, deadline, [&] {
      return generation_.load(std::memory_order_relaxed) != generation || broken();
    });
    if (generation_.load(std::memory_order_relaxed) != generation) return Result::Passed;
    if (woken) return Result::Broken;
    broken_.store(true, std::memory_order_release);
    lock.unlock();
    wake_.notify_all();
    return Result::TimedOut;
  }

  void abort() {
    {
      // under the lock, so that a waiter cannot check the flag and then miss the wake-up
      std::lock_guard<std::mutex> lock(mutex_);
      broken_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
  }

  bool broken() const { return broken_.load(std::memory_order_acquire); }

 private:

  const int parties_;
  const double spin_seconds_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int arrived_ = 0;
  std::atomic<bool> broken_{false};
  std::atomic<uint64_t> generation_{0};
};

}  // namespace parrbm
