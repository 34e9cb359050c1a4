"""Reading config values typed by people: CLI flags and YAML/JSON files.

Text goes through :func:`coerce`, which reads it by the field's type: ``"1e-4"`` -> ``0.0001``
for a float, ``"yes"`` -> ``True``, ``"none"`` -> ``None`` for an optional name,
``'{"semantic": 1}'`` -> a dict. YAML alone reads ``lr: 2e-4`` as a string.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path


def _config_class():
    from lab.config import HybridConfig  # lab.config imports this module

    return HybridConfig


_EXPECTED = {
    "float": "a number such as 1e-4, 2E-5, .5 or 3",
    "int": "a whole number such as 0, 8 or 256",
    "bool": "true/false (also yes/no, 1/0, on/off)",
    "optional str": "a name, or none/null for None",
    "str": "text",
    "dict": 'a JSON or YAML mapping of name to number such as \'{"semantic": 1}\'',
}
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def field_kind(name: str) -> str:
    """How text is read for field ``name``: one of ``float``, ``int``, ``bool``,
    ``optional str``, ``str``, ``dict``.

    >>> field_kind("lr"), field_kind("discriminator_model"), field_kind("reward_weights")
    ('float', 'optional str', 'dict')
    """
    hint = typing.get_type_hints(_config_class())[name]
    if hint in (float, int, bool, str):
        return hint.__name__
    if typing.get_origin(hint) is dict:
        return "dict"
    if set(typing.get_args(hint)) == {str, type(None)}:
        return "optional str"
    raise TypeError(f"no text reading for field {name} of type {hint}")


def _number(text) -> float:
    if isinstance(text, bool):
        raise ValueError
    return float(text.strip()) if isinstance(text, str) else float(text)


def coerce(name: str, value):
    """``value`` for field ``name``, with text read by the field's type.

    Text (``str``) becomes a float (``"1e-4"``, ``"2E-5"``, ``".5"``, ``"3"``), an int
    (``"8"``), a bool (``true/false``, ``yes/no``, ``1/0``, ``on/off``; any case), None for an
    optional name (``none``/``null``), or a dict (JSON or YAML mapping, its values read as
    floats). Ints become floats for float fields, and 0/1 booleans for bool fields. Other
    values pass unchanged, for ``HybridConfig``'s own checks. Text that cannot be read
    raises a ``ValueError`` naming the field and the expected type.

    >>> coerce("lr", "1e-4"), coerce("lr", ".5"), coerce("seed", "3"), coerce("chat_template", "Yes")
    (0.0001, 0.5, 3, True)
    >>> coerce("reward_weights", '{"semantic": 1}'), coerce("discriminator_model", "null")
    ({'semantic': 1.0}, None)
    >>> coerce("lr", "fast")
    Traceback (most recent call last):
    ...
    ValueError: lr='fast': expected a number such as 1e-4, 2E-5, .5 or 3
    """
    kind = field_kind(name)
    try:
        if kind == "float" and isinstance(value, (str, int)) and not isinstance(value, bool):
            return _number(value)
        if kind == "int" and isinstance(value, str):
            return int(value.strip())
        if kind == "bool" and isinstance(value, str):
            word = value.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError
            return word in _TRUE
        if kind == "bool" and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        if kind == "optional str" and isinstance(value, str) and value.strip().lower() in ("none", "null"):
            return None
        if kind == "dict":
            if isinstance(value, str):
                value = _mapping(value)
            if isinstance(value, dict):
                return {key: _number(v) if isinstance(v, (str, int)) else v for key, v in value.items()}
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected {_EXPECTED[kind]}") from None
    return value


def _mapping(text: str) -> dict:
    """A JSON object, else a YAML mapping, from ``text``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError from None
    if not isinstance(value, dict):
        raise ValueError
    return value


def known_fields(values: dict, where: str = "") -> dict:
    """``values`` after checking that every key is a field."""
    known = {f.name for f in dataclasses.fields(_config_class())}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}Unknown config field(s) {unknown}; known fields: {', '.join(sorted(known))}")
    return dict(values)


def read_file(path: str | Path) -> dict:
    """The fields a JSON or YAML config file names, coerced (:func:`coerce`), and only those:
    ``{"lr": 0.0002}`` for a file holding ``lr: 2e-4``. Lay it over a preset, under flags."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"Config file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                         f"{err.start}); save it as UTF-8") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as err:
        raise ValueError(f"Config file {path} could not be parsed: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of field: value")
    return {name: coerce(name, value) for name, value in known_fields(values, f"Config file {path}: ").items()}
