"""The multi-job scheduler: exclusive holds, eligibility, policy order, visible reasons."""

from __future__ import annotations

import random

import pytest

from coordinator.agent_table import AgentTable
from coordinator.eligibility import AgentAttributes, Requirements, is_eligible
from coordinator.scheduler import JobDemand, Policy, Scheduler, SchedulerError

GPU = Requirements(accelerator=("cuda",))


def pool(cpus: int, gpus: int, capacity: int = 1) -> AgentTable:
    agents = [AgentAttributes(f"c{i:03d}", "cpu", capacity=capacity) for i in range(cpus)]
    agents += [AgentAttributes(f"g{i:03d}", "cuda", capacity=capacity) for i in range(gpus)]
    return AgentTable(agents)


def scheduler(policy: str, table: AgentTable, *jobs: JobDemand) -> Scheduler:
    s = Scheduler(policy, seed=3)
    s.set_table(table)
    for job in jobs:
        s.add_job(job)
    return s


def test_an_uncontended_job_may_sample_every_eligible_agent() -> None:
    s = scheduler("fifo", pool(5, 3), JobDemand("gpu-job", GPU, demand=2, needed=2))
    grant = s.grant("gpu-job")
    assert grant.agents == ("g000", "g001", "g002")
    assert grant.reason is None and grant.eligible == 3


def test_agents_held_by_one_job_are_never_granted_to_another() -> None:
    s = scheduler(
        "fifo", pool(6, 0), JobDemand("a", demand=4, needed=2), JobDemand("b", demand=4, needed=2)
    )
    first = s.grant("a")
    s.hold("a", first.agents[:4])
    second = s.grant("b")
    assert not set(second.agents) & set(first.agents[:4])
    assert len(second.agents) == 2 and second.reason is None
    with pytest.raises(SchedulerError, match="held by \\['a'\\]"):
        s.hold("b", first.agents[:1])
    assert s.holds["b"] == frozenset()  # the refused hold changed nothing


def test_releasing_a_hold_returns_the_agents_to_the_pool() -> None:
    s = scheduler(
        "fifo", pool(4, 0), JobDemand("a", demand=4, needed=4), JobDemand("b", demand=4, needed=4)
    )
    s.hold("a", s.grant("a").agents)
    assert s.grant("b").reason is not None
    s.hold("a", ())
    # b's turn: a is waiting again but b... a is ahead in FIFO and claims first.
    assert s.grant("b").agents == ()
    s.remove_job("a")
    assert len(s.grant("b").agents) == 4


def test_a_job_with_capacity_advertised_shares_the_agent() -> None:
    s = scheduler(
        "fifo",
        pool(2, 0, capacity=2),
        JobDemand("a", demand=2, needed=2),
        JobDemand("b", demand=2, needed=2),
    )
    s.hold("a", s.grant("a").agents)
    s.hold("b", s.grant("b").agents)
    assert s.holders("c000") == {"a", "b"}
    s.add_job(JobDemand("c", demand=1, needed=1))
    assert s.grant("c").agents == ()


def test_requirements_no_agent_meets_wait_with_a_reason_and_block_nobody() -> None:
    s = scheduler(
        "fifo",
        pool(4, 0),
        JobDemand("needs-gpu", GPU, demand=2, needed=2),
        JobDemand("cpu-ok", demand=4, needed=4),
    )
    waiting = s.grant("needs-gpu")
    assert waiting.agents == () and waiting.eligible == 0
    assert waiting.reason == (
        "requirements (accelerator in ['cuda']) met by 0 of 4 online agents; the job needs 2"
    )
    assert len(s.grant("cpu-ok").agents) == 4  # the job first in line does not block it


@pytest.mark.parametrize(
    ("policy", "first"),
    [("fifo", "big"), ("srsf", "short"), ("scarcity", "gpu-only")],
)
def test_the_policy_decides_who_is_served_first(policy: str, first: str) -> None:
    jobs = [
        JobDemand("big", demand=6, needed=6, remaining_rounds=50),
        JobDemand("short", demand=6, needed=6, remaining_rounds=1),
        JobDemand("gpu-only", GPU, demand=4, needed=4, remaining_rounds=20),
    ]
    s = scheduler(policy, pool(4, 4), *jobs)
    assert s.order()[0] == first
    # The first in line is granted enough to start; the others reserve nothing it claimed.
    assert s.grant(first).reason is None


def test_random_policy_is_seeded_and_fixed_at_arrival() -> None:
    jobs = [JobDemand(f"j{i}", demand=1, needed=1) for i in range(6)]
    orders = [scheduler("random", pool(3, 0), *jobs).order() for _ in range(2)]
    assert orders[0] == orders[1] and orders[0] != [j.job for j in jobs]


