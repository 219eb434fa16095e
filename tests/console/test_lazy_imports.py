"""`edge-agent --help` stays fast: the console's web stack, Babel and rich are imported only
by the commands that use them."""

from __future__ import annotations

import subprocess
import sys

from tests.console.unit import env


def test_help_imports_no_web_stack() -> None:
    code = (
        "import sys; from edge_agent.cli import app; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2', 'babel', 'rich', "
        "'sqlite_utils', 'asyncio', 'paho', 'bleak', 'serial', 'pydantic') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True
    )
    assert done.stdout.strip() == "[]"
