"""Golden prompt renderings for every task in every style, targets and metric items."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.types import Sample
from harness.tasks import BUILTIN_TASKS, get_task

SHORT = "\nAnswer the question using a single word or phrase."


def mc_sample(hint=""):
    return Sample(id="7", task="scienceqa", question="Which shape is red?", choices=["circle", "square", "star"], answer=1,
                  references=["square"], context=hint)


def q_sample(task, question="what does the sign say?", refs=("stop",) * 10):
    return Sample(id="1", task=task, question=question, references=list(refs))


GOLDEN = {
    ("scienceqa", "default", ""): "Which shape is red?\nA. circle\nB. square\nC. star\nAnswer with the option's letter from the given choices directly.",
    ("scienceqa", "default", "Look closely."): "Context: Look closely.\nWhich shape is red?\nA. circle\nB. square\nC. star\n"
    "Answer with the option's letter from the given choices directly.",
    ("scienceqa", "molmo", ""): "science_qa: Which shape is red?\nA: circle\nB: square\nC: star\n",
    ("scienceqa", "molmo", "Look closely."): "science_qa: Look closely.\nWhich shape is red?\nA: circle\nB: square\nC: star\n",
}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_scienceqa_prompts(key):
    task_name, style, hint = key
    task = get_task(task_name)
    assert task.prompt(mc_sample(hint), style) == GOLDEN[key]


@pytest.mark.parametrize(
    "task_name,question,default,molmo",
    [
        ("textvqa", "what does the sign say?", "What does the sign say?" + SHORT, "text_vqa: what does the sign say?"),
        ("okvqa", "What fruit is this?", "What fruit is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT,
         "okvqa: What fruit is this?"),
        ("vqav2", "What color is the bus?", "What color is the bus?" + SHORT, "vqa2: What color is the bus?"),
        ("coco-vqa", "What color is the bus?", "What color is the bus?" + SHORT, "vqa2: What color is the bus?"),
        ("tallyqa", "How many dogs are there?", "How many dogs are there?\nAnswer with a single number.", "tally_qa: How many dogs are there?"),
        ("stvqa", "What is written on the sign?", "What is written on the sign?" + SHORT, "st_qa: What is written on the sign?"),
        ("docvqa", "What is the date?", "What is the date?" + SHORT, "doc_qa: What is the date?"),
    ],
)
def test_open_question_prompts(task_name, question, default, molmo):
    task = get_task(task_name)
    sample = q_sample(task.name, question)
    assert task.prompt(sample) == default
    assert task.prompt(sample, "default") == default
    assert task.prompt(sample, "molmo") == molmo


def test_caption_prompts():
    task = get_task("coco-caption")
    d = task.samples_from_row({"question_id": "000000397133.jpg", "image": None, "answer": ["a cat", "a dog"]}, 0)[0]
    assert d.image_id == 397133
    assert task.prompt(d) == "Provide a one-sentence caption for the provided image."
    assert task.prompt(d, "molmo") == "coco_captioning: Provide a one-sentence caption for the provided image."


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_every_task_has_both_styles_and_rejects_unknown_style(name):
    task = get_task(name)
    assert task.styles[:2] == ("default", "molmo")
    assert task.max_new_tokens_for("molmo") == 12
    with pytest.raises(HarnessError, match="no prompt style 'chatml'.*default, molmo"):
        task.prompt(q_sample(task.name), "chatml")


def test_targets_follow_the_answer_kind():
    assert get_task("scienceqa").target(mc_sample()) == "B"
    assert get_task("vqav2").target(q_sample("vqav2", refs=["two", "2", "2", "two", "2"])) == "2"
    assert get_task("vqav2").target(q_sample("vqav2", refs=["a", "b", "b", "a"])) == "a"  # tie: first seen
    assert get_task("tallyqa").target(q_sample("tallyqa", refs=["3"])) == "3"
    assert get_task("docvqa").target(q_sample("docvqa", refs=["$48", "48"])) == "$48"
    assert get_task("coco-caption").target(q_sample("coco-caption", refs=["a red circle", "one red circle"])) == "a red circle"
    with pytest.raises(HarnessError, match="no references"):
        get_task("textvqa").target(Sample(id="x", task="textvqa", question="q"))


def test_metric_items_match_the_metric_contract():
    sqa = get_task("scienceqa").metric_item(mc_sample(), "B")
    assert sqa == {"id": "7", "prediction": "B", "references": ["square"], "choices": ["circle", "square", "star"], "answer": 1}
    tally = Sample(id="0-1", task="tallyqa", question="How many?", references=["2"], group="complex")
    assert get_task("tallyqa").metric_item(tally, "2") == {"id": "0-1", "prediction": "2", "references": ["2"], "group": "complex"}
    cap = Sample(id="f.jpg", task="coco-caption", question="q", references=["a"], image_id=5)
    assert get_task("coco-caption").metric_item(cap, "a") == {"id": "f.jpg", "prediction": "a", "references": ["a"], "image_id": 5}


def test_postprocess():
    assert get_task("vqav2").postprocess("  \n yes \nbecause") == "yes"
    assert get_task("docvqa").postprocess("") == ""
    assert get_task("coco-caption").postprocess(" a  red\ncircle ") == "a red circle"
