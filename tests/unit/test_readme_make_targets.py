"""Every `make <target>` the READMEs name is a target of the Makefile (checked with `make -n`,
which prints the target's commands without running them)."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).parents[2]
NAMED = re.compile(r"\bmake ([a-z][a-z-]*)")


def test_every_make_target_in_the_readmes_exists() -> None:
    named = set()
    for readme in (REPO / "README.md", REPO / "bench" / "README.md"):
        named |= set(NAMED.findall(readme.read_text()))
    assert {"demo", "test", "bench", "bench-peers"} <= named
    for target in sorted(named):
        dry = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"
    peers = subprocess.run(["make", "-n", "bench-peers"], cwd=REPO, capture_output=True, text=True)
    assert '-e ".[dev,bench-peers]"' in peers.stdout
