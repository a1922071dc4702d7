"""PruneScope's UI-free core: load datasets, score samples, select subsets, export.

Everything here runs without Streamlit; the app's pages and the ``prunescope`` CLI are
thin layers over these modules.
"""

__version__ = "0.1.0"
