"""The app on a shared server: it listens on loopback only unless told, and reads and writes only inside its workspace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.cli import build_parser, main
from pruning_core.runtime.safety import DEFAULT_ADDRESS, ROOTS_ENV, UnsafeRequest, check_in_workspace, is_loopback, workspace_roots
from browser_support import free_port
from review_fixtures import make_scored_dataset
from ui import state

REPO = Path(__file__).resolve().parent.parent


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6, as ``ss -ltn`` reads them)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the kernel's socket table (Linux)")
def test_prunescope_app_listens_only_on_loopback(tmp_path):
    port = free_port()
    env = {**os.environ, "PRUNESCOPE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pruning_core.cli", "app", "--headless", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "app.log").read_text()[-2000:]
                time.sleep(0.5)
        addresses = _listening(port)
        assert addresses == ["127.0.0.1"], addresses
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the server it started
        proc.wait(timeout=20)
        log.close()


def test_a_remote_address_needs_allow_remote_and_warns(monkeypatch, capsys):
    import pruning_core.cli as cli

    started = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: started.append(cmd) or 0)
    assert main(["app", "--headless"]) == 0
    cmd = started.pop()
    assert cmd[cmd.index("--server.address") + 1] == DEFAULT_ADDRESS == "127.0.0.1"
    capsys.readouterr()

    assert main(["app", "--address", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--allow-remote" in err and not started

    assert main(["app", "--address", "0.0.0.0", "--allow-remote"]) == 0
    assert "without access control" in capsys.readouterr().err
    cmd = started.pop()
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"


def test_the_streamlit_config_and_the_cli_agree_on_the_address():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == DEFAULT_ADDRESS
    assert build_parser().parse_args(["app"]).address == DEFAULT_ADDRESS


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                               ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                               ("::", False), ("192.168.1.5", False), ("my-host", False)])
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


# ----------------------------------------------------------------------------- workspace boundary

def test_workspace_roots_default_and_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    assert workspace_roots() == [Path.home().resolve(), Path.cwd().resolve()]
    monkeypatch.setenv(ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert workspace_roots() == [tmp_path.resolve() / "a", tmp_path.resolve() / "b"]


def test_paths_leaving_the_workspace_are_refused(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "escape").symlink_to("/etc", target_is_directory=True)
    monkeypatch.setenv(ROOTS_ENV, str(ws))
    assert check_in_workspace(ws / "data", "dataset folder") == (ws / "data").resolve()
    assert check_in_workspace(ws / "new" / "export", "output folder") == (ws / "new" / "export").resolve()
    for outside in ("/", "/etc", str(ws / ".." / "other"), str(ws / "escape" / "ssh")):
        with pytest.raises(UnsafeRequest, match=f"outside the workspace .*{ROOTS_ENV}"):
            check_in_workspace(outside, "dataset folder")


def test_dataset_page_refuses_a_root_outside_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    at = AppTest.from_file(str(REPO / "pages" / "dataset.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("folder", "/")
    at.run()
    assert not at.exception
    assert any("outside the workspace" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric  # no dataset: nothing of / was listed (the one table is the cache panel's)
    assert all("passwd" not in df.value.to_csv() and "etc/" not in df.value.to_csv() for df in at.dataframe)
    at = AppTest.from_file(str(REPO / "pages" / "dataset.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(tmp_path / "m.csv"), root="/etc")
    at.run()
    assert any("dataset root /etc is outside the workspace" in e.value for e in at.error)


def test_export_page_refuses_an_output_folder_outside_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    dataset, manifest, table = make_scored_dataset(tmp_path / "data")
    at = AppTest.from_file(str(REPO / "pages" / "export.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    at.text_input(key="export_dir").set_value(str(outside)).run()
    next(b for b in at.button if b.label == "Write folder").click().run()
    assert any("Nothing written" in e.value and "outside the workspace" in e.value for e in at.error)
    assert not outside.exists()
    at.text_input(key="export_dir").set_value(str(tmp_path / "pruned")).run()
    next(b for b in at.button if b.label == "Write folder").click().run()
    assert at.success and (tmp_path / "pruned" / "index.csv").is_file()


def test_evaluate_page_refuses_a_held_out_set_outside_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    _, manifest, table = make_scored_dataset(tmp_path / "data")
    at = AppTest.from_file(str(REPO / "pages" / "evaluate.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    at.text_input[0].set_value("/etc").run()
    assert any("outside the workspace" in e.value for e in at.error), [e.value for e in at.error]
    assert not any("Plan:" in box.value for box in at.info)  # nothing planned or trained on /etc


@pytest.mark.parametrize("terminal, headless", [(True, "false"), (False, "true")])
def test_the_app_starts_headless_without_a_terminal(monkeypatch, terminal, headless):
    """Under nohup or a service manager nothing may ask on stdin (Streamlit's e-mail prompt): headless there."""
    from pruning_core import cli

    monkeypatch.setattr(cli, "_stdin_is_terminal", lambda: terminal)
    command = cli.app_command(cli.build_parser().parse_args(["app"]))
    assert command[command.index("--server.headless") + 1] == headless
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    forced = cli.app_command(cli.build_parser().parse_args(["app", "--no-headless"]))
    assert forced[forced.index("--server.headless") + 1] == "false"
