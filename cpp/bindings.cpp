// The only file that knows Python: numpy arrays in, views out, the GIL released around
// every kernel that runs long enough for it to pay.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "barrier.hpp"
#include "kernels.hpp"
#include "philox.hpp"
#include "trainer.hpp"

namespace py = pybind11;
using namespace parrbm;

namespace {

// Taking the GIL back while the interpreter finalizes ends the thread with pthread_exit,
// and its unwinding through a C++ destructor terminates the whole process ("terminate
// called without an active exception"). A worker thread that leaves the core at that
// moment (a run stopped by Ctrl-C) is parked instead, as CPython 3.14 parks its daemon
// threads: the process is exiting, and nothing would run after the thread anyway.

// The interpreter's main thread: it is the one that finalizes, and is never parked.
unsigned long g_main_thread = 0;

// True on a thread other than the main one once the interpreter finalizes.
bool must_park() {
#if PY_VERSION_HEX >= 0x030D0000
  const bool finalizing = Py_IsFinalizing() != 0;
#else
  const bool finalizing = _Py_IsFinalizing() != 0;
#endif
  return finalizing && PyThread_get_thread_ident() != g_main_thread;
}

[[noreturn]] void park_thread() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// py::gil_scoped_release that parks rather than take the GIL back during finalization.
class NoGil {
 public:
  NoGil() : state_(PyEval_SaveThread()) {}
  ~NoGil() {
    if (must_park()) park_thread();
    PyEval_RestoreThread(state_);
  }
  NoGil(const NoGil&) = delete;
  NoGil& operator=(const NoGil&) = delete;

 private:
  PyThreadState* state_;
};

// py::gil_scoped_acquire for the core's calls back into Python, with the same care.
class WithGil {
 public:
  WithGil() {
    if (must_park()) park_thread();
    gil_.emplace();
  }

 private:
  std::optional<py::gil_scoped_acquire> gil_;
};

// Handing the GIL to a waiting thread and taking it back costs a wake-up each way, tens
// of microseconds: more than a small model's kernels. Threads of one run (the threads
// transport) would then spend their steps trading the GIL around every call. A kernel
// releases it only when its estimated run time is above that; an estimate of
// nanoseconds on one core is enough to choose.
class ReleaseGilIfLong {
 public:
  static constexpr double kLongNanoseconds = 20000.0;
  explicit ReleaseGilIfLong(double nanoseconds) {
    if (nanoseconds >= kLongNanoseconds) release_.emplace();
  }

 private:
  std::optional<NoGil> release_;
};

// Rough per-element costs (ns) of the kernels on one core, for ReleaseGilIfLong only.
double gemm_ns(int64_t m, int64_t n, int64_t k) { return double(m) * double(n) * double(k) / 16.0; }
double sampling_ns(int64_t elements) { return 8.0 * double(elements); }
double streaming_ns(int64_t elements) { return 0.5 * double(elements); }

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw py::value_error("parrbm._core: argument '" + name + "' " + what);
}

// Equivalence, not identity: an unpickled array, or one made with np.dtype("<f4"),
// carries an equal dtype object of its own.
template <class T>
bool is_dtype(const py::array& a) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<T>().ptr());
}

