"""The planner: a manifest → the exact list of jobs it means (matrices, sweeps, templates, names,
identities). `plan(path_or_manifest)` is the entry point (planning.py); jobs.py holds what it
returns."""

from __future__ import annotations

from kaio_spec.planner.jobs import SPEC_KEYS, Action, Plan, PlannedJob
from kaio_spec.planner.planning import check, plan

__all__ = ["SPEC_KEYS", "Action", "Plan", "PlannedJob", "check", "plan"]
