"""Write the small task fixtures in this folder: a few rows per benchmark in the REAL hub schema
(column names and types as on the hub, values modelled on the dataset cards), including the
unlabeled test splits. Images are tiny PNGs. Re-run with ``python tests/data/tasks/make_fixtures.py``.

``scienceqa-test-img-167.parquet`` is a copy of ``../shared/realdata`` (real ScienceQA text, grey
placeholder images) and is not written here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from datasets import Dataset, Features, Image as HFImage, List, Value
from PIL import Image

HERE = Path(__file__).resolve().parent
S = Value("string")


def png(color) -> Image.Image:
    return Image.new("RGB", (16, 12), color)


def png_bytes(color) -> bytes:
    buf = io.BytesIO()
    png(color).save(buf, format="PNG")
    return buf.getvalue()


def write(name: str, rows: list[dict], features: dict) -> None:
    Dataset.from_list(rows, features=Features(features)).to_parquet(str(HERE / name))


def main() -> None:
    # TextVQA validation (labeled) and test (10 empty answers)
    tv = {"image_id": S, "question_id": Value("int32"), "question": S, "question_tokens": List(S), "image": HFImage(),
          "image_width": Value("int32"), "image_height": Value("int32"), "flickr_original_url": S, "flickr_300k_url": S,
          "answers": List(S), "image_classes": List(S), "set_name": S, "ocr_tokens": List(S)}
    base = {"image_width": 16, "image_height": 12, "flickr_original_url": "", "flickr_300k_url": "", "image_classes": ["Sign"], "ocr_tokens": []}
    write("textvqa_validation.parquet", [
        {**base, "image_id": "00685bc495504d61", "question_id": 3, "question": "who is this copyrighted by?", "question_tokens": ["who", "is", "this", "copyrighted", "by"],
         "image": png("red"), "answers": ["simon clancy"] * 8 + ["simon ciancy", "the brand is bayard"], "set_name": "val"},
        {**base, "image_id": "0a0bc91825468c45", "question_id": 34602, "question": "what brand is the bottle?", "question_tokens": ["what", "brand", "is", "the", "bottle"],
         "image": png("blue"), "answers": ["coca cola"] * 10, "set_name": "val"},
    ], tv)
    write("textvqa_test.parquet", [
        {**base, "image_id": "2c8e4a6e1e5e9f5b", "question_id": 34603, "question": "what is the number on the jersey?", "question_tokens": ["what"],
         "image": png("green"), "answers": [""] * 10, "set_name": "test"},
    ], tv)

    # OK-VQA val2014 (lmms-lab: string answers)
    write("okvqa_val2014.parquet", [
        {"question_id": "2971475", "image": png("gray"), "question": "What sport can you use this for?",
         "answers": ["race"] * 6 + ["motocross"] * 2 + ["ride"] * 2, "question_type": "eight", "answer_type": "other"},
        {"question_id": "1393495", "image": png("white"), "question": "What is this animal known for?",
         "answers": ["milk"] * 10, "question_type": "one", "answer_type": "other"},
    ], {"question_id": S, "image": HFImage(), "question": S, "answers": List(S), "question_type": S, "answer_type": S})

    # VQAv2 validation (answers are dicts), as JSON lines with base64 image bytes; testdev without labels
    import base64

    def vqa_row(qid, image_id, q, answers, img, mc=None):
        return {"question_type": "what", "multiple_choice_answer": mc, "image_id": image_id, "answer_type": "other", "question_id": qid,
                "question": q, "image": {"bytes": base64.b64encode(png_bytes(img)).decode(), "path": None},
                "answers": None if answers is None else [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)]}

    with open(HERE / "vqav2_validation.jsonl", "w") as fh:
        for row in (vqa_row(262148000, 262148, "Where is he looking?", ["down"] * 7 + ["at table", "skateboard", "table"], "red", "down"),
                    vqa_row(262148001, 262148, "What is he on top of?", ["skateboard"] * 9 + ["picnic table"], "red", "skateboard")):
            fh.write(json.dumps(row) + "\n")
    write("vqav2_testdev.parquet", [
        {"question_type": "", "multiple_choice_answer": None, "answers": None, "image_id": 1, "answer_type": "", "question_id": 1000,
         "question": "What color is the bus?", "image": png("yellow")},
    ], {"question_type": S, "multiple_choice_answer": S, "answers": List({"answer": S, "answer_confidence": S, "answer_id": Value("int64")}),
        "image_id": Value("int64"), "answer_type": S, "question_id": Value("int64"), "question": S, "image": HFImage()})

    # TallyQA test: one row per image, qa list
    write("tallyqa_test.parquet", [
        {"image": png("white"), "qa": [{"question": "How many giraffes are there?", "answer": 2, "is_simple": True},
                                       {"question": "How many giraffes are eating leaves?", "answer": 1, "is_simple": False}]},
        {"image": png("black"), "qa": [{"question": "How many dogs are in the picture?", "answer": 0, "is_simple": True}]},
    ], {"image": HFImage(), "qa": List({"question": S, "answer": Value("int64"), "is_simple": Value("bool")})})

    # ST-VQA test (hub): no answers column at all
    write("stvqa_test.parquet", [
        {"question_id": 21, "question": "What is the name of the shop?", "image": png("orange")},
        {"question_id": 22, "question": "What number is on the bus?", "image": png("purple")},
    ], {"question_id": Value("int64"), "question": S, "image": HFImage()})

    # DocVQA validation and test (answers / question_types null)
    dv = {"questionId": S, "question": S, "question_types": List(S), "image": HFImage(), "docId": Value("int64"),
          "ucsf_document_id": S, "ucsf_document_page_no": S, "answers": List(S), "data_split": S}
    write("docvqa_validation.parquet", [
        {"questionId": "49153", "question": "What is the \u2018actual\u2019 value per 1000, during the year 1975?", "question_types": ["figure/diagram"],
         "image": png("white"), "docId": 14465, "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81", "answers": ["0.28"], "data_split": "val"},
        {"questionId": "24580", "question": "What is the name of the company?", "question_types": ["form"], "image": png("white"),
         "docId": 1, "ucsf_document_id": "xnbl0037", "ucsf_document_page_no": "1", "answers": ["itc limited", "ITC Limited"], "data_split": "val"},
    ], dv)
    write("docvqa_test.parquet", [
        {"questionId": "57344", "question": "What is the date mentioned?", "question_types": None, "image": png("white"), "docId": 2,
         "ucsf_document_id": "abcd0001", "ucsf_document_page_no": "3", "answers": None, "data_split": "test"},
    ], dv)

    # COCO Caption 2017 val and test (no references)
    cc = {"question_id": S, "image": HFImage(), "question": S, "answer": List(S), "id": Value("int64"), "license": Value("int8"),
          "file_name": S, "coco_url": S, "height": Value("int32"), "width": Value("int32"), "date_captured": S}
    cbase = {"question": "Please carefully observe the image and come up with a caption for the image.", "license": 4, "coco_url": "",
             "height": 12, "width": 16, "date_captured": "2013-11-14 16:28:13"}
    write("coco_caption_val.parquet", [
        {**cbase, "question_id": "000000397133.jpg", "file_name": "000000397133.jpg", "id": 0, "image": png("brown"),
         "answer": ["A man is in a kitchen making pizzas.", "Man in apron standing on front of oven with pans and bakeware",
                    "A baker is working in the kitchen rolling dough.", "A person standing by a stove in a kitchen.",
                    "A table with pies being made and a person standing near a wall with pots and pans hanging on the wall."]},
    ], cc)
    write("coco_caption_test.parquet", [
        {**cbase, "question_id": "000000000001.jpg", "file_name": "000000000001.jpg", "id": 1, "image": png("brown"), "answer": []},
    ], cc)


if __name__ == "__main__":
    main()
