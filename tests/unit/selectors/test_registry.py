"""The registry, knob defaults and knob validation errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from client_selectors import (
    SELECTORS,
    BlissKnobs,
    BlissSelector,
    OortKnobs,
    OortSelector,
    PyramidFLSelector,
    RandomSelector,
    SelectorConfigError,
    make_selector,
)


def test_registry_is_explicit_and_classes_expose_their_knobs() -> None:
    assert dict(SELECTORS) == {
        "random": RandomSelector,
        "oort": OortSelector,
        "pyramidfl": PyramidFLSelector,
        "bliss": BlissSelector,
    }
    for name, cls in SELECTORS.items():
        assert cls.name == name
        selector = make_selector(name, {}, 3)
        assert isinstance(selector, cls) and isinstance(selector.knobs, cls.Knobs)
        assert selector.seed == 3


def test_oort_defaults_are_the_oort_artifacts() -> None:
    # [O] column of ALGORITHMS.md 1.6 (issue 22: FedScale's suit thousands online)
    knobs = OortKnobs()
    assert (knobs.exploration_factor, knobs.exploration_decay, knobs.exploration_min) == (
        0.9,
        0.95,
        0.2,
    )
    assert (knobs.round_threshold, knobs.round_penalty) == (10.0, 2.0)
    assert (knobs.pacer_step, knobs.pacer_delta, knobs.sample_window) == (20, 5.0, 5.0)
    assert (knobs.clip_bound, knobs.cut_off_util, knobs.exploit_pool_factor) == (0.98, 0.7, 0.0)
    assert (knobs.blacklist_rounds, knobs.blacklist_max_len) == (-1, 0.3)


def test_pyramidfl_and_bliss_defaults() -> None:
    pyramid = make_selector("pyramidfl", {}, 0).knobs
    assert pyramid.model_dump(include={
        "enable_dropout", "enable_adapt_local_epoch", "adaptive_epoch_beta",
        "dropout_low", "dropout_high",
    }) == {
        "enable_dropout": True, "enable_adapt_local_epoch": True, "adaptive_epoch_beta": 1.0,
        "dropout_low": 0.1, "dropout_high": 0.6,
    }  # fmt: skip
    bliss = BlissKnobs()
    assert (bliss.regressor, bliss.bliss_sampling, bliss.ema_alpha) == ("xgboost", "weighted", 0.7)
    assert (bliss.n_estimators, bliss.learning_rate, bliss.max_depth) == (300, 0.05, 6)
    assert (bliss.subsample, bliss.colsample_bytree) == (0.8, 0.8)
    assert (bliss.t_budget, bliss.pacer_step, bliss.pacer_delta) == (300.0, 20, 5.0)
    assert bliss.amount_clients_predict_train_set == bliss.amount_clients_refresh_train_set == 500
    assert bliss.number_clients_to_predict_utility == 300


@pytest.mark.parametrize(
    ("name", "knobs", "field"),
    [
        ("oort", {"round_threshold": 150}, "round_threshold"),
        ("oort", {"exploration_factor": "lots"}, "exploration_factor"),
        ("oort", {"roundthreshold": 30}, "roundthreshold"),
        ("oort", {"blacklist_rounds": -2}, "blacklist_rounds"),
        ("random", {"round_threshold": 30}, "round_threshold"),
        ("pyramidfl", {"dropout_low": 0.5, "dropout_high": 0.2}, "dropout_high"),
        ("pyramidfl", {"adaptive_epoch_beta": -1}, "adaptive_epoch_beta"),
        ("bliss", {"regressor": "svm"}, "regressor"),
        ("bliss", {"bliss_sampling": "best"}, "bliss_sampling"),
        ("bliss", {"mlp_hidden": [64, 0]}, "mlp_hidden.1"),
        ("bliss", {"ema_alpha": 0}, "ema_alpha"),
    ],
)
def test_bad_knobs_name_the_field(name: str, knobs: dict[str, object], field: str) -> None:
    with pytest.raises(SelectorConfigError) as caught:
        make_selector(name, knobs, 0)
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value) and f"'{name}'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_selector_names_the_name_field() -> None:
    with pytest.raises(SelectorConfigError, match="unknown selector 'fedcs'") as caught:
        make_selector("fedcs", {}, 0)
    assert caught.value.field == "name"


def test_knobs_are_frozen() -> None:
    knobs = OortKnobs()
    with pytest.raises(ValidationError):
        knobs.round_threshold = 50.0  # type: ignore[misc]


def test_valid_knobs_are_used() -> None:
    selector = make_selector("oort", {"round_threshold": 55, "pacer_delta": 10}, 0)
    assert isinstance(selector, OortSelector)
    assert selector.round_threshold == 55.0
    bliss = make_selector("bliss", {"regressor": "mlp", "mlp_hidden": [8]}, 0)
    assert bliss.knobs.mlp_hidden == (8,)  # type: ignore[attr-defined]
