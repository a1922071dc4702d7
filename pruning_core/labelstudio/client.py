"""The few Label Studio HTTP API calls a round trip needs, each failure one line.

Why not ``label-studio-sdk``: it pins its own pydantic/httpx, and the round trip needs six endpoints
(projects, import, export, tasks, predictions, users), which ``requests`` covers.  Checked against
Label Studio 1.23 (``tests/test_labelstudio_server.py`` drives a real server).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import requests

from pruning_core.labelstudio.tasks import LabelStudioConfig, LabelStudioError


class LabelStudio:
    """One Label Studio server reached with one user's API token (the legacy ``Token`` or a personal access token)."""

    def __init__(self, url: str, token: str, config: LabelStudioConfig = LabelStudioConfig()) -> None:
        if not url.startswith(("http://", "https://")):
            raise LabelStudioError(f"--url {url!r}: give Label Studio's address as http://HOST:PORT")
        if not token:
            raise LabelStudioError("no Label Studio token: pass --token or set LABEL_STUDIO_API_KEY "
                                   "(Account & Settings → Access Token)")
        self.url, self.config = url.rstrip("/"), config
        self.session = requests.Session()
        self.session.headers["Authorization"] = self._authorization(token)

    def _authorization(self, token: str) -> str:
        """A personal access token (a JWT refresh token) is exchanged for an access token; a legacy token is sent as is."""
        if token.count(".") != 2:
            return f"Token {token}"
        access = self._call("POST", "/api/token/refresh/", json={"refresh": token}, auth=False)["access"]
        return f"Bearer {access}"

    def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        """One request; an unreachable server, a refused token or an error status is one LabelStudioError."""
        session = self.session if auth else requests
        try:
            response = session.request(method, self.url + path, timeout=self.config.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioError(f"Label Studio at {self.url} is unreachable ({type(exc).__name__}); is it running "
                                   "there (README: Label Studio)?") from None
        if response.status_code in (401, 403):
            raise LabelStudioError(f"Label Studio at {self.url} refused the token (HTTP {response.status_code}); "
                                   "copy it from Account & Settings → Access Token")
        if response.status_code >= 400:
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} failed (HTTP {response.status_code}: "
                                   f"{_detail(response)})")
        return response.json() if response.content else None

    # ------------------------------------------------------------------ projects

    def find_project(self, title: str) -> Optional[dict]:
        """The project with exactly this title (None: none); two of that name are refused."""
        found = [p for p in self._pages("/api/projects", {"title": title}) if p.get("title") == title]
        if len(found) > 1:
            raise LabelStudioError(f"Label Studio at {self.url} has {len(found)} projects named {title!r} "
                                   f"(ids {', '.join(str(p['id']) for p in found)}); rename all but one")
        return found[0] if found else None

    def project(self, title: str) -> dict:
        found = self.find_project(title)
        if found is None:
            raise LabelStudioError(f"Label Studio at {self.url} has no project named {title!r}")
        return found

    def create_project(self, title: str, label_config: str, description: str) -> dict:
        return self._call("POST", "/api/projects", json={"title": title, "label_config": label_config,
                                                          "description": description})

    def _pages(self, path: str, params: dict) -> list[dict]:
        out, page = [], 1
        while True:
            body = self._call("GET", path, params={**params, "page": page, "page_size": 100})
            if isinstance(body, list):
                return body
            out += body.get("results", [])
            if not body.get("next"):
                return out
            page += 1

    # ------------------------------------------------------------------ tasks

    def export(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations and predictions (Label Studio's JSON export)."""
        return self._call("GET", f"/api/projects/{project_id}/export",
                          params={"exportType": "JSON", "download_all_tasks": "true"})

    def import_tasks(self, project_id: int, tasks: Sequence[dict]) -> int:
        """Import tasks in batches (``LabelStudioConfig.import_batch``); returns how many were created."""
        created = 0
        for start in range(0, len(tasks), self.config.import_batch):
            body = self._call("POST", f"/api/projects/{project_id}/import",
                              json=list(tasks[start:start + self.config.import_batch]))
            created += int(body.get("task_count", 0))
        return created

    def predictions(self, project_id: int) -> list[dict]:
        """Every prediction of the project (the export lists only their ids)."""
        return self._call("GET", "/api/predictions", params={"project": project_id})

    def update_task(self, task_id: int, data: dict) -> None:
        self._call("PATCH", f"/api/tasks/{task_id}", json={"data": data})

    def replace_predictions(self, task_id: int, old_ids: Sequence[int], predictions: Sequence[dict]) -> None:
        """Drop the task's earlier PruneScope predictions and add the current one(s)."""
        for prediction_id in old_ids:
            self._call("DELETE", f"/api/predictions/{prediction_id}")
        for prediction in predictions:
            self._call("POST", "/api/predictions", json={**prediction, "task": task_id})

    def users(self) -> dict[int, str]:
        """User id -> e-mail (else username): who an annotation's ``completed_by`` is."""
        return {int(u["id"]): str(u.get("email") or u.get("username") or f"user {u['id']}")
                for u in self._call("GET", "/api/users")}


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason
    if isinstance(body, dict):
        return " ".join(str(body.get("validation_errors") or body.get("detail") or body).split())[:300]
    return " ".join(str(body).split())[:300]
