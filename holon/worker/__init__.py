"""Processes dedicated to executing runs.

`collector` sets up Python's garbage collector for a process with many runs in flight.
"""
