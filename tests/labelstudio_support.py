"""A real Label Studio server for the round-trip tests and the benchmark: one per test session.

Label Studio lives in its own virtual environment (it pins its own Django): ``scripts/setup_labelstudio.sh``
creates it (CI: ``scripts/test.sh``); ``$PRUNESCOPE_LABEL_STUDIO`` names its ``label-studio`` executable.
The server runs on 127.0.0.1 on a free port with a temporary data folder (its SQLite database) and a known
admin and legacy API token; a second annotator is created through the API.  Missing: skipped locally,
failed under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from browser_support import free_port, stop_process

DEFAULT_VENV = Path.home() / ".cache" / "prunescope-venvs" / "labelstudio"
ADMIN, PASSWORD, TOKEN = "admin@example.com", "prunescope-test-1", "prunescope-test-token"


def label_studio_path() -> str:
    """The ``label-studio`` executable; skips (fails under CI=true) when it is not installed."""
    candidates = [os.environ.get("PRUNESCOPE_LABEL_STUDIO"), str(DEFAULT_VENV / "bin" / "label-studio"),
                  shutil.which("label-studio")]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        missing = "Label Studio is not installed (scripts/setup_labelstudio.sh installs it into its own venv)"
        if os.environ.get("CI") == "true":  # CI must run the round trip against the real server
            pytest.fail(missing)
        pytest.skip(missing)
    return found


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    started_s: float
    files_root: Path | None
    """Seconds from launch to the API answering (first start includes the database migrations)."""

    def call(self, method: str, path: str, **kwargs) -> dict | list:
        response = requests.request(method, self.url + path, headers={"Authorization": f"Token {self.token}"},
                                    timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else {}

    def add_user(self, email: str) -> int:
        """Another annotator (Label Studio lets the admin post annotations as ``completed_by`` that user);
        the one of that e-mail when it exists (the server is shared by the session's tests)."""
        known = {u["email"]: int(u["id"]) for u in self.call("GET", "/api/users")}
        if email in known:
            return known[email]
        return int(self.call("POST", "/api/users", json={"email": email, "username": email.split("@")[0],
                                                         "password": PASSWORD})["id"])

    def annotate(self, task_id: int, user_id: int, choice: str, *, from_name: str = "verdict") -> int:
        body = {"completed_by": user_id, "result": [{"from_name": from_name, "to_name": "image", "type": "choices",
                                                     "value": {"choices": [choice]}}]}
        return int(self.call("POST", f"/api/tasks/{task_id}/annotations", json=body)["id"])


@contextmanager
def running_label_studio(data_dir: Path, *, files_root: Path | None = None, timeout_s: float = 300.0) -> Iterator[Server]:
    """Start ``label-studio`` on 127.0.0.1 with its database in ``data_dir``; stopped on exit.

    ``files_root``: serve local files under it (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) to projects whose
    local-files storage covers them.
    """
    executable = label_studio_path()
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LATEST_VERSION_CHECK": "false",
           "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false",
           "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_COLLECT_ANALYTICS": "false"}
    if files_root is not None:
        env.update(LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true", LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files_root))
    log = open(data_dir / "label-studio.log", "wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [executable, "start", "--no-browser", "--data-dir", str(data_dir), "--internal-host", "127.0.0.1",
         "--port", str(port), "--username", ADMIN, "--password", PASSWORD, "--user-token", TOKEN,
         "--enable-legacy-api-token"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {process.returncode}; see {data_dir}/label-studio.log")
            try:
                if requests.get(url + "/api/projects", headers={"Authorization": f"Token {TOKEN}"},
                                timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"label-studio did not answer within {timeout_s:.0f} s; see {data_dir}/label-studio.log")
            time.sleep(1.0)
        yield Server(url, TOKEN, time.monotonic() - started, files_root)
    finally:
        stop_process(process, log, timeout=20)