// A 2-D array with unit stride along rows becomes a view with leading dimension.
template <class T>
MatView<T> mat(py::array a, const std::string& name, bool writable) {
  if (!is_dtype<T>(a)) fail(name, "must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                                      ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 2) fail(name, "must be 2-D, got " + std::to_string(a.ndim()) + "-D");
  if (writable && !a.writeable()) fail(name, "must be writable");
  const int64_t rows = a.shape(0), cols = a.shape(1);
  const auto isz = int64_t(sizeof(T));
  if (cols > 1 && a.strides(1) != isz) fail(name, "must have contiguous rows (unit column stride)");
  int64_t ld = cols;
  if (rows > 1) {
    if (a.strides(0) % isz != 0 || a.strides(0) / isz < cols)
      fail(name, "must be a row-major block (row stride >= number of columns)");
    ld = a.strides(0) / isz;
  }
  T* p = writable ? static_cast<T*>(a.mutable_data()) : const_cast<T*>(static_cast<const T*>(a.data()));
  return MatView<T>{p, rows, cols, std::max<int64_t>(ld, 1)};
}

template <class T>
MatView<const T> cmat(py::array a, const std::string& name) {
  MatView<T> v = mat<T>(a, name, false);
  return {v.data, v.rows, v.cols, v.ld};
}

template <class T>
MatView<T> opt_mat(const py::object& o, const std::string& name) {
  if (o.is_none()) return {};
  return mat<T>(o.cast<py::array>(), name, true);
}

template <class T>
MatView<const T> opt_cmat(const py::object& o, const std::string& name) {
  if (o.is_none()) return {};
  return cmat<T>(o.cast<py::array>(), name);
}

template <class T>
T* vec(const py::object& o, const std::string& name, int64_t n, bool writable) {
  if (o.is_none()) return nullptr;
  py::array a = o.cast<py::array>();
  if (!is_dtype<T>(a)) fail(name, "must have dtype " + std::string(py::str(py::dtype::of<T>())));
  if (a.ndim() != 1 || a.shape(0) != n)
    fail(name, "must be 1-D of length " + std::to_string(n));
  if (a.shape(0) > 1 && a.strides(0) != int64_t(sizeof(T))) fail(name, "must be contiguous");
  if (writable && !a.writeable()) fail(name, "must be writable");
  return writable ? static_cast<T*>(a.mutable_data()) : const_cast<T*>(static_cast<const T*>(a.data()));
}

template <class T>
void same_shape(const MatView<T>& a, int64_t rows, int64_t cols, const std::string& name) {
  if (!a.empty() && (a.rows != rows || a.cols != cols))
    fail(name, "must have shape (" + std::to_string(rows) + ", " + std::to_string(cols) +
                   "), got (" + std::to_string(a.rows) + ", " + std::to_string(a.cols) + ")");
}

bool is_f64(const py::array& a) {
  if (is_dtype<double>(a)) return true;
  if (is_dtype<float>(a)) return false;
  throw py::value_error("parrbm._core: arrays must be float32 or float64, got " +
                        std::string(py::str(a.dtype())));
}

StreamKey stream_key(uint64_t seed, uint32_t step, uint32_t phase) { return {seed, step, phase}; }

VisibleKind visible_kind(const std::string& value, const std::string& name) {
  if (value == "binary") return VisibleKind::Binary;
  if (value == "gaussian") return VisibleKind::Gaussian;
  fail(name, "must be 'binary' or 'gaussian', got '" + value + "'");
}

Statistics statistics_kind(const std::string& value, const std::string& name) {
  if (value == "samples") return Statistics::Samples;
  if (value == "probabilities") return Statistics::Probabilities;
  fail(name, "must be 'samples' or 'probabilities', got '" + value + "'");
}

// unit0, or an int64 array of one global index per column (kept alive by the caller).
Units units_arg(uint64_t unit0, const py::object& unit_index, int64_t cols) {
  Units u;
  u.first = unit0;
  if (!unit_index.is_none()) {
    auto a = unit_index.cast<py::array>();
    if (!is_dtype<int64_t>(a) || a.ndim() != 1 || a.shape(0) != cols ||
        !(a.flags() & py::array::c_style))
      fail("unit_index", "must be a contiguous int64 array with one entry per column (" +
                             std::to_string(cols) + ")");
    u.index = static_cast<const int64_t*>(a.data());
    for (int64_t j = 0; j < cols; ++j)
      if (u.index[j] < 0) fail("unit_index", "must hold non-negative unit indices");
  }
  return u;
}

// ---- kernel bindings, dispatched on dtype ------------------------------------------------

template <class T>
void gemm_t(py::array a, py::array b, py::array c, double alpha, double beta, bool ta, bool tb) {
  auto A = cmat<T>(a, "a");
  auto B = cmat<T>(b, "b");
  auto C = mat<T>(c, "c", true);
  const int64_t m = ta ? A.cols : A.rows, k = ta ? A.rows : A.cols;
  const int64_t kb = tb ? B.cols : B.rows, n = tb ? B.rows : B.cols;
  if (k != kb) fail("b", "inner dimension " + std::to_string(kb) + " does not match a's " + std::to_string(k));
  same_shape(C, m, n, "c");
  ReleaseGilIfLong nogil(gemm_ns(m, n, k));
  gemm<T>(ta, tb, T(alpha), A, B, T(beta), C);
}

template <class T>
void sample_t(py::array pre, py::object bias, py::object states, py::object probs, uint64_t seed,
              uint32_t step, uint32_t phase, uint64_t case0, uint64_t unit0, py::object unit_index,
              double state_value, double prob_scale) {
  auto P = cmat<T>(pre, "pre");
  T* bv = vec<T>(bias, "bias", P.cols, false);
  auto S = opt_mat<T>(states, "states");
  auto Q = opt_mat<T>(probs, "probs");
  same_shape(S, P.rows, P.cols, "states");
  same_shape(Q, P.rows, P.cols, "probs");
  const Units units = units_arg(unit0, unit_index, P.cols);
  ReleaseGilIfLong nogil(sampling_ns(P.rows * P.cols));
  sample_sigmoid<T>(P, bv, S, T(state_value), Q, T(prob_scale), stream_key(seed, step, phase),
                    case0, units);
}

template <class T>
void bernoulli_t(py::array probs, py::array states, uint64_t seed, uint32_t step, uint32_t phase,
                 uint64_t case0, uint64_t unit0, py::object unit_index, double state_value) {
  auto P = cmat<T>(probs, "probs");
  auto S = mat<T>(states, "states", true);
  same_shape(S, P.rows, P.cols, "states");
  const Units units = units_arg(unit0, unit_index, P.cols);
  ReleaseGilIfLong nogil(sampling_ns(P.rows * P.cols));
  sample_bernoulli<T>(P, S, T(state_value), stream_key(seed, step, phase), case0, units);
}

template <class T>
void apply_gradient_t(py::array w, py::object inc, py::array g, double alpha, double momentum,
                      double decay_lr) {
  auto W = mat<T>(w, "w", true);
  auto I = opt_mat<T>(inc, "inc");
  auto G = cmat<T>(g, "g");
  same_shape(I, W.rows, W.cols, "inc");
  same_shape(G, W.rows, W.cols, "g");
  ReleaseGilIfLong nogil(streaming_ns(W.rows * W.cols));
  apply_gradient<T>(W, I, G, T(alpha), T(momentum), T(decay_lr));
}

template <class T>
double visible_t(py::array pre, py::object bias, py::array out, const std::string& kind,
                 bool sample, py::object data, uint64_t seed, uint32_t step, uint32_t phase,
                 uint64_t case0, uint64_t unit0, py::object unit_index, double err0) {
  auto P = cmat<T>(pre, "pre");
  T* bv = vec<T>(bias, "bias", P.cols, false);
  auto O = mat<T>(out, "out", true);
  auto D = opt_cmat<T>(data, "data");
  same_shape(O, P.rows, P.cols, "out");
  same_shape(D, P.rows, P.cols, "data");
  const VisibleKind k = visible_kind(kind, "kind");
  const Units units = units_arg(unit0, unit_index, P.cols);
  ReleaseGilIfLong nogil(sampling_ns(P.rows * P.cols));
  return visible_activation<T>(P, bv, O, k, sample, D, stream_key(seed, step, phase), case0, units, err0);
}

template <class T>
py::array pack_t(py::array states, py::object out) {
  auto S = cmat<T>(states, "states");
  const int64_t nbytes = (S.rows * S.cols + 7) / 8;
  py::array_t<uint8_t> o = out.is_none() ? py::array_t<uint8_t>(nbytes) : out.cast<py::array_t<uint8_t>>();
  if (o.ndim() != 1 || o.shape(0) != nbytes || !o.writeable() ||
      (nbytes > 1 && o.strides(0) != 1))
    fail("out", "must be a writable contiguous uint8 array of " + std::to_string(nbytes) + " bytes");
  uint8_t* p = o.mutable_data();
  {
    ReleaseGilIfLong nogil(streaming_ns(S.rows * S.cols));
    pack_bits<T>(S, p);
  }
  return std::move(o);
}

template <class T>
void unpack_t(py::array_t<uint8_t> in, py::array out, double one) {
  auto O = mat<T>(out, "out", true);
  const int64_t nbytes = (O.rows * O.cols + 7) / 8;
  if (in.ndim() != 1 || in.shape(0) < nbytes || (in.shape(0) > 1 && in.strides(0) != 1))
    fail("packed", "must be a contiguous uint8 array of at least " + std::to_string(nbytes) + " bytes");
  const uint8_t* p = in.data();
  ReleaseGilIfLong nogil(streaming_ns(O.rows * O.cols));
  unpack_bits<T>(p, O, T(one));
}

template <class T>
void apply_increment_t(py::array w, py::array inc, double decay_lr) {
  auto W = mat<T>(w, "w", true);
  auto I = mat<T>(inc, "inc", true);
  same_shape(I, W.rows, W.cols, "inc");
  ReleaseGilIfLong nogil(streaming_ns(W.rows * W.cols));
  apply_increment<T>(W, I, T(decay_lr));
}

template <class T>
void bias_update_t(py::array bias, py::object inc, py::array pos, py::object neg, double neg_scale,
                   double alpha, double momentum) {
  auto P = cmat<T>(pos, "pos");
  auto N = opt_cmat<T>(neg, "neg");
  if (!N.empty() && N.cols != P.cols) fail("neg", "must have as many columns as pos");
  T* b = vec<T>(bias, "bias", P.cols, true);
  T* i = vec<T>(inc, "inc", P.cols, true);
  ReleaseGilIfLong nogil(streaming_ns((P.rows + N.rows) * P.cols));
  bias_update<T>(b, i, P, N, T(neg_scale), T(alpha), T(momentum));
}

template <class T>
void sigmoid_t(py::array x, py::array out) {
  auto X = cmat<T>(x, "x");
  auto O = mat<T>(out, "out", true);
  same_shape(O, X.rows, X.cols, "out");
  ReleaseGilIfLong nogil(sampling_ns(X.rows * X.cols));
  sigmoid<T>(X, O);
}

template <class T>
py::tuple pack_columns_t(py::array s, int64_t words) {
  auto S = cmat<T>(s, "states");
  if (words < 0) words = (S.rows + 63) / 64;
  if (words * 64 < S.rows) fail("words", "must hold at least rows / 64 words");
  py::array_t<uint64_t> out({S.cols, words});
  uint64_t* o = out.mutable_data();
  bool binary;
  {
    ReleaseGilIfLong nogil(streaming_ns(S.rows * S.cols));
    binary = pack_columns<T>(S, o, words);
  }
  return py::make_tuple(out, binary);
}

const uint64_t* bits_arg(const py::object& o, const std::string& name, int64_t units, int64_t words) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<py::array>();
  if (!is_dtype<uint64_t>(a) || a.ndim() != 2 || a.shape(0) != units ||
      a.shape(1) != words || !(a.flags() & py::array::c_style))
    fail(name, "must be a C-contiguous uint64 array of shape (" + std::to_string(units) + ", " +
                   std::to_string(words) + ")");
  return static_cast<const uint64_t*>(a.data());
}

