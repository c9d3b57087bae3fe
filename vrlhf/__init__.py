"""visual-rlhf: the shared core (policies, tasks, metrics, data). Imports no stage."""

__version__ = "0.1.0"
