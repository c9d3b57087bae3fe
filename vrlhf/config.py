"""Dataclass configs for every command: defaults in code, a YAML file on top (`--config`), flags last.

    cfg = parse_config(TuneConfig, ["--config", "configs/tune_captioning.yaml", "--lr=1e-4", "--reward", "cider_d=1"])

Every field is a flag with its `metadata["help"]` as the `--help` line: `--name value` or `--name=value` (`-` may
replace `_`); a bool is `--flag`, `--flag false` or `--no_flag`; a list takes several values, and a repeated flag
adds to them (`--reward a --reward b`). A field that is itself a dataclass nests: `--tune.lr 1e-4`, and a mapping
under its name in the YAML file (`tune: {lr: 1.0e-4}`). A field with `metadata["flag"] = False` is not a flag (a
value filled in by the code) but may appear in a YAML file, so a run directory's config.yaml parses back.
Unknown YAML keys and bad values raise `ConfigError` naming the file and field.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import socket
import stat
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from vrlhf.errors import ConfigError


def parse_config(cls, argv: list[str] | None = None, prog: str | None = None):
    """Parse `argv` (default: sys.argv[1:]) into an instance of the dataclass `cls`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog=prog, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE", help="YAML file of field values; flags given here override it")
    for name, spec in _leaves(cls):
        if spec.flag:
            _add_flag(parser, name, spec)
    config_path = _pop_config(argv)
    values = _read_yaml(cls, Path(config_path)) if config_path else {}
    given = vars(parser.parse_args(argv))
    given.pop("config", None)
    given.pop(_ListAction.SEEN, None)
    values.update(given)
    return _build(cls, values)


def parse_no_arguments(argv: list[str] | None = None, description: str | None = None) -> None:
    """The flag check of a script that takes none (an oracle's measurements): --help prints `description`, any
    argument raises ConfigError (through `run_command`: one line, exit 2)."""
    _Parser(description=description, allow_abbrev=False).parse_args(list(sys.argv[1:] if argv is None else argv))


# ---- fields ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Leaf:
    """One non-dataclass field, reached by a dotted name: its type (`kind`, `item` for lists), help and default
    (a nested config's default is its value in the enclosing config's default instance, e.g. the demo's TuneConfig)."""

    kind: type
    item: type | None
    field: dataclasses.Field
    flag: bool
    default: Any = dataclasses.MISSING


def _leaves(cls, prefix: str = "", base=None) -> list[tuple[str, _Leaf]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        default = getattr(base, f.name) if base is not None else _default(f)
        if dataclasses.is_dataclass(hint):
            out += _leaves(hint, f"{prefix}{f.name}.", None if default is dataclasses.MISSING else default)
            continue
        kind, item = _kind(hint)
        out.append((prefix + f.name, _Leaf(kind, item, f, f.metadata.get("flag", True), default)))
    return out


def _kind(hint) -> tuple[type, type | None]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return list, (args[0] if args else str)
    if origin is dict or hint is dict:
        return dict, None
    if args and type(None) in args:  # X | None
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0]) if len(rest) == 1 else (object, None)
    return hint, None


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ---- flags ----------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit: a ConfigError is one line from the CLI
        raise ConfigError(f"{message} (see --help)")


def to_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


to_bool.__name__ = "bool"  # argparse names the type in its message: "invalid bool value: 'maybe'"


class _ListAction(argparse.Action):
    """The first use of a list flag replaces the default; using it again adds to the values."""

    SEEN = "_lists_seen"

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault(self.SEEN, set())
        current = getattr(namespace, self.dest, None) if self.dest in seen else []
        setattr(namespace, self.dest, list(current) + list(values))
        seen.add(self.dest)


