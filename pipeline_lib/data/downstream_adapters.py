"""Readers of the fine-tuning data sets of Wu et al. (2022) Tables 1-3, as text-to-text `Example`s.

The paper's own copies (gs://n2formal-public-data/synthetic_pretraining/finetuning_data, one
`input<TAB>target` line per example) are no longer public (reference §7), so every adapter reads
the data set's standard public release from a local directory (`source`). Decisions where the
reference is silent or unsure are marked DECISION.

Whitespace. Every text field is normalised to single spaces (`" ".join(text.split())`). T5's
SentencePiece model removes extra whitespace anyway, and the word vocabulary of the laptop
layout only round-trips whitespace-normalised text; no task here depends on whitespace runs.

Local layouts under `source` (inputs -> targets):

* cnndm_10k: Krishna et al. (2021) release, `lowercase_{train,val,test}.txt`, one
  `article<TAB>summary` line per example (the files Wu et al. copied verbatim); article -> summary.
* code_translation: CodeXGLUE code-to-code-trans, `{train,valid,test}.java-cs.txt.{java,cs}`,
  line i of the .java file pairs with line i of the .cs file; Java -> C#.
* mtop: MTOP English (`mtop/en`), `{train,eval,test}.txt`, 8-column TSV; the tokens of column 8
  joined by spaces -> the decoupled logical form (column 7).
* webqsp: `WebQSP.{train,test}.json`; question + topic entity -> SPARQL.
* retrosynthesis: USPTO-50K in the src/tgt layout of Liu et al. (2017),
  `{src,tgt}-{train,val,test}.txt`, one space-tokenised SMILES per line; product -> reactants.
* squad: SQuAD v1.1 `train-v1.1.json`, `dev-v1.1.json`; `question: {q} context: {c}` -> first
  answer.
* pcfg_A/B/C: what `pipeline_lib.pcfg.dataset.build_downstream` writes,
  `{train,validation}[,test].csv` with columns `text,label`; sentence -> label as a string.

DECISIONS (documented guesses; the originals are not recoverable):
* mtop: the input is the tokens of column 8 joined by spaces and the target the decoupled
  logical form, as Google's MTOP TSV->JSONL converter (CASPER, Pasupat et al. 2021) casts it.
* webqsp: WebQSP has no validation split; the last `len // 10` usable training questions are
  the validation split (train keeps the first 90 %, ~2.8K, close to the paper's "2.7K").
  A question is usable when one of its parses has a SPARQL query; the first such parse is the
  target, with its `PREFIX` and `#` comment lines removed. The input carries the parse's topic
  entity (`question: {q} entity: {name} {mid}`): a SPARQL query names Freebase MIDs that the
  question alone cannot give (the paper's 2048-token inputs suggest extra context was given).
* retrosynthesis: the src/tgt layout, not the atom-mapped CSV (un-mapping needs RDKit
  canonicalisation). Lines are kept as written: a leading reaction-class token (`<RX_k>`, as
  in Liu et al.'s release) stays in the input if the release has one, so which setting is run
  is the choice of the files pointed to.
* squad: T5's `squad_v010_allanswers`: question, context and answers are punctuation-padded
  (a space around every character that is not `_`, whitespace, letter, number or mark), the
  target is the first answer and `answers` keeps all of them for EM/F1. SQuAD has no public
  test split, so `test` reads the dev set, the split the paper evaluates on.
* pcfg_*: the PCFG build writes train and validation only; `test` reads `test.csv` when there
  is one and otherwise doubles the validation split.
* cnndm_10k is read as written (Krishna et al. lower-cased it); `max_train_examples` (10,000)
  is applied by the builder. Splits `val` -> validation.

Optional hub loaders (`loader: tfds | hf` in the spec) exist for squad and cnndm_10k only; they
import tensorflow_datasets / datasets lazily and are not exercised by the tests.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

SPLITS = ("train", "validation", "test")


class DownstreamError(ValueError):
    """A downstream data set that is missing, malformed or cannot be built as asked."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One text-to-text example; `answers` are all gold answers (default: just the target)."""

    inputs: str
    targets: str
    answers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        answers = (self.targets,) if self.answers is None else tuple(self.answers)
        object.__setattr__(self, "answers", answers)


