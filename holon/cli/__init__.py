"""The `holon` command line: run, find and steer runs from a terminal (`holon.cli.main`)."""
