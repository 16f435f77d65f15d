"""Run model-written Python safely: bubblewrap + seccomp + rlimits, verdicts decided in the parent.

See ``core`` for the process tree and the guarantees, ``cases`` for test-case formats and output
comparison.
"""

from .core import (
    Limits,
    Probe,
    RunResult,
    Sandbox,
    SandboxUnavailableError,
    Verdict,
    find_leftovers,
    find_sandbox_processes,
    isolation_level,
    probe,
    require_isolation,
    sandbox_stats,
)

__all__ = [
    "Limits", "Probe", "RunResult", "Sandbox", "SandboxUnavailableError", "Verdict",
    "find_leftovers", "find_sandbox_processes", "isolation_level", "probe", "require_isolation", "sandbox_stats",
]
