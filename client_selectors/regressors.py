"""Utility regressors for Bliss: xgboost (default), numpy least squares, a small numpy MLP.

All three share one tiny interface (``fit(X, y, seed)``, ``predict(X)``, ``fitted``) and
predict 0 for every row until their first fit (§4.3). Each fit starts from scratch and is
a pure function of (X, y, seed), so a Bliss selector that refits every round needs no
model in its checkpoint: the refit after a restore reproduces the model exactly.

- ``XGBoostRegressor``: ``xgboost.train`` on a ``DMatrix`` with ``tree_method="hist"``
  (deterministic on CPU for a given thread count). xgboost is an optional dependency, so
  it is imported only when this back-end is built; a missing package is a config error.
- ``LinearRegressor``: ordinary least squares with an intercept (``numpy.linalg.lstsq``,
  minimum-norm solution, so collinear one-hot columns are fine).
- ``MLPRegressor``: ReLU layers (default 128, 64), Adam, mini-batches, standardised inputs
  and target; He-initialised from the fit's seed. [B] uses scikit-learn's MLPRegressor with
  the same shape; scikit-learn is not needed here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from client_selectors.errors import SelectorConfigError


class Regressor(Protocol):
    """What Bliss needs from a regressor."""

    @property
    def fitted(self) -> bool: ...

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class XGBoostParams:
    n_estimators: int = 300
    learning_rate: float = 0.05
    max_depth: int = 6
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    max_bin: int = 64
    nthread: int = 1


class XGBoostRegressor:
    """Gradient-boosted trees (xgboost ``hist``)."""

    def __init__(self, params: XGBoostParams) -> None:
        try:
            import xgboost
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise SelectorConfigError(
                "regressor 'xgboost' needs the xgboost package "
                "(pip install 'fedbus[xgboost-cpu]') or use regressor: linear | mlp",
                field="regressor",
            ) from exc
        self._xgb: Any = xgboost
        self._params = params
        self._booster: Any = None

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        p = self._params
        train_params = {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "eta": p.learning_rate,
            "max_depth": p.max_depth,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample_bytree,
            "max_bin": p.max_bin,
            "nthread": p.nthread,
            "seed": seed,
            "verbosity": 0,
        }
        data = self._xgb.DMatrix(
            np.asarray(x, dtype=np.float32),
            label=np.asarray(y, dtype=np.float32),
            nthread=p.nthread,
        )
        self._booster = self._xgb.train(train_params, data, num_boost_round=p.n_estimators)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._booster is None or x.shape[0] == 0:
            return np.zeros(x.shape[0], dtype=np.float64)
        out = self._booster.inplace_predict(np.asarray(x, dtype=np.float32))
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0])


class LinearRegressor:
    """Least squares with an intercept."""

    def __init__(self) -> None:
        self._coef: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self._coef is not None

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        design = np.hstack([np.asarray(x, dtype=np.float64), np.ones((x.shape[0], 1))])
        self._coef = np.linalg.lstsq(design, np.asarray(y, dtype=np.float64), rcond=None)[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._coef is None:
            return np.zeros(x.shape[0], dtype=np.float64)
        result: np.ndarray = np.asarray(x, dtype=np.float64) @ self._coef[:-1] + self._coef[-1]
        return result


@dataclass(frozen=True)
class MLPParams:
    hidden: tuple[int, ...] = (128, 64)
    epochs: int = 50
    learning_rate: float = 1e-3
    batch_size: int = 256


class MLPRegressor:
    """A ReLU multi-layer perceptron trained with Adam on squared error."""

    def __init__(self, params: MLPParams) -> None:
        self._params = params
        self._layers: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._x_mean = self._x_std = np.zeros(0)
        self._y_mean = 0.0
        self._y_std = 1.0

    @property
    def fitted(self) -> bool:
        return self._layers is not None

    def _forward(
        self, x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[np.ndarray]:
        acts = [x]
        for i, (w, b) in enumerate(layers):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if i < len(layers) - 1 else z)
        return acts

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        p = self._params
        rng = np.random.default_rng(seed)
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self._x_mean = x.mean(axis=0)
        self._x_std = np.maximum(x.std(axis=0), 1e-8)
        self._y_mean = float(y.mean())
        self._y_std = max(float(y.std()), 1e-8)
        xs = (x - self._x_mean) / self._x_std
        ys = ((y - self._y_mean) / self._y_std)[:, None]
        sizes = [x.shape[1], *p.hidden, 1]
        layers = [
            (rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)), np.zeros(fan_out))
            for fan_in, fan_out in itertools.pairwise(sizes)
        ]
        params = [a for wb in layers for a in wb]
        m = [np.zeros_like(a) for a in params]
        v = [np.zeros_like(a) for a in params]
        b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
        n = xs.shape[0]
        for _ in range(p.epochs):
            order = rng.permutation(n)
            for start in range(0, n, p.batch_size):
                batch = order[start : start + p.batch_size]
                grads = self._gradients(xs[batch], ys[batch], layers)
                step += 1
                for j, g in enumerate(grads):
                    m[j] = b1 * m[j] + (1 - b1) * g
                    v[j] = b2 * v[j] + (1 - b2) * g * g
                    m_hat = m[j] / (1 - b1**step)
                    v_hat = v[j] / (1 - b2**step)
                    params[j] -= p.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        self._layers = layers

    def _gradients(
        self, x: np.ndarray, y: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[np.ndarray]:
        acts = self._forward(x, layers)
        delta = 2.0 * (acts[-1] - y) / x.shape[0]
        grads: list[np.ndarray] = []
        for i in range(len(layers) - 1, -1, -1):
            w, _ = layers[i]
            grads = [acts[i].T @ delta, delta.sum(axis=0), *grads]
            if i > 0:
                delta = (delta @ w.T) * (acts[i] > 0.0)
        return grads

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._layers is None or x.shape[0] == 0:
            return np.zeros(x.shape[0], dtype=np.float64)
        xs = (np.asarray(x, dtype=np.float64) - self._x_mean) / self._x_std
        out = self._forward(xs, self._layers)[-1][:, 0]
        return out * self._y_std + self._y_mean
