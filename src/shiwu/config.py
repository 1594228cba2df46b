"""The user's settings file: what ``shiwu tune`` found fastest on this machine, per model.

``$SHIWU_CONFIG``, else ``$XDG_CONFIG_HOME/shiwu/config.toml`` (``~/.config/shiwu/config.toml``).
``shiwu tune`` writes one table per model::

    [tuned."efficientnet-lite0"]
    backend = "openvino"
    precision = "fp32"
    threads = 2
    size = 224
    batch_size = 8

``Recognizer`` (and so ``predict``, ``batch`` and ``serve``) uses those values for every
option the caller leaves as None; an option given explicitly always wins. The precision
comes from the file only together with its backend: ``--backend torch`` alone means torch
fp32, not torch with whatever precision another runtime was tuned for.

No torch here; reading the file costs a millisecond.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ShiwuError

log = logging.getLogger(__name__)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_CONFIG = "SHIWU_CONFIG"
ENV_PRECISION = "SHIWU_PRECISION"
DEFAULT_BACKEND = "auto"
DEFAULT_PRECISION = "auto"   # the fastest precision that passes the accuracy policy here
DEFAULT_BATCH_SIZE = 8
TUNED_FIELDS = ("backend", "precision", "threads", "size", "batch_size")

_warned: set[str] = set()


class ConfigError(ShiwuError, ValueError):
    """The settings file exists but cannot be used; the message names the file and the problem."""


def config_path() -> Path:
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "shiwu" / "config.toml"


def read_config(path: Path | None = None, *, strict: bool = False) -> dict:
    """The parsed file, or {} when there is none. A broken file is reported once on stderr and
    ignored (``strict``: raise ConfigError instead), so a typo never stops recognition."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return _broken(path, f"cannot be read: {exc}", strict)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _broken(path, f"is not valid TOML: {exc}", strict)


def _broken(path: Path, problem: str, strict: bool) -> dict:
    message = f"settings file {path} {problem}; ignoring it"
    if strict:
        raise ConfigError(message)
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
    return {}


def _valid_entry(entry: object) -> dict | None:
    """The usable fields of one [tuned."model"] table (unknown or wrong values dropped)."""
    from .backends import BACKENDS, PRECISIONS

    if not isinstance(entry, dict):
        return None
    out = {}
    if entry.get("backend") in BACKENDS:
        out["backend"] = entry["backend"]
        if entry.get("precision") in PRECISIONS:
            out["precision"] = entry["precision"]
    for key, low, high in (("threads", 1, 1024), ("size", 32, 1024), ("batch_size", 1, 4096)):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            out[key] = value
    return out or None


def tuned_for(model: str, path: Path | None = None) -> dict | None:
    """The tuned settings saved for ``model`` (its canonical name), or None."""
    tuned = read_config(path).get("tuned")
    if not isinstance(tuned, dict):
        return None
    return _valid_entry(tuned.get(model))


@dataclass(frozen=True)
class Settings:
    """How a Recognizer runs, and where each value came from ("option", "tuned" or "default")."""

    backend: str
    precision: str
    threads: int | None
    size: int | None
    batch_size: int
    source: dict = field(default_factory=dict)

    @property
    def uses_tuned(self) -> bool:
        return "tuned" in self.source.values()


def default_precision() -> str:
    """$SHIWU_PRECISION (e.g. fp32 on a machine where only fp32 may run), else auto."""
    from .backends import PRECISIONS

    value = os.environ.get(ENV_PRECISION, "").strip()
    if value and value not in PRECISIONS:
        if value not in _warned:  # a typo must not stop recognition; it is said once
            _warned.add(value)
            logging.getLogger(__name__).warning("%s=%r is not one of %s; using %s", ENV_PRECISION, value,
                                                ", ".join(PRECISIONS), DEFAULT_PRECISION)
        return DEFAULT_PRECISION
    return value or DEFAULT_PRECISION


def resolve(model: str, *, backend: str | None = None, precision: str | None = None,
            threads: int | None = None, size: int | None = None, batch_size: int | None = None,
            use_tuned: bool = True) -> Settings:
    """Explicit values win; then the tuned settings for ``model``; then the built-in defaults
    (auto, auto, physical cores, the model's size, 8)."""
    tuned = (tuned_for(model) if use_tuned else None) or {}
    given = {"backend": backend, "precision": precision, "threads": threads, "size": size,
             "batch_size": batch_size}
    if backend is not None and backend != tuned.get("backend"):
        tuned = {k: v for k, v in tuned.items() if k not in ("backend", "precision")}
    defaults = {"backend": DEFAULT_BACKEND, "precision": default_precision(), "threads": None,
                "size": None, "batch_size": DEFAULT_BATCH_SIZE}
    values, source = {}, {}
    for key in TUNED_FIELDS:
        if given[key] is not None:
            values[key], source[key] = given[key], "option"
        elif key in tuned:
            values[key], source[key] = tuned[key], "tuned"
        else:
            values[key], source[key] = defaults[key], "default"
    return Settings(**values, source=source)


# --- writing -------------------------------------------------------------------------------

def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _toml_value(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\r", "\\r").replace("\t", "\\t"))
        escaped = "".join(c if ord(c) >= 0x20 and ord(c) != 0x7F else f"\\u{ord(c):04x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(data: dict) -> str:
    """TOML for nested dicts of strings, numbers, booleans and lists of those."""
    lines: list[str] = []

    def table(prefix: list[str], mapping: dict) -> None:
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in mapping.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables.items():
            table(prefix + [key], value)

    table([], data)
    return "\n".join(lines) + "\n"


HEADER = ("# shiwu settings. `shiwu tune` rewrites this file (comments are not kept);\n"
          "# options on the command line always win over the values here.\n")


def save_tuned(model: str, entry: dict, path: Path | None = None) -> Path:
    """Store ``entry`` (backend, precision, threads, size, batch_size, plus any notes such as
    the measured latency) as the tuned settings for ``model``; other models' entries and
    other tables in the file are kept."""
    from .cache import atomic_write_text

    path = path or config_path()
    data = read_config(path, strict=True)
    tuned = data.get("tuned")
    if not isinstance(tuned, dict):
        tuned = data["tuned"] = {}
    tuned[model] = dict(entry)
    atomic_write_text(path, HEADER + dumps(data))
    return path


def forget_tuned(model: str, path: Path | None = None) -> bool:
    """Remove ``model``'s tuned settings; True if there were any."""
    from .cache import atomic_write_text

    path = path or config_path()
    data = read_config(path, strict=True)
    tuned = data.get("tuned")
    if not isinstance(tuned, dict) or model not in tuned:
        return False
    del tuned[model]
    atomic_write_text(path, HEADER + dumps(data))
    return True


def describe() -> dict:
    """For ``shiwu doctor``: the file, whether it exists, and every model's tuned settings."""
    path = config_path()
    info: dict = {"path": str(path), "exists": path.is_file(), "tuned": {}, "error": None}
    try:
        data = read_config(path, strict=True)
    except ConfigError as exc:
        info["error"] = str(exc)
        return info
    tuned = data.get("tuned")
    if isinstance(tuned, dict):
        for model, entry in tuned.items():
            if isinstance(entry, dict):
                info["tuned"][model] = dict(entry)
    return info
