"""Keep the native libraries' start-up chatter off a newcomer's terminal.

TensorFlow's C++ side (absl, XLA, the CUDA stubs) writes lines such as ``cuInit`` failures
on a machine without a GPU, the oneDNN notice and ``All log messages before
absl::InitializeLog()`` straight to file descriptor 2 when TensorFlow is imported and its
first device context is made; they read as failures but are not. While that happens,
fd 2 goes to a temporary file; afterwards every line that is not such a notice is
written back, so real errors still show. ``--debug`` (or ``ARCHSPEC_DEBUG=1``) turns
this off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuInit|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|cpu_feature_guard|"
    r"rebuild TensorFlow with the appropriate compiler flags|oneDNN custom operations|"
    r"TF_ENABLE_ONEDNN_OPTS|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning|"
    r"^[IWE]0000 \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] tensorflow/")


def enabled() -> bool:
    return os.environ.get("ARCHSPEC_DEBUG", "") in ("", "0")


def prepare_environment() -> None:
    """Before TensorFlow is imported: its own log threshold (kept if the user set one)."""
    if enabled():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def native_stderr_filtered():
    """Run the block with fd 2 captured; write back what is not a known start-up notice."""
    if not enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines() if not NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