template <class T>
void bitstat_t(py::array w, py::object inc, py::object pos_left, py::object pos_right,
               py::array neg_left, py::array neg_right, double alpha, double neg_scale,
               double momentum, double decay_lr) {
  auto W = mat<T>(w, "w", true);
  auto I = opt_mat<T>(inc, "inc");
  same_shape(I, W.rows, W.cols, "inc");
  if (neg_left.ndim() != 2) fail("neg_left", "must be 2-D (units, words)");
  const int64_t words = neg_left.shape(1);
  const uint64_t* nl = bits_arg(neg_left, "neg_left", W.rows, words);
  const uint64_t* nr = bits_arg(neg_right, "neg_right", W.cols, words);
  const uint64_t* pl = bits_arg(pos_left, "pos_left", W.rows, words);
  const uint64_t* pr = bits_arg(pos_right, "pos_right", W.cols, words);
  if (pl && !pr) fail("pos_right", "is needed with pos_left");
  ReleaseGilIfLong nogil(streaming_ns(W.rows * W.cols * words * 2));
  bit_statistics_update<T>(W, I, pl, pr, nl, nr, words, T(alpha), T(neg_scale), T(momentum),
                           T(decay_lr));
}

// ---- trainer -------------------------------------------------------------------------------

template <class T>
py::object view_of(py::handle owner, T* data, std::vector<py::ssize_t> shape) {
  if (!data) return py::none();
  std::vector<py::ssize_t> strides;
  if (shape.size() == 2) strides = {py::ssize_t(sizeof(T)) * shape[1], py::ssize_t(sizeof(T))};
  else strides = {py::ssize_t(sizeof(T))};
  return py::array_t<T>(shape, strides, data, owner);
}

