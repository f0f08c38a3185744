"""The LVLM critic's control flow (judge, tolerant parsing, strict retry, undecided, cache, one-call).

The back-end here is a scripted test double that answers by looking at the prompt; it exercises the
critic's logic exactly. Real generation through real model folders is tested in test_local.py and
test_end_to_end.py.
"""

import torch

from lvlmva_desktop.core.method.critic import CritiqueRequest
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.lvlm.backend import Generation, request_images
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
from lvlmva_desktop.lvlm.prompts import TemplateSet


class ScriptedBackend:
    def __init__(self, critic="", judge="", strict="", model="scripted-1"):
        self.answers = {"critic": critic, "judge": judge, "strict": strict}
        self.model = model
        self.calls = []

    def identity(self):
        return {"kind": "local", "folder": f"/models/{self.model}", "model_type": "scripted"}

    def generate(self, requests, settings=None, state=None):
        out = []
        for req in requests:
            text = req[-1]["content"][-1]["text"]
            kind = "strict" if "Reply with nothing but" in text else "judge" if "Notes:" in text else "critic"
            self.calls.append((kind, len(request_images(req)), text))
            ans = self.answers[kind]
            out.append(Generation(ans(text) if callable(ans) else ans, 100, 10, "stop"))
        return out

    def stream(self, request, settings=None):
        yield from self.generate([request])[0].text.split(" ")

    def health_check(self):
        raise NotImplementedError

    def close(self):
        pass


def _req(sid=1, n_seg=3, desc="round lesion, even colour"):
    g = torch.Generator().manual_seed(sid)
    seg = torch.zeros(16, 16, dtype=torch.long)
    seg[:, 8:] = 1
    seg[12:, :4] = 2 if n_seg > 2 else 1
    return CritiqueRequest(
        sid,
        torch.rand(3, 16, 16, generator=g),
        0,
        "benign",
        desc,
        torch.rand(16, 16, generator=g),
        seg,
        [0.5, 0.3, 0.2][:n_seg],
    )


JUDGE_JSON = '{"segments": [{"segment": 1, "verdict": "relevant"}, {"segment": 2, "verdict": "relevant"}, {"segment": 3, "verdict": "spurious"}]}'


def test_two_call_mode_sends_three_images_and_parses_the_judge():
    be = ScriptedBackend(critic="Step 6 - Verdicts:\nSegment 3: spurious", judge="Sure! " + JUDGE_JSON)
    critic = LVLMCritic(be, settings=CriticSettings(use_cache=False))
    (c,) = list(critic.critique([_req()]))
    assert [v.verdict for v in c.verdicts] == ["relevant", "relevant", "spurious"]
    assert [k for k, _, _ in be.calls] == ["critic", "judge"]
    assert be.calls[0][1] == 3 and be.calls[1][1] == 0  # image, segment map, overlay; judge reads text
    assert "round lesion, even colour" in be.calls[0][2] and "Segment 3: spurious" in be.calls[1][2]
    assert c.text.startswith("Step 6") and c.raw["parse"] == "json" and c.raw["calls"] == 2
    assert set(c.raw["templates"]) >= {"critic.j2", "judge.j2", "judge_examples.json"}
    assert "LVLM critic" in c.critic


def test_garbage_gets_one_strict_retry_then_undecided():
    be = ScriptedBackend(critic="ĠĠ the the the", judge="}}}{{", strict="segment 2: relevant")
    critic = LVLMCritic(be, settings=CriticSettings(use_cache=False))
    (c,) = list(critic.critique([_req()]))
    assert [v.verdict for v in c.verdicts] == ["undecided", "relevant", "undecided"]
    assert c.raw["retried"] and c.raw["calls"] == 3 and c.raw["undecided_by_parser"] == [1, 3]
    assert c.raw["critic_output"] == "ĠĠ the the the"  # the raw text is kept for the expert
    be2 = ScriptedBackend(critic="x", judge="y", strict="z")
    (c2,) = list(
        LVLMCritic(be2, settings=CriticSettings(use_cache=False, strict_retry=False)).critique([_req()])
    )
    assert [v.verdict for v in c2.verdicts] == ["undecided"] * 3 and c2.raw["calls"] == 2


def test_critic_prose_fills_what_the_judge_left_open_without_a_retry():
    be = ScriptedBackend(
        critic="Segment 1: relevant\nSegment 2: relevant\nSegment 3: spurious",
        judge='{"segments": [{"segment": 3, "verdict": "spurious"}]}',
    )
    (c,) = list(LVLMCritic(be, settings=CriticSettings(use_cache=False)).critique([_req()]))
    assert [v.verdict for v in c.verdicts] == ["relevant", "relevant", "spurious"]
    assert not c.raw["retried"] and c.raw["calls"] == 2


def test_one_call_mode_halves_the_calls():
    be = ScriptedBackend(critic="Step 1 ... Step 6.\n" + JUDGE_JSON)
    critic = LVLMCritic(be, settings=CriticSettings(one_call=True, use_cache=False))
    cs = list(critic.critique([_req(1), _req(2)]))
    assert [k for k, _, _ in be.calls] == ["critic", "critic"]
    assert all(c.raw["calls"] == 1 for c in cs)
    assert [v.verdict for v in cs[0].verdicts] == ["relevant", "relevant", "spurious"]
    assert "one_call.j2" in critic.identity()["templates"]


