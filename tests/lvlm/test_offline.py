"""Offline by construction: the whole tool runs with every outbound connection refused and attempts none,
except to an LVLM server the user configured.

The tool runs in a fresh process (tests/fixtures/offline_run.py) so that start-up is observed too, with the
offline switches set to 0 in its environment: the package must force them on. A control process shows that
the same guard does see a hub call when the package is not there to stop it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvlmva_desktop.core.runtime.offline import OFFLINE_ENV, enforce_offline

SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "offline_run.py"
ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        HF_HUB_OFFLINE="0",  # what a user's shell might say; the tool must not listen
        TRANSFORMERS_OFFLINE="0",
        HF_DATASETS_OFFLINE="0",
        HF_HOME=str(tmp / "hf-home"),  # an empty hub cache: nothing can be answered from it
        PYTHONPATH=str(ROOT),
        TOKENIZERS_PARALLELISM="false",
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def guarded(tiny_lvlm_dirs, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("offline")
    return _run([str(tmp / "work"), str(tiny_lvlm_dirs["qwen2_5_vl"])], tmp)


@pytest.mark.slow
def test_the_whole_tool_attempts_no_connection(guarded):
    phases, found = guarded["phases"], guarded["found"]
    assert list(phases) == ["startup", "pipeline", "lvlm_local", "stray_hub_calls", "lvlm_endpoint"]
    for name in ("startup", "pipeline", "lvlm_local", "stray_hub_calls"):
        assert phases[name] == [], f"{name}: {phases[name]}"
    # and the work was really done
    assert found["env_before_import"] == {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    assert found["env_after_import"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert found["hub_offline_mode"] is True
    assert dict(found["pipeline_runs"]) == dict.fromkeys(
        ["align", "critique", "evaluate", "explain", "pipeline", "sample", "train"], "finished"
    )
    assert found["local_health_ok"] is True and found["local_critique_images"] == 6
    # a stray download is stopped by the offline switch itself, before any socket
    assert found["stray_hf_hub_download"] in ("OfflineModeIsEnabled", "LocalEntryNotFoundError")
    assert found["stray_AutoConfig"] in ("OSError", "OfflineModeIsEnabled", "LocalEntryNotFoundError")


@pytest.mark.slow
def test_a_configured_endpoint_on_loopback_is_the_only_destination(guarded):
    attempts, found = guarded["phases"]["lvlm_endpoint"], guarded["found"]
    host, port = found["endpoint"]
    assert attempts, "the endpoint critique must have connected"
    assert {(h, p) for _, h, p in attempts} == {(host, port)} and host == "127.0.0.1"
    assert {door for door, _, _ in attempts} >= {"create_connection", "connect"}
    assert found["endpoint_critique_images"] == 6 and found["endpoint_relevant"] > 0


def test_the_guard_sees_a_hub_call_when_nothing_stops_it(tmp_path):
    """Control: without the package, the same guard records the hub call's name lookup."""
    out = _run(["--control"], tmp_path)
    hosts = {h for _, h, _ in out["phases"]["control"]}
    assert "huggingface.co" in hosts and out["found"]["outcome"] != "succeeded"


def test_enforce_offline_overrides_the_environment_and_a_loaded_hub(monkeypatch):
    import huggingface_hub.constants as hub

    for name in OFFLINE_ENV:
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # as if imported before us with offline off
    changed = enforce_offline()
    assert {k: os.environ[k] for k in OFFLINE_ENV} == dict.fromkeys(OFFLINE_ENV, "1")
    assert hub.is_offline_mode() is True and "huggingface_hub.constants.HF_HUB_OFFLINE" in changed
    import transformers.utils.hub as th

    assert th.is_offline_mode() is True  # transformers asks huggingface_hub
    assert enforce_offline() == []  # idempotent


def test_the_entry_points_force_offline_mode(monkeypatch, capsys):
    from lvlmva_desktop import app, cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert cli.main(["settings"]) == 0
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "false")
    with pytest.raises(SystemExit):
        app.main(["--help"])
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    capsys.readouterr()
