"""Config loading: small dataclasses, filled from a YAML recipe and `--key value` overrides.

Every config is a plain dataclass whose fields carry their documentation in `metadata["help"]`
(shown by `r1kit <cmd> --help`). `load_config(cls, path, overrides)` reads the YAML file, applies
the overrides, coerces each value to the field's annotated type, and rejects unknown keys with a
message that names the key, the file, and the known field it is close to (if any). A command-line
value is the text as typed for a string option and YAML for the others when it starts with [ or {.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml


class ConfigError(ValueError):
    """A recipe or command-line option is wrong; the message names the key and the source."""


def field(default: Any = dataclasses.MISSING, help: str = "", *, group: str | None = None,  # noqa: A002
          suggest: bool = True, meta: dict | None = None, **kw) -> Any:
    """`dataclasses.field` with a help text; mutable defaults are wrapped in a factory.

    `group`: the heading `--help` lists the option under (see `describe`); `suggest=False` keeps the
    option out of "did you mean" suggestions (a key accepted only for another tool's recipes); `meta`:
    more metadata for the code that reads the fields."""
    metadata = {"help": help, **({"group": group} if group else {}), **({} if suggest else {"suggest": False}),
                **(meta or {})}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def field_types(cls: type) -> dict[str, Any]:
    """The type each field's value is coerced to: its annotation, or the class's `COERCE_AS[name]` (a class
    may widen an inherited field's type, e.g. TRL's `save_steps` that may be a fraction)."""
    return {**typing.get_type_hints(cls), **getattr(cls, "COERCE_AS", {})}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert `value` (from YAML or the command line) to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{source}: '{key}' got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = (_yaml_value(value, key, source, "a list") if value.strip().startswith("[")
                     else [v for v in value.split(",") if v])
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, inner, key, source) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = _yaml_value(value, key, source, "a mapping")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return str(value)
    return value


_YAML_EXAMPLES = {"a list": "[a, b]", "a mapping": "{key: value}"}


def _yaml_value(text: str, key: str, source: str, expected: str) -> Any:
    """`text` parsed as YAML, or a one-line ConfigError naming the key and what was expected."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        where = f"--{key}" if source.endswith("command line") else f"'{key}'"
        raise ConfigError(f"{source}: {where} {text!r} is not valid YAML ({problem}); expected {expected} "
                          f"in YAML, e.g. {_YAML_EXAMPLES.get(expected, '...')}") from None


def _takes_text(tp: Any) -> bool:
    """True for a `str` (or `str | None`) field: its command-line value is the text as typed."""
    return tp is str or (typing.get_origin(tp) in (Union, types.UnionType)
                         and set(typing.get_args(tp)) <= {str, type(None)})


# A suggestion needs this difflib ratio to the unknown key ("lerning_rate" -> "learning_rate" 0.96), unless
# the key's words are all words of a known key ("prompt_column" -> "dataset_prompt_column"), which needs
# WORDS_RATIO. "hub_strategy" -> "distributed_strategy" (0.63, 'hub' not a word of it) gets no suggestion.
CLOSE_RATIO = 0.8
WORDS_RATIO = 0.5
MAX_SUGGESTIONS = 3


def close_keys(key: str, names: Sequence[str]) -> list[str]:
    """The known keys that an unknown `key` is probably a misspelling or a short form of, best first
    (none when nothing is really close)."""
    def ratio(name: str) -> float:
        return difflib.SequenceMatcher(None, key, name).ratio()

    words = [w for w in key.split("_") if w]
    by_words = [n for n in names if words and set(words) <= set(n.split("_")) and ratio(n) >= WORDS_RATIO]
    if by_words:
        return sorted(by_words, key=ratio, reverse=True)[:MAX_SUGGESTIONS]
    best = max(names, key=ratio, default=None)
    return [best] if best is not None and ratio(best) >= CLOSE_RATIO else []


def _unknown_key_error(key: str, cls: type, source: str) -> ConfigError:
    close = close_keys(key, [f.name for f in dataclasses.fields(cls) if f.metadata.get("suggest", True)])
    instead = getattr(cls, "UNKNOWN_KEY_HINTS", {}).get(key)  # e.g. another tool's key: what to use here
    hint = (f" ({instead})" if instead else "") + (f" (did you mean {one_of([repr(c) for c in close])}?)" if close else "")
    return ConfigError(f"{source}: unknown key '{key}' for {cls.__name__}{hint}")


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """`['--lr', '1e-5', '--beta=0.1']` -> `[('lr', '1e-5'), ('beta', '0.1')]`."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {arg!r}")
        key = arg[2:].replace("-", "_")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            value = "true"  # a bare flag: --mask_truncated_completions
            i += 1
        pairs.append((key, value))
    return pairs


def from_dict(cls: type, data: dict, source: str = "config"):
    """Build `cls` from a mapping, coercing types; unknown keys are an error that names them."""
    hints = field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key_error(key, cls, source)
        kwargs[key] = _coerce(value, hints[key], key, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def split_config_flag(args: list[str]) -> tuple[str | None, list[str]]:
    """`--config FILE` taken out of a command line: (FILE or None, the other arguments)."""
    if "--config" not in args:
        return None, list(args)
    i = args.index("--config")
    if i + 1 >= len(args):
        raise ConfigError("--config needs a file")
    return args[i + 1], args[:i] + args[i + 2:]


def load_config(cls: type, path: str | None = None, overrides: list[str] | None = None):
    """Load `cls` from a YAML recipe (optional) and command-line `--key value` overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of key: value")
        data.update(loaded)
        source = str(path)
    else:
        source = "command line"
    hints = field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in parse_overrides(overrides or []):
        if key not in names:
            raise _unknown_key_error(key, cls, "command line")
        # A string option takes the text as typed (`--template '{prompt} =>'` is a template, not YAML);
        # a value starting with [ or { is YAML for the others (`--reward_weights '[1, 0.5]'`).
        if value.strip()[:1] in ("[", "{") and not _takes_text(hints[key]):
            value = _yaml_value(value, key, "command line", "a mapping" if value.strip()[0] == "{" else "a list")
        data[key] = value
        source = f"{path} + command line" if path else "command line"
    return from_dict(cls, data, source)


def to_dict(cfg) -> dict:
    """A YAML-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def one_of(names) -> str:
    """`"a, b or c"`: a list of choices for help texts and error messages."""
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def described(registry: Mapping[str, Any], more: Sequence[str] = ()) -> str:
    """`"a (what a is), b (...) or c (...)"` from a registry of name -> function whose docstring starts with
    what it is (its first line), then the `more` choices: a config's help text reads the names where they are
    defined."""
    return one_of([f"{name} ({(fn.__doc__ or '').strip().splitlines()[0].rstrip('.')})" for name, fn in registry.items()]
                  + list(more))


def describe(cls: type) -> str:
    """One line per field: name, default and help text (for `--help`).

    A class with `HELP_GROUPS` (ordered (group, title) pairs) lists its fields under those titles, in that
    order: a field's group is its `field(group=...)`, else `cls.help_group(name)`; fields of no listed group
    come last, under "other options"."""
    def line(f) -> str:
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
        )
        return f"  --{f.name} (default: {default!r})\n      {f.metadata.get('help', '')}"

    fields = dataclasses.fields(cls)
    titles = dict(getattr(cls, "HELP_GROUPS", ()))
    if not titles:
        return "\n".join(line(f) for f in fields)
    group_of = getattr(cls, "help_group", lambda name: None)
    grouped: dict[str, list[str]] = {g: [] for g in [*titles, ""]}
    for f in fields:
        group = f.metadata.get("group") or group_of(f.name)
        grouped[group if group in titles else ""].append(line(f))
    return "\n\n".join(f"{titles.get(g, 'other options')}:\n" + "\n".join(lines)
                       for g, lines in grouped.items() if lines)
