"""Dataclass configs: defaults in code, a YAML file on top (`--config`), `--key=value` overrides last."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser
from vrlhf.errors import ConfigError


def parse_config(cls, argv: list[str] | None = None, prog: str | None = None):
    """Parse `argv` into an instance of the dataclass `cls`.

    Every field's `metadata["help"]` becomes its `--help` line. A YAML file given with `--config FILE`
    sets values first; flags on the command line override it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(cls, prog=prog)
    parser.add_argument("--config", default=None, help="YAML file of field values; flags given here override it")
    known = {f.name for f in dataclasses.fields(cls)}
    config_path = _pop_config(argv)
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)[0]  # [1] would be the (unused) --config namespace


def _pop_config(argv: list[str]) -> str | None:
    """Remove `--config FILE` / `--config=FILE` from argv and return FILE."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith("--config="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def save_config(cfg, out_dir: str | Path) -> Path:
    """Write the resolved config into a run directory as `config.yaml`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path
