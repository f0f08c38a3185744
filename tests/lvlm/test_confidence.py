"""Verdict confidences (issue 13): the judge's own probability of each verdict it gave.

The local back-end's token probabilities are checked against a teacher-forced forward pass of the same
tiny random-weight model folders; the critic's confidences come from a tiny folder trained to answer a
fixed verdict JSON, are checked against the model's probability of the verdict word's first token (found
with the tokenizer's own offsets), stored in a project and read back. The endpoint's are read from a
recording server's log-probabilities, and a server that refuses them is asked again without.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from fixtures.tiny_lvlm import FAMILIES, chat_request, make_tiny_lvlm, overfit_tiny_lvlm, sample_image
from test_critic_flow import ScriptedBackend, _req
from test_endpoint import Stub, _completion

from lvlmva_desktop.core.method.critic import SPURIOUS
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.store.integrity import verdict_problems
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.lvlm.backend import Generation, GenerationSettings, prob_at, token_ends
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic, verdict_positions
from lvlmva_desktop.lvlm.endpoint import EndpointBackend
from lvlmva_desktop.lvlm.local import LocalBackend
from lvlmva_desktop.lvlm.parsing import parse_verdicts

PROBS = GenerationSettings(max_new_tokens=6, batch_size=2, token_probs=True)
TARGET = json.dumps(
    {
        "segments": [
            {"segment": 1, "verdict": "spurious", "reason": "tag"},
            {"segment": 2, "verdict": "relevant", "reason": "lesion"},
        ]
    }
)


def _requests():
    im = sample_image(1, 40)
    return [
        chat_request("Is segment 1 relevant or spurious?", [im]),
        chat_request(
            "Describe both pictures, please, at some length.", [sample_image(2, 48), im], "Be brief."
        ),
    ]


def _forced_probs(backend: LocalBackend, request, answer_ids: list[int]) -> torch.Tensor:
    """The model's probability of each answer token, teacher-forced after the prompt (one forward pass)."""
    inputs = backend._inputs([request])
    n = inputs["input_ids"].shape[1]
    ans = torch.tensor([answer_ids])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], ans], 1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in full:
            # PaliGemma's token types mark the prompt (0, attended both ways) and the answer (1, causal);
            # elsewhere they mark image tokens (1), and the answer is text (0)
            suffix = 1 if backend.model_type == "paligemma" and key == "token_type_ids" else 0
            full[key] = torch.cat([full[key], torch.full_like(ans, suffix, dtype=full[key].dtype)], 1)
    with torch.no_grad():
        logits = backend.model(**full).logits[0, n - 1 : -1].float()
    return torch.softmax(logits, -1).gather(1, ans[0][:, None])[:, 0]


@pytest.mark.parametrize("family", FAMILIES)
def test_token_probabilities_are_the_models_own(tiny_lvlm_dirs, family):
    b = LocalBackend(tiny_lvlm_dirs[family], device="cpu")
    try:
        reqs = _requests()
        batched = b.generate(reqs, PROBS)
        alone = b.generate(reqs[:1], PROBS)[0]
        plain = b.generate(reqs[:1], GenerationSettings(max_new_tokens=6))[0]
        assert plain.token_probs is None  # asked for only when wanted
        for g in batched:
            assert len(g.token_probs) == g.generated_tokens
            ends = [e for e, _ in g.token_probs]
            assert ends == sorted(ends) and 0 <= ends[0] and ends[-1] == len(g.text)
            assert all(0.0 < p <= 1.0 for _, p in g.token_probs)
        # the same answer and probabilities whichever batch it was in (left padding)
        assert alone.text == batched[0].text == plain.text
        for (e1, p1), (e2, p2) in zip(alone.token_probs, batched[0].token_probs):
            assert e1 == e2 and p1 == pytest.approx(p2, rel=1e-4)
        # and they are the model's: a teacher-forced pass over the generated tokens gives the same numbers
        inputs = b._inputs(reqs[:1])
        seqs = b._run(inputs, GenerationSettings(max_new_tokens=6))
        ids = seqs[0, inputs["input_ids"].shape[1] :].tolist()[: alone.generated_tokens]
        want = _forced_probs(b, reqs[0], ids)
        got = torch.tensor([p for _, p in alone.token_probs])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), (got, want)
    finally:
        b.close()


def test_prob_at_names_the_token_that_wrote_a_character():
    g = Generation("ab cd", token_probs=[(2, 0.5), (3, 0.9), (5, 0.25)])
    assert [prob_at(g, i) for i in range(6)] == [0.5, 0.5, 0.9, 0.25, 0.25, None]
    assert prob_at(Generation("x"), 0) is None
    assert token_ends(["ab", " c", "d"], "ab cd") == [2, 4, 5]
    assert token_ends(["ab", "x"], "ab cd") is None


