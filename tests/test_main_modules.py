"""Every module that runs as `python -m MODULE` goes through `vrlhf.errors.run_command`: a problem the user can fix
(a bad flag, a stray argument) is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vrlhf", "labeler", "reward_model", "tuner", "loop")
# vrlhf.cli's main runs each command through run_command itself (an unknown command is its own one line, exit 2)
OWN_ERRORS = {"vrlhf.cli"}


def main_blocks() -> dict[str, ast.If]:
    """module name -> its `if __name__ == "__main__":` block, for every module of our packages that has one."""
    blocks = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                        and getattr(node.test.left, "id", None) == "__name__"
                        and getattr(node.test.comparators[0], "value", None) == "__main__"):
                    blocks[".".join(path.relative_to(ROOT).with_suffix("").parts)] = node
    return blocks


def test_every_main_block_runs_through_run_command():
    blocks = main_blocks()
    assert {"labeler.users", "labeler.export", "loop.demo", "tuner.train", "vrlhf.tasks.caption_oracle"} <= set(blocks)
    bare = [name for name, block in blocks.items() if name not in OWN_ERRORS and not any(
        isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run_command" for n in ast.walk(block))]
    assert bare == [], f"__main__ without run_command (a VrlhfError would print a traceback): {bare}"


@pytest.mark.parametrize("module, argv, message", [
    ("labeler.export", ["--bogus"], "vrlhf export: unrecognized arguments: --bogus (see --help)"),
    ("labeler.users", ["--bogus"], "vrlhf annotators: unknown sub-command '--bogus'"),
    ("vrlhf.tasks.caption_oracle", ["--bogus"],
     "python -m vrlhf.tasks.caption_oracle: unrecognized arguments: --bogus (see --help)"),
])
def test_a_bad_argument_is_one_line_and_exit_2(module, argv, message):
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(message) and len(run.stderr.strip().splitlines()) == 1, run.stderr