template <class T>
CDTrainer<T>* new_trainer(int64_t n_visible, int64_t n_hidden, int64_t batch_size,
                          const std::string& visible, bool gaussian_noise,
                          const std::string& statistics, int cd_k, bool persistent,
                          double learning_rate, double momentum, double weight_decay,
                          uint64_t seed, bool binary_statistics, bool sample_visible) {
  CDConfig c;
  c.n_visible = n_visible;
  c.n_hidden = n_hidden;
  c.batch_size = batch_size;
  c.visible = visible_kind(visible, "visible");
  c.gaussian_noise = gaussian_noise;
  c.statistics = statistics_kind(statistics, "statistics");
  c.cd_k = cd_k;
  c.persistent = persistent;
  c.learning_rate = learning_rate;
  c.momentum = momentum;
  c.weight_decay = weight_decay;
  c.seed = seed;
  c.binary_statistics = binary_statistics;
  c.sample_visible = sample_visible;
  return new CDTrainer<T>(c);
}

// The trainer's parameters as numpy views that keep the trainer alive; None where the
// trainer has no such buffer (increments without momentum, chains without PCD).
template <class T>
void def_parameter_views(py::class_<CDTrainer<T>>& cls) {
  using Tr = CDTrainer<T>;
  auto matrix = [](MatView<T> (Tr::*get)()) {
    return [get](py::object self) -> py::object {
      MatView<T> v = (self.cast<Tr&>().*get)();
      if (v.rows == 0) return py::none();
      return view_of<T>(self, v.data, {v.rows, v.cols});
    };
  };
  auto vector = [](T* (Tr::*get)(), int64_t CDConfig::*size) {
    return [get, size](py::object self) -> py::object {
      Tr& t = self.cast<Tr&>();
      T* data = (t.*get)();
      if (!data) return py::none();
      return view_of<T>(self, data, {t.config().*size});
    };
  };
  cls.def_property_readonly("W", matrix(&Tr::weights))
      .def_property_readonly("b", vector(&Tr::visible_bias, &CDConfig::n_visible))
      .def_property_readonly("c", vector(&Tr::hidden_bias, &CDConfig::n_hidden))
      .def_property_readonly("W_inc", matrix(&Tr::weight_increments))
      .def_property_readonly("b_inc", vector(&Tr::visible_bias_increments, &CDConfig::n_visible))
      .def_property_readonly("c_inc", vector(&Tr::hidden_bias_increments, &CDConfig::n_hidden))
      .def_property_readonly("chains", matrix(&Tr::persistent_chains));
}