@dataclasses.dataclass(frozen=True)
class DownstreamAdapter:
    """How one data set is read. `split_files(source, split)` names the files a split needs
    (relative to `source`); `parse(paths, split)` turns them into Examples."""

    name: str
    description: str
    metrics: tuple[str, ...]
    primary_metric: str
    split_files: Callable[[Path, str], tuple[str, ...]]
    parse: Callable[[Sequence[Path], str], list[Example]]
    remote_ok: bool = True  # may `source` be a gs:// prefix (files fetched one by one)?
    hub: Callable[[str, str], list[Example]] | None = None  # (loader, split) -> Examples

    def files(self, source: Path, split: str) -> tuple[Path, ...]:
        check_split(split)
        return tuple(Path(source) / name for name in self.split_files(Path(source), split))

    def read(self, source: Path, split: str) -> list[Example]:
        paths = self.files(source, split)
        for p in paths:
            if not p.is_file():
                raise DownstreamError(
                    f"{self.name}: {p}: missing (needed for the {split} split; "
                    f"expected layout: {self.description})"
                )
        return self.parse(paths, split)

    def read_hub(self, loader: str, split: str) -> list[Example]:
        check_split(split)
        if self.hub is None:
            raise DownstreamError(
                f"{self.name}: loader {loader!r} is not available for this data set; "
                "use loader: local with a source directory"
            )
        return self.hub(loader, split)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DownstreamError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def clean(text: str) -> str:
    """Whitespace runs -> one space, no leading/trailing space (see module doc)."""
    return " ".join(text.split())


def pad_punctuation(text: str) -> str:
    """T5's `_pad_punctuation`: spaces around every char outside [_, space, \\p{L,N,M}]."""
    out = []
    for ch in text:
        if ch == "_" or ch.isspace() or unicodedata.category(ch)[0] in "LNM":
            out.append(ch)
        else:
            out.append(f" {ch} ")
    return clean("".join(out))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DownstreamError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DownstreamError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def _parallel_lines(paths: Sequence[Path], split: str) -> list[Example]:
    """Line i of paths[0] -> line i of paths[1] (CodeXGLUE, src/tgt layouts)."""
    src, tgt = (_lines(p) for p in paths)
    if len(src) != len(tgt):
        raise DownstreamError(
            f"{paths[0]} has {len(src)} lines but {paths[1]} has {len(tgt)}: parallel files "
            "must pair line by line"
        )
    examples = []
    for i, (x, y) in enumerate(zip(src, tgt), start=1):
        if not x.strip() or not y.strip():
            empty = paths[0] if not x.strip() else paths[1]
            raise DownstreamError(f"{empty}:{i}: empty line")
        examples.append(Example(clean(x), clean(y)))
    return examples


# --- cnndm_10k -------------------------------------------------------------------------------
_CNNDM_SPLIT = {"train": "train", "validation": "val", "test": "test"}


