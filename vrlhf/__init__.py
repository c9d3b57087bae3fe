"""visual-rlhf: the shared core (policies, tasks, metrics, data). Imports no stage."""

from pathlib import Path

__version__ = "0.1.0"
REPO = Path(__file__).resolve().parent.parent  # the source checkout: data/demo/ lives here
