"""docs/jobs.md is what the job model says: regenerated, every field explained."""

from __future__ import annotations

from pathlib import Path

from coordinator.config import JobConfig
from coordinator.job_reference import JOB_FIELDS, render

REPO = Path(__file__).resolve().parents[3]


def test_docs_jobs_md_is_generated_from_the_job_model() -> None:
    page = (REPO / "docs" / "jobs.md").read_text()
    assert page == render(), "run: python -m coordinator.job_reference --write docs/jobs.md"


def test_every_job_field_has_a_row_with_its_default() -> None:
    page = render()
    assert set(JOB_FIELDS) == set(JobConfig.model_fields)
    assert "| `rounds` | `int` (>= 1) | `20` |" in page
    assert "| `clock` | `Literal['wall', 'virtual']` | `wall` |" in page
