"""seqio and TensorFlow (only seqio's host-side engine here), imported in one place and quietly.

TensorFlow writes C++ start-up lines to file descriptor 2 when it loads ("All log messages before
absl::InitializeLog()", oneDNN notices, "Could not find cuda drivers" on a CPU machine); TF_CPP_MIN_LOG_LEVEL no longer
reaches them since its logging moved to absl. They are not ours to show: descriptor 2 points at /dev/null while the
import runs and back at the terminal afterwards (a Python error raised by the import still surfaces, after that).
Import `seqio` and `tf` from here, never directly.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import seqio
    import tensorflow as tf

__all__ = ["seqio", "tf"]
