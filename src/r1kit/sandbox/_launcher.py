"""Runs inside the sandbox as ``python -I -X utf8 _launcher.py CONFIG_JSON`` (stdlib only).

1. drops to the sandbox's own unprivileged uid/gid when started as root (it then loses every
   capability; no_new_privs is already set by bubblewrap or by nothing needing it);
2. sets the resource limits (they are inherited by everything the program starts);
3. tells the parent it is ready (``R`` on the status fd, which the program never sees);
4. starts the untrusted program as a fresh ``python -I`` process and waits for it;
5. reports the program's exit status, CPU time and peak memory on the status fd.

The parent decides the verdict; this file only reports. If the program kills this launcher, the
report is simply missing and the parent scores the run as a runtime error.
"""

import json
import os
import resource
import sys


def _fail(fd, msg):
    try:
        os.write(fd, ("E " + msg + "\n").encode("utf-8", "replace"))
    finally:
        os._exit(70)


def main():
    cfg = json.loads(sys.argv[1])
    fd = cfg["status_fd"]
    os.set_inheritable(fd, False)  # the program must not inherit the status channel
    try:
        uid = cfg.get("uid")
        if uid is not None and os.geteuid() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if os.getuid() == 0 or os.geteuid() == 0 or os.getgid() == 0:
                _fail(fd, "could not drop root")
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.chdir(cfg["cwd"])
        argv = cfg["argv"]
        stdin_path = cfg.get("stdin")
        if stdin_path:
            sfd = os.open(stdin_path, os.O_RDONLY)
            os.dup2(sfd, 0)
            os.close(sfd)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        _fail(fd, "launcher setup failed: %r" % (e,))
    os.write(fd, b"R\n")
    try:
        pid = os.posix_spawn(argv[0], argv, cfg["env"])
    except BaseException as e:  # noqa: BLE001
        _fail(fd, "could not start the program: %r" % (e,))
    _, status, ru = os.wait4(pid, 0)
    report = {
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu": ru.ru_utime + ru.ru_stime,
        "maxrss_kb": ru.ru_maxrss,
    }
    os.write(fd, (json.dumps(report) + "\n").encode())
    os._exit(0)


if __name__ == "__main__":
    main()