def test_scarcity_leaves_scarce_agents_to_the_jobs_that_need_them() -> None:
    jobs = [JobDemand("generic", demand=6, needed=6), JobDemand("gpu-job", GPU, demand=3, needed=3)]
    table = pool(4, 3)
    # FIFO: the generic job, first in line, takes GPUs too, and the GPU job must wait.
    fifo = scheduler("fifo", table, *jobs)
    granted = fifo.grant("generic")
    assert granted.reason is None
    fifo.hold("generic", granted.agents[:6])
    assert fifo.grant("gpu-job").reason is not None
    # Scarcity: the GPU job is served first; its claim keeps the GPUs from the generic job.
    scarcity = scheduler("scarcity", table, *jobs)
    assert scarcity.order() == ["gpu-job", "generic"]
    generic = scarcity.grant("generic")
    assert set(generic.agents) == {"c000", "c001", "c002", "c003"}
    assert generic.reason == (
        "4 of the 6 agents it needs are free; the others are claimed by jobs ahead in the queue"
    )
    assert scarcity.grant("gpu-job").agents == ("g000", "g001", "g002")


def test_the_head_of_the_queue_keeps_its_claim_while_it_gathers_agents() -> None:
    s = scheduler(
        "fifo",
        pool(6, 0),
        JobDemand("head", demand=5, needed=5),
        JobDemand("tail", demand=2, needed=2),
    )
    s.hold("tail", ("c000", "c001", "c002"))  # tail mid-round on 3 of 6
    assert s.grant("head").reason is not None
    s.hold("tail", ())
    # tail asks again first: head, ahead in line, claims 5 of 6; tail cannot start.
    assert s.grant("tail").reason is not None
    assert s.grant("head").reason is None


def test_a_job_may_keep_its_own_held_agents_in_its_next_grant() -> None:
    s = scheduler("fifo", pool(3, 0), JobDemand("a", demand=3, needed=3))
    s.hold("a", ("c000",))  # e.g. a validation still out
    assert len(s.grant("a").agents) == 3


def test_unknown_policy_and_job_are_local_errors() -> None:
    with pytest.raises(SchedulerError, match="unknown policy 'lifo'"):
        Scheduler("lifo")
    with pytest.raises(SchedulerError, match="unknown job"):
        Scheduler().grant("ghost")


@pytest.mark.parametrize("policy", [p.value for p in Policy])
def test_random_event_sequences_never_double_book_or_break_eligibility(policy: str) -> None:
    # Prepare: 60 agents of three kinds, 6 jobs with different requirements.
    rng = random.Random(11)
    kinds = ["cpu", "cuda", "jetson"]
    agents = [
        AgentAttributes(
            f"a{i:02d}", kinds[i % 3], memory_gb=float(4 * (i % 4)), capacity=1 + (i % 7 == 0)
        )
        for i in range(60)
    ]
    table = AgentTable(agents)
    reqs = [
        Requirements(),
        GPU,
        Requirements(min_memory_gb=8),
        Requirements(accelerator=("jetson",), min_memory_gb=4),
    ]
    s = scheduler(
        policy,
        table,
        *(JobDemand(f"j{i}", reqs[i % 4], demand=rng.randint(2, 15), needed=2) for i in range(6)),
    )
    by_id = {a.agent: a for a in agents}
    # Execute: jobs start and end rounds in a random order.
    for _ in range(500):
        job = f"j{rng.randrange(6)}"
        if s.holds[job]:
            s.hold(job, ())
            continue
        grant = s.grant(job)
        if grant.reason is None:
            s.hold(job, rng.sample(grant.agents, min(len(grant.agents), rng.randint(2, 15))))
        # Assert: every hold is eligible, no agent over its capacity.
        for j, held in s.holds.items():
            req = s.jobs[j].demand.requirements
            assert all(is_eligible(req, by_id[a]) for a in held)
        for agent in agents:
            assert len(s.holders(agent.agent)) <= agent.capacity


def test_an_ended_jobs_stragglers_stay_held_until_released() -> None:
    s = scheduler(
        "fifo", pool(3, 0), JobDemand("a", demand=3, needed=3), JobDemand("b", demand=3, needed=3)
    )
    s.hold("a", s.grant("a").agents)
    s.remove_job("a", keep=["c002"])  # c002 still trains a's last round
    grant = s.grant("b")
    assert grant.agents == ("c000", "c001")
    assert grant.reason == "2 of the 3 agents it needs are free; the others are held by jobs a"
    s.release("b", ["c000"])  # a running job's holds are not released this way
    s.release("a", ["c002"])
    assert s.grant("b").reason is None and "a" not in s.holds
