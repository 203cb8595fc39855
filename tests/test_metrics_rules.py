"""Hand-checked cases for every rule of every metric, beyond the golden vectors."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.metrics import Metric, MetricResult, get_metric, list_metrics, registry
from harness.metrics.anls import anls, lenient_exact_match
from harness.metrics.em import exact_match, extract_count
from harness.metrics.mc import extract_choice
from harness.metrics.normalize import collapse_ws, vqa_normalize
from harness.metrics.vqa import vqa_accuracy, vqa_accuracy_molmo


# -- VQA answer processing ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, want",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("  yes\t", "yes"),
        ("red\nwhite", "red white"),
        ("new\u3000york", "new york"),  # Unicode whitespace splits
        ("3.5", "3.5"),  # period before a digit stays
        ("2.", "2"),
        ("2.5.", "2.5"),
        ("a.m.", "am"),
        ("google.com", "googlecom"),
        ("1,000", "1000"),  # digit-comma-digit: punctuation deleted, not spaced
        ("1, 000", "1 000"),  # comma touches a space: deleted
        ("left,right", "left right"),  # otherwise replaced by a space
        ("x - y", "x y"),
        ("t-shirt", "t shirt"),
        ("a-b 1,0", "ab 10"),  # a digit-comma-digit anywhere deletes every punctuation mark
        ("(yes)", "yes"),
        ("-yes- x", "yes x"),
        ("¡yes!", "¡yes"),  # ¡ is not in the official list
        ("50%", "50%"),
        ("3:45", "3:45"),
        ("black&white", "black&white"),
        ("man's hat", "man's hat"),
        ("dont", "don't"),
        ("Dont", "don't"),
        ("youre", "you're"),
        ("lets", "lets"),  # not in the table
        ("Im", "im"),  # the official table's capitalised keys never match after lower-casing
        ("somebody'd", "somebodyd"),  # the official table's reversed entry
        ("none", "0"),
        ("Ten", "10"),
        ("eleven", "eleven"),
        ("one hundred", "1 hundred"),
        ("the a an", ""),
        ("The Beatles", "beatles"),
        ("A.", ""),
        ("", ""),
        ("?", ""),
        ("café", "café"),  # no accent folding
        ("İstanbul", "i\u0307stanbul"),  # Python 3 lower()
        ("2–3", "2–3"),  # en dash is not in the list
    ],
)
def test_vqa_normalize(raw, want):
    assert vqa_normalize(raw) == want


def test_vqa_period_count_quirk():
    # the official re.sub(..., re.UNICODE) removes at most 32 periods
    assert vqa_normalize("." * 32 + "yes") == "yes"
    assert vqa_normalize("." * 33 + "yes") == ".yes"
    assert vqa_normalize("." * 40 + "yes") == "." * 8 + "yes"


TEN_OTHERS = ["zebra", "blue", "green", "cat", "table", "left", "maybe", "wood", "sky", "tree"]


@pytest.mark.parametrize("k, want", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_vqa_leave_one_out(k, want):
    refs = ["yes"] * k + TEN_OTHERS[: 10 - k]
    assert vqa_accuracy("yes", refs) == pytest.approx(want)


@pytest.mark.parametrize("k, want", [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (5, 1.0)])
def test_vqa_molmo_no_leave_one_out(k, want):
    refs = ["yes"] * k + TEN_OTHERS[: 10 - k]
    assert vqa_accuracy_molmo("yes", refs) == pytest.approx(want)


def test_vqa_general_reference_counts():
    assert vqa_accuracy("yes", ["yes"]) == 0.0  # one answer: its only subset is empty
    assert vqa_accuracy("yes", ["yes", "yes", "yes", "yes"]) == pytest.approx(1.0)
    assert vqa_accuracy("yes", ["yes", "no", "no"]) == pytest.approx((0 + 2 * (1 / 3)) / 3)
    assert vqa_accuracy("yes", []) == 0.0


def test_vqa_processing_always_applied():
    assert vqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("2", ["two"] * 10) == 1.0
    assert vqa_accuracy("Red", ["Red"] * 10) == 1.0


def test_vqa_answer_dicts():
    refs = [{"answer": "yes", "answer_id": i, "answer_confidence": "yes"} for i in range(3)]
    refs += [{"answer": "no", "answer_id": i} for i in range(3, 10)]
    assert vqa_accuracy("Yes.", refs) == pytest.approx(0.9)
    out = get_metric("vqa_score").score([{"id": 1, "prediction": "yes", "references": refs}])
    assert out.per_item[0]["vqa_score"] == pytest.approx(0.9)


def test_vqa_molmo_first_line():
    refs = ["yes"] * 5 + ["no"] * 5
    assert vqa_accuracy_molmo("yes\nno\nno", refs) == 1.0
    assert vqa_accuracy("yes\nno\nno", refs) == 0.0


# -- mc -----------------------------------------------------------------------------------------
CH3 = ["cat", "dog", "fish"]


@pytest.mark.parametrize(
    "answer, choices, index, rule",
    [
        ("B", CH3, 1, "letter"),
        ("(B)", CH3, 1, "letter"),
        ("B.", CH3, 1, "letter"),
        ("B:", CH3, 1, "letter"),
        ("B)", CH3, 1, "letter"),
        ("[B]", CH3, 1, "letter"),
        ("**B**", CH3, 1, "letter"),
        ("The answer is B.", CH3, 1, "letter"),
        ("Answer: C", CH3, 2, "letter"),
        ("I think the best option here is C", CH3, 2, "letter"),
        ("  B \n", CH3, 1, "letter"),
        ("b", CH3, 1, "bare_lowercase_letter"),
        (" c\n", CH3, 2, "bare_lowercase_letter"),
        ("d", CH3, -1, "none"),  # lower-case letter beyond the options
        ("D", CH3, -1, "none"),
        ("A or B", CH3, -1, "none"),
        ("B, no wait, C", CH3, -1, "none"),
        ("B is right because the picture shows one small animal", CH3, -1, "none"),  # letter too early
        ("A is correct.", CH3, 0, "letter"),  # "A" + word, but no option text: option A
        ("A dog", CH3, 1, "article_then_option_text"),
        ("a fish", CH3, 2, "article_then_option_text"),
        ("A. dog", CH3, 0, "letter"),  # "A." is a letter, not an article
        ("dog", CH3, 1, "option_text"),
        ("It is a DOG.", CH3, 1, "option_text"),
        ("cat or dog", CH3, -1, "none"),
        ("catfish", ["catfish", "cat"], -1, "none"),  # both texts occur: ambiguous
        ("Z", CH3, -1, "refusal"),
        ("Cannot determine the answer: dog", CH3, -1, "refusal"),
        ("Failed to obtain answer via API. B", CH3, -1, "none"),  # letters skipped, no text
        ("F", ["a", "b", "c", "d", "e", "f"], 5, "letter"),
        ("", CH3, -1, "none"),
        ("1", CH3, -1, "none"),
    ],
)
def test_mc_extraction(answer, choices, index, rule):
    assert extract_choice(answer, choices) == (index, rule)


def test_mc_score_and_extras():
    items = [
        {"id": "q1", "prediction": "(B)", "choices": CH3, "answer": 1},
        {"id": "q2", "prediction": "A or B", "choices": CH3, "answer": 0, "references": ["cat"]},
    ]
    result = get_metric("mc").score(items)
    assert result.per_item == [
        {"mc": 1.0, "pred_index": 1, "rule": "letter"},
        {"mc": 0.0, "pred_index": -1, "rule": "none"},
    ]
    assert result.aggregate == {"mc": 0.5}


# -- em -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, count",
    [
        ("3", 3), ("three", 3), ("THREE", 3), ("There are 3.", 3), ("three (3)", 3), ("3-4", 3),
        ("15.0", 15), ("none", 0), ("None.", 0), ("zero", 0), ("twenty", 20), ("42 birds", 42),
        ("between 4 and 6", 4), ("one dozen", 1),
        ("03", None), ("seventy", None), ("3rd", None), ("third", None), ("no", None),
        ("iii", None), ("٣", None), ("３", None), ("someone", None), ("", None),
    ],
)
def test_extract_count(text, count):
    assert extract_count(text) == count


def test_em_count_and_text_modes():
    assert exact_match("There are two.", ["2"]) == (1.0, 2)
    assert exact_match("none", ["0"]) == (1.0, 0)
    assert exact_match("5", ["15"]) == (0.0, 5)
    assert exact_match("Red.", ["red"]) == (1.0, "red")  # non-count references: VQA-normalised EM
    assert exact_match("2", ["two", "2"]) == (1.0, "2")
    assert exact_match("blue", ["red"]) == (0.0, "blue")


# -- ansl_em ------------------------------------------------------------------------------------
def test_anls_rules():
    assert anls("ab", ["abcd"]) == 0.5  # exactly 0.5 kept
    assert anls("abcdxxxxx", ["abcdefghi"]) == 0.0  # 5/9 distance -> below threshold
    assert anls("PARIS ", ["paris"]) == 1.0
    assert anls("ßßßx", ["x"]) == pytest.approx(1 - 3 / 7)  # length term from raw upper-cased strings
    assert anls("      abxy", ["abcd"]) == pytest.approx(0.8)
    assert anls("", [""]) == 1.0
    assert anls("", ["a"]) == 0.0
    assert anls("Paris", ["London", "paris"]) == 1.0  # best reference
    assert anls("x", []) == 0.0


def test_lenient_em():
    assert lenient_exact_match("ITC\nLimited", ["itc  limited"]) == 1.0
    assert lenient_exact_match("Answer: Paris", ["Paris"]) == 0.0
    assert collapse_ws("  A\u00a0B\tc ") == "a b c"


# -- cider (Java calls kept to a minimum) -------------------------------------------------------
def test_cider_missing_java_is_one_line_error(monkeypatch):
    import harness.metrics.cider as cider

    monkeypatch.setattr(cider.shutil, "which", lambda name: None)
    with pytest.raises(HarnessError) as err:
        get_metric("cider_score").score([{"id": 1, "image_id": 1, "prediction": "a", "references": ["a"]}])
    assert "default-jre-headless" in str(err.value)
    assert "\n" not in str(err.value)


def test_cider_line_breaks_and_punctuation_only_refs():
    from harness.metrics.cider import cider_scores

    preds = ["a cat\ron a\u2028mat", "a dog", "", "birds"]
    refs = [["a cat on a mat", "cat on mat"], ["a dog runs", "dog"], ["..."], ["two birds fly", "birds"]]
    corpus, per = cider_scores(preds, refs)  # one JVM call
    assert len(per) == 4
    assert per[2] == 0.0
    assert per[0] > 1.0  # the line breaks did not shift captions onto other images
    assert corpus == pytest.approx(sum(per) / 4)
    assert cider_scores([], []) == (0.0, [])


# -- registry and interface ---------------------------------------------------------------------
def test_get_metric_aliases_and_module_attr():
    assert get_metric("anls").name == "ansl_em"
    assert get_metric("VQA_Score").name == "vqa_score"
    assert get_metric("harness.metrics.mc:MultipleChoice").name == "mc"
    assert get_metric("mc") is get_metric("mc")


def test_unknown_metric_did_you_mean():
    with pytest.raises(HarnessError, match="Did you mean 'vqa_score'"):
        get_metric("vqa_scor")


def test_every_builtin_has_a_complete_definition():
    names = {m.name for m in list_metrics()}
    assert {"vqa_score", "vqa_score_molmo", "mc", "em", "ansl_em", "cider_score"} <= names
    for metric in list_metrics():
        assert metric.subscores and metric.summary and "\n" not in metric.summary
        assert len(metric.explain) > 200
    assert get_metric("cider_score").corpus_level and not get_metric("vqa_score").corpus_level


def test_plugin_metric_by_decorator():
    @registry.register("test_plugin_length")
    class Length(Metric):
        name = "test_plugin_length"
        subscores = ("length",)
        summary = "prediction length"
        explain = "test"

        def score_items(self, items):
            return [{"length": float(len(it["prediction"]))} for it in items]

    try:
        result = get_metric("test_plugin_length").score([{"id": 1, "prediction": "abc", "references": ["x"]}])
        assert isinstance(result, MetricResult)
        assert result.aggregate == {"length": 3.0}
    finally:
        registry._items.pop("test_plugin_length", None)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"id": 1, "references": ["a"]}, "missing field 'prediction'"),
        ({"id": 1, "prediction": 3, "references": ["a"]}, "'prediction' must be a string"),
        ({"id": 1, "prediction": "a", "references": "a"}, "'references' must be a list"),
        ({"id": 1, "prediction": "a", "references": []}, "is empty"),
        ({"prediction": "a", "references": ["a"]}, "missing field 'id'"),
    ],
)
def test_score_rejects_bad_items(item, fragment):
    with pytest.raises(HarnessError, match=fragment):
        get_metric("ansl_em").score([item])


def test_empty_item_list():
    assert get_metric("vqa_score").score([]).aggregate == {"vqa_score": 0.0}