@pytest.mark.parametrize(
    "text",
    [
        TARGET,
        'Draft {"1": "relevant", "2": "spurious"} then {"segments": [{"segment": 2, "verdict": "Relevant"}]}',
        "Segment 1: spurious. Segment 2 is **not relevant**. Later: Segment 1 - relevant",
        '{"verdicts": [{"id": 0, "spurious": true}, {"id": 1, "spurious": false}]}',
        '{"segments": [{"segment": 1, "reason": "a {nested} brace", "verdict": "undecided"}]} Segment 2: core',
        "nothing usable {not json",
    ],
)
def test_verdict_positions_find_what_the_parser_reads(text):
    parsed = parse_verdicts(text, 2).verdicts
    found = verdict_positions(text, 2)
    assert [v for v, _ in found] == parsed
    words = {
        "spurious": ("spurious", "not relevant", "true"),
        "relevant": ("relevant", "Relevant", "core", "false"),
    }
    words["undecided"] = ("undecided",)
    for v, pos in found:
        if v is not None:
            assert pos is not None and text[pos:].startswith(words[v]), (v, text[pos : pos + 12])


def test_the_critic_takes_each_confidence_from_where_the_verdict_was_read():
    judge = '{"segments": [{"segment": 1, "verdict": "relevant"}, {"segment": 2, "verdict": "spurious"}]}'

    class WithProbs(ScriptedBackend):
        def generate(self, requests, settings=None, state=None):
            assert settings.token_probs  # the critic asks for them
            out = super().generate(requests, settings, state)
            for g in out:  # a made-up probability per character: 1 / (2 + position)
                g.token_probs = [(i + 1, 1 / (2 + i)) for i in range(len(g.text))]
            return out

    critic_text = (
        "Segment 3 is spurious: a ruler."  # the judge leaves segment 3 open; the critic's prose has it
    )
    b = WithProbs(critic=critic_text, judge=judge)
    (c,) = LVLMCritic(b, settings=CriticSettings(use_cache=False)).critique([_req(n_seg=3)])
    assert [v.verdict for v in c.verdicts] == ["relevant", "spurious", "spurious"]
    want = [
        1 / (2 + judge.index("relevant")),
        1 / (2 + judge.index("spurious")),
        1 / (2 + critic_text.index("spurious")),
    ]
    assert [v.confidence for v in c.verdicts] == pytest.approx(want)
    # a back-end without token probabilities gives verdicts without confidences
    (c,) = LVLMCritic(
        ScriptedBackend(critic=critic_text, judge=judge), settings=CriticSettings(use_cache=False)
    ).critique([_req(n_seg=3)])
    assert [v.confidence for v in c.verdicts] == [None, None, None]


# -- a real local model answers, the project keeps its confidences ----------------------------------------
@pytest.fixture(scope="module")
def overfit_dir(tmp_path_factory):
    folder = make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("conf") / "qwen")
    critic = LVLMCritic(ScriptedBackend(), settings=CriticSettings(use_cache=False, image_min_side=32))
    prompts = [critic.critic_request(_req(1, 2)), critic.judge_request(TARGET, 2)]
    overfit_tiny_lvlm(folder, TARGET, prompts=prompts)
    return folder


def _project_with_explanation(tmp_path, sample_ids_wanted=2):
    from PIL import Image

    from lvlmva_desktop.core.data.importing import import_csv_manifest

    d = tmp_path / "data"
    d.mkdir()
    rows = ["path,label,split"]
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 20, 200)).save(d / f"i{i}.png")
        rows.append(f"i{i}.png,{'ab'[i % 2]},train")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    rep = import_csv_manifest(d / "m.csv")
    p = Project.create(tmp_path / "proj", "p", rep.classes, (8, 8), 3)
    p.add_samples(rep)
    sids = [r["id"] for r in p.samples("train")][:sample_ids_wanted]
    spec = ModelSpec("mlp", 2, 3, (8, 8))
    mid = p.save_model(build_model(spec), spec, "m", "erm", None, None)
    set_id = p.save_alignment_set(None, mid, {}, sids, [0.1] * len(sids))
    eid = p.save_explanation(None, mid, set_id, {}, {"sample_ids": torch.tensor(sids)})
    return p, eid, sids


