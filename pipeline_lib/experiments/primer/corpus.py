"""The `primer_corpus` stage: fixed training and validation LM windows for every run.

Sources (`primer.data.kind`):

* ``pcfg`` (default, offline): the PCFG stage's `sentences.txt` over its `vocab.txt`; each
  sentence + `[SEP]`, concatenated, cut into windows (`windows`), window EOS = `[SEP]` (the
  vocabulary's one end-of-sequence token).
* ``text``: any local UTF-8 file (`primer.data.path`), one document per non-empty line,
  tokenised by a SentencePiece model trained here on the file (pad 0, EOS 1, unk 2, no BOS:
  seqio's layout); each line + EOS.

The last documents are validation (`primer.data.validation_windows` windows, built only from
them); the hash of the validation windows and of the vocabulary go into `meta.json`, and every
run's summary repeats them, so the table can refuse to compare runs on different data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from pipeline_lib.errors import ConfigError
from pipeline_lib.experiments.primer import windows as win
from pipeline_lib.files import atomic_directory, read_json

log = logging.getLogger(__name__)

SEP = "[SEP]"
TEXT_EOS = 1  # SentencePiece trained with seqio's ids: pad 0, eos 1, unk 2


def _pcfg_documents(data_dir: Path) -> tuple[list[np.ndarray], list[str], int, str]:
    tokens = Path(data_dir, "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids = {t: i for i, t in enumerate(tokens)}
    if SEP not in ids:
        raise ConfigError(f"{data_dir}/vocab.txt: no {SEP} token to end sentences with")
    docs = []
    lines = Path(data_dir, "sentences.txt").read_text(encoding="utf-8").splitlines()
    for row, line in enumerate(lines):
        try:
            docs.append(np.asarray([ids[w] for w in line.split()], np.int32))
        except KeyError as e:
            raise ConfigError(f"{data_dir}/sentences.txt line {row + 1}: word {e} is not in "
                              "vocab.txt") from None
    digest = hashlib.sha256(Path(data_dir, "vocab.txt").read_bytes()).hexdigest()
    return docs, tokens, ids[SEP], digest


def _text_lines(path: str | None) -> list[str]:
    if not path:
        raise ConfigError("primer.data.path: a text corpus needs a file (data.kind: text)")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"primer.data.path: {path} is not a file")
    try:
        lines = [x.strip() for x in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ConfigError(f"primer.data.path: {path} is not UTF-8 ({e.reason} at byte "
                          f"{e.start})") from None
    lines = [x for x in lines if x]
    if not lines:
        raise ConfigError(f"primer.data.path: {path} is empty")
    return lines


def _train_sentencepiece(lines: list[str], vocab_size: int, out: Path) -> Path:
    import sentencepiece as spm

    corpus = out / "spm_train.txt"
    corpus.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    try:
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(out / "spm"), vocab_size=vocab_size,
            model_type="unigram", pad_id=0, eos_id=TEXT_EOS, unk_id=2, bos_id=-1,
            num_threads=1, character_coverage=1.0, minloglevel=2,
            # one thread and no sampling of the input: the same file gives the same model
            input_sentence_size=0, shuffle_input_sentence=False,
        )
    except RuntimeError as e:
        raise ConfigError(f"primer.data.vocab_size: SentencePiece could not train a "
                          f"{vocab_size}-piece model on {len(lines)} lines: {e}") from None
    corpus.unlink()
    return out / "spm.model"


def build_corpus(section: dict, data_dir: Path | None, out_dir: Path) -> dict:
    """Write `train.npy`, `validation.npy` ([n, length] int32), `meta.json`, `sample.jsonl`."""
    data, length = section["data"], int(section["length"])
    with atomic_directory(out_dir) as tmp:
        if data["kind"] == "pcfg":
            docs, tokens, eos, vocab_hash = _pcfg_documents(Path(data_dir))
            vocab_size = len(tokens)
            decode = lambda row: " ".join(tokens[t] for t in row)
        else:
            import sentencepiece as spm

            lines = _text_lines(data["path"])
            # fit on the whole file (T5's vocabulary was fit on Common Crawl too): the split
            # into validation documents is counted in pieces, so it needs the model first
            model = _train_sentencepiece(lines, int(data["vocab_size"]), tmp)
            sp = spm.SentencePieceProcessor(model_file=str(model))
            docs = [np.asarray(sp.encode(x), np.int32) for x in lines]
            eos, vocab_size = TEXT_EOS, sp.get_piece_size()
            vocab_hash = hashlib.sha256(model.read_bytes()).hexdigest()
            decode = lambda row: sp.decode([int(t) for t in row])
        held = win.held_out_split([len(d) for d in docs], data["validation_windows"], length, 1)
        seed = int(data.get("chunk_seed", 0))
        train = win.split_windows(win.token_stream(docs[: len(docs) - held], eos, seed=seed),
                                  length, eos)
        valid = win.split_windows(win.token_stream(docs[len(docs) - held:], eos, seed=seed + 1),
                                  length, eos)[: data["validation_windows"]]
        batch = int(section["batch_size"])
        if len(valid) < data["validation_windows"]:
            raise ConfigError(
                f"primer.data.validation_windows: {data['validation_windows']} windows of "
                f"{length} need more documents than the corpus has ({len(docs)})")
        if len(train) < batch:
            raise ConfigError(
                f"primer.batch_size: {batch} is more than the {len(train)} training windows "
                f"of length {length} the corpus gives; use more data or a smaller batch")
        np.save(tmp / "train.npy", train)
        np.save(tmp / "validation.npy", valid)
        meta = {
            "kind": "primer_corpus",
            "generator": "pipeline_lib.experiments.primer.corpus:build_corpus",
            "data": data,
            "length": length,
            "eos_id": int(eos),
            "vocab_size": int(vocab_size),
            "vocab_sha256": vocab_hash,
            "validation_sha256": win.windows_hash(valid),
            "counts": {"documents": len(docs), "validation_documents": held,
                       "train_windows": len(train), "validation_windows": len(valid),
                       "train_tokens": int(train.size)},
            "layout": "window = length - 1 stream tokens + EOS; inputs = window shifted right "
                      "with 0 first; every position a target",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        rows = [{"index": i, "text": decode(train[i])} for i in range(min(5, len(train)))]
        (tmp / "sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log.info("primer corpus: %s", meta["counts"])
    return meta


def load_corpus(corpus_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    corpus_dir = Path(corpus_dir)
    meta = read_json(corpus_dir / "meta.json")
    train = np.load(corpus_dir / "train.npy", mmap_mode="r")
    valid = np.load(corpus_dir / "validation.npy")
    if win.windows_hash(valid) != meta["validation_sha256"]:
        raise ConfigError(f"{corpus_dir}/validation.npy: its hash differs from meta.json "
                          "(a damaged or edited corpus); rerun primer_corpus")
    return train, valid, meta