template <class T>
py::object trainer_run(CDTrainer<T>& t, py::array x,
                       py::array_t<int64_t, py::array::c_style | py::array::forcecast> order,
                       uint32_t first_step, bool timed) {
  auto X = cmat<T>(x, "x");
  if (X.cols != t.config().n_visible) fail("x", "has the wrong number of columns");
  const int64_t n = order.shape(0);
  const int64_t* o = order.data();
  for (int64_t i = 0; i < n; ++i)
    if (o[i] < 0 || o[i] >= X.rows) fail("order", "holds a row index out of range");
  const int64_t m = t.config().batch_size;
  py::array_t<double> errors((n + m - 1) / m);
  double* e = errors.mutable_data();
  py::array_t<double> seconds(timed ? (n + m - 1) / m : 0);
  double* sec = timed ? seconds.mutable_data() : nullptr;
  {
    NoGil nogil;
    t.run(X, o, n, first_step, e, sec);
  }
  if (timed) return py::make_tuple(errors, seconds);
  return std::move(errors);
}

// out = f(trainer, x) for a map of the rows of x to `cols` columns, without the GIL.
template <class T, class F>
auto row_map(int64_t CDConfig::*cols, F f) {
  return [cols, f](const CDTrainer<T>& t, py::array x) {
    auto X = cmat<T>(x, "x");
    if (X.cols != t.config().n_visible) fail("x", "has the wrong number of columns");
    py::array_t<T> out({X.rows, t.config().*cols});
    auto O = mat<T>(out, "out", true);
    NoGil nogil;
    f(t, X, O);
    return out;
  };
}

