"""Start the app so that every URL, deep links included, goes through ``app.py``'s ``st.navigation``.

Streamlit keeps a legacy mode for apps with a ``pages/`` folder: until some script run has called
``st.navigation``, a visitor who opens ``/prune`` directly gets ``pages/prune.py`` run on its own,
with an auto-generated sidebar of file names.  ``app.py`` always calls ``st.navigation``, so the
legacy mode is only ever wrong here; switching it off before the server starts makes a bookmarked
page open with the real navigation.  Usage: ``python -m ui.launch [streamlit run options]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"


def main(argv: list[str]) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", str(APP), *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
