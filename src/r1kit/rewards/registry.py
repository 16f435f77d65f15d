"""Reward registry: ``@register_reward(name)``, ``get_reward(name_or_import_path)``, ``list_rewards()``,
``reward_name(spec)`` (the metric name a spec is logged under).

Parametrised rewards (open-r1 builds them with factories, ``get_cosine_scaled_reward(max_len=...)``):
``register_reward_factory(name)(factory)`` makes ``name?key=value&key=value`` build ``factory(key=value,
...)`` once per spec string (``cosine?max_len=2000&min_value_wrong=-1``); values are read as int, float,
``true``/``false``/``none``, else kept as strings. The spec is logged under ``name``."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable
from urllib.parse import parse_qsl

RewardFn = Callable[..., list]

_REGISTRY: dict[str, RewardFn] = {}
_BUILTIN_MODULES = ("r1kit.rewards.math", "r1kit.rewards.format", "r1kit.rewards.language", "r1kit.rewards.code",
                    "r1kit.rewards.task", "r1kit.rewards.openr1")
_builtins_loaded = False
# "prefix:spec" names built by a factory, once per spec string: rm:PATH?segment=answer (reward models).
# prefix -> module with `reward_from_spec(rest)` (the reward) and `spec_name(rest)` (its metric name)
PREFIX_FACTORIES = {"rm": "r1kit.rewards.reward_model"}
_BUILT: dict[str, RewardFn] = {}
_FACTORIES: dict[str, Callable[..., RewardFn]] = {}  # name -> factory, for "name?key=value&..."


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make ``fn(prompts, completions, **columns) -> list[float | None]`` available as
    ``name``. Registering a different function under a taken name raises ``ValueError``."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"invalid reward name {name!r}")

    def decorator(fn: RewardFn) -> RewardFn:
        old = _REGISTRY.get(name)
        if old is not None and old is not fn and _qualname(old) != _qualname(fn):
            raise ValueError(f"reward {name!r} is already registered ({_qualname(old)})")
        _REGISTRY[name] = fn
        return fn

    return decorator


def register_reward_factory(name: str) -> Callable:
    """Decorator: ``factory(**params) -> reward`` reachable as ``name?key=value&...`` (see the module
    docstring). The plain ``name`` is whatever ``register_reward(name)`` registered (its defaults)."""
    if not isinstance(name, str) or not name or ":" in name or "?" in name:
        raise ValueError(f"invalid reward name {name!r}")

    def decorator(factory):
        _FACTORIES[name] = factory
        return factory

    return decorator


def _param(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _build(spec: str) -> RewardFn | None:
    """``name?key=value&...`` of a registered factory, built once; None when ``name`` has no factory."""
    base, _, query = spec.partition("?")
    factory = _FACTORIES.get(base)
    if factory is None:
        return None
    if spec not in _BUILT:
        params = {k: _param(v) for k, v in parse_qsl(query, keep_blank_values=True)}
        try:
            _BUILT[spec] = factory(**params)
        except TypeError as exc:
            known = ", ".join(inspect.signature(factory).parameters)
            raise ValueError(f"reward {spec!r}: {exc}; {base}'s parameters are: {known}") from exc
    return _BUILT[spec]


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        _builtins_loaded = True


def list_rewards() -> list[str]:
    """Sorted names of the registered rewards (built-ins included)."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def _import_path(path: str) -> RewardFn | None:
    """``pkg.module:func`` (attribute path after the colon may be dotted) or ``pkg.module.func``."""
    if ":" in path:
        mod_name, _, attr = path.partition(":")
    elif "." in path:
        mod_name, _, attr = path.rpartition(".")
    else:
        return None
    try:
        obj = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:  # the named module is missing → unknown; a broken import raises
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            return None
        raise
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def get_reward(name: str | RewardFn) -> RewardFn:
    """A registered reward by name, a callable by import path (``"pkg.mod:fn"`` /
    ``"pkg.mod.fn"``), a ``PREFIX_FACTORIES`` spec (``"rm:PATH?segment=answer"``, built once), or a
    factory's ``name?key=value`` (``"cosine?max_len=2000"``, built once).
    A callable is returned as is. Unknown → ``ValueError`` listing known names."""
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"reward must be a name, an import path or a callable, not {type(name).__name__}")
    prefix, sep, rest = name.strip().partition(":")
    if sep and prefix in PREFIX_FACTORIES:
        if name.strip() not in _BUILT:
            _BUILT[name.strip()] = importlib.import_module(PREFIX_FACTORIES[prefix]).reward_from_spec(rest)
        return _BUILT[name.strip()]
    _ensure_builtins()
    if "?" in name:
        built = _build(name.strip())
        if built is not None:
            return built
    fn = _REGISTRY.get(name.strip())
    if fn is None and ("." in name or ":" in name):
        fn = _import_path(name.strip())
        if fn is not None and not callable(fn):
            raise ValueError(f"reward {name!r} resolves to a non-callable {type(fn).__name__}")
    if fn is None:
        raise ValueError(
            f"unknown reward {name!r}: not a registered name and not an importable "
            f"'pkg.module:func' path. Known rewards: {', '.join(sorted(_REGISTRY))}"
        )
    return fn


def reward_name(spec: str | RewardFn) -> str:
    """The name a reward is logged under: a registry name as given; an import path ``pkg.mod:fn`` -> ``fn``;
    a ``PREFIX_FACTORIES`` spec -> its module's ``spec_name`` (``rm:PATH?segment=full`` -> ``rm_full``); a
    factory's ``name?key=value`` -> ``name``; a callable's ``__name__``."""
    if isinstance(spec, str):
        prefix, sep, rest = spec.strip().partition(":")
        if sep and prefix in PREFIX_FACTORIES:
            return importlib.import_module(PREFIX_FACTORIES[prefix]).spec_name(rest)
        return spec.strip().partition("?")[0].replace(":", ".").rsplit(".", 1)[-1]
    return getattr(spec, "__name__", None) or type(spec).__name__
