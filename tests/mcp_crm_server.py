"""A tiny MCP server (stdio) for the durable agent tests: one tool, `lookup`, which
appends each call to `calls.log` beside this file (the tests copy it to a temporary
folder and start it from there)."""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("crm")


@server.tool()
def lookup(company: str) -> str:
    with (Path(__file__).parent / "calls.log").open("a", encoding="utf-8") as log:
        log.write(company + "\n")
    return f"{company}: 12 employees"


if __name__ == "__main__":
    server.run()
