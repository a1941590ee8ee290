"""Which definition executes a run: the workflow versions a process has code for, and
the order in which every version of a workflow was registered in the catalogue.

A run is executed on the version it last ran on when this process has that version's
code. Otherwise it may move forward, never back: to a newer version (registered later in
the catalogue) that declares it can take the run over (`.Migrate(old, ...)` or
`.Compatible(old)`), or, for a flow, to the newest version here, which `adopt` then
checks step by step (a flow's cursor can be checked against the new graph; an
`.Execute()` run's journal cannot, so it needs the declaration). A run on a version newer
than every one here, or on a version this process cannot take, is left to others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from holon.definition.builder import Workflow
from holon.errors import WorkflowDefinitionError
from holon.stores.base import RunRecord

__all__ = ["Definitions"]


class Definitions:
    """The definitions a process executes runs of, by workflow name and version.

    Args:
        workflows: the definitions this process has the code of (several versions of a
            name may be given).
        order: for each name, every version registered in the catalogue, oldest first
            (versions without code here included); a name without one orders its
            versions as given here.
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        order: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._versions: dict[str, dict[str, Workflow]] = {}
        for workflow in workflows:
            known = self._versions.setdefault(workflow.name, {})
            other = known.get(workflow.version)
            if other is not None and other is not workflow:
                raise WorkflowDefinitionError(
                    f"workflow {workflow.name!r} version {workflow.version!r} is given twice "
                    "with different definitions; a changed workflow needs a new version",
                    workflow=workflow.name,
                )
            known[workflow.version] = workflow
        self._order: dict[str, list[str]] = {}
        for name in self._versions:
            self.set_order(name, (order or {}).get(name, ()))

    def add(self, workflow: Workflow) -> None:
        """Serve `workflow` too (a child workflow a step started by giving it): its
        version is the newest of its name unless the catalogue said otherwise."""
        known = self._versions.setdefault(workflow.name, {})
        if known.get(workflow.version) is workflow:
            return
        known.setdefault(workflow.version, workflow)
        if workflow.version not in self._order.get(workflow.name, []):
            self.set_order(workflow.name, [*self._order.get(workflow.name, []), workflow.version])

    def __repr__(self) -> str:
        listed = {name: list(versions) for name, versions in self._versions.items()}
        return f"Definitions({listed})"

    @property
    def names(self) -> list[str]:
        """The workflows this process executes runs of."""
        return list(self._versions)

    def __contains__(self, name: object) -> bool:
        return name in self._versions

    def versions(self, name: str) -> list[Workflow]:
        """The versions of `name` this process has, oldest first (catalogue order)."""
        here = self._versions.get(name, {})
        return [here[v] for v in self._order.get(name, []) if v in here]

    def order(self, name: str) -> list[str]:
        """Every version of `name` known to the catalogue, oldest first."""
        return list(self._order.get(name, []))

    def set_order(self, name: str, registered: Sequence[str]) -> None:
        """Take the catalogue's order of the versions of `name` (oldest first). Versions
        here that the catalogue does not list yet come after it, in the order given."""
        here = self._versions.get(name, {})
        ordered = list(dict.fromkeys(registered))
        ordered += [v for v in here if v not in ordered]
        self._order[name] = ordered

    def get(self, name: str, version: str) -> Workflow | None:
        """The definition of `name` at `version`, if this process has its code."""
        return self._versions.get(name, {}).get(version)

    def newest(self, name: str) -> Workflow | None:
        """The newest version of `name` this process has."""
        versions = self.versions(name)
        return versions[-1] if versions else None

    def pick(self, record: RunRecord) -> Workflow | None:
        """The definition to execute `record` on here; None when it must be left to
        another process (see the module docstring)."""
        return self.pick_for(record.workflow, record.current_version)

    def pick_for(self, name: str, version: str) -> Workflow | None:
        """The definition to execute a run of `name` at `version` on here, or None."""
        exact = self.get(name, version)
        if exact is not None:
            return exact
        order = self._order.get(name, [])
        # A version the catalogue does not list was never registered: older than any.
        rank = order.index(version) if version in order else -1
        newer = [w for w in self.versions(name) if order.index(w.version) > rank]
        for workflow in reversed(newer):
            if workflow.takes_over(version):
                return workflow
        if newer and newer[-1].execute_fn is None:
            return newer[-1]
        return None

    def limit(self, name: str) -> int | None:
        """The global concurrency limit of workflow `name` (`Workflow.Concurrency`): the
        newest version's, which is the one a deploy changes."""
        newest = self.newest(name)
        return newest.max_running if newest is not None else None

    def limits(self) -> dict[str, int]:
        """Every workflow's global concurrency limit, for those that have one."""
        return {n: cap for n in self.names if (cap := self.limit(n)) is not None}

    def claimable(self, name: str) -> list[str]:
        """The versions of `name` whose runs this process may execute, oldest first."""
        return [v for v in self._order.get(name, []) if self.pick_for(name, v) is not None]
