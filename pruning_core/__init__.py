"""PruneScope's UI-free core: load datasets, score samples, select subsets, export.

Everything here runs without Streamlit; the app's pages and the ``prunescope`` CLI are
thin layers over these modules.
"""

import os

# OpenMP threads that wait at a barrier spin only briefly, then sleep (unless the user chose otherwise).  On a
# machine whose cores other processes hold, a spinning thread burns the core its peers need and every
# barrier waits for a descheduled thread (issue 27: 56-212 training samples/s where an idle machine gives
# ~6,000), so waits are passive; but sleeping at once made every step on an idle machine 15 % slower, so
# libgomp (torch's OpenMP on Linux) first spins 10,000 times, a few microseconds (bench/bench_omp_waits.py:
# idle 98 ms per step against 110-118 passive and 89-95 spinning; beside a busy process 308-360 against
# 337-374 passive).  OpenMP reads these once, when torch loads it, so they are set here: every entry point (the
# CLI, the app, benches, tests) imports this package before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
