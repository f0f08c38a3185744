"""Verdict parsing: JSON when the model follows the format, prose otherwise, never an exception."""

from hypothesis import given, settings
from hypothesis import strategies as st

from lvlmva_desktop.lvlm.parsing import normalise_verdict, parse_verdicts


def test_json_in_prose_and_code_fence():
    text = (
        "Here is my answer.\n```json\n"
        '{"segments": [{"segment": 1, "verdict": "relevant", "reason": "lesion"},'
        ' {"segment": 2, "verdict": "Spurious", "reason": "patch"}]}\n```'
    )
    p = parse_verdicts(text, 2)
    assert p.method == "json"
    assert p.verdicts == ["relevant", "spurious"]
    assert p.reasons == ["lesion", "patch"]
    assert p.complete


def test_json_mapping_and_boolean_forms():
    assert parse_verdicts('{"1": "irrelevant", "segment 2": "core"}', 2).verdicts == ["spurious", "relevant"]
    assert parse_verdicts('{"verdicts": [{"id": 2, "spurious": true}]}', 3).verdicts == [
        None,
        "spurious",
        None,
    ]


def test_last_most_complete_json_wins_over_an_example():
    text = (
        'Format: {"segments": [{"segment": 1, "verdict": "relevant or spurious"}]}\n'
        'Answer: {"segments": [{"segment": 1, "verdict": "spurious"}, {"segment": 2, "verdict": "relevant"}]}'
    )
    assert parse_verdicts(text, 2).verdicts == ["spurious", "relevant"]


def test_prose_lines_later_mentions_override_earlier():
    text = (
        "Step 5 - Argue: segment 2 is relevant at first sight, but it is a ruler.\n"
        "Step 6 - Verdicts:\nSegment 1: **relevant**\nSegment 2 - spurious\nSegment #3 is not relevant\n"
    )
    p = parse_verdicts(text, 4)
    assert p.method == "prose"
    assert p.verdicts == ["relevant", "spurious", "spurious", None]
    assert not p.complete and p.n_found == 3


def test_out_of_range_segments_are_ignored_and_garbage_gives_none():
    assert parse_verdicts("Segment 7: spurious", 3).verdicts == [None, None, None]
    p = parse_verdicts("ĠĠ the the {{{ ]] segment: relevant", 2)
    assert p.method == "none" and p.verdicts == [None, None]


def test_normalise_verdict():
    assert normalise_verdict("Not Relevant.") == "spurious"
    assert normalise_verdict("unclear") == "undecided"
    assert normalise_verdict(3) is None
    assert normalise_verdict("banana") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=12))
def test_parsing_never_raises_and_has_one_entry_per_segment(text, n):
    p = parse_verdicts(text, n)
    assert len(p.verdicts) == n
    assert all(v in (None, "spurious", "relevant", "undecided") for v in p.verdicts)


def test_a_word_naming_both_verdicts_decides_nothing():
    assert normalise_verdict("relevant or spurious") is None
    assert normalise_verdict("neither relevant nor spurious") is None
    text = 'Segment 1: spurious\n{"segments": [{"segment": 1, "verdict": "relevant or spurious"}]}'
    assert parse_verdicts(text, 1).verdicts == ["spurious"]  # the echoed format line does not win


def test_the_final_json_wins_and_gaps_are_filled_from_drafts_then_prose():
    text = (
        'Draft: {"1": "relevant", "2": "relevant", "3": "spurious"}\n'
        "Segment 4: spurious\n"
        'Final: {"segments": [{"segment": 1, "verdict": "spurious"}, {"segment": 2, "verdict": "relevant"}]}'
    )
    assert parse_verdicts(text, 4).verdicts == ["spurious", "relevant", "spurious", "spurious"]


def test_a_judge_that_invents_the_next_example_is_cut_off():
    from lvlmva_desktop.lvlm.parsing import judge_answer

    text = (
        '{"segments": [{"segment": 1, "verdict": "spurious"}]}\n\nNotes:\nmade up\nAnswer:\n{"1": "relevant"}'
    )
    assert parse_verdicts(judge_answer(text), 1).verdicts == ["spurious"]


def test_an_answer_counting_segments_from_zero_is_read_as_such():
    text = '{"segments": [{"segment": 0, "verdict": "spurious"}, {"segment": 1, "verdict": "relevant"}]}'
    assert parse_verdicts(text, 2).verdicts == ["spurious", "relevant"]
