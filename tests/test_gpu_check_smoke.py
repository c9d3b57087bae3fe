"""scripts/gpu_check.py, the prepared GPU check, runs its steps tiny on the CPU (`--cpu --smoke`): the script a GPU
session runs blind is not broken. The quick run (in the suite) tunes the demo captioner and resumes it, and samples a
tiny LLaVA; VRLHF_FULL_SMOKE=1 runs every step (TRL's GRPO and DPO, fp16, reward model, two processes)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def smoke(tmp_path, *options: str) -> list[list[str]]:
    """The table's rows (cells) after a smoke run that must succeed."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu", "--smoke", "--work",
                           str(tmp_path), "--budget", "3000", "--step_timeout", "1200", *options],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| step")]


def test_the_gpu_check_tunes_resumes_and_samples_on_the_cpu(tmp_path):
    rows = {row[0]: row for row in smoke(tmp_path, "--only", "demo,llava")}
    assert set(rows) == {"demo no", "llava sample+log_prob"}
    demo = rows["demo no"]
    assert demo[-1] == "ok, resumed" and float(demo[1]) > 0  # samples/s
    shares = [float(cell.rstrip("%")) for cell in demo[2:6]]  # sample, reward, forward-backward, other
    assert 90 <= sum(shares) <= 110 and shares[0] > 0 and shares[2] > 0
    assert abs(float(demo[6])) < 1e-4  # the KL of the first step: the policy against its identical anchor
    assert rows["llava sample+log_prob"][-1].startswith("ok, sampled vs teacher-forced log p within")


@pytest.mark.skipif(not os.environ.get("VRLHF_FULL_SMOKE"), reason="every step: minutes on a CPU (VRLHF_FULL_SMOKE=1)")
def test_every_step_of_the_gpu_check_runs_on_the_cpu(tmp_path):
    rows = smoke(tmp_path, "--processes", "2")
    assert [row[0] for row in rows] == [
        "demo no", "vitb-gpt2 no", "demo fp16", "demo no x2", "vitb-gpt2 no x2", "llava sample+log_prob",
        "paligemma sample+log_prob", "grpo (trl)", "dpo (trl)", "reward model (1 epoch)"]
    assert all(row[-1].startswith("ok") for row in rows), rows
