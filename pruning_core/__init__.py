"""PruneScope's UI-free core: load datasets, score samples, select subsets, export.

Everything here runs without Streamlit; the app's pages and the ``prunescope`` CLI are
thin layers over these modules.
"""

import os

# OpenMP threads that wait at a barrier sleep instead of spinning (unless the user chose otherwise).  On a
# machine whose cores other processes hold, a spinning thread burns the core its peers need and every
# barrier waits for a descheduled thread (issue 27: 56-212 training samples/s where an idle machine gives
# ~6,000).  OpenMP reads this once, when torch loads it, so it is set here: every entry point (the CLI, the
# app, benches, tests) imports this package before torch.  ``runtime.devices.thread_policy`` says whether
# it was in time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
