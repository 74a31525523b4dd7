"""Fine-tuning data sets (Wu et al. 2022 Tables 1-3; Liu et al. 2023 tasks A/B/C) on disk.

`build_downstream(name, spec, layout, out_dir)` reads a data set with its adapter
(`downstream_adapters.ADAPTERS`: formats and the decisions taken there), tokenizes it and
writes one directory in the store format of `pipeline_lib.data.store`, so fine-tuning reuses
`corpus.load_corpus` + `train.data.Seq2SeqPipeline` unchanged:

    <out>/meta.json                                  counts, parameters, vocabulary, checksums
    <out>/<name>/<split>.{inputs,targets}.{tokens,offsets}.npy   splits train/validation/test
    <out>/<split>.examples.jsonl                     texts (inputs, targets, answers): metrics
    <out>/vocab.json                                 the tokenizer, so predictions can be decoded
    <out>/sample.jsonl                               the first training examples, ids and text

Tokens are stored without EOS (`meta["eos_appended"] = false`): the input pipeline trims to the
feature length and appends EOS itself, as for the pre-training corpora. Lengths are not
truncated here (that is the pipeline's business).

Tokenizers. With a SentencePiece model (the paper layout built with `vocab.spm_model`) text is
T5-tokenized; `vocab.json` then records a fingerprint of the model, and decoding needs the same
layout again (`detokenize(out_dir, ids, layout)`). Without one (the laptop layout, or the paper
layout without a model) a `WordVocabulary` is built from the training split: whitespace words of
inputs and targets, sorted by (-count, word), mapped onto the layout's data ids with the first
data id (2, T5's unk) as `<unk>`; words of other splits not in it become `<unk>`. Its whole
table is in `vocab.json`, so decoding needs nothing else.

Spec keys: `adapter` (which reader of ADAPTERS; default: `name`, which also names the store's
source), `source` (directory or gs:// prefix; required for loader local), `loader`
(local | tfds | hf), `max_train_examples` (the first N training examples are kept: CNNDM-10K's
10,000), `cache_dir` (where gs:// files are copied; default results/cache). `limits` caps any
split to its first N examples ({"train": N, "validation": N, "test": N}), for laptop-scale
runs. Same inputs give byte-identical outputs; the directory is written atomically.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline_lib import files
from pipeline_lib.data import store
from pipeline_lib.data.downstream_adapters import (
    ADAPTERS,
    SPLITS,
    DownstreamAdapter,
    DownstreamError,
    Example,
    check_split,
)
from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.vocab import VocabLayout

__all__ = [
    "ADAPTERS",
    "SPLITS",
    "DownstreamAdapter",
    "DownstreamError",
    "Example",
    "SentencePieceTokenizer",
    "WordVocabulary",
    "build_downstream",
    "detokenize",
    "load_examples",
    "load_tokenizer",
    "make_tokenizer",
]

SAMPLE_ROWS = 20
SPEC_KEYS = {"adapter", "source", "loader", "max_train_examples", "cache_dir"}
UNK = "<unk>"
#: Encoded to fingerprint a SentencePiece model (vocab.json), so decoding with another fails.
SPM_PROBE = "The quick brown fox jumps over the lazy dog. question: context: 0123456789 C(=O)O"


# --- tokenizers -------------------------------------------------------------------------------
class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_json(self) -> dict: ...


def _until_eos(ids: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """Model output -> the ids before the first EOS, without padding."""
    out = []
    for i in ids:
        i = int(i)
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out


@dataclasses.dataclass(frozen=True)
class WordVocabulary:
    """Whitespace words <-> ids `first_id + rank`; anything else is `unk_id`."""

    words: tuple[str, ...]
    unk_id: int
    first_id: int
    eos_id: int = 1
    pad_id: int = 0

    @classmethod
    def build(cls, name: str, examples: Sequence[Example], layout: VocabLayout) -> WordVocabulary:
        counts = collections.Counter()
        for ex in examples:
            counts.update(ex.inputs.split())
            counts.update(ex.targets.split())
        words = tuple(sorted(counts, key=lambda w: (-counts[w], w)))
        capacity = layout.num_data_ids - 1  # the first data id is <unk>
        if len(words) > capacity:
            raise DownstreamError(
                f"{name}: the training split has {len(words)} distinct words but the "
                f"{layout.name} layout has room for {capacity} ({layout.num_data_ids} data ids "
                "minus <unk>); raise vocab.data_vocab_size, lower max_train_examples, or use "
                "the paper layout with vocab.spm_model"
            )
        return cls(words, layout.data_lo, layout.data_lo + 1, layout.eos_id, layout.pad_id)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {w: self.first_id + i for i, w in enumerate(self.words)}

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(w, self.unk_id) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        n = len(self.words)
        out = []
        for i in _until_eos(ids, self.eos_id, self.pad_id):
            k = i - self.first_id
            out.append(self.words[k] if 0 <= k < n else UNK)
        return " ".join(out)

    def to_json(self) -> dict:
        return {
            "kind": "words",
            "unk_id": self.unk_id,
            "first_id": self.first_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "words": list(self.words),
        }

    @classmethod
    def from_json(cls, obj: dict) -> WordVocabulary:
        return cls(
            tuple(obj["words"]), obj["unk_id"], obj["first_id"], obj["eos_id"], obj["pad_id"]
        )


@dataclasses.dataclass(frozen=True)
class SentencePieceTokenizer:
    """The layout's SentencePiece model; extra ids (sentinels) are dropped when decoding."""

    layout: VocabLayout

    def encode(self, text: str) -> list[int]:
        return self.layout.encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        pieces = self.layout.data_hi  # T5: 32000 pieces; ids above are extra ids
        kept = [i for i in _until_eos(ids, self.layout.eos_id, self.layout.pad_id) if i < pieces]
        try:
            return self.layout.text_decoder(kept)
        except IndexError:
            # a model with fewer pieces than the layout's data ids: drop the ids it lacks
            return self.layout.text_decoder([i for i in kept if self._decodable(i)])

    def _decodable(self, i: int) -> bool:
        try:
            self.layout.text_decoder([i])
        except IndexError:
            return False
        return True

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.encode(SPM_PROBE)).encode()).hexdigest()

    def to_json(self) -> dict:
        return {
            "kind": "sentencepiece",
            "layout": self.layout.name,
            "fingerprint": self.fingerprint(),
        }


