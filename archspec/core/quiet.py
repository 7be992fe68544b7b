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
    r"^[IWE]0000 \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] tensorflow/|"
    # the LiteRT converter and interpreter
    r"^fully_quantize: |Created TensorFlow Lite XNNPACK delegate|^Estimated count of arithmetic ops|"
    r"^INFO: Initialized TensorFlow Lite runtime")


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


@contextlib.contextmanager
def python_loggers_quiet(*names: str, level: int | None = None):
    """Run the block with the Python loggers `names` ("" is the root logger) at ERROR and
    above: libraries that log advice about their internals at WARNING through `logging`
    (ONNX Runtime's quantizer on the root logger: 22-55 ``WARNING:root`` lines an int8
    export; TensorFlow's ``tf.function retracing`` notices while Keras loads weights). Their
    errors still show; ``--debug`` keeps everything."""
    import logging

    if not enabled():
        yield
        return
    level = logging.ERROR if level is None else level
    loggers = [logging.getLogger(n) if n else logging.getLogger() for n in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
        if lg is not logging.getLogger():  # kept off the root logger's handlers (whatever they are)
            lg.propagate = False
    try:
        yield
    finally:
        for lg, (lv, prop) in zip(loggers, saved):
            lg.setLevel(lv)
            lg.propagate = prop


def quantizer_quiet():
    """ONNX Runtime's quantizer's advice (root logger and its own)."""
    return python_loggers_quiet("", "onnxruntime", "onnxruntime.quantization")


def tf_retracing_quiet():
    """TensorFlow's retracing notices (its Python logger, and absl's that it writes through),
    kept from reaching the root logger: loading weights and ``model.fit`` run inside it."""
    return python_loggers_quiet("tensorflow", "absl")
