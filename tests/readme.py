"""The README's examples, run: its curl lines read from a section, each run in bash with curl's
stand-in (tests/bin/curl, which logs each status: CI machines may have no curl)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import BASE_DIR


def commands_of(section: str) -> list[str]:
    """Each curl command of the section's bash blocks: continued lines (a trailing backslash, or
    a quote still open) joined, comments left out."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        current = ""
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current += line[:-1] + " " if line.endswith("\\") else line + "\n"
            if line.endswith("\\"):
                continue
            try:
                shlex.split(current, comments=True)
            except ValueError:
                continue  # a quote is still open: the command goes on
            if current.startswith("curl "):
                commands.append(current.strip())
            current = ""
    return commands


def readme_section(heading: str) -> str:
    """The README's section under `heading` (e.g. "## Routing"), to the next heading of its
    level or above (but the title's: a line "# ..." in a code block is a comment)."""
    text = (Path(BASE_DIR) / "README.md").read_text()
    start = text.index(heading + "\n")
    level = heading.split(" ")[0]
    ends = [text.find("\n" + "#" * n + " ", start + 1) for n in range(2, len(level) + 1)]
    return text[start : min([e for e in ends if e != -1], default=len(text))]


def run_curl(command: str, variables: dict[str, str], log: Path) -> tuple[int, Any]:
    """Run one curl line in bash, with the README's variables set and curl's stand-in
    (tests/bin/curl, which logs each status); the status, and the answer as JSON if it is."""
    env = {
        **os.environ,
        **variables,
        "PATH": f"{Path(BASE_DIR) / 'tests' / 'bin'}:{Path(sys.executable).parent}:"
        f"{os.environ['PATH']}",
        "CURL_LOG": str(log),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (command, done.stderr[-2000:])
    status = json.loads(log.read_text().splitlines()[-1])["status"]
    try:
        return status, json.loads(done.stdout or "null")
    except json.JSONDecodeError:
        return status, done.stdout


def documents(text: str) -> list[Any]:
    """The JSON documents curl printed back to back."""
    documents, at, decoder, text = [], 0, json.JSONDecoder(), text.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a README's shell block in bash (errexit, pipefail); what it printed."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, script + "\n" + done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout
