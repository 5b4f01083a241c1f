"""The runner's task graph: the tasks checked, each one's dependents and its topological rank.

Private to ``confpipe.engine.runner``. Building a Graph is the whole check that a run can start:
unique keys, known dependencies (with close matches for a typo), and no cycle (named).
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from confpipe.errors import ConfigError

__all__ = ["Graph"]


class Node(Protocol):
    """What the graph reads of a task: its key and the keys it depends on."""

    @property
    def key(self) -> str: ...

    @property
    def deps(self) -> tuple[str, ...]: ...


N = TypeVar("N", bound=Node)


class Graph(Generic[N]):
    """The validated tasks: each one's distinct deps, its dependents and its topological rank."""

    def __init__(self, tasks: Sequence[N]) -> None:
        self.tasks: dict[str, N] = {}
        for task in tasks:
            if task.key in self.tasks:
                raise ValueError(f"duplicate task key {task.key!r}")
            self.tasks[task.key] = task
        self.deps = {key: tuple(dict.fromkeys(task.deps)) for key, task in self.tasks.items()}
        self.dependents: dict[str, list[str]] = {key: [] for key in self.tasks}
        for key, deps in self.deps.items():
            for dep in deps:
                if dep not in self.tasks:
                    close = difflib.get_close_matches(dep, self.tasks, n=3)
                    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise ValueError(f"task {key!r} depends on {dep!r}, which is not a task{hint}")
                self.dependents[dep].append(key)
        self.roots = [key for key, deps in self.deps.items() if not deps]
        # Kahn's algorithm, FIFO in input order: the order the runner uses with one thread.
        self.rank: dict[str, int] = {}
        waiting = {key: len(deps) for key, deps in self.deps.items()}
        ready = deque(self.roots)
        while ready:
            key = ready.popleft()
            self.rank[key] = len(self.rank)
            for dependent in self.dependents[key]:
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    ready.append(dependent)
        if len(self.rank) < len(self.tasks):
            cycle = " -> ".join(self._cycle())
            raise ConfigError(
                f"dependency cycle: {cycle} (each task depends on the next;"
                " remove one of these dependencies)"
            )

    def _cycle(self) -> list[str]:
        """One cycle among the unranked tasks, from its earliest task in input order, closed."""
        # Every unranked task waits on an unranked dep, so following them must loop.
        position = {key: i for i, key in enumerate(self.tasks)}
        node = next(key for key in self.tasks if key not in self.rank)
        path: list[str] = []
        seen: dict[str, int] = {}
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(dep for dep in self.deps[node] if dep not in self.rank)
        cycle = path[seen[node] :]
        first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]
