"""`vrlhf COMMAND --help` and a mistyped flag are answered before torch, transformers or Gradio is imported (they
take seconds), for every command whose config lives in a light module (issue 21: "every CLI command checks its
arguments before the heavy imports where it can")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vrlhf.cli import COMMANDS, LIGHT_CONFIGS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "gradio")

PROBE = f"""
import contextlib, io, json, sys
HEAVY = {HEAVY!r}
from vrlhf.cli import main
out = dict()
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # --help
            code = e.code
    out[" ".join(argv)] = [code, err.getvalue(), [m for m in HEAVY if m in sys.modules]]
print(json.dumps(out))
"""


def test_flags_are_checked_before_heavy_imports():
    assert set(LIGHT_CONFIGS) >= {"pretrain", "tune", "eval", "sample", "export", "demo", "dpo", "train-reward",
                                  "eval-reward"}
    assert set(LIGHT_CONFIGS) <= set(COMMANDS)
    argvs = [[name, flag] for name in LIGHT_CONFIGS for flag in ("--bogus", "--help")]
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    for name in LIGHT_CONFIGS:
        code, err, heavy = results[f"{name} --bogus"]
        assert (code, err) == (2, f"vrlhf {name}: unrecognized arguments: --bogus (see --help)\n")
        assert heavy == [], f"vrlhf {name} --bogus imported {heavy}"
        code, err, heavy = results[f"{name} --help"]
        assert code == 0 and heavy == [], f"vrlhf {name} --help imported {heavy}"


def test_each_light_config_is_the_one_its_command_parses():
    """The pre-check must accept exactly what the command accepts: the command's module names the same class."""
    import importlib

    for name, target in LIGHT_CONFIGS.items():
        module_name, cls_name = target.split(":")
        command_module = importlib.import_module(COMMANDS[name][0].split(":")[0])
        assert getattr(command_module, cls_name) is getattr(importlib.import_module(module_name), cls_name), name