def make_tokenizer(name: str, layout: VocabLayout, train: Sequence[Example]) -> Tokenizer:
    """SentencePiece when the layout has a model, else a word vocabulary of the train split."""
    if layout.text_decoder is not None:
        return SentencePieceTokenizer(layout)
    return WordVocabulary.build(name, train, layout)


def load_tokenizer(out_dir: Path, layout: VocabLayout | None = None) -> Tokenizer:
    path = Path(out_dir) / "vocab.json"
    if not path.is_file():
        raise DownstreamError(f"{path}: missing (is {out_dir} a downstream data directory?)")
    st = path.stat()  # the cache key changes whenever the file is rewritten or replaced
    obj = _read_vocab_json(str(path), (st.st_ino, st.st_mtime_ns, st.st_size))
    if obj["kind"] == "words":
        return WordVocabulary.from_json(obj)
    if layout is None or layout.text_decoder is None:
        raise DownstreamError(
            f"{path}: the data were tokenized with a SentencePiece model; decoding needs the "
            "paper layout built with the same vocab.spm_model"
        )
    tokenizer = SentencePieceTokenizer(layout)
    if tokenizer.fingerprint() != obj["fingerprint"]:
        raise DownstreamError(
            f"{path}: the given SentencePiece model is not the one the data were built with"
        )
    return tokenizer


@functools.lru_cache(maxsize=8)
def _read_vocab_json(path: str, version: tuple) -> dict:
    return json.loads(Path(path).read_text())


def detokenize(out_dir: Path, ids: Sequence[int], layout: VocabLayout | None = None) -> str:
    """Text of model output `ids` (up to the first EOS) in `out_dir`'s vocabulary."""
    return load_tokenizer(out_dir, layout).decode(ids)


