"""A job process that dies with the process that started it: no orphan job when a runner or a Ray worker is killed.

The runner starts every job as a child process (:func:`.runner.run_job`). On a Ray cluster that parent is a Ray
worker, which Ray kills when its node is lost or its task cancelled; the job must not outlive it (it would go on
writing the work folder that the retried task writes too). The parent passes its process id in the environment
(:func:`child_env`); the job asks the Linux kernel for a ``SIGKILL`` when its parent dies (:func:`die_with_parent`)
and exits at once if the parent is already gone. On other systems nothing changes.
"""

from __future__ import annotations

import os
import signal
import sys

#: Environment variable carrying the process id of the job's parent.
PARENT_ENV = "ANOMALIB_FEWSHOT_PARENT_PID"

#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child job process of this process (this process's id added)."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> bool:
    """In a job process: be killed when the parent named in the environment dies; exit now if it already has.

    Returns:
        True when the kernel will kill this process with its parent (Linux, started by :func:`child_env`).

    """
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != int(parent):  # the parent died before the request: nobody will read this job's result
        os._exit(1)
    return True
