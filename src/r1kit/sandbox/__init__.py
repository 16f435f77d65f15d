"""Run model-written Python safely: bubblewrap + seccomp + rlimits, verdicts decided in the parent.

Layers, each importing only the ones above it in this list:

* ``base``      the shared data: Verdict, Limits, RunResult, Probe, the verdict counters
* ``policy``    declarations: ``requires_sandbox`` on a reward, ``sandbox_policy`` for a run
* ``verdict``   the verdict as a pure function of what the supervisor observed
* ``bwrap``     the bubblewrap command line;  ``reaper``  finding/killing leftovers in /proc
* ``supervise`` the I/O loop of one started run (deadlines, output cap) -> an Observation
* ``run``       one run: files, launch, supervise, decide, sweep (the process tree is described there)
* ``isolation`` which isolation works here (tried once, cached)
* ``runner``    the public ``Sandbox`` and ``sandbox_stats``
* ``cases``     test-case formats, output comparison, running a program on its tests
"""

from .base import Limits, Probe, RunResult, SandboxUnavailableError, Verdict
from .policy import needs_sandbox, requires_sandbox, sandbox_policy, unsandboxed_allowed
from .isolation import isolation_level, probe, require_isolation
from .reaper import find_leftovers, find_sandbox_processes
from .runner import Sandbox, sandbox_stats

__all__ = [
    "Limits", "Probe", "RunResult", "Sandbox", "SandboxUnavailableError", "Verdict",
    "find_leftovers", "find_sandbox_processes", "isolation_level", "probe", "require_isolation", "sandbox_stats",
    "needs_sandbox", "requires_sandbox", "sandbox_policy", "unsandboxed_allowed",
]
