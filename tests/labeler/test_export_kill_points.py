"""`vrlhf export` killed at every step of putting a finished export in place: `--out` holds the previous export or
the new one, whole, and the next run sweeps what the killed one left beside it (issue 21, row 6).

The kill is injected with an audit hook (`sys.addaudithook`): once the new export's manifest is written, the
writer SIGKILLs itself before its N-th step (a rename, the atomic exchange, the removal of what it replaced), for
N = 1, 2, ... until a run gets through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from labfix import ROOT, fill

from labeler.export import export
from labeler.store import Store
from reward_model.data import load_export
from vrlhf.exports import read_manifest

KILLER = r"""
import os, signal, sys
kill_at, argv = int(sys.argv[1]), sys.argv[2:]
CHANGES = {"os.rename", "shutil.rmtree", "ctypes.dlsym"}  # dlsym: the atomic exchange is looked up, then called
armed, seen = False, 0

def hook(event, args):
    global armed, seen
    if event == "open" and str(args[0]).endswith("manifest.json") and "w" in str(args[1]):
        armed = True  # the new export is complete: from here on it is put in place
    elif armed and event in CHANGES:
        seen += 1
        if seen == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get("NO_EXCHANGE"):  # a system without an atomic exchange: two renames
    import vrlhf.exports
    vrlhf.exports._exchange = lambda a, b: False
sys.addaudithook(hook)
from labeler.export import main
sys.exit(main(argv))
"""


def state(out) -> int | None:
    """How many pairs `out` holds, checked whole (manifest, pairs and the files they name), or None if missing."""
    if not out.exists():
        return None
    pairs = read_manifest(out)["pairs"]
    assert len(load_export(out)) == pairs and len((out / "audit.jsonl").read_text().splitlines()) == pairs
    return pairs


@pytest.mark.parametrize("swap", ["atomic exchange", "two renames"])
def test_a_kill_at_any_step_leaves_the_old_or_the_new_export(tmp_path, swap):
    db, out = tmp_path / "db.sqlite", tmp_path / "prefs"
    store = Store(db)
    fill(store, 4, k=2)
    for _ in range(2):
        store.vote(store.next_comparison("ann")["token"], "a", annotator="ann")
    assert export(store, out, "jsonl")["pairs"] == 2  # the previous export
    for _ in range(2):
        store.vote(store.next_comparison("ann")["token"], "b", annotator="ann")
    env = os.environ | {"PYTHONPATH": str(ROOT)} | ({"NO_EXCHANGE": "1"} if swap == "two renames" else {})
    seen = []
    for kill_at in range(1, 40):
        cmd = [sys.executable, "-c", KILLER, str(kill_at), "--db", str(db), "--out", str(out), "--format", "jsonl"]
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode == 0:
            break
        assert run.returncode == -signal.SIGKILL, run.stderr
        left = sorted(p.name.split("-")[0] for p in tmp_path.glob(".prefs.*"))
        if swap == "atomic exchange":  # no moment without an export: the old one or the new one, whole
            assert state(out) in (2, 4), (kill_at, left)
        seen.append((state(out), tuple(left)))
        export(store, out, "jsonl")  # the next run puts its export in place and sweeps the killed run's leftovers
        assert state(out) == 4 and not list(tmp_path.glob(".prefs.*"))
    else:
        pytest.fail("the export never finished")
    assert state(out) == 4 and not list(tmp_path.glob(".prefs.*"))
    assert len(seen) >= 2, seen  # several steps were interrupted
    if swap == "atomic exchange":
        assert seen[0] == (2, (".prefs.partial",))  # killed before the exchange: the new export is left beside
        assert (4, (".prefs.partial",)) in seen  # killed after it, while the old one was being removed
    else:
        assert (None, (".prefs.old", ".prefs.partial")) in seen  # between the renames: the next run repairs it
