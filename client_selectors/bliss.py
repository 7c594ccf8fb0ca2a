"""Bliss: client selection by predicted utility (ALGORITHMS.md §4 with the §0 decisions).

Per call (one selector round t): run the t_budget pacer, refit both regressors, then

1. **predict set**: up to ``number_clients_to_predict_utility`` *unseen* online clients,
   drawn uniformly, scored by g (windows now + static);
2. **refresh set**: the ``number_clients_to_refresh_utility`` *seen* online clients with the
   highest stored utility, scored by h (see ``bliss_features.h_features``: the same
   feature meaning at training and inference, which [B] lacks). Until h has been fitted
   (nobody seen twice yet) a seen client keeps its stored utility as its estimate rather
   than h's 0: otherwise every seen client would lose to any positive g prediction and
   nobody would ever be seen twice while unseen clients remain;
3. pick ``num`` of the merged candidates: by default **without replacement with P ∝
   predicted utility** (negative predictions count as 0; while every prediction is 0,
   e.g. before the first fit, this is uniform); ``bliss_sampling: top`` takes [B]'s
   deterministic top-N instead (uniform before any regressor has been fitted);
4. if the candidates are fewer than ``num``, pad uniformly from the other online clients;
5. for each pick: windows -> last windows, new windows stored, round -> last round,
   round = t, seen += 1 ("seen" counts selections).

Training sets (refit every round, from scratch): g on up to
``amount_clients_predict_train_set`` clients seen >= 1 time, h on up to
``amount_clients_refresh_train_set`` clients seen >= 2 times, both drawn without
replacement with P ∝ stored utility; target = stored utility. Because every model is
refit from the stored state and the selector's RNG before it is used, a checkpoint holds
no model and a restored selector reproduces the same selections.

Feedback: u_new = reward if success else 0; stored utility is the EMA
u <- α·u_new + (1 − α)·u (``ema_alpha``, on, §0); the first feedback initialises u.
Stragglers get u_new = 0 and success 0. Rounds (for h's "rounds since" feature) are this
selector's own call counter; the caller's ``time_stamp`` is not needed. The pacer moves ``t_budget`` (seconds) with the
average utility of the previous picks that succeeded; selection itself has no system
penalty, t_budget matters only for adaptive training.

The dynamic windows come from outside: ``set_dynamic_source(fn)`` with
``fn(client_id, now) -> 15 normalised values``. The source is not part of ``state()``:
set it again after ``from_state``. Default: zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from client_selectors.base import (
    BASE_COLUMNS,
    ClientId,
    ClientProfile,
    ClientSelector,
    Selection,
    SelectorKnobs,
    check_duration,
    check_reward,
)
from client_selectors.bliss_features import (
    STATIC_DIM,
    WINDOW_DIM,
    encode_static,
    g_features,
    h_features,
    zero_windows,
)
from client_selectors.errors import SelectorError
from client_selectors.pacer import Pacer, mean_reward
from client_selectors.regressors import (
    LinearRegressor,
    MLPParams,
    MLPRegressor,
    Regressor,
    XGBoostParams,
    XGBoostRegressor,
)
from client_selectors.sampling import top_k, uniform_sample, weighted_sample
from client_selectors.table import Column

DynamicSource = Callable[[ClientId, float], np.ndarray]


class BlissKnobs(SelectorKnobs):
    """Bliss knobs; defaults from [B] (§4) and the fedbus decisions (§0)."""

    regressor: Literal["xgboost", "linear", "mlp"] = "xgboost"
    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0.0)
    max_depth: int = Field(6, ge=1, le=16)
    subsample: float = Field(0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(0.8, gt=0.0, le=1.0)
    max_bin: int = Field(64, ge=2)
    nthread: int = Field(1, ge=1)
    mlp_hidden: tuple[Annotated[int, Field(ge=1)], ...] = (128, 64)
    mlp_epochs: int = Field(50, ge=1)
    mlp_learning_rate: float = Field(1e-3, gt=0.0)
    mlp_batch_size: int = Field(256, ge=1)
    amount_clients_predict_train_set: int = Field(500, ge=1)
    amount_clients_refresh_train_set: int = Field(500, ge=1)
    number_clients_to_predict_utility: int = Field(300, ge=0)
    number_clients_to_refresh_utility: int = Field(300, ge=0)
    ema_alpha: float = Field(0.7, gt=0.0, le=1.0)
    bliss_sampling: Literal["weighted", "top"] = "weighted"
    t_budget: float = Field(300.0, gt=0.0)
    pacer_step: int = Field(20, ge=1)
    pacer_delta: float = Field(5.0, ge=0.0)


def make_regressor(knobs: BlissKnobs) -> Regressor:
    """The regressor back-end named by ``knobs.regressor``."""
    if knobs.regressor == "linear":
        return LinearRegressor()
    if knobs.regressor == "mlp":
        return MLPRegressor(
            MLPParams(
                knobs.mlp_hidden, knobs.mlp_epochs, knobs.mlp_learning_rate, knobs.mlp_batch_size
            )
        )
    return XGBoostRegressor(
        XGBoostParams(
            knobs.n_estimators,
            knobs.learning_rate,
            knobs.max_depth,
            knobs.subsample,
            knobs.colsample_bytree,
            knobs.max_bin,
            knobs.nthread,
        )
    )


BLISS_COLUMNS: dict[str, Column] = {
    **BASE_COLUMNS,
    "utility": Column("float64"),
    "last_utility": Column("float64"),
    "success": Column("float64"),
    "last_success": Column("float64"),
    "round": Column("int64"),
    "last_round": Column("int64"),
    "seen": Column("int64"),
    "fed": Column("bool"),
    "dynamic": Column("float64", (WINDOW_DIM,)),
    "last_dynamic": Column("float64", (WINDOW_DIM,)),
    "static": Column("float32", (STATIC_DIM,)),
}


class BlissSelector(ClientSelector[BlissKnobs]):
    """Utility-prediction selection with g (unseen) and h (seen) regressors."""

    name: ClassVar[str] = "bliss"
    Knobs: ClassVar[type[BlissKnobs]] = BlissKnobs
    columns: ClassVar[Mapping[str, Column]] = BLISS_COLUMNS

    def __init__(self, knobs: BlissKnobs, seed: int) -> None:
        super().__init__(knobs, seed)
        self._g = make_regressor(knobs)
        self._h = make_regressor(knobs)
        self._pacer = Pacer(
            knobs.t_budget, knobs.pacer_step, knobs.pacer_delta, upper=None, skip_when_zero=True
        )
        self._t = 0
        self._last_picks: list[int] = []
        self._successful: set[int] = set()
        self._source: DynamicSource = zero_windows

    def set_dynamic_source(self, fn: DynamicSource) -> None:
        """Where the 15 normalised window values of a client at time ``now`` come from."""
        self._source = fn

    @property
    def t_budget(self) -> float | None:
        return self._pacer.value

    def pace_budget(self, value: float) -> None:
        """Set t_budget from outside (the job-level budget pacer, after a round closes).

        Bliss's own rule still runs at the next selection, on this value, and its move is
        the last before the round uses the budget: it keeps precedence.
        """
        self._pacer.value = float(value)

    def _on_register(self, row: int, profile: ClientProfile) -> None:
        self._table["static"][row] = encode_static(profile.static)

    def stored_utility(self, client_id: ClientId) -> float:
        """The (EMA-smoothed) utility stored for a client."""
        return float(self._table["utility"][self._table.row(client_id)])

    # -- selection ------------------------------------------------------------------------
    def select_participants(self, num: int, now: float, online: Sequence[ClientId]) -> Selection:
        mask = self._online_mask(num, online)
        if mask is None:
            return Selection([], {})
        rng_before = self._rng.bit_generator.state
        pacer_before = self._pacer.to_state()
        try:
            return self._select(num, now, mask)
        except Exception:
            self._rng.bit_generator.state = rng_before
            self._pacer.load_state(pacer_before)
            raise

    def _select(self, num: int, now: float, mask: np.ndarray) -> Selection:
        tab, k = self._table, self.knobs
        t = self._t + 1
        utility = tab["utility"]
        back = [utility[r] for r in self._last_picks if r in self._successful]
        self._pacer.update(t, mean_reward(back))
        self._refit()

        seen = tab["seen"]
        unseen_online = np.flatnonzero(mask & (seen == 0))
        seen_online = np.flatnonzero(mask & (seen > 0))
        pred_rows = unseen_online[
            uniform_sample(self._rng, unseen_online.size, k.number_clients_to_predict_utility)
        ]
        ref_rows = seen_online[top_k(utility[seen_online], k.number_clients_to_refresh_utility)]
        w_pred = self._windows(pred_rows, now)
        w_ref = self._windows(ref_rows, now)
        p_pred = self._g.predict(g_features(w_pred, tab["static"][pred_rows]))
        if self._h.fitted:
            p_ref = self._h.predict(
                h_features(
                    w_ref - tab["dynamic"][ref_rows],
                    tab["static"][ref_rows],
                    utility[ref_rows],
                    tab["success"][ref_rows],
                    t - tab["round"][ref_rows],
                )
            )
        else:  # nothing to refresh with yet: the stored utility is the current estimate
            p_ref = utility[ref_rows].copy()
        cand = np.concatenate([pred_rows, ref_rows])
        preds = np.concatenate([p_pred, p_ref])
        windows = np.vstack([w_pred, w_ref])
        if k.bliss_sampling == "weighted":
            order = weighted_sample(self._rng, preds, num)
        elif self._g.fitted or self._h.fitted:
            order = top_k(preds, num)
        else:
            order = uniform_sample(self._rng, cand.size, num)
        picks, pick_windows = cand[order], windows[order]

        padding = np.empty(0, dtype=np.int64)
        if picks.size < num:
            rest = mask.copy()
            rest[cand] = False
            rest_rows = np.flatnonzero(rest)
            padding = rest_rows[uniform_sample(self._rng, rest_rows.size, num - picks.size)]
        pad_windows = self._windows(padding, now)

        rows = np.concatenate([picks, padding])
        tab["last_dynamic"][rows] = tab["dynamic"][rows]
        tab["dynamic"][rows] = np.vstack([pick_windows, pad_windows])
        tab["last_round"][rows] = tab["round"][rows]
        tab["round"][rows] = t
        tab["seen"][rows] += 1
        self._t = t
        self._last_picks = [int(r) for r in rows]
        self._successful = set()

        n_pred = pred_rows.size
        ids = tab.id_list(picks)
        info: dict[str, object] = {
            "t": t,
            "predicted": [c for c, o in zip(ids, order, strict=True) if o < n_pred],
            "refreshed": [c for c, o in zip(ids, order, strict=True) if o >= n_pred],
            "padding": tab.id_list(padding),
            "predictions": {c: float(preds[o]) for c, o in zip(ids, order, strict=True)},
            "t_budget": self._pacer.value,
            "sampling": k.bliss_sampling,
            "fitted": {"g": self._g.fitted, "h": self._h.fitted},
        }
        return Selection(ids + tab.id_list(padding), info)

    def _windows(self, rows: np.ndarray, now: float) -> np.ndarray:
        out = np.zeros((rows.size, WINDOW_DIM), dtype=np.float64)
        ids = self._table.ids
        for i, row in enumerate(rows):
            w = np.asarray(self._source(ids[int(row)], now), dtype=np.float64)
            if w.shape != (WINDOW_DIM,):
                raise SelectorError(
                    f"dynamic source returned shape {w.shape} for {ids[int(row)]!r}, "
                    f"expected ({WINDOW_DIM},)"
                )
            out[i] = w
        return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)

    def _refit(self) -> None:
        """Refit g and h from scratch on utility-weighted samples of the seen clients."""
        tab, k = self._table, self.knobs
        seen, utility = tab["seen"], tab["utility"]
        g_rows = np.flatnonzero(seen >= 1)
        g_rows = g_rows[
            weighted_sample(self._rng, utility[g_rows], k.amount_clients_predict_train_set)
        ]
        g_seed = int(self._rng.integers(2**31))
        if g_rows.size:
            x = g_features(tab["dynamic"][g_rows], tab["static"][g_rows])
            self._g.fit(x, utility[g_rows], g_seed)
        h_rows = np.flatnonzero(seen >= 2)
        h_rows = h_rows[
            weighted_sample(self._rng, utility[h_rows], k.amount_clients_refresh_train_set)
        ]
        h_seed = int(self._rng.integers(2**31))
        if h_rows.size:
            x = h_features(
                tab["dynamic"][h_rows] - tab["last_dynamic"][h_rows],
                tab["static"][h_rows],
                tab["last_utility"][h_rows],
                tab["last_success"][h_rows],
                tab["round"][h_rows] - tab["last_round"][h_rows],
            )
            self._h.fit(x, utility[h_rows], h_seed)

    # -- feedback -------------------------------------------------------------------------
    def register_feedback(
        self,
        client_id: ClientId,
        reward: float,
        time_stamp: int,
        duration: float,
        success: bool,
        **extra: float,
    ) -> None:
        row = self._table.row(client_id)
        check_reward(reward)
        check_duration("duration", duration)
        self._record(row, float(reward) if success else 0.0, bool(success), duration)
        if success:
            self._successful.add(row)

    def register_stragglers(
        self,
        client_ids: Sequence[ClientId],
        durations: Mapping[ClientId, float],
        time_stamp: int,
    ) -> None:
        tab = self._table
        rows = [tab.row(c) for c in client_ids]
        for c in client_ids:
            if c in durations:
                check_duration("duration", durations[c])
        for client_id, row in zip(client_ids, rows, strict=True):
            self._record(row, 0.0, False, durations.get(client_id, float(tab["duration"][row])))

    def _record(self, row: int, u_new: float, success: bool, duration: float) -> None:
        tab, a = self._table, self.knobs.ema_alpha
        old = float(tab["utility"][row])
        tab["last_utility"][row] = old
        tab["last_success"][row] = tab["success"][row]
        tab["utility"][row] = a * u_new + (1.0 - a) * old if tab["fed"][row] else u_new
        tab["success"][row] = 1.0 if success else 0.0
        tab["fed"][row] = True
        tab["duration"][row] = duration

    # -- checkpoints ----------------------------------------------------------------------
    def _scalar_state(self) -> dict[str, object]:
        return {
            "t": self._t,
            "pacer": self._pacer.to_state(),
            "last_picks": list(self._last_picks),
            "successful": sorted(self._successful),
        }

    def _load_scalar_state(self, scalars: dict[str, object]) -> None:
        self._t = int(cast(int, scalars["t"]))
        self._pacer.load_state(cast(dict[str, object], scalars["pacer"]))
        self._last_picks = [int(r) for r in cast(list[int], scalars["last_picks"])]
        self._successful = {int(r) for r in cast(list[int], scalars["successful"])}
