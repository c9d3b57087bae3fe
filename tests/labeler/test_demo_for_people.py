"""`vrlhf demo` without --simulate samples `--comparison_k` candidates for people too (rankings of 4 by default, as
the simulated rounds label), so a newcomer can learn rankings in the demo; it used to sample pairs whatever was
asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from labfix import ROOT, free_port

from labeler.store import Store


def test_the_demo_serves_the_comparison_kind_of_the_loop(tmp_path):
    from vrlhf.shapes import ShapesConfig, write_shapes

    write_shapes(ShapesConfig(out=str(tmp_path / "shapes"), n=30, test_fraction=0.2))
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(tmp_path / "demo.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vrlhf.cli", "demo", "--data", str(tmp_path / "shapes"),
                                 "--workdir", str(tmp_path / "work"), "--tasks", "captioning", "--candidates", "3",
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the demo's labeling app did not start in 240 s")
    finally:
        proc.kill()
        proc.wait()
    store = Store(str(tmp_path / "work" / "labels.sqlite"))
    assert [(r["task"], r["k"], r["comparisons"]) for r in store.rounds()] == [("captioning", 4, 3)]  # --comparison_k
    assert "Rank the candidates best first" in (tmp_path / "demo.log").read_text()
