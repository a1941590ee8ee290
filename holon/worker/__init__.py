"""Processes dedicated to executing runs.

`worker` is the `Worker`: one process's executor for the runs of many workflows and
versions, with one claim loop, one heartbeat loop and one store connection.
`collector` sets up Python's garbage collector for a process with many runs in flight.
"""
