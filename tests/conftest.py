"""Shared test helpers: the guard that makes every host read of a tensor raise.

On an accelerator a read (`t.item()`, `t.tolist()`, `t.cpu()`, `bool(t)`, ...) makes
Python wait for the device. On a CPU nothing waits, so `no_host_reads()` makes every
such read raise, except from the callers in ALLOWED, where the read is by design.
Use it as `from conftest import ALLOWED, READS, no_host_reads`, or through the
`host_reads` fixture (which is `no_host_reads` itself).
"""

import sys
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

READS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
)
ALLOWED = {  # (module, function) making the read: why it is no per-step sync on a GPU
    (
        "plainrl.checks",
        "check",
    ): "reads on the CPU only; on a GPU it queues an async assert",
    ("torch.optim.optimizer", "_get_value"): "Adam's step counter is a host tensor",
    (
        "plainrl.trajectory",
        "rollout",
    ): "the early stop, every 32 steps, and the final trim",
}


@contextmanager
def no_host_reads(allowed=None):
    """Make every host read of a tensor raise, except from `allowed` callers (default
    ALLOWED); yields a Counter of the allowed reads, by (module, function)."""
    allowed = ALLOWED if allowed is None else allowed
    counts, originals = Counter(), {name: getattr(torch.Tensor, name) for name in READS}

    def guard(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            where = (caller.f_globals.get("__name__"), caller.f_code.co_name)
            if where not in allowed:
                raise AssertionError(
                    f"host read Tensor.{name} in {where[0]}.{where[1]}"
                )
            counts[where] += 1
            return original(self, *args, **kwargs)

        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, guard(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture
def host_reads():
    "The `no_host_reads` context manager, as a fixture."
    return no_host_reads
