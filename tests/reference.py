"""Numpy reference implementations of the core's kernels and of one CD-k step.

Written from docs/design.md sections 3 and 8, independently of the C++ code: the tests hold
the core to these.
"""

from __future__ import annotations

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
PHASE_NOISE_OFFSET = 0x10000


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of counters (..., 4) uint32 under key (k0, k1) -> (..., 4) uint32."""
    x = [counter[..., i].astype(np.uint64) for i in range(4)]
    k0, k1 = key
    for r in range(10):
        if r:
            k0 = (k0 + W0) & 0xFFFFFFFF
            k1 = (k1 + W1) & 0xFFFFFFFF
        p0 = M0 * x[0]
        p1 = M1 * x[2]
        x = [
            ((p1 >> np.uint64(32)) ^ x[1] ^ np.uint64(k0)) & MASK32,
            p1 & MASK32,
            ((p0 >> np.uint64(32)) ^ x[3] ^ np.uint64(k1)) & MASK32,
            p0 & MASK32,
        ]
    return np.stack(x, axis=-1).astype(np.uint32)


def _lanes(rows, cols, seed, step, phase, case0, unit0, per_block):
    """Raw 32-bit draws for cases case0.. and units unit0..: (rows, cols, 4 // per_block)."""
    units = unit0 + np.arange(cols, dtype=np.uint64)
    cases = case0 + np.arange(rows, dtype=np.uint64)
    groups = units // np.uint64(per_block)
    ctr = np.zeros((rows, cols, 4), np.uint64)
    ctr[..., 0] = groups[None, :] & MASK32
    ctr[..., 1] = cases[:, None] & MASK32
    ctr[..., 2] = step
    ctr[..., 3] = phase
    out = philox4x32_10(ctr.astype(np.uint32), (seed & 0xFFFFFFFF, seed >> 32))
    lane = (units % np.uint64(per_block)).astype(np.int64) * (4 // per_block)
    return out, lane


def uniforms(rows, cols, *, seed=0, step=0, phase=0, case0=0, unit0=0) -> np.ndarray:
    """u = (x + 0.5) / 2^32, x = lane unit % 4 of block (unit // 4, case, step, phase)."""
    out, lane = _lanes(rows, cols, seed, step, phase, case0, unit0, 4)
    x = np.take_along_axis(out, np.broadcast_to(lane[None, :, None], (rows, cols, 1)), axis=2)[..., 0]
    return (x.astype(np.float64) + 0.5) / 2.0**32


def normals(rows, cols, *, seed=0, step=0, phase=0, case0=0, unit0=0) -> np.ndarray:
    """Box-Muller from lanes (2 (j % 2), 2 (j % 2) + 1) of block (j // 2, case, step, phase)."""
    out, lane = _lanes(rows, cols, seed, step, phase, case0, unit0, 2)
    idx = np.broadcast_to(lane[None, :, None], (rows, cols, 1))
    u1 = (np.take_along_axis(out, idx, 2)[..., 0].astype(np.float64) + 0.5) / 2.0**32
    u2 = (np.take_along_axis(out, idx + 1, 2)[..., 0].astype(np.float64) + 0.5) / 2.0**32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)


def sigmoid(x):
    x = np.asarray(x)
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def sample_sigmoid(pre, bias, *, seed, step, phase, case0=0, unit0=0):
    """(probabilities, states) of sigm(pre + bias), states = [u < p]."""
    p = sigmoid(pre + (0 if bias is None else bias))
    u = uniforms(*pre.shape, seed=seed, step=step, phase=phase, case0=case0, unit0=unit0)
    return p, (u < p.astype(np.float64)).astype(pre.dtype)


def pack_bits(states) -> np.ndarray:
    return np.packbits((np.asarray(states) != 0).ravel(), bitorder="little")


def pack_columns(states, words=None) -> np.ndarray:
    s = np.asarray(states) != 0
    rows, cols = s.shape
    words = (rows + 63) // 64 if words is None else words
    padded = np.zeros((words * 64, cols), bool)
    padded[:rows] = s
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    blocks = padded.reshape(words, 64, cols).astype(np.uint64)
    return (blocks * weights[None, :, None]).sum(axis=1, dtype=np.uint64).T.copy()


class RefCD:
    """One CD-k step in numpy, float64, following docs/design.md section 3 and the core's
    stream keying: positive hidden phase 0; chain step t visible 2t-1, hidden 2t."""

    def __init__(
        self,
        W,
        b,
        c,
        *,
        visible="binary",
        statistics="samples",
        cd_k=1,
        persistent=False,
        gaussian_noise=False,
        learning_rate=0.1,
        momentum=0.0,
        weight_decay=0.0,
        seed=0,
        batch_size=None,
    ):
        self.W, self.b, self.c = (np.array(a, dtype=np.float64) for a in (W, b, c))
        self.visible, self.statistics, self.cd_k = visible, statistics, cd_k
        self.persistent, self.noise = persistent, gaussian_noise
        self.lr, self.mom, self.decay, self.seed = learning_rate, momentum, weight_decay, seed
        self.W_inc = np.zeros_like(self.W)
        self.b_inc = np.zeros_like(self.b)
        self.c_inc = np.zeros_like(self.c)
        self.chains = np.zeros((batch_size, self.W.shape[1])) if persistent else None

    def _visible(self, pre, step, phase, sample):
        if self.visible == "binary":
            mean = sigmoid(pre + self.b)
            if not sample:
                return mean, mean
            u = uniforms(*pre.shape, seed=self.seed, step=step, phase=phase)
            return mean, (u < mean).astype(np.float64)
        mean = pre + self.b
        if not sample:
            return mean, mean
        return mean, mean + normals(*pre.shape, seed=self.seed, step=step, phase=phase + PHASE_NOISE_OFFSET)

    def step(self, X, step):
        X = np.asarray(X, np.float64)
        m = X.shape[0]
        probs = self.statistics == "probabilities"
        p, h = sample_sigmoid(X @ self.W, self.c, seed=self.seed, step=step, phase=0)
        pos_h = p if probs else h
        driver = self.chains if self.persistent else h
        err = 0.0
        for t in range(1, self.cd_k + 1):
            sample_v = (not probs) if self.visible == "binary" else self.noise
            mean, v = self._visible(driver @ self.W.T, step, 2 * t - 1, sample_v)
            if t == 1 and not self.persistent:
                err = float(np.sum((X - mean) ** 2))
            ph, hs = sample_sigmoid(v @ self.W, self.c, seed=self.seed, step=step, phase=2 * t)
            driver = hs
        if self.persistent:
            self.chains = hs
        neg_h = ph if probs else hs
        n_chain = v.shape[0]
        scale = m / n_chain
        alpha = self.lr / m
        grad = X.T @ pos_h - scale * (v.T @ neg_h)
        self.W_inc = self.mom * self.W_inc + alpha * grad - self.lr * self.decay * self.W
        self.W += self.W_inc
        gb = X.sum(0) - scale * v.sum(0)
        gc = pos_h.sum(0) - scale * neg_h.sum(0)
        self.b_inc = self.mom * self.b_inc + alpha * gb
        self.c_inc = self.mom * self.c_inc + alpha * gc
        self.b += self.b_inc
        self.c += self.c_inc
        return err
