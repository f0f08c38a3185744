"""The LVLM check on a server: `lvlmva lvlm-check --endpoint` sends the same requests of each kind as for a
local folder, to a real ``transformers serve`` (test_endpoint.py's fixture: a tiny Qwen2.5-VL on loopback)."""

from __future__ import annotations

from test_endpoint import served  # noqa: F401 - the fixture

from lvlmva_desktop.cli import main
from lvlmva_desktop.lvlm.check import check_backend
from lvlmva_desktop.lvlm.endpoint import EndpointBackend


def test_every_kind_of_request_reaches_the_server(served, capsys):  # noqa: F811
    be = EndpointBackend(served["base"] + "/v1", served["model"], timeout_s=60, max_concurrency=2)
    rep = check_backend(be)
    assert rep.ok, rep.problem
    assert [c["kind"] for c in rep.calls] == ["critic", "judge", "summary", "chat"]
    assert all(c["ok"] and c["output"] for c in rep.calls)
    assert rep.identity["kind"] == "endpoint"

    assert main(["lvlm-check", "--endpoint", served["base"] + "/v1", "--lvlm-model", served["model"]]) == 0
    out = capsys.readouterr().out
    assert "\njudge    ok" in out and "health check passed" in out
