"""wandb never blocks a run (decoderlab.wandb_setup): bounded online start, offline fallback, online needs a key.

No test touches the network: the "server" is a closed port on localhost.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from conftest import TINY, run_cli
from decoderlab import wandb_setup
from decoderlab.errors import ConfigError

FAKE_KEY = "0" * 40


def _closed_port_url() -> str:
    """A localhost URL nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path: Path):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_online_without_a_key_is_an_error_naming_wandb_mode(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match="WANDB_MODE=online but no wandb API key"):
        wandb_setup.check_credentials()


def test_a_netrc_login_is_a_key(no_wandb_env, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("WANDB_MODE", "online")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    wandb_setup.check_credentials()  # `wandb login` wrote it: no error
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    with pytest.raises(ConfigError, match="wandb.example.org"):  # a login for another host does not count
        wandb_setup.check_credentials()


def test_reachable_tells_a_closed_port():
    assert not wandb_setup.reachable(_closed_port_url(), timeout=2)


class _FakeLogger:
    """A WandbLogger stand-in: its ``experiment`` fails online (as wandb.init does on its init timeout)."""

    def __init__(self, offline: bool, tmp: Path):
        self.offline, self.tmp = offline, tmp

    @property
    def experiment(self):  # noqa: ANN201
        if not self.offline:
            import wandb

            raise wandb.errors.CommError("Timed out while retrying")
        return type("Run", (), {"dir": str(self.tmp / "wandb" / "offline-run-x-abc" / "files")})()


def test_a_failed_online_start_falls_back_to_offline_with_the_sync_command(no_wandb_env, monkeypatch, tmp_path,
                                                                           caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(wandb_setup, "reachable", lambda url, timeout=0: True)  # the server answers, wandb does not
    made = []

    def make(offline: bool) -> _FakeLogger:
        made.append(offline)
        return _FakeLogger(offline, tmp_path)

    with caplog.at_level("WARNING", logger="decoderlab"):
        logger = wandb_setup.start_wandb(make, offline=False)
    assert made == [False, True] and logger.offline
    assert "Timed out while retrying" in caplog.text
    assert f"wandb sync {tmp_path / 'wandb' / 'offline-run-x-abc'}" in caplog.text


def test_offline_is_never_tried_online(no_wandb_env, monkeypatch, tmp_path):
    monkeypatch.setattr(wandb_setup, "reachable", lambda *a, **k: pytest.fail("probed the network offline"))
    assert wandb_setup.start_wandb(lambda off: _FakeLogger(off, tmp_path), offline=True).offline


@pytest.mark.slow
def test_a_key_without_network_trains_offline_and_says_how_to_sync(tmp_path: Path, tiny_corpus: Path):
    """The real CLI, a key, wandb's server a closed port: the run completes, logged offline, with the warning."""
    run = tmp_path / "run"
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": _closed_port_url(), "WANDB_MODE": "",
           "NETRC": str(tmp_path / "no-netrc")}
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "data=text", f"data.paths=[{tiny_corpus}]"],
                  cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1  # the fallback happened: an offline run, no online one
    assert not list((run / "wandb").glob("run-*"))
    text = out.stdout + out.stderr
    lines = [line for line in text.splitlines() if "logging offline instead" in line]
    assert len(lines) == 1 and "cannot reach" in lines[0] and f"wandb sync {offline[0]}" in lines[0]


@pytest.mark.slow
def test_online_without_a_key_stops_before_anything_runs(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}"], cwd=tmp_path,
                  env={"WANDB_MODE": "online", "NETRC": str(tmp_path / "no-netrc")})
    assert out.returncode == 1
    assert "error: WANDB_MODE=online but no wandb API key" in out.stderr and "Traceback" not in out.stderr
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
