"""The planner: a manifest → the exact list of jobs it means (matrices, sweeps, templates, names,
identities). `plan(path_or_manifest)` is the entry point; see planning.py for the passes."""

from __future__ import annotations

from kaio_spec.planner.planning import SPEC_KEYS, Action, Plan, PlannedJob, plan

__all__ = ["SPEC_KEYS", "Action", "Plan", "PlannedJob", "plan"]
