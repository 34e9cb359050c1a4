"""Reading config values typed by people: CLI flags and YAML/JSON files, flat or by section.

The functions take the config class (a dataclass whose fields carry a ``section`` in their
metadata, as :class:`lab.config.HybridConfig`'s do) and read by its fields' types, so this
module names no field itself. Text goes through :func:`coerce`: ``"1e-4"`` -> ``0.0001`` for a
float, ``"yes"`` -> ``True``, ``"none"`` -> ``None`` for an optional name,
``'{"semantic": 1}'`` -> a dict (YAML alone reads ``lr: 2e-4`` as a string). A mapping names
fields flat, ``{"temperature": 0.8}``, or by section, ``{"sampling": {"temperature": 0.8}}``
(:func:`flat`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

_EXPECTED = {
    "float": "a number such as 1e-4, 2E-5, .5 or 3",
    "int": "a whole number such as 0, 8 or 256",
    "bool": "true/false (also yes/no, 1/0, on/off)",
    "optional str": "a name, or none/null for None",
    "str": "text",
    "dict": 'a JSON or YAML mapping of name to number such as \'{"semantic": 1}\'',
}
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def sections(config: type) -> dict[str, tuple[str, ...]]:
    """``config``'s field names by their metadata's ``section``, in field order."""
    grouped: dict[str, list[str]] = {}
    for f in dataclasses.fields(config):
        grouped.setdefault(f.metadata["section"], []).append(f.name)
    return {section: tuple(names) for section, names in grouped.items()}


def field_kind(config: type, name: str) -> str:
    """How text is read for field ``name`` of ``config``: one of ``float``, ``int``, ``bool``,
    ``optional str``, ``str``, ``dict``.

    >>> from lab.config import HybridConfig
    >>> field_kind(HybridConfig, "lr"), field_kind(HybridConfig, "discriminator_model")
    ('float', 'optional str')
    """
    hint = typing.get_type_hints(config)[name]
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


def coerce(config: type, name: str, value):
    """``value`` for field ``name`` of ``config``, with text read by the field's type.

    Text (``str``) becomes a float (``"1e-4"``, ``"2E-5"``, ``".5"``, ``"3"``), an int
    (``"8"``), a bool (``true/false``, ``yes/no``, ``1/0``, ``on/off``; any case), None for an
    optional name (``none``/``null``), or a dict (JSON or YAML mapping, its values read as
    floats). Ints become floats for float fields, and 0/1 booleans for bool fields. Other
    values pass unchanged, for the config's own checks. Text that cannot be read raises a
    ``ValueError`` naming the field and the expected type.

    >>> from lab.config import HybridConfig as C
    >>> coerce(C, "lr", "1e-4"), coerce(C, "lr", ".5"), coerce(C, "seed", "3"), coerce(C, "chat_template", "Yes")
    (0.0001, 0.5, 3, True)
    >>> coerce(C, "reward_weights", '{"semantic": 1}'), coerce(C, "discriminator_model", "null")
    ({'semantic': 1.0}, None)
    >>> coerce(C, "lr", "fast")
    Traceback (most recent call last):
    ...
    ValueError: lr='fast': expected a number such as 1e-4, 2E-5, .5 or 3
    """
    kind = field_kind(config, name)
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


def flat(config: type, values: dict, where: str = "", renamed: dict | None = None) -> dict:
    """``values`` as ``{field: value}``: a section's mapping is spread out. An unknown field or
    section, a field under another section, or a field given twice raises a ``ValueError`` that
    says which (prefixed by ``where``). A section that is also a field's name (``model``) is
    read as the section when its value is a mapping. ``renamed``: old field name -> new, read as the new.

    >>> from lab.config import HybridConfig
    >>> flat(HybridConfig, {"sampling": {"temperature": 0.8}, "lr": 1e-4})
    {'temperature': 0.8, 'lr': 0.0001}
    >>> flat(HybridConfig, {"reward": {"temperature": 0.8}})
    Traceback (most recent call last):
    ...
    ValueError: config section 'reward' has no field 'temperature'; it is in section 'sampling'
    """
    grouped = sections(config)
    home = {name: section for section, names in grouped.items() for name in names}
    items = []
    for key, value in values.items():
        if key in grouped and isinstance(value, dict):
            for name, inner in value.items():
                name = (renamed or {}).get(name, name)
                if home.get(name) != key:
                    hint = f"it is in section {home[name]!r}" if name in home else f"its fields: {', '.join(grouped[key])}"
                    raise ValueError(f"{where}config section {key!r} has no field {name!r}; {hint}")
                items.append((name, inner))
        elif key not in home and isinstance(value, dict):
            raise ValueError(f"{where}Unknown config section {key!r}; the sections are {', '.join(grouped)} "
                             "(or name the fields flat)")
        else:
            items.append(((renamed or {}).get(key, key), value))
    unknown = sorted({name for name, _ in items} - set(home))
    if unknown:
        raise ValueError(f"{where}Unknown config field(s) {unknown}; known fields: {', '.join(sorted(home))}")
    names = [name for name, _ in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{where}config field(s) {twice} given twice (flat and in their section); give each once")
    return dict(items)


def read_file(config: type, path: str | Path) -> dict:
    """The fields a JSON or YAML config file names (flat or by section), coerced
    (:func:`coerce`), and only those: ``{"lr": 0.0002}`` for a file holding ``lr: 2e-4``. Lay it
    over a preset, under flags."""
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
    return {name: coerce(config, name, value) for name, value in flat(config, values, f"Config file {path}: ").items()}
