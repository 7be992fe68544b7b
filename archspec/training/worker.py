"""The worker process of `archspec train --distribute multi_worker` (`multiworker.supervise`
starts it as `python -c "from archspec.training.worker import child_main; child_main()" FD`):
a fresh interpreter with Keras on JAX, which trains this worker's part of the run
(`loop.train`) and reports progress, the result or the error as lines on file descriptor FD."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from ..core.errors import ArchspecError, SpecError
from . import multiworker


def _die_with_parent() -> None:
    """This process ends when the one that started it does (Linux: PR_SET_PDEATHSIG; anywhere:
    its stdin, the parent's pipe, closes)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass

    def watch():
        while sys.stdin.readline():
            pass
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def child_main() -> None:
    """The worker process: read the run from stdin, join the cluster, train (`loop.train`),
    report on the file descriptor argv[1]. It never runs Python's exit (which would wait at
    JAX's shutdown barrier for workers that may be gone): it leaves with os._exit."""
    out = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    os.dup2(2, 1)  # stdout is the command's (its --json): Keras' bar and gloo's notices go to stderr, relayed

    def send(kind, obj):
        out.write(f"{kind} {json.dumps(obj, default=float)}\n")
        out.flush()
    first = json.loads(sys.stdin.readline())
    _die_with_parent()
    kwargs = first["kwargs"]
    addresses, rank, source = first["cluster"]
    cluster = multiworker.Cluster(tuple(addresses), rank, source)
    multiworker.set_current(cluster)

    def stop(signum, frame):
        send("ERROR", {"code": 130, "message": f"worker {rank}: {signal.Signals(signum).name}: stopped; the run "
                                               f"directory keeps the last complete epoch's checkpoint: start every "
                                               f"worker again with --resume"})
        os._exit(130)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    code = 0
    try:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != "jax":  # pragma: no cover
            raise ArchspecError("multi_worker runs Keras on JAX, but Keras was imported before with another backend")
        os.environ["KERAS_BACKEND"] = "jax"
        multiworker.initialize(cluster)  # before anything computes (JAX's rule)
        from . import loop

        result = loop.train(**kwargs, say=lambda m: send("SAY", m))
        send("RESULT", result)
        try:
            import jax

            jax.distributed.shutdown()  # every worker at the end: none leaves another waiting
        except Exception:  # noqa: BLE001 - the result is out; the others end on their own
            pass
    except BaseException as exc:  # noqa: BLE001 - every failure is reported as the command reports it
        from ..core.errors import error_lines

        code, lines = error_lines(exc)
        text = " ".join(ln.removeprefix("archspec: error: ").removeprefix("archspec: ") for ln in lines) or str(exc)
        if isinstance(exc, SpecError):
            text = exc.one_line()
        lost = multiworker.lost_message(exc, cluster)
        if lost and not isinstance(exc, ArchspecError):
            code, text = 1, lost
        send("ERROR", {"code": code or 1, "message": text})
        code = code or 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