template <class T>
void bind_trainer(py::module_& m, const char* name) {
  using Tr = CDTrainer<T>;
  py::class_<Tr> cls(m, name);
  cls.def(py::init(&new_trainer<T>), py::arg("n_visible"), py::arg("n_hidden"),
          py::arg("batch_size"), py::arg("visible") = "binary", py::arg("gaussian_noise") = false,
          py::arg("statistics") = "samples", py::arg("cd_k") = 1, py::arg("persistent") = false,
          py::arg("learning_rate") = 0.1, py::arg("momentum") = 0.0,
          py::arg("weight_decay") = 0.0, py::arg("seed") = 0,
          py::arg("binary_statistics") = true, py::arg("sample_visible") = false)
      .def_property_readonly("uses_binary_statistics", &Tr::uses_binary_statistics);
  def_parameter_views<T>(cls);
  cls.def("step",
          [](Tr& t, py::array x, uint32_t step) {
            auto X = cmat<T>(x, "x");
            if (X.cols != t.config().n_visible || X.rows < 1 || X.rows > t.config().batch_size)
              fail("x", "must have shape (m, " + std::to_string(t.config().n_visible) +
                            ") with 1 <= m <= " + std::to_string(t.config().batch_size));
            NoGil nogil;
            return t.step(X, step);
          },
          py::arg("x"), py::arg("step"),
          "One CD-k step on minibatch x (m, n_visible); returns the summed squared "
          "reconstruction error of the first Gibbs step.")
      .def("run", &trainer_run<T>, py::arg("x"), py::arg("order"), py::arg("first_step"),
           py::arg("timed") = false,
           "CD-k over the minibatches of x[order]: each minibatch's error sum; with timed, "
           "(errors, each step's seconds timed in the core as the parallel workers' are).")
      .def("hidden_probabilities",
           row_map<T>(&CDConfig::n_hidden, [](const Tr& t, MatView<const T> x, MatView<T> out) {
             t.hidden_probabilities(x, out);
           }))
      .def("reconstruct",
           row_map<T>(&CDConfig::n_visible, [](const Tr& t, MatView<const T> x, MatView<T> out) {
             t.reconstruct(x, out);
           }));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "parrbm C++ core: CBLAS GEMMs, Philox sampling, bit packing, CD updates";
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

  m.def("gemm",
        [](py::array a, py::array b, py::array c, double alpha, double beta, bool ta, bool tb) {
          if (is_f64(c)) gemm_t<double>(a, b, c, alpha, beta, ta, tb);
          else gemm_t<float>(a, b, c, alpha, beta, ta, tb);
        },
        py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0, py::arg("beta") = 0.0,
        py::arg("trans_a") = false, py::arg("trans_b") = false,
        "c <- alpha * op(a) @ op(b) + beta * c, in place; views with row strides are used "
        "without copying.");

  m.def("sample_sigmoid",
        [](py::array pre, py::object bias, py::object states, py::object probs, uint64_t seed,
           uint32_t step, uint32_t phase, uint64_t case0, uint64_t unit0, py::object unit_index,
           double state_value, double prob_scale) {
          if (is_f64(pre)) sample_t<double>(pre, bias, states, probs, seed, step, phase, case0, unit0, unit_index, state_value, prob_scale);
          else sample_t<float>(pre, bias, states, probs, seed, step, phase, case0, unit0, unit_index, state_value, prob_scale);
        },
        py::arg("pre"), py::arg("bias") = py::none(), py::arg("states") = py::none(),
        py::arg("probs") = py::none(), py::kw_only(), py::arg("seed") = 0, py::arg("step") = 0,
        py::arg("phase") = 0, py::arg("case0") = 0, py::arg("unit0") = 0,
        py::arg("unit_index") = py::none(), py::arg("state_value") = 1.0,
        py::arg("prob_scale") = 1.0,
        "p = sigm(pre + bias); probs <- prob_scale * p; states <- state_value * [u < p], with u "
        "from Philox4x32-10 keyed by (seed, step, phase, case0 + row, unit0 + column).");

  m.def("visible_activation",
        [](py::array pre, py::object bias, py::array out, const std::string& kind, bool sample,
           py::object data, uint64_t seed, uint32_t step, uint32_t phase, uint64_t case0,
           uint64_t unit0, py::object unit_index, double err0) {
          if (is_f64(pre)) return visible_t<double>(pre, bias, out, kind, sample, data, seed, step, phase, case0, unit0, unit_index, err0);
          return visible_t<float>(pre, bias, out, kind, sample, data, seed, step, phase, case0, unit0, unit_index, err0);
        },
        py::arg("pre"), py::arg("bias"), py::arg("out"), py::arg("kind") = "binary",
        py::arg("sample") = true, py::arg("data") = py::none(), py::kw_only(),
        py::arg("seed") = 0, py::arg("step") = 0, py::arg("phase") = 0, py::arg("case0") = 0,
        py::arg("unit0") = 0, py::arg("unit_index") = py::none(), py::arg("err0") = 0.0,
        "Visible activation (binary: sigmoid, sampled if sample; gaussian: mean, plus N(0,1) "
        "noise if sample). Returns err0 + sum((data - mean)^2), added row by row, when data is "
        "given (err0 otherwise): rows taken in chunks, each continuing the sum, give its bits.");

  m.def("pack_bits",
        [](py::array states, py::object out) {
          return is_f64(states) ? pack_t<double>(states, out) : pack_t<float>(states, out);
        },
        py::arg("states"), py::arg("out") = py::none(),
        "Bit-pack binary states (nonzero = 1), row-major, little-endian bit order.");
  m.def("unpack_bits",
        [](py::array_t<uint8_t> packed, py::array out, double one) {
          if (is_f64(out)) unpack_t<double>(packed, out, one);
          else unpack_t<float>(packed, out, one);
        },
        py::arg("packed"), py::arg("out"), py::arg("one") = 1.0);
  m.def("apply_increment",
        [](py::array w, py::array inc, double decay_lr) {
          if (is_f64(w)) apply_increment_t<double>(w, inc, decay_lr);
          else apply_increment_t<float>(w, inc, decay_lr);
        },
        py::arg("w"), py::arg("inc"), py::arg("decay_lr") = 0.0,
        "inc -= decay_lr * w; w += inc");
  m.def("bias_update",
        [](py::array bias, py::object inc, py::array pos, py::object neg, double neg_scale,
           double alpha, double momentum) {
          if (is_f64(pos)) bias_update_t<double>(bias, inc, pos, neg, neg_scale, alpha, momentum);
          else bias_update_t<float>(bias, inc, pos, neg, neg_scale, alpha, momentum);
        },
        py::arg("bias"), py::arg("inc"), py::arg("pos"), py::arg("neg") = py::none(),
        py::arg("neg_scale") = 1.0, py::arg("alpha") = 1.0, py::arg("momentum") = 0.0);
  m.def("pack_columns",
        [](py::array s, int64_t words) {
          return is_f64(s) ? pack_columns_t<double>(s, words) : pack_columns_t<float>(s, words);
        },
        py::arg("states"), py::arg("words") = -1,
        "Column bit-packing (units, words) of a (cases, units) 0/1 matrix; returns "
        "(bits, all_values_binary).");
  m.def("bit_statistics_update",
        [](py::array w, py::object inc, py::object pos_left, py::object pos_right,
           py::array neg_left, py::array neg_right, double alpha, double neg_scale,
           double momentum, double decay_lr) {
          if (is_f64(w)) bitstat_t<double>(w, inc, pos_left, pos_right, neg_left, neg_right, alpha, neg_scale, momentum, decay_lr);
          else bitstat_t<float>(w, inc, pos_left, pos_right, neg_left, neg_right, alpha, neg_scale, momentum, decay_lr);
        },
        py::arg("w"), py::arg("inc"), py::arg("pos_left"), py::arg("pos_right"),
        py::arg("neg_left"), py::arg("neg_right"), py::kw_only(), py::arg("alpha"),
        py::arg("neg_scale") = 1.0, py::arg("momentum") = 0.0, py::arg("decay_lr") = 0.0,
        "Weight update from bit-packed binary statistics (AND + popcount), see kernels.hpp.");
  m.def("sigmoid",
        [](py::array x, py::array out) {
          if (is_f64(x)) sigmoid_t<double>(x, out);
          else sigmoid_t<float>(x, out);
        },
        py::arg("x"), py::arg("out"));
  m.def("uniforms",
        [](int64_t rows, int64_t cols, uint64_t seed, uint32_t step, uint32_t phase,
           uint64_t case0, uint64_t unit0, py::object unit_index) {
          if (rows < 0 || cols < 0) fail("rows/cols", "must be >= 0");
          py::array_t<double> out({rows, cols});
          MatView<double> o{out.mutable_data(), rows, cols, std::max<int64_t>(cols, 1)};
          const Units units = units_arg(unit0, unit_index, cols);
          NoGil nogil;
          uniforms(o, stream_key(seed, step, phase), case0, units);
          return out;
        },
        py::arg("rows"), py::arg("cols"), py::kw_only(), py::arg("seed") = 0,
        py::arg("step") = 0, py::arg("phase") = 0, py::arg("case0") = 0, py::arg("unit0") = 0,
        py::arg("unit_index") = py::none());
  m.def("sample_bernoulli",
        [](py::array probs, py::array states, uint64_t seed, uint32_t step, uint32_t phase,
           uint64_t case0, uint64_t unit0, py::object unit_index, double state_value) {
          if (is_f64(probs)) bernoulli_t<double>(probs, states, seed, step, phase, case0, unit0, unit_index, state_value);
          else bernoulli_t<float>(probs, states, seed, step, phase, case0, unit0, unit_index, state_value);
        },
        py::arg("probs"), py::arg("states"), py::kw_only(), py::arg("seed") = 0,
        py::arg("step") = 0, py::arg("phase") = 0, py::arg("case0") = 0, py::arg("unit0") = 0,
        py::arg("unit_index") = py::none(), py::arg("state_value") = 1.0,
        "states <- state_value * [u < probs]: the bits sample_sigmoid draws for the same key.");
  m.def("apply_gradient",
        [](py::array w, py::object inc, py::array g, double alpha, double momentum, double decay_lr) {
          if (is_f64(w)) apply_gradient_t<double>(w, inc, g, alpha, momentum, decay_lr);
          else apply_gradient_t<float>(w, inc, g, alpha, momentum, decay_lr);
        },
        py::arg("w"), py::arg("inc"), py::arg("g"), py::kw_only(), py::arg("alpha"),
        py::arg("momentum") = 0.0, py::arg("decay_lr") = 0.0,
        "with inc: inc = momentum*inc + alpha*g - decay_lr*w; w += inc, else w += alpha*g - decay_lr*w");
  m.def("philox4x32",
        [](std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
          std::array<uint32_t, 4> out{};
          Philox4x32::block(ctr.data(), key.data(), out.data());
          return out;
        },
        py::arg("counter"), py::arg("key"), "One Philox4x32-10 block (for known-answer tests).");

  py::class_<Barrier>(m, "Barrier",
                      "A reusable barrier for worker threads: early arrivals spin for "
                      "spin_seconds, then sleep; a timeout or abort() breaks it for every party.")
      .def(py::init([](int parties, double spin_seconds) {
             if (parties < 1) fail("parties", "must be >= 1");
             if (!(spin_seconds >= 0)) fail("spin_seconds", "must be >= 0");
             return std::make_unique<Barrier>(parties, spin_seconds);
           }),
           py::arg("parties"), py::arg("spin_seconds") = 2e-4)
      .def("wait",
           [](Barrier& b, double timeout) {
             if (!(timeout > 0)) fail("timeout", "must be > 0 seconds");
             Barrier::Result r;
             {
               NoGil nogil;
               r = b.wait(timeout);
             }
             return r == Barrier::Result::Passed ? "passed" : r == Barrier::Result::TimedOut ? "timeout" : "broken";
           },
           py::arg("timeout"),
           "Wait for every party; returns 'passed', or 'timeout' (this call broke the barrier) "
           "or 'broken' (it was broken by a timeout elsewhere or by abort()).")
      .def("abort", &Barrier::abort)
      .def_property_readonly("broken", &Barrier::broken);

  m.def("set_blas_threads", &set_blas_threads, py::arg("n"));
  m.def("get_blas_threads", &get_blas_threads);
  m.def("simd_path", []() { return std::string(simd_path()); },
        "The element-wise kernels' clones in use: 'avx2' or 'baseline' (PARRBM_ISA=baseline forces it).");
  m.def("blas_info", []() {
    py::dict d;
    d["name"] = blas_name();
    d["config"] = blas_config();
    d["threads"] = get_blas_threads();
    return d;
  });
  m.attr("PHASE_NOISE_OFFSET") = kPhaseNoiseOffset;

  bind_trainer<float>(m, "CDTrainer32");
  bind_trainer<double>(m, "CDTrainer64");
}
