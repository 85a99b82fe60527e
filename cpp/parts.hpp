// How a worker's units are named: K parts of range(n), and the column blocks of a matrix
// that follow them (parrbm/partition.py's Partition, as the core reads it).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.hpp"

namespace parrbm {

// K parts of range(n): the global unit indices of each worker's part, sorted. A part that
// is a range [first, first + size) is used in place and keeps no index; a scattered one
// (random partition) is gathered and scattered column by column.
class Parts {
 public:
  Parts() = default;
  Parts(int64_t n, std::vector<std::vector<int64_t>> index) : n_(n) {
    for (auto& p : index) {
      bool range = true;
      for (size_t i = 1; i < p.size(); ++i) range = range && p[i] == p[0] + int64_t(i);
      first_.push_back(p.empty() ? 0 : p[0]);
      size_.push_back(int64_t(p.size()));
      index_.push_back(range ? std::vector<int64_t>{} : std::move(p));
      range_.push_back(range);
    }
  }
  // range(n) cut into K pieces, the first n % K one larger (partition.py's cuts).
  static Parts contiguous(int64_t n, int K) {
    Parts p;
    p.n_ = n;
    int64_t start = 0;
    for (int k = 0; k < K; ++k) {
      const int64_t size = n / K + (k < n % K ? 1 : 0);
      p.first_.push_back(start);
      p.size_.push_back(size);
      p.index_.emplace_back();
      p.range_.push_back(true);
      start += size;
    }
    return p;
  }

  int64_t n() const { return n_; }
  int count() const { return int(size_.size()); }
  int64_t size(int k) const { return size_[size_t(k)]; }
  bool is_range(int k) const { return range_[size_t(k)]; }
  int64_t first(int k) const { return first_[size_t(k)]; }
  // the global index of part k's i-th unit
  int64_t unit(int k, int64_t i) const {
    return is_range(k) ? first(k) + i : index_[size_t(k)][size_t(i)];
  }
  // part k's global indices (scattered parts only)
  const int64_t* index(int k) const { return index_[size_t(k)].data(); }
  Units units(int k) const {
    if (is_range(k)) return Units{uint64_t(first(k)), nullptr};
    return Units{0, index(k)};
  }

 private:
  int64_t n_ = 0;
  std::vector<int64_t> first_, size_;
  std::vector<std::vector<int64_t>> index_;
  std::vector<bool> range_;
};

template <class T>
MatView<const T> as_const(MatView<T> v) {
  return {v.data, v.rows, v.cols, v.ld};
}

template <class T>
void copy_into(MatView<const T> src, MatView<T> dst) {
  for (int64_t i = 0; i < src.rows; ++i)
    std::memcpy(dst.row(i), src.row(i), size_t(src.cols) * sizeof(T));
}

// Part k of a's columns (a range part only): a view, no copy.
template <class T>
MatView<T> column_block(MatView<T> a, const Parts& p, int k) {
  return a.block(0, a.rows, p.first(k), p.size(k));
}

// out (a.rows x |part k|) <- a[:, part k]
template <class T>
void take_columns(MatView<const T> a, const Parts& p, int k, MatView<T> out) {
  if (p.is_range(k)) {
    copy_into<T>(a.block(0, a.rows, p.first(k), p.size(k)), out);
    return;
  }
  const int64_t* idx = p.index(k);
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* src = a.row(i);
    T* dst = out.row(i);
    for (int64_t j = 0; j < out.cols; ++j) dst[j] = src[idx[j]];
  }
}

// a[:, part k] <- block
template <class T>
void put_columns(MatView<T> a, const Parts& p, int k, MatView<const T> block) {
  if (p.is_range(k)) {
    copy_into<T>(block, a.block(0, a.rows, p.first(k), p.size(k)));
    return;
  }
  const int64_t* idx = p.index(k);
  for (int64_t i = 0; i < block.rows; ++i) {
    const T* src = block.row(i);
    T* dst = a.row(i);
    for (int64_t j = 0; j < block.cols; ++j) dst[idx[j]] = src[j];
  }
}

// a[:, part k] as read-only operand: a view of a range part, else gathered into scratch.
template <class T>
MatView<const T> columns_of(MatView<const T> a, const Parts& p, int k, MatView<T> scratch) {
  if (p.is_range(k)) return a.block(0, a.rows, p.first(k), p.size(k));
  MatView<T> out = scratch.block(0, a.rows, 0, p.size(k));
  take_columns<T>(a, p, k, out);
  return {out.data, out.rows, out.cols, out.ld};
}

}  // namespace parrbm
