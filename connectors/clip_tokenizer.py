"""CLIP's byte-pair tokenizer in plain Python and numpy: text queries without importing torch.

It gives the tokens of open_clip's ``SimpleTokenizer`` (OpenAI's CLIP BPE, MIT licence) for the
models that use it, which is every OpenAI-style CLIP and the starter: the same cleaning (ftfy,
HTML unescaping twice, whitespace collapsed, lower case), the same pre-split pattern, the same
merges from the same vocabulary file (``clip_bpe_vocab_16e6.txt.gz``, byte-identical to
open_clip's), the same truncation (the last kept token becomes end-of-text). Equality with
open_clip is tested on arbitrary Unicode text. A model whose text config names a Hugging Face
tokenizer, a reduction mask or extra special tokens is not described by this class:
:meth:`ClipTokenizer.for_text_config` returns ``None`` for it and the caller uses open_clip's.
"""

from __future__ import annotations

import gzip
import html
import string
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ftfy
import numpy as np
import regex

VOCAB_FILE = Path(__file__).resolve().with_name("clip_bpe_vocab_16e6.txt.gz")
DEFAULT_CONTEXT_LENGTH = 77
#: merges used from the vocabulary file (OpenAI's vocabulary: 49,152 tokens less bytes and specials)
MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte → printable character map of GPT-2's byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars)}


def _basic_clean(text: str) -> str:
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    return " ".join(_basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower().split()).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace_clean(_basic_clean(text)).lower(),
    "whitespace": lambda text: _whitespace_clean(_basic_clean(text)),
    "canonicalize": _canonicalize,
}


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(token → id, merge pair → rank), read once per process."""
    lines = gzip.open(VOCAB_FILE).read().decode("utf-8").split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    base = list(_bytes_to_unicode().values())
    vocab = [*base, *(token + "</w>" for token in base), *("".join(merge) for merge in merges), *SPECIAL_TOKENS]
    return {token: index for index, token in enumerate(vocab)}, {merge: rank for rank, merge in enumerate(merges)}


class ClipTokenizer:
    """Texts → ``(n, context_length)`` int64 token arrays, as open_clip's ``SimpleTokenizer``.

    Args:
        context_length: tokens per text, start and end markers included; longer texts are cut.
        clean: open_clip's cleaning mode: ``lower`` (its default), ``whitespace`` or ``canonicalize``.
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, clean: str = "lower") -> None:
        if clean not in CLEANERS:
            raise ValueError(f"clean must be one of {', '.join(CLEANERS)}, not {clean!r}")
        if context_length < 2:
            raise ValueError("context_length must hold the start and end markers (>= 2)")
        self.context_length = context_length
        self.clean = clean
        self._clean = CLEANERS[clean]
        self._encoder, self._ranks = _vocabulary()
        self._byte_encoder = _bytes_to_unicode()
        self._start, self._end = (self._encoder[token] for token in SPECIAL_TOKENS)
        self._cache: dict[str, str] = {token: token for token in SPECIAL_TOKENS}
        self._pattern = regex.compile("|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                      regex.IGNORECASE)

    @classmethod
    def for_text_config(cls, text_cfg: Mapping[str, Any]) -> ClipTokenizer | None:
        """The tokenizer open_clip builds for a model's ``text_cfg``, or ``None`` when that is not
        CLIP's plain BPE (a Hugging Face tokenizer, a reduction mask, extra special tokens)."""
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        clean = kwargs.pop("clean", "lower")
        if text_cfg.get("hf_tokenizer_name") or kwargs or clean not in CLEANERS:
            return None
        return cls(int(text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH), clean)

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self._ranks.get(pair, float("inf")))
            if best not in self._ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        joined = " ".join(word)
        self._cache[token] = joined
        return joined

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` without start/end markers and without truncation."""
        ids: list[int] = []
        for piece in self._pattern.findall(self._clean(text)):
            mapped = "".join(self._byte_encoder[byte] for byte in piece.encode("utf-8"))
            ids.extend(self._encoder[part] for part in self._bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self._start, *self.encode(text), self._end]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self._end
            out[row, : len(tokens)] = tokens
        return out
