"""`vrlhf label` refuses, in one line naming the flag, a port it cannot serve on and a guidelines file it should not
read: a FIFO (which would block forever), /dev/zero (endless), a 1.5 GB file (refused unread) (issue 21, row 5)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from labfix import ROOT, refusal


def test_a_busy_or_impossible_port_names_port(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert refusal(capsys, ["label", "--db", str(db), "--port", str(port)]) == (
            f"vrlhf label: --port {port}: 127.0.0.1:{port} is in use (another server, perhaps another vrlhf label): "
            "pass another --port, or --port 0 for any free one")
    assert refusal(capsys, ["label", "--db", str(db), "--port", "70000"]) == (
        "vrlhf label: --port 70000: a port is a number from 1 to 65535 (or 0: any free port)")
    assert not db.exists()  # refused before the database is touched


def test_guidelines_that_are_not_a_small_regular_file(tmp_path, capsys):
    db = str(tmp_path / "labels.sqlite")
    assert refusal(capsys, ["label", "--db", db, "--guidelines", "/dev/zero"]) == (
        "vrlhf label: --guidelines /dev/zero: a device, not a regular file: give a text file")
    assert refusal(capsys, ["label", "--db", db, "--guidelines", f"captioning={tmp_path}"]) == (
        f"vrlhf label: --guidelines {tmp_path}: a folder, not a regular file: give a text file")
    huge = tmp_path / "huge.md"
    with open(huge, "wb") as f:  # 1.5 GB, sparse: costs no disk; reading it whole would take seconds and memory
        f.truncate(1_500_000_000)
    start = time.perf_counter()
    assert refusal(capsys, ["label", "--db", db, "--guidelines", str(huge)]) == (
        f"vrlhf label: --guidelines {huge}: 1500000000 bytes; at most 400000 are read (is it the right file?)")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "labels.sqlite").exists()


def test_a_fifo_as_guidelines_or_config_does_not_hang(tmp_path):
    fifo = tmp_path / "guidelines.md"
    os.mkfifo(fifo)
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for argv in (["label", "--db", str(tmp_path / "labels.sqlite"), "--guidelines", str(fifo)],
                 ["export", "--config", str(fifo), "--db", str(tmp_path / "labels.sqlite"), "--out", "x"]):
        run = subprocess.run([sys.executable, "-m", "vrlhf.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)  # before: blocked forever in open()
        flag = "--guidelines" if argv[0] == "label" else "--config"
        assert run.returncode == 2 and run.stderr == (
            f"vrlhf {argv[0]}: {flag} {fifo}: a FIFO (named pipe), not a regular file: give a text file\n")


@pytest.mark.parametrize("size", [10, 99_000])
def test_ordinary_guidelines_still_load(tmp_path, size):
    from labeler.app import load_guidelines

    (tmp_path / "g.md").write_text("# Pick the truer caption\n" + "x" * size)
    assert load_guidelines([str(tmp_path / "g.md")])[None].startswith("# Pick the truer caption")
