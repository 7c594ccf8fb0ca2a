"""Who trains a round and on what: eligibility, task configs, the virtual plan, who is kept.

Pure: no I/O, no clock read (the wall time and the virtual time are passed in), no
``await``. The job runner asks it at each step of a round; the selector and the agents'
profiles are passed in because the runner owns them (a restored selector replaces it).
This is where a scheduler's restriction of who may train (``eligible``) and a budget
pacer's ``t_budget`` enter a round's decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client_selectors import ClientProfile, ClientSelector
from coordinator.aggregation.trust import capped_weights
from coordinator.config import JobConfig
from coordinator.measured_profile import measured_client_profile
from coordinator.round_verdicts import ClosedRound
from coordinator.selector_times import current_estimates, refresh_estimates
from coordinator.virtual_clock import VirtualPlan, keep_fastest_replies, plan_fastest
from fedbus.fleet import Fleet
from fedbus.fleet.virtual_round import RoundWork, simulate_round
from fedbus.protocol.formulas import fixed_steps, upload_bytes, value_dtype_of
from fedbus.protocol.messages import AgentProfile, TrainConfig, UpdateMeta

ProfileOf = Callable[[str], AgentProfile | None]


@dataclass
class RoundPlanner:
    config: JobConfig
    fleet: Fleet | None
    num_params: int
    profile_of: ProfileOf
    registered: set[str] = field(default_factory=set)  # agents the selector knows
    # Agents that reported they cannot run this job's code, with their reason: never
    # eligible again (coordinator.unable_agents).
    unable: dict[str, str] = field(default_factory=dict)
    _fleet_ids: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._fleet_ids = frozenset(p.client_id for p in self.fleet) if self.fleet else frozenset()

    # -- who may train ---------------------------------------------------------------------
    def trusted_weights(
        self, agents: list[str], counts: list[int], median_cap: float | None
    ) -> list[float]:
        """Reported example counts as aggregation weights, capped by the partition size
        each agent registered and the job's ``trust`` caps (coordinator/aggregation/trust.py)."""
        profiles = [self.profile_of(a) for a in agents]
        trust = self.config.trust
        return capped_weights(
            counts,
            [p.num_samples if p is not None else None for p in profiles],
            max_examples=trust.max_examples,
            cap_by_profile=trust.cap_by_profile,
            median_cap=median_cap,
        )

    def eligible(self, online: list[str], virtual_time: float | None) -> list[str]:
        """Online agents that may train now: able to run the job's code and, on the virtual
        clock, fleet members active now (the scheduler's grant is the flow's, after this)."""
        online = [a for a in online if a not in self.unable]
        if self.fleet is None or virtual_time is None:
            return online
        return [a for a in online if a in self._fleet_ids and self.is_active(a, virtual_time)]

    def is_active(self, agent: str, t: float) -> bool:
        return self.fleet is not None and self.fleet.by_id(agent).is_active(t)

    def skip_to_enough_active(self, online: list[str], virtual_time: float) -> float:
        """Virtual clock: when enough fleet members are active (FedScale waits for them).

        Steps of a minute, at most one 48 h trace cycle.
        """
        if self.fleet is None:
            return virtual_time
        for _ in range(48 * 60):
            if len(self.eligible(online, virtual_time)) >= self.config.clients_required:
                break
            virtual_time += 60.0
        return virtual_time

    def register_new_agents(
        self, selector: ClientSelector[Any], online: list[str], now: float
    ) -> None:
        """Tell the selector about agents it has not seen (``now``: the round's time)."""
        for agent in online:
            if agent in self.registered:
                continue
            profile = self.profile_of(agent)
            num_samples = (profile.num_samples if profile else None) or 1
            static: dict[str, float | str] = (
                {k: v for k, v in profile.static.items() if v is not None} if profile else {}
            )
            # A real agent's own measurements (step time, link rates) as its estimate.
            client = measured_client_profile(
                num_samples, static, self.config.local_steps, self.num_params
            )
            if self.fleet is not None:
                device = self.fleet.by_id(agent)
                times = simulate_round(
                    device, now, self.work(None), seed=self.config.seed, round_=0
                )
                client = ClientProfile(
                    num_samples=num_samples,
                    duration=times.total,
                    compute_time=times.t_comp,
                    comm_time=times.t_dl + times.t_ul,
                    static={**device.static, **static},
                )
            selector.register_client(agent, client)
            self.registered.add(agent)

    # -- on what ---------------------------------------------------------------------------
    def train_config(
        self, t_budget: float | None, local_steps: int | None = None, keep_frac: float = 1.0
    ) -> TrainConfig:
        c = self.config
        return TrainConfig(
            model=c.model,
            data=c.data,
            data_args=c.data_args,
            local_steps=c.local_steps if local_steps is None else local_steps,
            base_local_steps=c.local_steps,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            proximal_mu=c.proximal_mu,
            seed=c.seed,
            adaptive=c.adaptive_training,
            t_budget=t_budget or c.t_budget,
            budget_recheck_steps=c.budget_recheck_steps,
            ewma_lambda=c.ewma_lambda,
            min_payload_frac=c.min_payload_frac,
            max_steps_factor=c.max_steps_factor,
            run_phase_2=c.run_phase_2,
            keep_frac=keep_frac,
            error_feedback=c.error_feedback,
            value_dtype=c.value_dtype,
            clock=c.clock,
            time_model_params=c.time_model_params,
            package=c.package_sha256,
        )

    def work(self, config: TrainConfig | None, agent: str | None = None) -> RoundWork:
        """What a round costs on the time model (``time_model_params`` stands in for P).

        Steps as the agent will run them: a raised override is capped by its data size.
        """
        params = self.config.time_model_params or self.num_params
        steps = self.config.local_steps
        if config is not None:
            profile = self.profile_of(agent) if agent is not None else None
            num_train = profile.num_samples if profile and profile.num_samples else None
            steps = config.local_steps if num_train is None else fixed_steps(config, num_train)
        keep = config.keep_frac if config else 1.0
        upload = upload_bytes(params, keep, value_dtype_of(self.config.value_dtype))
        return RoundWork.dense(params, self.config.batch_size, steps, upload)

    # -- the virtual clock -----------------------------------------------------------------
    def virtual_plan(
        self,
        round_: int,
        selected: list[str],
        configs: dict[str, TrainConfig],
        virtual_time: float | None,
    ) -> VirtualPlan | None:
        """Virtual clock: estimate every candidate; non-adaptive rounds keep the K fastest."""
        if self.fleet is None or virtual_time is None:
            return None
        estimates = self.estimates(round_, selected, configs, virtual_time)
        k = self.config.num_participants if not self.config.adaptive_training else len(selected)
        return plan_fastest(estimates, virtual_time, k, self.is_active)

    def estimates(
        self, round_: int, agents: list[str], configs: dict[str, TrainConfig], virtual_time: float
    ) -> dict[str, float]:
        """Time-model round durations, the same numbers the agents will compute."""
        assert self.fleet is not None
        return {
            a: simulate_round(
                self.fleet.by_id(a),
                virtual_time,
                self.work(configs[a], a),
                seed=self.config.seed,
                round_=round_,
            ).total
            for a in agents
        }

    def current_selector_times(
        self, selector: ClientSelector[Any], agents: list[str], base: TrainConfig, now: float
    ) -> None:
        """Before a selection: the candidates' standard-work durations from their state now."""
        if self.fleet is not None:
            current_estimates(selector, self.fleet, agents, now, lambda a: self.work(base, a))

    def refresh_selector_times(
        self,
        selector: ClientSelector[Any],
        round_: int,
        agents: list[str],
        base: TrainConfig,
        virtual_time: float,
    ) -> None:
        """This round's time-model estimates to the selector, before it plans overrides."""
        if self.fleet is not None:
            refresh_estimates(
                selector,
                self.fleet,
                agents,
                virtual_time,
                lambda a: self.work(base, a),
                seed=self.config.seed,
                round_=round_,
            )

    def replan(
        self, round_: int, plan: VirtualPlan, configs: dict[str, TrainConfig], virtual_time: float
    ) -> VirtualPlan:
        """The dispatched agents' durations under their overridden work (steps, dropout)."""
        estimates = self.estimates(round_, plan.dispatched, configs, virtual_time)
        durations = {**plan.durations, **estimates}
        length = max(estimates.values(), default=plan.round_duration)
        return VirtualPlan(plan.dispatched, durations, plan.inactive, plan.not_dispatched, length)

    # -- who is kept -----------------------------------------------------------------------
    def choose_kept(
        self,
        closed: ClosedRound,
        plan: VirtualPlan | None,
        started: float,
        virtual_time: float | None,
        t_budget: float | None,
    ) -> tuple[list[str], dict[str, float], float | None]:
        """Which successful updates count, every agent's duration, the virtual round length."""
        k = self.config.num_participants
        replies = closed.replies
        durations = {a: duration(r.meta, r.received - started) for a, r in replies.items()}
        if virtual_time is None:
            return [a for a in closed.accepted if a in replies][:k], durations, None
        if plan is not None and not self.config.adaptive_training:
            # Non-adaptive: the K fastest were chosen up front; durations are the estimates.
            durations = {**plan.durations}
            kept = [a for a in plan.dispatched if a in replies]
            return kept, durations, max((durations[a] for a in kept), default=plan.round_duration)
        # Adaptive: keep the K fastest successful replies still active when they finish.
        fastest = keep_fastest_replies(
            {a: durations[a] for a in replies}, virtual_time, k, self.is_active
        )
        if plan is not None:
            durations = {**plan.durations, **durations}
        budget = t_budget or self.config.t_budget
        length = fastest.round_duration if fastest.dispatched else budget
        return fastest.dispatched, durations, length


def duration(meta: UpdateMeta, measured: float) -> float:
    """The agent's round duration: its reported timings when it has them, else measured."""
    reported = meta.timings.total or meta.timings.wall_duration
    return reported if reported > 0 else max(measured, 1e-3)
