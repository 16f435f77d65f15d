"""A small seccomp-BPF deny-list, assembled by hand (no libseccomp binding needed).

bubblewrap loads it with ``--seccomp FD`` right before it starts the launcher, so the launcher and
the untrusted program both run under it (and every process they create inherits it).

What it does (x86_64 only; on other architectures no filter is built and the isolation level
stays ``"bwrap"``):

* a syscall made with a foreign ABI (i386 via ``int 0x80``, x32) kills the process;
* namespace, mount, module, kexec, bpf, perf, keyring, ptrace, io_uring, userfaultfd,
  process_vm_* and clock/time-setting syscalls fail with ``EPERM``;
* ``socket()`` is allowed for ``AF_UNIX`` only (``EACCES`` otherwise) - the sandbox has no
  network namespace interfaces anyway, this also closes netlink/packet/vsock sockets;
* ``clone()`` with any ``CLONE_NEW*`` flag fails with ``EPERM``; ``clone3()`` fails with ``ENOSYS``
  (its flags live in memory a filter cannot read; libc then falls back to ``clone()``).
"""

from __future__ import annotations

import platform
import struct

# BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

_EPERM, _EACCES, _ENOSYS = 1, 13, 38
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_AF_UNIX = 1
_CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x00000080  # CLONE_NEWTIME
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

# offsets in struct seccomp_data
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO = 0, 4, 16

# x86_64 syscall numbers denied with EPERM
_DENY_X86_64 = {
    "ptrace": 101, "syslog": 103, "personality": 135, "vhangup": 153, "pivot_root": 155,
    "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256, "unshare": 272,
    "move_pages": 279, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
}
_NR_SOCKET, _NR_CLONE, _NR_CLONE3 = 41, 56, 435


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def build_filter() -> bytes:
    """The compiled filter (an array of ``struct sock_filter``), as bubblewrap's --seccomp wants."""
    if not supported():
        raise RuntimeError("the seccomp filter is only built for x86_64 Linux")
    p: list[bytes] = []
    p.append(_ins(_LD_W_ABS, _OFF_ARCH))
    p.append(_ins(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1, jf=0))
    p.append(_ins(_RET_K, _RET_KILL_PROCESS))
    p.append(_ins(_LD_W_ABS, _OFF_NR))
    p.append(_ins(_JGE_K, _X32_SYSCALL_BIT, jt=0, jf=1))
    p.append(_ins(_RET_K, _RET_KILL_PROCESS))
    for nr in sorted(_DENY_X86_64.values()):
        p.append(_ins(_JEQ_K, nr, jt=0, jf=1))
        p.append(_ins(_RET_K, _RET_ERRNO | _EPERM))
    p.append(_ins(_JEQ_K, _NR_CLONE3, jt=0, jf=1))
    p.append(_ins(_RET_K, _RET_ERRNO | _ENOSYS))
    # socket(domain, ...): AF_UNIX only
    p.append(_ins(_JEQ_K, _NR_SOCKET, jt=0, jf=4))
    p.append(_ins(_LD_W_ABS, _OFF_ARG0_LO))
    p.append(_ins(_JEQ_K, _AF_UNIX, jt=1, jf=0))
    p.append(_ins(_RET_K, _RET_ERRNO | _EACCES))
    p.append(_ins(_RET_K, _RET_ALLOW))
    # clone(flags, ...): no new namespaces
    p.append(_ins(_JEQ_K, _NR_CLONE, jt=0, jf=4))
    p.append(_ins(_LD_W_ABS, _OFF_ARG0_LO))
    p.append(_ins(_JSET_K, _CLONE_NEW_FLAGS, jt=0, jf=1))
    p.append(_ins(_RET_K, _RET_ERRNO | _EPERM))
    p.append(_ins(_RET_K, _RET_ALLOW))
    p.append(_ins(_RET_K, _RET_ALLOW))
    return b"".join(p)
