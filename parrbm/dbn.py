"""Deep belief network by greedy layer-wise stacking: ``parrbm.DBN``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import validate_data

from parrbm import _validation as v
from parrbm.rbm import RBM, ModelTagsMixin, _model_arrays, _resolve_seed, read_npz, write_npz_atomic

_FORMAT = "parrbm-dbn"
_FORMAT_VERSION = 1
#: RBM parameters a layer may set for itself in ``layer_params``
_LAYER_KEYS = set(RBM().get_params()) - {"visible", "n_hidden"}


class DBN(ModelTagsMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A stack of RBMs trained greedily, layer by layer (Hinton, Osindero & Teh 2006):
    layer 1 models the data, layer i + 1 models the hidden probabilities of layer i.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Hidden units of each layer, bottom up.
    visible : {"binary", "gaussian"}, default="binary"
        The first layer's visible units (the layers above are binary).
    n_iter, learning_rate, batch_size, strategy, workers, transport, dtype, verbose, progress
        Given to every layer (see :class:`RBM`). ``learning_rate="auto"`` (the default)
        is each layer's own: 0.01 for a Gaussian first layer, 0.1 for binary layers.
    layer_params : list of dict or None, default=None
        Per layer, RBM parameters that override the shared ones, e.g.
        ``[{"learning_rate": 0.01, "strategy": "green-only", "workers": 2}, {}]``.
    random_state : int or None, default=None
        Layer i draws from seed + i.

    Attributes
    ----------
    rbms_ : list of RBM
        The fitted layers, bottom up.
    n_features_in_ : int
    """

    def __init__(
        self,
        hidden_layer_sizes=(256, 256),
        *,
        visible="binary",
        n_iter=10,
        learning_rate="auto",
        batch_size=10,
        strategy="serial",
        workers=1,
        transport="threads",
        dtype="float32",
        layer_params=None,
        random_state=None,
        verbose=False,
        progress="auto",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.visible = visible
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.strategy = strategy
        self.workers = workers
        self.transport = transport
        self.dtype = dtype
        self.layer_params = layer_params
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress

    def _layers(self) -> list[RBM]:
        sizes = self.hidden_layer_sizes
        if not isinstance(sizes, (list, tuple, np.ndarray)) or np.ndim(sizes) != 1 or len(sizes) == 0:
            raise ValueError(
                f"DBN: parameter 'hidden_layer_sizes' must be a non-empty list or tuple of integers, got {sizes!r:.80}"
            )
        for i, h in enumerate(sizes):
            v.check_int("DBN", f"hidden_layer_sizes[{i}]", h, minimum=1)
        per = self.layer_params if self.layer_params is not None else [{}] * len(sizes)
        if not isinstance(per, (list, tuple)) or len(per) != len(sizes) or not all(isinstance(p, dict) for p in per):
            raise ValueError(
                f"DBN: parameter 'layer_params' must be a list of {len(sizes)} dicts (one per layer) "
                f"or None, got {self.layer_params!r}"
            )
        for i, p in enumerate(per):
            unknown = sorted(set(p) - _LAYER_KEYS)
            if unknown:
                raise ValueError(f"DBN: layer_params[{i}] has unknown keys {unknown}; allowed: {sorted(_LAYER_KEYS)}")
        seed = _resolve_seed(self.random_state)
        shared = dict(
            n_iter=self.n_iter,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            strategy=self.strategy,
            workers=self.workers,
            transport=self.transport,
            dtype=self.dtype,
            verbose=self.verbose,
            progress=self.progress,
        )
        layers = [
            RBM(
                n_hidden=int(h),
                visible=self.visible if i == 0 else "binary",
                **{**shared, "random_state": (seed + i) % 2**64, **per[i]},
            )
            for i, h in enumerate(sizes)
        ]
        for rbm in layers:  # a strategy named by a loaded file is not imported by a later fit either
            rbm._file_strategies = set(getattr(self, "_file_strategies", ()))
        return layers

    def fit(self, X, y=None):
        """Train the layers bottom up on X (n_samples, n_features)."""
        layers = self._layers()
        self.rbms_ = []
        Z = X
        for i, rbm in enumerate(layers):
            if self.verbose:
                print(f"[DBN] layer {i + 1}/{len(layers)}: {rbm.visible} {np.shape(Z)[1]} -> {rbm.n_hidden}")
            try:
                rbm.fit(Z)
            except ValueError as exc:
                raise type(exc)(f"DBN layer {i + 1}: {exc}") from exc
            self.rbms_.append(rbm)
            Z = rbm.transform(Z)
        self.n_features_in_ = self.rbms_[0].n_features_in_
        validate_data(self, X, reset=True, skip_check_array=True)
        return self

    @property
    def _n_features_out(self) -> int:
        """For ``get_feature_names_out``: dbn0 .. dbn{hidden_layer_sizes[-1] - 1}."""
        return self.rbms_[-1].n_hidden

    def _check_fitted(self) -> None:
        if not hasattr(self, "rbms_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This DBN instance is not fitted yet; call 'fit' first.")

    def transform(self, X) -> np.ndarray:
        """The top layer's hidden probabilities: (n_samples, n_features) -> (n_samples, hidden_layer_sizes[-1])."""
        return self.transform_all(X)[-1]

    def transform_all(self, X) -> list[np.ndarray]:
        """Every layer's hidden probabilities, bottom up."""
        self._check_fitted()
        fitted = [int(r.n_hidden) for r in self.rbms_]
        try:
            now = [int(h) for h in self.hidden_layer_sizes]
        except (TypeError, ValueError):
            now = None
        if now != fitted:
            raise ValueError(
                f"DBN: parameter 'hidden_layer_sizes' is {self.hidden_layer_sizes!r:.80} but the "
                f"fitted layers are {tuple(fitted)}: call fit to fit the new layers"
            )
        validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)  # names; shape: layer 1
        out, Z = [], X
        for rbm in self.rbms_:
            Z = rbm.transform(Z)
            out.append(Z)
        return out

    def reconstruct(self, X) -> np.ndarray:
        """Up to the top layer and down again, mean field: (n_samples, n_features)."""
        self._check_fitted()
        Z = self.transform(X)
        for rbm in reversed(self.rbms_):
            s = rbm._state
            pre = Z @ s.W.T.astype(np.float64) + s.b
            Z = pre if rbm.spec_.visible == "gaussian" else 1.0 / (1.0 + np.exp(-pre))
        return Z

    # ---- persistence --------------------------------------------------------------------------

    def save(self, path) -> None:
        """The whole stack in one ``.npz``, written atomically."""
        self._check_fitted()
        path = Path(path)
        arrays = {}
        layers = []
        for i, rbm in enumerate(self.rbms_):
            meta, state = rbm._payload(path)
            layers.append(meta)
            arrays.update({f"layer{i}_{k}": a for k, a in state.items()})
        params = {
            k: (list(val) if k == "hidden_layer_sizes" else val)
            for k, val in self.get_params().items()
            if k != "random_state" or isinstance(val, (int, type(None)))
        }
        meta = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "params": params, "layers": layers}
        write_npz_atomic(path, {"parrbm_dbn": np.array(json.dumps(meta)), **arrays})

    @classmethod
    def load(cls, path) -> "DBN":
        path = Path(path)
        with read_npz(path, "DBN.load") as z:
            if "parrbm_dbn" not in z.files:
                raise ValueError(
                    f"DBN.load: {path} is not a parrbm DBN file (no 'parrbm_dbn' entry"
                    + ("; it holds one RBM: use RBM.load" if "parrbm_meta" in z.files else "")
                    + ")"
                )
            meta = z.json("parrbm_dbn")
            if not isinstance(meta, dict):
                raise ValueError(f"DBN.load: {path}: its metadata must be a JSON object")
            if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
                raise ValueError(
                    f"DBN.load: {path} has format {meta.get('format')!r} version "
                    f"{meta.get('format_version')}; this parrbm reads {_FORMAT!r} {_FORMAT_VERSION}"
                )
            if not isinstance(meta.get("layers"), list) or not meta["layers"]:
                raise ValueError(f"DBN.load: {path}: field 'layers' must be a non-empty list")
            if not isinstance(meta.get("params"), dict):
                raise ValueError(f"DBN.load: {path}: field 'params' must be a JSON object")
            layers = [f"layer{i}_" for i in range(len(meta["layers"]))]
            stray = [k for k in z.files if k != "parrbm_dbn" and not k.startswith(tuple(layers))]
            if stray:
                raise ValueError(f"DBN.load: {path}: entry {stray[0]!r} is not one a parrbm DBN file holds")
            rbms = []
            for i, layer in enumerate(meta["layers"]):
                prefix = f"layer{i}_"
                arrays = _model_arrays(z, layer, prefix, f"{path} (layer {i + 1})")
                rbms.append(RBM._from_payload(layer, arrays, f"{path} (layer {i + 1})"))
        params = dict(meta["params"])
        sizes = params.get("hidden_layer_sizes")
        if not isinstance(sizes, list) or [r.spec_.n_hidden for r in rbms] != sizes:
            raise ValueError(
                f"DBN.load: {path}: field 'params.hidden_layer_sizes' must list the layers' "
                f"sizes {[r.spec_.n_hidden for r in rbms]}, got {sizes!r:.60}"
            )
        for below, above in zip(rbms, rbms[1:]):
            if above.n_features_in_ != below.spec_.n_hidden:
                raise ValueError(
                    f"DBN.load: {path}: layer sizes do not chain: a layer of "
                    f"{below.spec_.n_hidden} hidden units feeds one of {above.n_features_in_} visible"
                )
        params["hidden_layer_sizes"] = tuple(sizes)
        if isinstance(params.get("layer_params"), list):  # a path in a file does not choose where a fit writes
            params["layer_params"] = [
                {k: x for k, x in lp.items() if k != "checkpoint_dir"} if isinstance(lp, dict) else lp
                for lp in params["layer_params"]
            ]
        unknown = sorted(set(params) - set(cls._get_param_names()))
        if unknown:
            raise ValueError(f"DBN.load: {path}: field 'params.{unknown[0]}' is not a parameter of this parrbm's DBN")
        dbn = cls(**params)
        dbn._file_strategies = {
            s
            for s in [dbn.strategy, *(lp.get("strategy") for lp in (dbn.layer_params or []) if isinstance(lp, dict))]
            if isinstance(s, str)
        }
        dbn.rbms_ = rbms
        dbn.n_features_in_ = rbms[0].n_features_in_
        return dbn
