"""What a workflow is: the layer that holds definitions, and nothing that runs them.

`builder` makes the immutable `Workflow`; `steps` holds what the builder understood of
each step; `directives` are what a step returns (`Next`, `Wait`, `Parallel`, `END`);
`conditions` are what a `Wait` waits for; `policies` are retries, timeouts and
compensation; `mermaid` draws a flow; `declarative` compiles YAML or JSON documents to
the same `Workflow`. Nothing here imports the runtime, the control layer or a store.
"""