def test_a_local_judges_confidences_are_its_token_probabilities_and_are_stored(overfit_dir, tmp_path):
    backend = LocalBackend(overfit_dir, device="cpu")
    try:
        settings = CriticSettings(use_cache=False, image_min_side=32, judge_max_new_tokens=120)
        critic = LVLMCritic(backend, settings=settings)
        crits = list(critic.critique([_req(1, 2), _req(2, 2)]))
        for c in crits:
            assert c.raw["judge_output"] == TARGET
            assert [v.verdict for v in c.verdicts] == [SPURIOUS, "relevant"]
            conf = [v.confidence for v in c.verdicts]
            assert all(x is not None and 0.0 < x <= 1.0 for x in conf), conf
        # the confidence is the model's probability of the verdict word's first token where the judge wrote
        # it: found here with the tokenizer's own offsets and a teacher-forced pass, not the critic's way
        tok = backend.processor.tokenizer
        enc = tok(TARGET, add_special_tokens=False, return_offsets_mapping=True)
        jreq = critic.judge_request(crits[0].text, 2)
        forced = _forced_probs(backend, jreq, enc["input_ids"])
        for v, word in zip(crits[0].verdicts, ("spurious", "relevant")):
            at = TARGET.index(f'"{word}"') + 1
            k = next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if a <= at < b)
            assert v.confidence == pytest.approx(float(forced[k]), rel=1e-4)
    finally:
        backend.close()

    p, eid, sids = _project_with_explanation(tmp_path)
    with p:
        for sid, c in zip(sids, crits):
            c.sample_id = sid
            p.save_critique(None, eid, c)
        eff = p.effective_verdicts(eid)
        for sid, c in zip(sids, crits):
            assert [eff[sid][s]["confidence"] for s in (0, 1)] == [v.confidence for v in c.verdicts]
        assert verdict_problems(p, eid) == []  # the audit log's hashes did not change with them
        p.set_expert_verdict(eid, sids[0], 0, "relevant")  # the expert's word has no confidence
        assert "confidence" not in p.effective_verdicts(eid)[sids[0]][0]
    with Project.open(tmp_path / "proj", read_only=True) as ro:
        assert ro.effective_verdicts(eid)[sids[1]][1]["confidence"] == crits[1].verdicts[1].confidence


def test_a_confidence_outside_zero_to_one_is_refused(tmp_path):
    from lvlmva_desktop.core.method.critic import Critique, SegmentVerdict
    from lvlmva_desktop.core.store.project import ProjectError

    p, eid, sids = _project_with_explanation(tmp_path, 1)
    with p:
        for bad in (0.0, 1.5, math.nan):
            with pytest.raises(ProjectError, match="probability"):
                p.save_critique(
                    None, eid, Critique(sids[0], "judge", "t", [SegmentVerdict(0, SPURIOUS, "", bad)])
                )
        assert p.effective_verdicts(eid) == {}  # nothing half-stored


# -- an OpenAI-compatible server ------------------------------------------------------------------------
@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def _with_logprobs(text: str, pieces: list[str], probs: list[float]) -> dict:
    c = _completion(text)
    c["choices"][0]["logprobs"] = {
        "content": [{"token": t, "logprob": math.log(p), "top_logprobs": []} for t, p in zip(pieces, probs)]
    }
    return c


def test_a_servers_log_probabilities_become_token_probabilities(stub):
    text = '{"1": "spurious"}'
    pieces = ['{"', "1", '":', ' "', "sp", "urious", '"}']
    stub.script = [(200, _with_logprobs(text, pieces, [0.9, 0.8, 0.99, 0.95, 0.6, 0.97, 0.99]), 0.0)]
    b = EndpointBackend(stub.url, "tiny-vl", backoff_s=0.01)
    (g,) = b.generate([chat_request("Judge.", [])], GenerationSettings(max_new_tokens=20, token_probs=True))
    assert stub.requests[0]["json"]["logprobs"] is True
    assert prob_at(g, text.index("spurious")) == pytest.approx(0.6)
    assert verdict_positions(text, 1)[0] == ("spurious", text.index("spurious"))
    # not asked for: not requested, none given
    (g,) = b.generate([chat_request("Judge.", [])], GenerationSettings(max_new_tokens=20))
    assert "logprobs" not in stub.requests[1]["json"] and g.token_probs is None
    # a server that sends none (or tokens that do not spell the answer): no probabilities, no error
    stub.script = [
        (200, _completion("a red disc"), 0.0),
        (200, _with_logprobs("abc", ["a", "x"], [0.5, 0.5]), 0.0),
    ]
    for _ in range(2):
        (g,) = b.generate([chat_request("Judge.", [])], GenerationSettings(token_probs=True))
        assert g.token_probs is None


def test_a_server_that_refuses_logprobs_is_asked_again_without_them(stub):
    stub.script = [(400, {"error": {"message": "Unrecognized request argument: logprobs"}}, 0.0)]
    b = EndpointBackend(stub.url, "tiny-vl", backoff_s=0.01)
    settings = GenerationSettings(max_new_tokens=8, token_probs=True)
    (g,) = b.generate([chat_request("Judge.", [])], settings)
    assert g.text == "a red disc" and g.token_probs is None
    assert [r["json"].get("logprobs") for r in stub.requests] == [True, None]
    b.generate([chat_request("Again.", [])], settings)  # not asked for again
    assert "logprobs" not in stub.requests[-1]["json"]
