"""``cider_score``: CIDEr-D exactly as pycocoevalcap computes it, after its PTB tokenizer.

Tokenisation runs the Stanford PTBTokenizer jar shipped inside pycocoevalcap with its options
(``-preserveLines -lowerCase``): one JVM for the references and one for the predictions, run
concurrently, as pycocoevalcap's evaluation tokenises them in two calls. pycocoevalcap's
punctuation tokens are then dropped and its ``CiderScorer`` (n=4, sigma=6) scores the corpus.
Differences from calling ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` directly are
robustness only: the temporary files go to the system temp dir (not the package folder), line
separators inside captions (which would shift every later caption onto the wrong image) become
spaces, tokens are lower-cased once more (the jar very rarely leaves one capitalised), and a
missing or failing Java is a one-line error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.metrics import registry
from harness.metrics.base import Metric, MetricResult, _type_name, is_str_list

JAVA_PACKAGE = "default-jre-headless"
# Characters the Java tokenizer treats as line ends besides "\n" (pycocoevalcap only replaces "\n").
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\x0b\x0c\u2028\u2029"})

EXPLAIN = """\
cider_score: CIDEr-D (Vedantam et al. 2015) as pycocoevalcap 1.2 computes it, corpus-level.

Every caption (prediction and references) goes through pycocoevalcap's PTB tokenizer (Stanford
CoreNLP 3.4.1 PTBTokenizer, -preserveLines -lowerCase; needs Java: apt-get install
default-jre-headless), and the punctuation tokens '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : -
-- ... ; are removed (other tokens such as "!!!" stay). CIDEr-D then scores each image's
prediction against its references with tf-idf weighted 1..4-gram vectors, the document
frequencies taken over the references of the WHOLE input (so an image's score depends on the
corpus), clipped counts, a Gaussian length penalty (sigma 6), the mean over n and over
references, times 10. Natural scale about 0..3 (can exceed 3); a corpus of one image always
scores 0 (idf = log(1) - log(df) = 0).

Aggregate: the corpus score (mean of the per-image values over all lines); per item: that
image's value. Score a corpus as one file: splitting it changes the idf weights.

Documented differences: implementations that skip the PTB tokenizer (plain lower/split) keep
punctuation attached ("surfboard." != "surfboard") and score lower; CIDEr (not -D) has no
clipping or length penalty; per-batch CIDEr (idf from a batch) differs from the corpus value."""


def _jar_path() -> tuple[Path, tuple[str, ...]]:
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    return jar, tuple(ptbtokenizer.PUNCTUATIONS)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise HarnessError(
            f"cider_score needs Java for the PTB tokenizer but 'java' is not on PATH; install it "
            f"(apt-get install {JAVA_PACKAGE})"
        )
    return java


def ptb_tokenize_groups(groups: list[list[str]]) -> list[list[str]]:
    """Tokenise each group of captions as one pycocoevalcap ``PTBTokenizer.tokenize`` call would
    (one JVM per group, all groups at once). pycocoevalcap's evaluation tokenises the references
    and the predictions in two separate calls; :func:`cider_scores` does the same."""
    work = [(i, g) for i, g in enumerate(groups) if g]
    results: list[list[str]] = [[] for _ in groups]
    if not work:
        return results
    java = _java()
    jar, punctuations = _jar_path()
    if not jar.is_file():
        raise HarnessError(f"pycocoevalcap's tokenizer jar is missing at {jar}; reinstall pycocoevalcap")
    punct = frozenset(punctuations)
    tmp_dir = tempfile.mkdtemp(prefix="harness-ptb-")
    procs = []
    try:
        for i, sentences in work:
            path = os.path.join(tmp_dir, f"captions{i}.txt")
            text = "\n".join(s.translate(_LINE_BREAKS) for s in sentences)
            with open(path, "wb") as fh:
                fh.write(text.encode("utf-8", "replace"))  # lone surrogates -> "?"
            cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
            try:
                procs.append((i, len(sentences), subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
            except OSError as exc:
                raise HarnessError(f"cannot run Java for the PTB tokenizer ({exc}); install {JAVA_PACKAGE}")
        outputs = []
        for i, n, proc in procs:
            out, err = proc.communicate()
            outputs.append((i, n, proc.returncode, out, err))
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    for i, n, code, out, err in outputs:
        if code != 0:
            last = (err.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
            raise HarnessError(f"the PTB tokenizer (Java) failed with exit code {code}: {last}; check the Java install ({JAVA_PACKAGE})")
        lines = out.decode("utf-8", "replace").split("\n")
        if any(lines[n:]):
            raise HarnessError(
                f"the PTB tokenizer returned {len(lines)} lines for {n} captions; a caption holds a "
                f"line separator it splits on: remove control characters from the captions"
            )
        lines += [""] * max(0, n - len(lines))
        # -lowerCase already lower-cases; .lower() again guards against the rare token the
        # 3.4.1 jar leaves capitalised (a no-op otherwise)
        results[i] = [" ".join(w for w in line.rstrip().split(" ") if w not in punct).lower() for line in lines[:n]]
    return results


def ptb_tokenize(sentences: list[str]) -> list[str]:
    """Tokenise captions as one pycocoevalcap ``PTBTokenizer.tokenize`` call (one JVM)."""
    return ptb_tokenize_groups([sentences])[0]


def cider_scores(predictions: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-image values for aligned predictions and reference lists."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    n = len(predictions)
    if n == 0:
        return 0.0, []
    tok_flat_refs, tok_preds = ptb_tokenize_groups([[r for refs in references for r in refs], list(predictions)])
    tokens, pos = tok_flat_refs, 0
    tok_refs = []
    for refs in references:
        tok_refs.append(tokens[pos : pos + len(refs)])
        pos += len(refs)
    if not any(r.split() for refs in tok_refs for r in refs):
        # no reference n-grams at all: every tf-idf vector is empty (pycocoevalcap would crash)
        return 0.0, [0.0] * n
    scorer = CiderScorer(n=4, sigma=6.0)
    for pred, refs in zip(tok_preds, tok_refs):
        scorer += (pred, refs)
    corpus, per_image = scorer.compute_score()
    return float(corpus), [float(v) for v in per_image]


@registry.register("cider_score", aliases=("cider", "cider_d"))
class CIDErScore(Metric):
    __doc__ = EXPLAIN
    name = "cider_score"
    subscores = ("cider_score",)
    corpus_level = True
    summary = "CIDEr-D (pycocoevalcap, PTB tokenizer via Java), corpus-level; per-image values too."
    explain = EXPLAIN
    required = ("image_id", "prediction", "references")

    def check_fields(self, item: dict) -> str | None:
        image_id = item.get("image_id")
        if isinstance(image_id, (dict, list, bool)) or image_id is None:
            return f"field 'image_id' must be a string or number, got {_type_name(image_id)}"
        refs = item.get("references")
        if not is_str_list(refs):
            return f"field 'references' must be a list of strings, got {_type_name(refs)}"
        if not refs:
            return "field 'references' is empty; give the image's reference captions"
        return None

    def score_items(self, items: list[dict]) -> list[dict]:
        return self.score(items).per_item

    def score(self, items: list[dict]) -> MetricResult:
        """Corpus-level: the aggregate is pycocoevalcap's corpus value over all items."""
        items = self.validate(items)
        corpus, per_image = cider_scores([it["prediction"] for it in items], [it["references"] for it in items])
        return MetricResult(per_item=[{"cider_score": v} for v in per_image], aggregate={"cider_score": corpus})
