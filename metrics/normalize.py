"""Answer normalisation shared by the metrics.

``vqa_normalize`` is the answer processing of the official VQA evaluation (GT-Vision-Lab/VQA,
``vqaEval.py``), rule for rule:

1. newlines and tabs become spaces, then surrounding whitespace is stripped;
2. punctuation: each character of :data:`VQA_PUNCT` is deleted when it touches a space somewhere
   in the answer (``p + ' '`` or ``' ' + p`` occurs) or when the answer contains a
   digit-comma-digit (``1,000``), and is replaced by a space otherwise; the conditions are read
   on the answer before any replacement;
3. periods not followed by a digit are deleted (``3.5`` keeps its period), at most 32 of them:
   the official script passes ``re.UNICODE`` (= 32) as the *count* argument of ``re.sub``;
4. lower-casing, splitting on whitespace, number words ``none``, ``zero`` .. ``ten`` -> digits,
   dropping the articles ``a``, ``an``, ``the`` and expanding the contraction table
   (:data:`VQA_CONTRACTIONS`, keys as in the official script, including its capitalised keys
   that can never match after lower-casing), joined with single spaces.

Python 3 string semantics apply (Unicode ``lower``, ``split`` and ``\\d``), as in the current
official script. Results are cached: answers repeat heavily in VQA data.
"""

from __future__ import annotations

import re
from functools import lru_cache

# The official contraction table (current vqaEval.py). Keys are matched against whole,
# lower-cased words after punctuation processing.
VQA_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# Number words mapped to digits (the official ``manualMap``).
VQA_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

VQA_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The official punctuation list (current vqaEval.py). Not in it: . ' : & % $ # * ~ | ^ and
# every non-ASCII character (so "¡", "–", "’" survive).
VQA_PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)
_PUNCT_SET = frozenset(VQA_PUNCT)
_DELETE_ALL = str.maketrans({p: None for p in VQA_PUNCT})
_ANY_PUNCT = re.compile("[" + re.escape("".join(VQA_PUNCT)) + "]")

_COMMA_DIGITS = re.compile(r"(\d)(,)(\d)")
# A period not followed by a digit. (The official pattern starts with "(?!<=\d)", a mistyped
# look-behind that is in fact a look-ahead for "<=" + digit and therefore always true at a period.)
_PERIOD = re.compile(r"\.(?!\d)")
# re.sub(pattern, "", text, re.UNICODE) in the official script: count = re.UNICODE = 32.
_PERIOD_COUNT = 32


def vqa_process_punctuation(text: str) -> str:
    """Step 2 and 3 of the official processing (``processPunctuation``)."""
    if _ANY_PUNCT.search(text):
        if _COMMA_DIGITS.search(text):
            text = text.translate(_DELETE_ALL)
        else:
            original = text  # the official conditions are read on the unmodified answer
            for p in _PUNCT_SET.intersection(text):
                text = text.replace(p, "" if (p + " " in original or " " + p in original) else " ")
    if "." in text:
        text = _PERIOD.sub("", text, count=_PERIOD_COUNT)
    return text


def vqa_process_digit_article(text: str) -> str:
    """Step 4 of the official processing (``processDigitArticle``)."""
    words = []
    for word in text.lower().split():
        word = VQA_NUMBER_WORDS.get(word, word)
        if word not in VQA_ARTICLES:
            words.append(VQA_CONTRACTIONS.get(word, word))
    return " ".join(words)


@lru_cache(maxsize=1 << 18)
def vqa_normalize(answer: str) -> str:
    """The official VQA answer processing, applied to a prediction or a human answer."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(text))


def collapse_ws(text: str) -> str:
    """Lower-case, strip and collapse runs of (Unicode) whitespace to one space."""
    return " ".join(text.lower().split())
