"""The audit log with a real local LVLM: a critique run with trust_remote_code enabled says so in its entry
(with the model's folder hash and the template hashes), and a chat question and answer are logged by hash."""

from __future__ import annotations

import torch

from lvlmva_desktop.core.data.benchsets import GENERATORS, default_class_descriptions
from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import (
    explain_alignment_set,
    run_critique,
    sample_alignment_set,
    train_original,
)
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.lvlm.backend import GenerationSettings
from lvlmva_desktop.lvlm.chat import ask_and_store, chat_for_sample
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
from lvlmva_desktop.lvlm.local import LocalBackend
from lvlmva_desktop.lvlm.prompts import TemplateSet

CPU = torch.device("cpu")


def test_trust_remote_code_critique_and_chat_are_logged(tmp_path, tiny_lvlm_dirs):
    manifest = GENERATORS["isic-like"](tmp_path / "data", seed=0, n_train=32, n_test=8, size=32)
    report = import_csv_manifest(manifest)
    with Project.create(tmp_path / "proj", "lvlm", report.classes, (32, 32), 3) as p:
        p.add_samples(report)
        p.set_class_descriptions(default_class_descriptions("isic-like"))
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1), CPU)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=2), CPU)
        eid = explain_alignment_set(p, mid, sid, ExplainSettings(n_background=2), SegmentSettings(), CPU)

        backend = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu", trust_remote_code=True)
        templates = TemplateSet.for_project(p)
        settings = CriticSettings(
            use_cache=False, critic_max_new_tokens=6, judge_max_new_tokens=6, strict_retry=False
        )
        run_critique(p, eid, LVLMCritic(backend, templates, settings))
        sample = p.alignment_members(sid)[0]["sample_id"]
        chat = chat_for_sample(p, eid, sample, backend, templates)
        answer = ask_and_store(
            p, eid, sample, chat, "Why segment 2?", settings=GenerationSettings(max_new_tokens=6)
        )
        entries = audit.entries(p.db)
        ok = audit.verify_project(p).ok

    crit = next(e for e in entries if e["action"] == "critique")
    assert crit["params"]["trust_remote_code"] is True
    assert crit["params"]["critic"]["model"]["trust_remote_code"] is True
    assert crit["hashes"]["lvlm:model"] == backend.identity()["folder_hash"]
    assert crit["hashes"]["template:critic.j2"] == templates.hashes("critic")["critic.j2"]
    assert crit["params"]["n_critiques"] == 2
    start = next(e for e in entries if e["action"] == "run_start" and e["params"]["kind"] == "critique")
    assert start["params"]["settings"]["critic"]["model"]["trust_remote_code"] is True
    # the project's default templates were copied in on first use: logged as version 1 each
    assert {e["params"]["name"] for e in entries if e["action"] == "prompt_template"} >= {
        "critic.j2",
        "judge.j2",
    }

    (chat_entry,) = [e for e in entries if e["action"] == "chat"]
    assert chat_entry["params"]["sample_id"] == sample and chat_entry["params"]["trust_remote_code"] is True
    assert chat_entry["hashes"] == {
        "question": audit.text_hash("Why segment 2?"),
        "answer": audit.text_hash(answer),
    }
    assert ok