# --- reading ----------------------------------------------------------------------------------
def _check_spec(name: str, spec: dict) -> dict:
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise DownstreamError(
            f"downstream {name}: unknown spec key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(SPEC_KEYS))}"
        )
    loader = spec.get("loader", "local")
    if loader not in ("local", "tfds", "hf"):
        raise DownstreamError(f"downstream {name}: loader {loader!r}; expected local, tfds or hf")
    if loader == "local" and not spec.get("source"):
        raise DownstreamError(f"downstream {name}: spec key 'source' (a directory) is required")
    cap = spec.get("max_train_examples")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise DownstreamError(
            f"downstream {name}: max_train_examples must be a positive integer, got {cap!r}"
        )
    adapter = spec.get("adapter", name)
    if adapter not in ADAPTERS:
        raise DownstreamError(
            f"downstream {name}: unknown adapter {adapter!r}; known: {', '.join(sorted(ADAPTERS))}"
        )
    return {
        "adapter": adapter,
        "source": None if spec.get("source") is None else str(spec["source"]),
        "loader": loader,
        "max_train_examples": cap,
        "cache_dir": str(spec.get("cache_dir", "results/cache")),
    }


def _check_limits(name: str, limits: dict | None) -> dict[str, int]:
    limits = dict(limits or {})
    for key, value in limits.items():
        if key not in SPLITS:
            raise DownstreamError(f"downstream {name}: limits key {key!r} is not a split")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DownstreamError(
                f"downstream {name}: limits.{key} must be a positive integer, got {value!r}"
            )
    return limits


def _local_source(adapter: DownstreamAdapter, source: str, cache_dir: str) -> Path:
    """A local directory holding the adapter's files: `source` itself, or copies of gs:// files."""
    if not source.startswith("gs://"):
        return Path(source)
    if not adapter.remote_ok:
        raise DownstreamError(f"{adapter.name}: source must be a local directory, got {source}")
    from pipeline_lib.remote import local_copy

    target = Path(cache_dir) / "downstream" / hashlib.sha256(source.encode()).hexdigest()[:16]
    for split in SPLITS:
        for rel in adapter.split_files(target, split):
            dest = target / rel
            if not dest.exists():
                copy = local_copy(f"{source.rstrip('/')}/{rel}", target / ".blobs")
                dest.parent.mkdir(parents=True, exist_ok=True)
                copy.replace(dest)
    return target


def read_splits(
    name: str, spec: dict, limits: dict | None = None
) -> tuple[dict[str, list[Example]], dict[str, str]]:
    """All splits after the caps, and sha256 of every input file read ({} for hub loaders)."""
    spec = _check_spec(name, spec)
    adapter = ADAPTERS[spec["adapter"]]
    limits = _check_limits(name, limits)
    splits: dict[str, list[Example]] = {}
    input_files: dict[str, str] = {}
    if spec["loader"] == "local":
        source = _local_source(adapter, spec["source"], spec["cache_dir"])
        for split in SPLITS:
            splits[split] = adapter.read(source, split)
            for path in adapter.files(source, split):
                input_files[path.name] = store.sha256_file(path)
    else:
        for split in SPLITS:
            splits[split] = adapter.read_hub(spec["loader"], split)
    if spec["max_train_examples"] is not None:
        splits["train"] = splits["train"][: spec["max_train_examples"]]
    for split, cap in limits.items():
        splits[split] = splits[split][:cap]
    for split, examples in splits.items():
        if not examples:
            raise DownstreamError(f"downstream {name}: the {split} split has no examples")
    return splits, dict(sorted(input_files.items()))


# --- writing ----------------------------------------------------------------------------------
def _json_line(obj) -> str:
    return json.dumps(obj, sort_keys=True) + "\n"


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _encode(tokenizer: Tokenizer, texts: Sequence[str], dtype, limit: int) -> Ragged:
    rows = [tokenizer.encode(t) for t in texts]
    data = Ragged.from_rows(rows, dtype=np.int64)
    if data.values.size and (data.values.min() < 0 or data.values.max() >= limit):
        raise DownstreamError(f"tokenizer produced ids outside 0..{limit - 1}")
    return data.astype(dtype)


