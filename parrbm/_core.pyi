# The type stub of parrbm's C++ core, written by pybind11-stubgen (pybind11-stubgen parrbm._core);
# tests/test_kernels.py holds it to the module's names.
"""
parrbm C++ core: CBLAS GEMMs, Philox sampling, bit packing, CD updates
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "Barrier",
    "CDTrainer32",
    "CDTrainer64",
    "PHASE_NOISE_OFFSET",
    "apply_gradient",
    "apply_increment",
    "bias_update",
    "bit_statistics_update",
    "blas_info",
    "gemm",
    "get_blas_threads",
    "pack_bits",
    "pack_columns",
    "philox4x32",
    "sample_bernoulli",
    "sample_sigmoid",
    "set_blas_threads",
    "sigmoid",
    "simd_path",
    "uniforms",
    "unpack_bits",
    "visible_activation",
]

class Barrier:
    """
    A reusable barrier for worker threads: early arrivals spin for spin_seconds, then sleep; a timeout or abort() breaks it for every party.
    """
    def __init__(
        self,
        parties: typing.SupportsInt | typing.SupportsIndex,
        spin_seconds: typing.SupportsFloat | typing.SupportsIndex = 0.0002,
    ) -> None: ...
    def abort(self) -> None: ...
    def wait(self, timeout: typing.SupportsFloat | typing.SupportsIndex) -> str:
        """
        Wait for every party; returns 'passed', or 'timeout' (this call broke the barrier) or 'broken' (it was broken by a timeout elsewhere or by abort()).
        """
    @property
    def broken(self) -> bool: ...

class CDTrainer32:
    def __init__(
        self,
        n_visible: typing.SupportsInt | typing.SupportsIndex,
        n_hidden: typing.SupportsInt | typing.SupportsIndex,
        batch_size: typing.SupportsInt | typing.SupportsIndex,
        visible: str = "binary",
        gaussian_noise: bool = False,
        statistics: str = "samples",
        cd_k: typing.SupportsInt | typing.SupportsIndex = 1,
        persistent: bool = False,
        learning_rate: typing.SupportsFloat | typing.SupportsIndex = 0.1,
        momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        weight_decay: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        seed: typing.SupportsInt | typing.SupportsIndex = 0,
        binary_statistics: bool = True,
        sample_visible: bool = False,
    ) -> None: ...
    def hidden_probabilities(self, arg0: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...
    def reconstruct(self, arg0: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...
    def run(
        self,
        x: numpy.ndarray,
        order: typing.Annotated[numpy.typing.ArrayLike, numpy.int64],
        first_step: typing.SupportsInt | typing.SupportsIndex,
        timed: bool = False,
    ) -> typing.Any:
        """
        CD-k over the minibatches of x[order]: each minibatch's error sum; with timed, (errors, each step's seconds timed in the core as the parallel workers' are).
        """
    def step(self, x: numpy.ndarray, step: typing.SupportsInt | typing.SupportsIndex) -> float:
        """
        One CD-k step on minibatch x (m, n_visible); returns the summed squared reconstruction error of the first Gibbs step.
        """
    @property
    def W(self) -> typing.Any: ...
    @property
    def W_inc(self) -> typing.Any: ...
    @property
    def b(self) -> typing.Any: ...
    @property
    def b_inc(self) -> typing.Any: ...
    @property
    def c(self) -> typing.Any: ...
    @property
    def c_inc(self) -> typing.Any: ...
    @property
    def chains(self) -> typing.Any: ...
    @property
    def uses_binary_statistics(self) -> bool: ...

class CDTrainer64:
    def __init__(
        self,
        n_visible: typing.SupportsInt | typing.SupportsIndex,
        n_hidden: typing.SupportsInt | typing.SupportsIndex,
        batch_size: typing.SupportsInt | typing.SupportsIndex,
        visible: str = "binary",
        gaussian_noise: bool = False,
        statistics: str = "samples",
        cd_k: typing.SupportsInt | typing.SupportsIndex = 1,
        persistent: bool = False,
        learning_rate: typing.SupportsFloat | typing.SupportsIndex = 0.1,
        momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        weight_decay: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        seed: typing.SupportsInt | typing.SupportsIndex = 0,
        binary_statistics: bool = True,
        sample_visible: bool = False,
    ) -> None: ...
    def hidden_probabilities(self, arg0: numpy.ndarray) -> numpy.typing.NDArray[numpy.float64]: ...
    def reconstruct(self, arg0: numpy.ndarray) -> numpy.typing.NDArray[numpy.float64]: ...
    def run(
        self,
        x: numpy.ndarray,
        order: typing.Annotated[numpy.typing.ArrayLike, numpy.int64],
        first_step: typing.SupportsInt | typing.SupportsIndex,
        timed: bool = False,
    ) -> typing.Any:
        """
        CD-k over the minibatches of x[order]: each minibatch's error sum; with timed, (errors, each step's seconds timed in the core as the parallel workers' are).
        """
    def step(self, x: numpy.ndarray, step: typing.SupportsInt | typing.SupportsIndex) -> float:
        """
        One CD-k step on minibatch x (m, n_visible); returns the summed squared reconstruction error of the first Gibbs step.
        """
    @property
    def W(self) -> typing.Any: ...
    @property
    def W_inc(self) -> typing.Any: ...
    @property
    def b(self) -> typing.Any: ...
    @property
    def b_inc(self) -> typing.Any: ...
    @property
    def c(self) -> typing.Any: ...
    @property
    def c_inc(self) -> typing.Any: ...
    @property
    def chains(self) -> typing.Any: ...
    @property
    def uses_binary_statistics(self) -> bool: ...

def apply_gradient(
    w: numpy.ndarray,
    inc: typing.Any,
    g: numpy.ndarray,
    *,
    alpha: typing.SupportsFloat | typing.SupportsIndex,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    decay_lr: typing.SupportsFloat | typing.SupportsIndex = 0.0,
) -> None:
    """
    with inc: inc = momentum*inc + alpha*g - decay_lr*w; w += inc, else w += alpha*g - decay_lr*w
    """

def apply_increment(
    w: numpy.ndarray, inc: numpy.ndarray, decay_lr: typing.SupportsFloat | typing.SupportsIndex = 0.0
) -> None:
    """
    inc -= decay_lr * w; w += inc
    """

def bias_update(
    bias: numpy.ndarray,
    inc: typing.Any,
    pos: numpy.ndarray,
    neg: typing.Any = None,
    neg_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    alpha: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
) -> None: ...
def bit_statistics_update(
    w: numpy.ndarray,
    inc: typing.Any,
    pos_left: typing.Any,
    pos_right: typing.Any,
    neg_left: numpy.ndarray,
    neg_right: numpy.ndarray,
    *,
    alpha: typing.SupportsFloat | typing.SupportsIndex,
    neg_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    momentum: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    decay_lr: typing.SupportsFloat | typing.SupportsIndex = 0.0,
) -> None:
    """
    Weight update from bit-packed binary statistics (AND + popcount), see kernels.hpp.
    """

def blas_info() -> dict: ...
def gemm(
    a: numpy.ndarray,
    b: numpy.ndarray,
    c: numpy.ndarray,
    alpha: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    beta: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    trans_a: bool = False,
    trans_b: bool = False,
) -> None:
    """
    c <- alpha * op(a) @ op(b) + beta * c, in place; views with row strides are used without copying.
    """

def get_blas_threads() -> int: ...
def pack_bits(states: numpy.ndarray, out: typing.Any = None) -> numpy.ndarray:
    """
    Bit-pack binary states (nonzero = 1), row-major, little-endian bit order.
    """

def pack_columns(states: numpy.ndarray, words: typing.SupportsInt | typing.SupportsIndex = -1) -> tuple:
    """
    Column bit-packing (units, words) of a (cases, units) 0/1 matrix; returns (bits, all_values_binary).
    """

def philox4x32(
    counter: typing.Annotated[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], "FixedSize(4)"],
    key: typing.Annotated[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], "FixedSize(2)"],
) -> typing.Annotated[list[int], "FixedSize(4)"]:
    """
    One Philox4x32-10 block (for known-answer tests).
    """

def sample_bernoulli(
    probs: numpy.ndarray,
    states: numpy.ndarray,
    *,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    step: typing.SupportsInt | typing.SupportsIndex = 0,
    phase: typing.SupportsInt | typing.SupportsIndex = 0,
    case0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit_index: typing.Any = None,
    state_value: typing.SupportsFloat | typing.SupportsIndex = 1.0,
) -> None:
    """
    states <- state_value * [u < probs]: the bits sample_sigmoid draws for the same key.
    """

def sample_sigmoid(
    pre: numpy.ndarray,
    bias: typing.Any = None,
    states: typing.Any = None,
    probs: typing.Any = None,
    *,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    step: typing.SupportsInt | typing.SupportsIndex = 0,
    phase: typing.SupportsInt | typing.SupportsIndex = 0,
    case0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit_index: typing.Any = None,
    state_value: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    prob_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0,
) -> None:
    """
    p = sigm(pre + bias); probs <- prob_scale * p; states <- state_value * [u < p], with u from Philox4x32-10 keyed by (seed, step, phase, case0 + row, unit0 + column).
    """

def set_blas_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None: ...
def sigmoid(x: numpy.ndarray, out: numpy.ndarray) -> None: ...
def simd_path() -> str:
    """
    The element-wise kernels' clones in use: 'avx2' or 'baseline' (PARRBM_ISA=baseline forces it).
    """

def uniforms(
    rows: typing.SupportsInt | typing.SupportsIndex,
    cols: typing.SupportsInt | typing.SupportsIndex,
    *,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    step: typing.SupportsInt | typing.SupportsIndex = 0,
    phase: typing.SupportsInt | typing.SupportsIndex = 0,
    case0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit_index: typing.Any = None,
) -> numpy.typing.NDArray[numpy.float64]: ...
def unpack_bits(
    packed: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8],
    out: numpy.ndarray,
    one: typing.SupportsFloat | typing.SupportsIndex = 1.0,
) -> None: ...
def visible_activation(
    pre: numpy.ndarray,
    bias: typing.Any,
    out: numpy.ndarray,
    kind: str = "binary",
    sample: bool = True,
    data: typing.Any = None,
    *,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    step: typing.SupportsInt | typing.SupportsIndex = 0,
    phase: typing.SupportsInt | typing.SupportsIndex = 0,
    case0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit0: typing.SupportsInt | typing.SupportsIndex = 0,
    unit_index: typing.Any = None,
    err0: typing.SupportsFloat | typing.SupportsIndex = 0.0,
) -> float:
    """
    Visible activation (binary: sigmoid, sampled if sample; gaussian: mean, plus N(0,1) noise if sample). Returns err0 + sum((data - mean)^2), added row by row, when data is given (err0 otherwise): rows taken in chunks, each continuing the sum, give its bits.
    """

PHASE_NOISE_OFFSET: int = 65536
