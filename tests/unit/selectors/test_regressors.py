"""Regressor back-ends: predict 0 until fitted, learn simple targets, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest

from client_selectors.regressors import (
    LinearRegressor,
    MLPParams,
    MLPRegressor,
    Regressor,
    XGBoostParams,
    XGBoostRegressor,
)


def data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.5
    return x, y


def backends() -> list[Regressor]:
    return [
        LinearRegressor(),
        MLPRegressor(MLPParams(hidden=(32, 16), epochs=60, learning_rate=3e-3, batch_size=64)),
        XGBoostRegressor(XGBoostParams(n_estimators=60, learning_rate=0.2)),
    ]


@pytest.mark.parametrize("model", backends(), ids=["linear", "mlp", "xgboost"])
def test_predicts_zero_until_first_fit_then_learns(model: Regressor) -> None:
    x, y = data()
    assert not model.fitted
    np.testing.assert_array_equal(model.predict(x[:5]), np.zeros(5))
    model.fit(x, y, seed=1)
    assert model.fitted
    x_test, y_test = data(100, seed=9)
    rmse = float(np.sqrt(np.mean((model.predict(x_test) - y_test) ** 2)))
    assert rmse < 0.35 * float(np.std(y_test))
    assert model.predict(x_test[:0]).shape == (0,)


def test_linear_is_exact_on_a_linear_target() -> None:
    x, y = data()
    model = LinearRegressor()
    model.fit(x, y, seed=0)
    np.testing.assert_allclose(model.predict(x[:10]), y[:10], atol=1e-9)


@pytest.mark.parametrize("index", [1, 2], ids=["mlp", "xgboost"])
def test_same_seed_same_model(index: int) -> None:
    x, y = data()
    a, b = backends()[index], backends()[index]
    a.fit(x, y, seed=5)
    b.fit(x, y, seed=5)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_refit_starts_from_scratch() -> None:
    x, y = data()
    model = backends()[2]
    model.fit(x, -y, seed=3)
    model.fit(x, y, seed=3)
    fresh = backends()[2]
    fresh.fit(x, y, seed=3)
    np.testing.assert_array_equal(model.predict(x), fresh.predict(x))