def test_cache_makes_an_unchanged_rerun_free_and_misses_on_any_change(tmp_path):
    p = Project.create(tmp_path / "p", "p", ["benign", "malignant"], (16, 16), 3)
    ts = TemplateSet.for_project(p)
    be = ScriptedBackend(critic="Segment 3: spurious", judge=JUDGE_JSON)
    reqs = [_req(1), _req(2)]
    first = list(LVLMCritic(be, ts, cache=p).critique(reqs))
    assert len(be.calls) == 4 and not first[0].raw["cached"]
    again = list(LVLMCritic(be, ts, cache=p).critique(reqs))
    assert len(be.calls) == 4  # nothing generated
    assert all(c.raw["cached"] and c.raw["calls"] == 0 for c in again)
    assert [v.verdict for v in again[1].verdicts] == [v.verdict for v in first[1].verdicts]
    # a new class description, an edited template or another model each miss the cache
    list(LVLMCritic(be, ts, cache=p).critique([_req(1, desc="asymmetric")]))
    assert len(be.calls) == 6
    p.save_prompt_template("critic.j2", ts.texts["critic.j2"] + "\nBe brief.")
    list(LVLMCritic(be, TemplateSet.for_project(p), cache=p).critique([_req(1)]))
    assert len(be.calls) == 8
    other = ScriptedBackend(critic="Segment 3: spurious", judge=JUDGE_JSON, model="scripted-2")
    list(LVLMCritic(other, ts, cache=p).critique([_req(1)]))
    assert len(other.calls) == 2
    p.close()


def test_unreadable_answers_are_not_cached_and_the_key_follows_everything_the_prompt_shows(tmp_path):
    p = Project.create(tmp_path / "p", "p", ["benign", "malignant"], (16, 16), 3)
    ts = TemplateSet.for_project(p)
    garbage = ScriptedBackend(critic="ĠĠ", judge="??", strict="??")
    list(LVLMCritic(garbage, ts, cache=p).critique([_req(1)]))
    list(LVLMCritic(garbage, ts, cache=p).critique([_req(1)]))
    assert len(garbage.calls) == 6  # asked again: a failure is not remembered
    critic = LVLMCritic(ScriptedBackend(), ts, settings=CriticSettings(one_call=True))
    r = _req(1)
    other = _req(1)
    other.segment_evidence = [0.2, 0.3, 0.5]
    assert critic.cache_key(r) != critic.cache_key(other)
    r16 = _req(1)
    r16.attribution = r16.attribution.to(torch.bfloat16)
    assert critic.cache_key(r16) != critic.cache_key(r)
    absolute = _req(1)
    absolute.evidence_kind = "absolute"  # segment numbers are placed at the evidence's centre
    assert critic.cache_key(absolute) != critic.cache_key(r)
    strict = dict(ts.texts, **{"judge_strict.j2": ts.texts["judge_strict.j2"] + " Now."})
    assert LVLMCritic(ScriptedBackend(), TemplateSet(strict), CriticSettings(one_call=True)).cache_key(r) != (
        critic.cache_key(r)
    )
    p.close()


def test_the_prompt_places_a_segment_where_the_evidence_it_follows_lies():
    # segment 1 (the left half) holds weak positive attribution at the top left and strong negative
    # attribution at the bottom: with segments of the absolute value its position follows the bottom
    r = _req(1)
    r.attribution = torch.zeros(16, 16)
    r.attribution[1:3, 1:3] = 0.1
    r.attribution[12:15, 5:7] = -1.0
    critic = LVLMCritic(ScriptedBackend(), settings=CriticSettings(use_cache=False))
    text = critic.critic_request(r)[0]["content"][-1]["text"]
    r.evidence_kind = "absolute"
    text_abs = critic.critic_request(r)[0]["content"][-1]["text"]
    from lvlmva_desktop.lvlm.render import segment_context

    r.evidence_kind = "positive"
    assert segment_context(r.segments, r.evidence(), r.segment_evidence)[0]["where"] == "the top left"
    r.evidence_kind = "absolute"
    assert segment_context(r.segments, r.evidence(), r.segment_evidence)[0]["where"] == "the bottom"
    assert "the top left" in text and "the top left" not in text_abs


class _ReportingBackend(ScriptedBackend):
    """Reports its progress as the local back-end does: request by request within each generate()."""

    def generate(self, requests, settings=None, state=None):
        out = []
        for k, req in enumerate(requests):
            if state is not None:
                state.progress(k, len(requests), "generating")
            out.extend(super().generate([req], settings))
        if state is not None:
            state.progress(len(requests), len(requests), "generated")
        return out


def test_the_progress_never_goes_back_between_the_critic_the_judge_and_the_retry():
    from lvlmva_desktop.core.runtime.jobs import TaskState

    seen = []
    state = TaskState(on_progress=lambda frac, msg: seen.append(frac))
    be = _ReportingBackend(critic="nothing readable", judge="}}}{{", strict="segment 2: relevant")
    critic = LVLMCritic(be, settings=CriticSettings(use_cache=False, batch_size=3))
    list(critic.critique([_req(i) for i in range(1, 6)], state))
    kinds = [k for k, _, _ in be.calls]
    assert kinds.count("critic") == 5 and kinds.count("judge") == 5 and kinds.count("strict") == 5
    assert seen[-1] == 1.0
    assert all(b >= a for a, b in zip(seen, seen[1:])), seen
    assert len(set(seen)) > 10  # every pass moved the bar forward