def _cnndm_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    examples = []
    for i, line in enumerate(_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DownstreamError(
                f"{path}:{i}: expected 'article<TAB>summary' (2 non-empty tab-separated "
                f"fields), found {len(fields)} field(s)"
            )
        examples.append(Example(clean(fields[0]), clean(fields[1])))
    return examples


def _cnndm_hub(loader: str, split: str) -> list[Example]:
    # CNN/DailyMail 3.0.0 (article, highlights), lower-cased like Krishna et al.'s copy.
    rows = _hub_rows(loader, "cnn_dailymail/3.0.0", ("cnn_dailymail", "3.0.0"), split)
    return [
        Example(clean(str(r["article"]).lower()), clean(str(r["highlights"]).lower())) for r in rows
    ]


# --- code_translation --------------------------------------------------------------------------
_CODEXGLUE_SPLIT = {"train": "train", "validation": "valid", "test": "test"}


def _codexglue_files(source: Path, split: str) -> tuple[str, ...]:
    s = _CODEXGLUE_SPLIT[split]
    return (f"{s}.java-cs.txt.java", f"{s}.java-cs.txt.cs")


# --- mtop ------------------------------------------------------------------------------------
_MTOP_SPLIT = {"train": "train.txt", "validation": "eval.txt", "test": "test.txt"}
_MTOP_COLUMNS = 8  # id, intent, slots, utterance, domain, locale, decoupled form, tokens JSON


def _mtop_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    examples = []
    for i, line in enumerate(_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != _MTOP_COLUMNS:
            raise DownstreamError(
                f"{path}:{i}: expected {_MTOP_COLUMNS} tab-separated MTOP columns, "
                f"found {len(fields)}"
            )
        try:
            tokens = json.loads(fields[7])["tokens"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DownstreamError(
                f"{path}:{i}: column 8 is not a JSON object with a 'tokens' list"
            ) from None
        if not tokens or not fields[6].strip():
            raise DownstreamError(f"{path}:{i}: empty utterance tokens or logical form")
        examples.append(Example(clean(" ".join(tokens)), clean(fields[6])))
    return examples


# --- webqsp ----------------------------------------------------------------------------------
WEBQSP_VALIDATION_DIVISOR = 10  # validation = the last len // 10 usable training questions


def _webqsp_files(source: Path, split: str) -> tuple[str, ...]:
    return ("WebQSP.test.json",) if split == "test" else ("WebQSP.train.json",)


def sparql_target(sparql: str) -> str:
    """The query without PREFIX declarations and # comment lines, whitespace-normalised."""
    kept = [line for line in sparql.splitlines() if not line.strip().startswith(("PREFIX", "#"))]
    return clean(" ".join(kept))


def _webqsp_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    data = _load_json(path)
    questions = data.get("Questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise DownstreamError(f"{path}: expected a JSON object with a 'Questions' list")
    examples = []
    for q in questions:
        parse = next((p for p in q.get("Parses") or [] if (p.get("Sparql") or "").strip()), None)
        if parse is None:
            continue  # no annotated query: nothing to learn or score
        question = q.get("ProcessedQuestion") or q.get("RawQuestion")
        if not question:
            raise DownstreamError(f"{path}: question {q.get('QuestionId')!r} has no text")
        inputs = f"question: {question}"
        if parse.get("TopicEntityMid"):
            inputs += f" entity: {parse.get('TopicEntityName') or ''} {parse['TopicEntityMid']}"
        examples.append(Example(clean(inputs), sparql_target(parse["Sparql"])))
    if split == "test":
        return examples
    n_valid = len(examples) // WEBQSP_VALIDATION_DIVISOR
    cut = len(examples) - n_valid
    return examples[:cut] if split == "train" else examples[cut:]


# --- retrosynthesis ------------------------------------------------------------------------------
_USPTO_SPLIT = {"train": "train", "validation": "val", "test": "test"}


# --- squad -----------------------------------------------------------------------------------
def squad_example(question: str, context: str, answers: Sequence[str]) -> Example:
    """T5's squad preprocessor with all answers kept (`squad_v010_allanswers`)."""
    if not answers:
        raise DownstreamError(f"SQuAD question {question[:60]!r} has no answer")
    padded = tuple(pad_punctuation(a) for a in answers)
    inputs = f"question: {pad_punctuation(question)} context: {pad_punctuation(context)}"
    return Example(clean(inputs), padded[0], padded)


def _squad_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    data = _load_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DownstreamError(f"{path}: expected a SQuAD v1.1 JSON object with a 'data' list")
    examples = []
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [a["text"] for a in qa["answers"]]
                    examples.append(squad_example(qa["question"], paragraph["context"], answers))
    except (KeyError, TypeError) as e:
        raise DownstreamError(
            f"{path}: not SQuAD v1.1 (data/paragraphs/context/qas/question/answers/text): "
            f"missing {e}"
        ) from None
    return examples


def _squad_hub(loader: str, split: str) -> list[Example]:
    hub_split = "train" if split == "train" else "validation"
    rows = _hub_rows(loader, "squad/v1.1:3.0.0", ("squad",), hub_split)
    return [
        squad_example(str(r["question"]), str(r["context"]), [str(a) for a in r["answers"]["text"]])
        for r in rows
    ]


# --- pcfg_A / pcfg_B / pcfg_C --------------------------------------------------------------------
def _pcfg_files(source: Path, split: str) -> tuple[str, ...]:
    if split == "test" and not (source / "test.csv").is_file():
        return ("validation.csv",)
    return (f"{split}.csv",)


def _pcfg_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["text", "label"]:
        raise DownstreamError(f"{path}:1: expected the header 'text,label'")
    examples = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DownstreamError(f"{path}:{i}: expected 'sentence,label', got {row!r}")
        examples.append(Example(clean(row[0]), clean(row[1])))
    return examples


# --- pcfg_swap / pcfg_split (seq2seq tasks from the Viterbi trees) -------------------------------
def _transduction_parse(paths: Sequence[Path], split: str) -> list[Example]:
    (path,) = paths
    examples = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DownstreamError(f"{path}:{i}: expected 'input<TAB>target', got {line[:80]!r}")
        examples.append(Example(clean(parts[0]), clean(parts[1])))
    if not examples:
        raise DownstreamError(f"{path}: no examples")
    return examples


def _transduction_adapter(task: str, what: str) -> DownstreamAdapter:
    return DownstreamAdapter(
        name=f"pcfg_{task}",
        description=f"PCFG seq2seq task {task} ({what}; pipeline_lib/pcfg/transduction.py): "
        "{train,validation,test}.tsv of input<TAB>target lines",
        metrics=("exact_match", "token_f1"),
        primary_metric="exact_match",
        split_files=_one_file(lambda split: f"{split}.tsv"),
        parse=_transduction_parse,
        remote_ok=False,
    )


# --- hub loaders (lazy, optional) ----------------------------------------------------------------
def _hub_rows(loader: str, tfds_name: str, hf_args: tuple[str, ...], split: str) -> list[dict]:
    if loader == "tfds":
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise DownstreamError(
                "loader: tfds needs the tensorflow-datasets package (pip install "
                "tensorflow-datasets)"
            ) from None
        return list(tfds.as_numpy(tfds.load(tfds_name, split=split)))
    if loader == "hf":
        try:
            import datasets
        except ImportError:
            raise DownstreamError(
                "loader: hf needs the Hugging Face datasets package (pip install datasets)"
            ) from None
        return list(datasets.load_dataset(*hf_args, split=split))
    raise DownstreamError(f"unknown loader {loader!r}; expected local, tfds or hf")


# --- the registry --------------------------------------------------------------------------------
_ROUGE = ("rouge1", "rouge2", "rougeLsum")
_PARSING = ("exact_match", "token_f1")


def _one_file(pattern: Callable[[str], str]) -> Callable[[Path, str], tuple[str, ...]]:
    return lambda source, split: (pattern(split),)


def _pcfg_adapter(task: str) -> DownstreamAdapter:
    return DownstreamAdapter(
        name=f"pcfg_{task}",
        description=f"PCFG downstream task {task} (Liu et al. 2023) as text-to-text: "
        "{train,validation}[,test].csv with columns text,label (test defaults to validation)",
        metrics=("exact_match",),
        primary_metric="exact_match",
        split_files=_pcfg_files,
        parse=_pcfg_parse,
        remote_ok=False,
    )


ADAPTERS: dict[str, DownstreamAdapter] = {
    a.name: a
    for a in (
        DownstreamAdapter(
            name="cnndm_10k",
            description="CNNDM-10K (Krishna et al. 2021): lowercase_{train,val,test}.txt, "
            "one 'article<TAB>summary' line per example",
            metrics=_ROUGE,
            primary_metric="rouge1",
            split_files=_one_file(lambda s: f"lowercase_{_CNNDM_SPLIT[s]}.txt"),
            parse=_cnndm_parse,
            hub=_cnndm_hub,
        ),
        DownstreamAdapter(
            name="code_translation",
            description="CodeXGLUE Java->C#: {train,valid,test}.java-cs.txt.{java,cs}, "
            "parallel lines",
            metrics=_PARSING,
            primary_metric="exact_match",
            split_files=_codexglue_files,
            parse=_parallel_lines,
        ),
        DownstreamAdapter(
            name="mtop",
            description="MTOP English: {train,eval,test}.txt, 8-column TSV (utterance tokens "
            "-> decoupled logical form)",
            metrics=_PARSING,
            primary_metric="exact_match",
            split_files=_one_file(lambda s: _MTOP_SPLIT[s]),
            parse=_mtop_parse,
        ),
        DownstreamAdapter(
            name="webqsp",
            description="WebQSP: WebQSP.{train,test}.json (question + topic entity -> SPARQL; "
            "validation = last 10% of train)",
            metrics=_PARSING,
            primary_metric="exact_match",
            split_files=_webqsp_files,
            parse=_webqsp_parse,
        ),
        DownstreamAdapter(
            name="retrosynthesis",
            description="USPTO-50K, src/tgt layout: {src,tgt}-{train,val,test}.txt, one "
            "space-tokenised SMILES per line (product -> reactants)",
            metrics=_PARSING,
            primary_metric="exact_match",
            split_files=lambda source, s: (
                f"src-{_USPTO_SPLIT[s]}.txt",
                f"tgt-{_USPTO_SPLIT[s]}.txt",
            ),
            parse=_parallel_lines,
        ),
        DownstreamAdapter(
            name="squad",
            description="SQuAD v1.1: train-v1.1.json, dev-v1.1.json (validation and test "
            "both read dev)",
            metrics=("squad_em", "squad_f1"),
            primary_metric="squad_em",
            split_files=_one_file(lambda s: "train-v1.1.json" if s == "train" else "dev-v1.1.json"),
            parse=_squad_parse,
            hub=_squad_hub,
        ),
        _pcfg_adapter("A"),
        _pcfg_adapter("B"),
        _pcfg_adapter("C"),
        _transduction_adapter("swap", "A B -> B A at the Viterbi tree's top-level split"),
        _transduction_adapter("split", "A B -> A | B at the Viterbi tree's top-level split"),
    )
}
