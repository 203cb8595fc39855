"""Property tests for the normalisers and scorers: no crash on any Unicode, scores in range,
normalisation idempotent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.metrics.anls import anls, lenient_exact_match
from harness.metrics.em import exact_match, extract_count
from harness.metrics.mc import LETTERS, extract_choice
from harness.metrics.normalize import collapse_ws, vqa_normalize, vqa_process_digit_article, vqa_process_punctuation
from harness.metrics.vqa import vqa_accuracy, vqa_accuracy_molmo

# Any Unicode text, biased towards the characters the rules care about.
SPECIAL = st.sampled_from(list(".,;:/-()[]{}!?'\"_+=<>@`\\ \t\n\u3000\u00a0") + ["1,0", "..", "a ", "the ", "one", "dont", "İ", "ß", "ﬁ"])
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=10),  # lone surrogates included
    st.lists(st.one_of(SPECIAL, st.text(max_size=4)), max_size=12).map("".join),
)
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(TEXT)
def test_vqa_normalize_idempotent(text):
    once = vqa_normalize(text)
    assert isinstance(once, str)
    if once.count(".") <= 32:  # beyond 32 periods the official count quirk leaves some for a second pass
        assert vqa_normalize(once) == once
    assert once == once.strip() and "  " not in once


@FAST
@given(TEXT)
def test_vqa_steps_never_crash(text):
    assert isinstance(vqa_process_punctuation(text), str)
    assert isinstance(vqa_process_digit_article(text), str)


@FAST
@given(TEXT)
def test_collapse_ws_idempotent(text):
    once = collapse_ws(text)
    assert collapse_ws(once) == once


@FAST
@given(TEXT, st.lists(TEXT, min_size=1, max_size=10))
def test_vqa_scores_in_range(pred, refs):
    for value in (vqa_accuracy(pred, refs), vqa_accuracy_molmo(pred, refs)):
        assert 0.0 <= value <= 1.0


@FAST
@given(st.lists(TEXT, min_size=1, max_size=10))
def test_vqa_reference_as_prediction_scores(refs):
    # a prediction equal to one of k>=4 identical answers always scores 1
    assert vqa_accuracy(refs[0], [refs[0]] * 4 + refs) == 1.0


@FAST
@given(TEXT, st.lists(TEXT, min_size=1, max_size=5))
def test_anls_in_range(pred, refs):
    value = anls(pred, refs)
    assert value == 0.0 or 0.5 <= value <= 1.0
    assert lenient_exact_match(pred, refs) in (0.0, 1.0)
    if lenient_exact_match(pred, refs) == 1.0 and pred.upper() == pred.lower() and pred == pred.strip():
        assert anls(pred, [pred]) == 1.0


@FAST
@given(TEXT, st.lists(TEXT, min_size=1, max_size=5))
def test_em_never_crashes(pred, refs):
    score, _ = exact_match(pred, refs)
    assert score in (0.0, 1.0)
    count = extract_count(pred)
    assert count is None or count >= 0


@FAST
@given(TEXT, st.integers(min_value=0, max_value=4))
def test_em_counts_roundtrip(prefix, n):
    # the number itself, on its own, is always read back
    assert exact_match(str(n), [str(n)]) == (1.0, n)
    assert extract_count(f"{n} {prefix}") == n


@FAST
@given(TEXT, st.lists(TEXT, min_size=1, max_size=8))
def test_mc_index_in_range(answer, choices):
    index, rule = extract_choice(answer, choices)
    assert -1 <= index < len(choices)
    assert (index == -1) == (rule in ("none", "refusal"))


@FAST
@given(st.integers(min_value=1, max_value=26), st.data())
def test_mc_bare_letters(n, data):
    choices = [f"option number {i}" for i in range(n)]
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    assert extract_choice(LETTERS[i], choices)[0] == i
    assert extract_choice(f"({LETTERS[i]})", choices)[0] == i
    assert extract_choice(LETTERS[i].lower(), choices)[0] == i


def _punctuation_step_by_step(text: str) -> str:
    """The official rule spelled out literally: one character at a time, conditions on the input."""
    import re

    from harness.metrics.normalize import VQA_PUNCT

    out = text
    for p in VQA_PUNCT:
        if (p + " " in text or " " + p in text) or re.search(r"(\d)(,)(\d)", text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return re.sub(r"(?!<=\d)(\.)(?!\d)", "", out, count=32)


@FAST
@given(TEXT)
def test_punctuation_fast_path_equals_literal_rule(text):
    assert vqa_process_punctuation(text) == _punctuation_step_by_step(text)


@FAST
@given(st.sampled_from(["yes", "no", "2", "two", "Yes.", "the dog", "dog"]),
       st.lists(st.sampled_from(["yes", "no", "2", "two", "dog", "a dog", "cat"]), min_size=1, max_size=12))
def test_vqa_closed_form_equals_explicit_leave_one_out(pred, refs):
    p = vqa_normalize(pred)
    normed = [vqa_normalize(r) for r in refs]
    subsets = [normed[:i] + normed[i + 1:] for i in range(len(normed))]
    explicit = sum(min(1.0, sum(a == p for a in s) / 3) for s in subsets) / len(subsets)
    assert abs(vqa_accuracy(pred, refs) - explicit) < 1e-12
