"""How a run advances: the engine and the collaborators it composes.

`execution` is what a process keeps about a run it executes, and `transitions` the
writes that move a run on (commit, finish, fail, halt). Below them sit the step's view
(`context`, and `imperative`/`task_state` for `.Execute()`) and the rules of waits
(`waits`, `decisions`). The collaborators each do one part of a run's life: `attempts`
(retries and timeouts), `fan_out` (`Parallel`), `compensation` (sagas), `suspension`
(opening a wait), `timers` (a wait's deadline), `versioning` (a run meeting a changed
definition) and `leases` (heartbeats). They depend on `transitions`, never on the
engine; `engine` composes them into the loop that runs one leased run to its next halt.
"""
