// The collectives a strategy worker of the core calls: harness/comm.py's Comm, as an
// interface the worker loop sees without knowing the transport behind it.
//
// Two implementations:
//   SharedComm (shared_comm.hpp)   threads: the K workers are threads of one process and read
//                                  each other's buffers; it counts bytes with comm.py's
//                                  definitions, and the tests hold the two equal phase by phase.
//   the bindings' PythonComm       tcp, mpi: each collective is comm.py's own, over the Python
//                                  transport's exchange, so bytes are counted by comm.py itself.
//
// Every collective is named by its phase, as in comm.py: the bytes are kept per phase.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "kernels.hpp"
#include "parts.hpp"

namespace parrbm {

// Bytes a worker has sent: payload as comm.py counts it, and what the transport wrote.
struct SentBytes {
  int64_t payload = 0;
  int64_t wire = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

#define PARRBM_COLLECTIVES_OF(T)                                                               \
  /* out[:, parts[j]] = block of worker j for every j; block (m x |part rank|), out (m x N) */ \
  virtual void allgather(MatView<const T> block, MatView<T> out, const Parts& parts,          \
                         const char* phase) = 0;                                               \
  /* allgather of 0/1 states, sent bit-packed: ceil(m n / 8) bytes a block */                  \
  virtual void allgather_bits(MatView<const T> states, MatView<T> out, const Parts& parts,    \
                              const char* phase) = 0;                                          \
  /* out = sum over workers j, in rank order, of partial_j[:, parts[rank]] */                  \
  virtual void reduce_scatter(MatView<const T> partial, MatView<T> out, const Parts& parts,   \
                              const char* phase) = 0;                                          \
  /* outs[j] = what worker j sent to this worker; sends[j] is addressed to worker j */          \
  virtual void alltoall(const std::vector<MatView<const T>>& sends,                            \
                        const std::vector<MatView<T>>& outs, const char* phase) = 0;           \
  /* in-place sum over workers of flat[0:n] (reduce-scatter + allgather of K chunks) */        \
  virtual void allreduce(T* flat, int64_t n, const char* phase) = 0;                           \
  /* rank 0's flat <- the sum over workers, in rank order (gather to the master) */           \
  virtual void gather_sum(T* flat, int64_t n, const char* phase) = 0;                          \
  /* flat <- rank 0's flat */                                                                  \
  virtual void bcast(T* flat, int64_t n, const char* phase) = 0;

  PARRBM_COLLECTIVES_OF(float)
  PARRBM_COLLECTIVES_OF(double)
#undef PARRBM_COLLECTIVES_OF

  // A barrier standing in for a weight exchange that shared memory makes unnecessary:
  // records the bytes the exchange would have sent, moves none.
  virtual void shared_sync(int64_t logical_bytes_sent, const char* phase) = 0;

  // What this worker has sent so far in the phases `counted` selects.
  virtual SentBytes sent(const std::function<bool(std::string_view)>& counted) const = 0;
};

}  // namespace parrbm
