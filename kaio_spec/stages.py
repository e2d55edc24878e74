"""Jobs' `needs` as a graph: the stages they run in, and the cycle that makes stages impossible.

A job's stage is one more than the highest stage of the jobs it needs (0 for a job that needs
none), so every job of a stage can start once the stages before it have completed. Pure
functions over `{key: [needed keys]}`, used by the manifest's checks, the planner and `kaio plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["find_cycle", "stage_of"]


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as the keys along it, the first repeated at the end (`[a, b, a]`), or None.
    Keys needed but not in `needs` are ignored (the unknown-key check reports them). The
    cycle found first in the mapping's order is the one reported, so the message is stable."""
    done: set[str] = set()
    for start in needs:
        if start in done:
            continue
        path: list[str] = []
        on_path: dict[str, int] = {}
        # Iterative depth-first search: (key, iterator over what it needs).
        stack = [(start, iter(needs[start]))]
        on_path[start] = 0
        path.append(start)
        while stack:
            key, pending = stack[-1]
            nxt = next((n for n in pending if n in needs and n not in done), None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.pop(key)
                done.add(key)
            elif nxt in on_path:
                return [*path[on_path[nxt] :], nxt]
            else:
                on_path[nxt] = len(path)
                path.append(nxt)
                stack.append((nxt, iter(needs[nxt])))
    return None


def stage_of(needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each key's stage (0: needs nothing). `needs` must have no cycle (find_cycle) and name
    only its own keys."""
    stages: dict[str, int] = {}
    for start in needs:
        stack = [start]
        while stack:
            key = stack[-1]
            if key in stages:
                stack.pop()
                continue
            waiting = [n for n in needs[key] if n not in stages]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            stages[key] = 1 + max((stages[n] for n in needs[key]), default=-1)
    return stages
