"""A small TOML writer for the files hilctl writes: station files (``hilctl sim serve``) and
device sections (``hilctl fit``). The standard library reads TOML (``tomllib``) but does not
write it; what hilctl writes is tables of scalars and lists of scalars, which this covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def dump_toml(data: Mapping[str, Any], *, header: str | None = None) -> str:
    """``data`` as TOML: top-level scalars, tables of scalars, and lists of such tables
    (``[[name]]``). Scalars are str, int, float (finite) and bool; lists of scalars too."""
    lines: list[str] = [f"# {line}" for line in (header or "").splitlines()]
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_list(v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for name, value in data.items():
        if _is_table(value):
            lines += ["", f"[{_key(name)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        elif _is_table_list(value):
            for table in value:
                lines += ["", f"[[{_key(name)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _string(key)


def _string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
               "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML writer: non-finite float {value!r}")
        return repr(value)  # shortest round-trip form: 5e-05, 1.5, 1e+16 are all TOML floats
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"TOML writer: cannot write {type(value).__name__} {value!r}")
