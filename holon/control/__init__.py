"""How people start, steer and find runs.

`runner` starts runs of a workflow and, unless told not to, executes them in its own
task group; `handle` is one run seen from any process; `operator` applies the verbs
that write without a lease (pause, resume, stop, decisions, events); `steward` keeps the
catalogue of workflows in the store (`catalogue` is one entry of it).
"""
