"""How llama.cpp's and torch's OpenMP threads wait between operations: set before either library loads.

A decode step is hundreds of small operations with a thread barrier after each. Threads that sleep at
once at every barrier (``OMP_WAIT_POLICY=PASSIVE`` alone) pay a wake-up each time: on an idle 2-core VM
that made one-at-a-time generation about 3x slower (results/bench/speed.md). Threads that spin without
bound (libgomp's ``ACTIVE``) steal the cores from other work and made calls 10-50x slower on a shared
machine. The default here is passive waiting after a short spin (``GOMP_SPINCOUNT``): fast when the
machine is free, bounded when it is not. Values already in the environment win.
"""
from __future__ import annotations

import os
from typing import MutableMapping

WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}


def openmp_wait_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Fill in the wait settings the environment does not set; returns the environment."""
    env = os.environ if env is None else env
    for k, v in WAIT_DEFAULTS.items():
        env.setdefault(k, v)
    return env
