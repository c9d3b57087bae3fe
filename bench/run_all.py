"""Run every benchmark in turn (`make bench`); each prints the markdown table quoted in the README."""

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_cider.py", "bench_sampling.py", "bench_labeler.py", "bench_reward_model.py", "bench_tuner.py",
           "bench_backends.py"]

if __name__ == "__main__":
    here = Path(__file__).parent
    failed = []
    for name in BENCHES:
        print(f"\n### {name}\n", flush=True)
        if subprocess.call([sys.executable, str(here / name)]) != 0:
            failed.append(name)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