def _add_flag(parser: argparse.ArgumentParser, name: str, spec: _Leaf) -> None:
    options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    default = spec.default
    shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
    help_text = f"{spec.field.metadata.get('help', '')} ({shown.replace('%', '%%')})"
    common = dict(dest=name, default=argparse.SUPPRESS, help=help_text)
    if spec.kind is bool:
        parser.add_argument(*options, type=to_bool, nargs="?", const=True, metavar="true|false", **common)
        if default is True:
            head, _, leaf = name.rpartition(".")
            negated = f"{head + '.' if head else ''}no_{leaf}"
            parser.add_argument(f"--{negated}", *([f"--{negated.replace('_', '-')}"] if "_" in negated else []),
                                action="store_false", dest=name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    elif spec.kind is list:
        parser.add_argument(*options, type=_converter(spec.item), nargs="+", action=_ListAction, **common)
    elif spec.kind in (str, int, float):
        parser.add_argument(*options, type=spec.kind, **common)
    else:
        raise TypeError(f"config field {name}: {spec.kind} is not a flag type; give it metadata={{'flag': False}}")


def _converter(kind):
    return to_bool if kind is bool else kind


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


# ---- YAML -----------------------------------------------------------------------------------------------------


def _read_yaml(cls, path: Path) -> dict[str, Any]:
    """The file's values by dotted field name, converted to the fields' types."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(read_text_file(path, "--config")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field names to values")
    leaves = dict(_leaves(cls))
    nested = {name.rsplit(".", 1)[0] for name in leaves if "." in name}
    values, unknown = {}, []

    def walk(mapping: dict, prefix: str):
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if name in nested and isinstance(value, dict):
                walk(value, name + ".")
            elif name in leaves:
                values[name] = _coerce(value, leaves[name], f"{path}: {name}")
            else:
                unknown.append(name)

    walk(data, "")
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    return values


def _coerce(value, spec: _Leaf, where: str):
    """A YAML value as the field's type (YAML reads `1e-4` as a string, `5` where a float is meant as an int)."""
    try:
        if spec.kind is list:
            items = value if isinstance(value, list) else [value]
            return [_scalar(v, spec.item) for v in items]
        if spec.kind in (bool, str, int, float):
            return _scalar(value, spec.kind)
        return value
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {value!r} is not a valid {spec.kind.__name__} ({error})") from None


def _scalar(value, kind):
    if kind is bool:
        return value if isinstance(value, bool) else to_bool(value)
    if kind is int and (isinstance(value, bool) or isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected an integer")
    if kind in (int, float, str):
        return kind(value)
    return value


# ---- building -------------------------------------------------------------------------------------------------


def _build(cls, values: dict[str, Any], prefix: str = "", base=None):
    """An instance of `cls` (or `base` with replacements) from dotted values; nested configs keep their defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            start = getattr(base, f.name) if base is not None else _default(f)
            if start is dataclasses.MISSING:
                start = None
            if start is not None or any(key.startswith(name + ".") for key in values):
                kwargs[f.name] = _build(hints[f.name], values, name + ".", start)
        elif name in values:
            kwargs[f.name] = values[name]
        elif base is None and _default(f) is dataclasses.MISSING:
            raise ConfigError(f"--{name} is required")
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


# ---- checks of what a flag names: files, ports ---------------------------------------------------------------

MAX_FILE_BYTES = 1_000_000  # a config or guidelines file is text a person wrote: far below this


def read_text_file(path: str | os.PathLike, flag: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a small file a flag names (`--config`, `--guidelines`), read only if it is a regular file of
    at most `max_bytes` (a FIFO would block forever, /dev/zero never ends, a huge file is refused unread);
    ConfigError naming the flag and file otherwise. Opened without blocking and checked on the open file, so a file
    swapped for a FIFO between a check and the read cannot hang it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it ({e.__class__.__name__}: {e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a file")
            raise ConfigError(f"{flag} {path}: {kind}, not a regular file: give a text file")
        if info.st_size > max_bytes:
            raise ConfigError(f"{flag} {path}: {info.st_size} bytes; at most {max_bytes} are read (is it the right "
                              "file?)")
        data = os.read(fd, max_bytes + 1)  # bounded even if the file grew since fstat
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ConfigError(f"{flag} {path}: more than {max_bytes} bytes; at most {max_bytes} are read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a `--port` outside 0-65535, or one that a server already listens on at `host`, in one line saying
    what to do (0: any free port). SO_REUSEADDR as servers use it: a port only in TIME_WAIT is free to take."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is a number from 1 to 65535 (or 0: any free port)")
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: {host}:{port} is in use (another server, perhaps another vrlhf "
                                  "label): pass another --port, or --port 0 for any free one") from None
            raise ConfigError(f"--port {port}: cannot serve on {host}:{port} ({e.strerror}): pass another --port "
                              "or --host") from None
