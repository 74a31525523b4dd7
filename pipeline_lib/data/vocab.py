"""Vocabulary layouts: which token id means what.

Two layouts share one structure (Wu et al. 2022, reference §1.1):

    0 pad | 1 eos | data ids [data_lo, data_hi) | (laptop: word ids) | 100 extra ids at the top

* `paper`: T5's SentencePiece ids. Data ids are 2..31999 (they include unk=2 and the word
  pieces themselves, exactly as the original generator drew them), the extra ids are
  32000..32099 with `<extra_id_k>` = 32099 - k, and the model vocabulary is padded to 32128.
  Task-name prefixes and yes/no have known T5 ids (hard-coded below from the reference); numerals
  (count, length targets) and free text need the SentencePiece model, loaded only when
  `vocab.spm_model` is configured.
* `laptop`: the same structure with a small data vocabulary, one token per task prefix, per
  digit, per yes/no, and per word of any free-text corpus; numbers are spelled digit by digit.

Separators are T5 sentinels as in the original: `<extra_id_0>` between prefix and data,
`<extra_id_1>` between words (longest_word), `<extra_id_2>` between arguments, `<extra_id_3>` for
an empty output; LIME's seven markers are `<extra_id_99>`..`<extra_id_93>` (ids 32000..32006).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

NUM_EXTRA_IDS = 100
#: Largest integer any synthetic target holds (length <= 220, count <= 218).
MAX_NUMBER = 220
LIME_MARKERS = (":", "<sep>", "<UPPER>", "[", "<LOWER>", "<MATH>", "]")

#: T5 SentencePiece ids of encode(internal task name), reference §1.2 (checked on the samples).
PAPER_PREFIX_IDS: dict[str, tuple[int, ...]] = {
    "copy": (2405,),
    "reverse": (7211,),
    "duplicate": (19197,),
    "first_char": (166, 834, 4059),
    "last_char": (336, 834, 4059),
    "length": (2475,),
    "set": (356,),
    "deduplicate": (20, 26, 413, 26221),
    "longest_word": (14783, 834, 6051),
    "count": (3476,),
    "search": (960,),
    "delete": (9268,),
    "replace": (3601,),
    "sort": (1843,),
    "union": (7021,),
    "intersect": (27806,),
    "set_1_minus_2": (356, 834, 536, 834, 14078, 834, 357),
    "set_2_minus_1": (356, 834, 357, 834, 14078, 834, 536),
}
PAPER_YES_IDS = (4273,)
PAPER_NO_IDS = (150,)
T5_SPM_PIECE_COUNT = 32000
T5_MODEL_VOCAB = 32128


class VocabError(ValueError):
    """A vocabulary request that the configured layout cannot serve."""


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    name: str
    data_lo: int
    data_hi: int
    vocab_size: int  # real ids, extra ids included
    model_vocab_size: int  # padded embedding size
    prefixes: dict[str, tuple[int, ...]]
    yes: tuple[int, ...]
    no: tuple[int, ...]
    numbers: tuple[tuple[int, ...], ...] | None  # numbers[n] = ids of the numeral n
    text_encoder: Callable[[str], list[int]] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    text_decoder: Callable[[Sequence[int]], str] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    words: tuple[str, ...] = ()  # laptop: the word table, id = words_lo + index
    words_lo: int = 0
    pad_id: int = 0
    eos_id: int = 1

    # --- sentinels ----------------------------------------------------------------------------
    def extra_id(self, k: int) -> int:
        if not 0 <= k < NUM_EXTRA_IDS:
            raise VocabError(f"extra id {k} outside 0..{NUM_EXTRA_IDS - 1}")
        return self.vocab_size - 1 - k

    @property
    def task_input_divider(self) -> int:
        return self.extra_id(0)

    @property
    def word_divider(self) -> int:
        return self.extra_id(1)

    @property
    def arg_divider(self) -> int:
        return self.extra_id(2)

    @property
    def empty_marker(self) -> int:
        return self.extra_id(3)

    @property
    def lime_marker_ids(self) -> dict[str, int]:
        return {m: self.extra_id(NUM_EXTRA_IDS - 1 - i) for i, m in enumerate(LIME_MARKERS)}

    @property
    def num_data_ids(self) -> int:
        return self.data_hi - self.data_lo

    # --- lookups with clear errors ------------------------------------------------------------
    def prefix(self, internal_name: str) -> tuple[int, ...]:
        try:
            return self.prefixes[internal_name]
        except KeyError:
            raise VocabError(f"no prefix ids for task {internal_name!r}") from None

    def number(self, n: int) -> tuple[int, ...]:
        if self.numbers is None:
            raise VocabError(
                "numerals need a T5 SentencePiece model in the paper layout: set vocab.spm_model"
            )
        if not 0 <= n < len(self.numbers):
            raise VocabError(f"number {n} outside the numbers table 0..{len(self.numbers) - 1}")
        return self.numbers[n]

    def encode_text(self, text: str) -> list[int]:
        if self.text_encoder is None:
            raise VocabError(
                "free text needs a tokenizer: set vocab.spm_model (paper layout) or declare the "
                "corpus words (laptop layout)"
            )
        return self.text_encoder(text)

    def decode(self, ids: Sequence[int]) -> str:
        """A readable rendering for sample.jsonl: text where a tokenizer exists, else <id>."""
        names = self.special_names()
        out = []
        for i in ids:
            i = int(i)
            if i in names:
                out.append(names[i])
            elif self.words and self.words_lo <= i < self.words_lo + len(self.words):
                out.append(self.words[i - self.words_lo])
            elif self.text_decoder is not None and i < T5_SPM_PIECE_COUNT:
                out.append(self.text_decoder([i]))
            else:
                out.append(str(i))
        return " ".join(out)

    def special_names(self) -> dict[int, str]:
        names = {self.pad_id: "<pad>", self.eos_id: "</s>"}
        for k in range(NUM_EXTRA_IDS):
            names[self.extra_id(k)] = f"<extra_id_{k}>"
        return names

    def to_json(self) -> dict:
        """Every id a consumer needs, for meta.json."""
        return {
            "name": self.name,
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "data_ids": [self.data_lo, self.data_hi],
            "vocab_size": self.vocab_size,
            "model_vocab_size": self.model_vocab_size,
            "extra_ids": {"count": NUM_EXTRA_IDS, "extra_id_0": self.extra_id(0)},
            "task_input_divider": self.task_input_divider,
            "word_divider": self.word_divider,
            "arg_divider": self.arg_divider,
            "empty_marker": self.empty_marker,
            "lime_markers": self.lime_marker_ids,
            "yes": list(self.yes),
            "no": list(self.no),
            "words_lo": self.words_lo,
            "num_words": len(self.words),
        }


def _digits_number_table(digit_ids: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(digit_ids[int(c)] for c in str(n)) for n in range(MAX_NUMBER + 1))


def laptop_layout(
    data_vocab_size: int, text_words: Sequence[str] = (), pad_to_multiple: int = 8
) -> VocabLayout:
    """Compact layout: data ids 2..2+D, then one id per word, then 100 extra ids.

    The word table holds every task prefix (one token each), yes, no, the ten digits and the
    words of any free-text corpus (`text_words`, deduplicated, order kept), so the layout is a
    pure function of the config.
    """
    if data_vocab_size < 2:
        raise VocabError(f"vocab.data_vocab_size must be at least 2, got {data_vocab_size}")
    data_lo, data_hi = 2, 2 + data_vocab_size
    fixed = [f"<task:{name}>" for name in PAPER_PREFIX_IDS] + ["yes", "no"]
    fixed += [str(d) for d in range(10)]
    words = list(dict.fromkeys(fixed + [w for w in text_words if w not in fixed]))
    index = {w: data_hi + i for i, w in enumerate(words)}
    vocab_size = data_hi + len(words) + NUM_EXTRA_IDS
    model_vocab = -(-vocab_size // pad_to_multiple) * pad_to_multiple

    def encode(text: str) -> list[int]:
        try:
            return [index[w] for w in text.split()]
        except KeyError as e:
            raise VocabError(f"word {e.args[0]!r} is not in the laptop word table") from None

    return VocabLayout(
        name="laptop",
        data_lo=data_lo,
        data_hi=data_hi,
        vocab_size=vocab_size,
        model_vocab_size=model_vocab,
        prefixes={name: (index[f"<task:{name}>"],) for name in PAPER_PREFIX_IDS},
        yes=(index["yes"],),
        no=(index["no"],),
        numbers=_digits_number_table([index[str(d)] for d in range(10)]),
        text_encoder=encode,
        words=tuple(words),
        words_lo=data_hi,
    )


@functools.lru_cache(maxsize=4)
def _load_spm(path: str):
    import sentencepiece as spm  # only the paper layout with a tokenizer needs it

    proc = spm.SentencePieceProcessor()
    try:
        proc.Load(path)
    except (RuntimeError, OSError) as e:
        raise VocabError(f"vocab.spm_model: cannot load SentencePiece model {path}: {e}") from None
    return proc


def paper_layout(spm_model_path: str | None = None) -> VocabLayout:
    """T5 ids. With a SentencePiece model, prefixes/yes/no/numerals/text come from it."""
    data_lo, data_hi = 2, T5_SPM_PIECE_COUNT
    vocab_size = T5_SPM_PIECE_COUNT + NUM_EXTRA_IDS
    if spm_model_path is None:
        return VocabLayout(
            name="paper",
            data_lo=data_lo,
            data_hi=data_hi,
            vocab_size=vocab_size,
            model_vocab_size=T5_MODEL_VOCAB,
            prefixes=dict(PAPER_PREFIX_IDS),
            yes=PAPER_YES_IDS,
            no=PAPER_NO_IDS,
            numbers=None,
        )
    proc = _load_spm(spm_model_path)
    if proc.GetPieceSize() > T5_SPM_PIECE_COUNT:
        raise VocabError(
            f"vocab.spm_model: {spm_model_path} has {proc.GetPieceSize()} pieces; the paper "
            f"layout expects at most {T5_SPM_PIECE_COUNT}"
        )

    def encode(text: str) -> list[int]:
        return list(proc.EncodeAsIds(text))

    def encode_number(n: int) -> tuple[int, ...]:
        # Wu et al.: encode(str(n)) with a leading lone "▁" piece dropped.
        ids = encode(str(n))
        lone = proc.PieceToId("▁")
        if ids and ids[0] == lone and len(ids) > 1:
            ids = ids[1:]
        return tuple(ids)

    return VocabLayout(
        name="paper",
        data_lo=data_lo,
        data_hi=data_hi,
        vocab_size=vocab_size,
        model_vocab_size=T5_MODEL_VOCAB,
        prefixes={name: tuple(encode(name)) for name in PAPER_PREFIX_IDS},
        yes=tuple(encode("yes")),
        no=tuple(encode("no")),
        numbers=tuple(encode_number(n) for n in range(MAX_NUMBER + 1)),
        text_encoder=encode,
        text_decoder=lambda ids: proc.DecodeIds(list(ids)),
    )