def build_downstream(
    name: str, spec: dict, layout: VocabLayout, out_dir: Path, limits: dict | None = None
) -> dict:
    """Read, tokenize and write downstream data set `name` to `out_dir` (see module doc)."""
    splits, input_files = read_splits(name, spec, limits)
    checked = _check_spec(name, spec)
    adapter = ADAPTERS[checked["adapter"]]
    tokenizer = make_tokenizer(name, layout, splits["train"])
    dtype = store.token_dtype(layout.model_vocab_size)
    checksums: dict[str, str] = {}
    counts: dict[str, int] = {}
    lengths: dict[str, dict] = {}
    with files.atomic_directory(Path(out_dir)) as tmp:
        encoded = {}
        for split in SPLITS:
            examples = splits[split]
            for field in store.FIELDS:
                data = _encode(
                    tokenizer, [getattr(ex, field) for ex in examples], dtype, layout.vocab_size
                )
                encoded[split, field] = data
                checksums.update(store.write_split(tmp, name, split, field, data, dtype))
                lengths[f"{split}.{field}"] = store.length_stats(data.lengths)
            counts[split] = len(examples)
            _write_text(
                tmp / f"{split}.examples.jsonl",
                "".join(
                    _json_line(
                        {"inputs": e.inputs, "targets": e.targets, "answers": list(e.answers)}
                    )
                    for e in examples
                ),
            )
        _write_text(
            tmp / "vocab.json", json.dumps(tokenizer.to_json(), indent=1, sort_keys=True) + "\n"
        )
        samples = []
        for i, ex in enumerate(splits["train"][:SAMPLE_ROWS]):
            x = encoded["train", "inputs"].row(i).tolist()
            y = encoded["train", "targets"].row(i).tolist()
            samples.append(
                {
                    "inputs": x,
                    "targets": y,
                    "inputs_text": tokenizer.decode(x),
                    "targets_text": tokenizer.decode(y),
                }
            )
        _write_text(tmp / "sample.jsonl", "".join(_json_line(s) for s in samples))
        for rel in [f"{s}.examples.jsonl" for s in SPLITS] + ["vocab.json", "sample.jsonl"]:
            checksums[rel] = store.sha256_file(tmp / rel)
        vocab = layout.to_json()
        vocab["tokenizer"] = tokenizer.to_json()["kind"]
        if isinstance(tokenizer, WordVocabulary):
            vocab["num_downstream_words"] = len(tokenizer.words)
            vocab["unk_id"] = tokenizer.unk_id
        meta = {
            "format_version": store.FORMAT_VERSION,
            "kind": "downstream",
            "task": name,
            "adapter": adapter.name,
            "description": adapter.description,
            "generator": "pipeline_lib.data.downstream:build_downstream",
            "metrics": list(adapter.metrics),
            "primary_metric": adapter.primary_metric,
            "parameters": {
                "source": checked["source"],
                "loader": checked["loader"],
                "max_train_examples": checked["max_train_examples"],
                "limits": dict(sorted(_check_limits(name, limits).items())),
            },
            "input_files": input_files,
            "sources": {name: {"counts": counts, "lengths": lengths}},
            "splits": list(SPLITS),
            "token_dtype": str(dtype),
            "eos_appended": False,
            "vocab": vocab,
            "checksums": dict(sorted(checksums.items())),
        }
        files.write_json_atomic(tmp / "meta.json", meta)
    return meta


def load_examples(out_dir: Path, split: str) -> list[Example]:
    """The texts of `split` (with all gold answers), in the order of the token arrays."""
    check_split(split)
    path = Path(out_dir) / f"{split}.examples.jsonl"
    if not path.is_file():
        raise DownstreamError(f"{path}: missing (is {out_dir} a downstream data directory?)")
    examples = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            examples.append(Example(row["inputs"], row["targets"], tuple(row["answers"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DownstreamError(f"{path}:{i}: not an examples row") from None
    return examples
