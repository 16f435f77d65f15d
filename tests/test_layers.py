"""The package layers point down: a package imports only packages in lower layers.

`LAYERS` below is the one definition of the order (docs/design.md draws it). Every module's imports are
read with `ast`, including imports inside functions and `r1kit.x.y[:attr]` strings that name a module to
import by (the CLI's command table, the reward registry's prefix factories). Packages in one layer may not
import each other unless the pair is in `SIBLING_IMPORTS`. The top-level `r1kit/__init__.py` (the version)
is below everything and imports nothing of r1kit.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "r1kit"

# bottom -> top; each entry is one layer (a tuple of sibling packages)
LAYERS: list[tuple[str, ...]] = [
    ("utils", "config"),    # devices and collectives, file helpers; YAML recipes -> config dataclasses
    ("algo",),              # pure math of GRPO (torch only)
    ("sandbox", "tasks"),   # isolation for untrusted code; procedural tasks with exact verifiers
    ("data", "models"),     # datasets (r1kit:TASK rows), templates, SFT data; model loading
    ("rewards",),           # reward functions: task verifiers, code in the sandbox, reward models
    ("rollout",),           # generation engines
    ("eval",),              # R1's evaluation protocol: rollouts scored by task verifiers / rewards
    ("diagnose",),          # run diagnostics: the doctor's rules over metric rows, the live monitor, plan, report
    ("train",),             # the trainers (GRPO, SFT, reward model) and rejection sampling
    ("tiny_world",),        # the tiny world: corpus, base-model pretraining, probe, `r1kit demo` (runs GRPO)
    ("pipeline",),          # DeepSeek-R1's recipe: runs every trainer, the tiny world's data
    ("cli",),               # `r1kit <command>`: dispatches to all of the above
]
# (importer, imported) pairs allowed inside one layer
SIBLING_IMPORTS: set[tuple[str, str]] = set()

ROOT = ""  # the top-level r1kit/__init__.py
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
_MODULE_STRING = re.compile(r"r1kit(\.\w+)+(:[\w.]+)?")


def package_of(module: str) -> str:
    """`r1kit.train.grpo` -> `train`, `r1kit.cli` -> `cli`, `r1kit` -> the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every r1kit module `path` imports, however it does."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from r1kit import tasks` imports the subpackage; `from . import x` may too
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            found.append((node.lineno, node.value.partition(":")[0]))
    return [(line, m) for line, m in found if m == "r1kit" or m.startswith("r1kit.")]


def _resolve(module: str) -> str:
    """The longest prefix of `module` that is an r1kit module or package (drops imported attributes)."""
    parts = module.split(".")
    while len(parts) > 1:
        p = SRC.parent.joinpath(*parts)
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return "r1kit"


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        src_mod = module_name(path)
        src_pkg = package_of(src_mod)
        for line, target in sorted({(line, _resolve(m)) for line, m in imported_modules(path)}):
            dst_pkg = package_of(target)
            if dst_pkg == src_pkg:
                continue
            where = f"{path.relative_to(SRC.parent)}:{line}: {src_mod} imports {target}"
            if src_pkg == ROOT:
                bad.append(f"{where} (the top-level r1kit/__init__.py imports nothing of r1kit)")
            elif dst_pkg == ROOT:
                continue  # the version, below everything
            elif LEVEL[dst_pkg] > LEVEL[src_pkg]:
                bad.append(f"{where} ({dst_pkg} is above {src_pkg})")
            elif LEVEL[dst_pkg] == LEVEL[src_pkg] and (src_pkg, dst_pkg) not in SIBLING_IMPORTS:
                bad.append(f"{where} ({dst_pkg} is a sibling of {src_pkg} in one layer, not declared)")
    return bad


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert packages == set(LEVEL), f"not in LAYERS: {sorted(packages - set(LEVEL))}; gone: {sorted(set(LEVEL) - packages)}"
    assert len(LEVEL) == sum(map(len, LAYERS)), "a package is in two layers"


def test_imports_point_down():
    bad = violations()
    assert not bad, "imports that run up a layer:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("importer, source, expect", [
    ("train", "import r1kit.pipeline\n", "pipeline is above train"),
    ("train", "def f():\n    from r1kit.tiny_world.corpus import CorpusMix\n", "tiny_world is above train"),
    ("algo", "COMMANDS = {'x': 'r1kit.eval.cli_eval:EvalConfig'}\n", "eval is above algo"),
    ("algo", "from r1kit import cli\n", "cli is above algo"),
    ("algo", "from ..train import grpo\n", "train is above algo"),
    ("data", "from r1kit.models import loading\n", "models is a sibling of data"),
])
def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch, importer, source, expect):
    """The checker itself: an upward (or sibling) import written each way is reported, in a throwaway tree."""
    tree = tmp_path / "src" / "r1kit"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    for pkg in LEVEL:
        if (SRC / f"{pkg}.py").is_file():
            (tree / f"{pkg}.py").write_text("")
        else:
            (tree / pkg).mkdir()
            (tree / pkg / "__init__.py").write_text("")
    for module in ("tiny_world/corpus.py", "eval/cli_eval.py", "train/grpo.py", "models/loading.py"):
        (tree / module).write_text("")
    (tree / importer / "mod.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tree)
    bad = violations()
    assert len(bad) == 1 and expect in bad[0], bad
