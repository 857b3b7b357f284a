"""Fixed-length tokenisation: B strings → ids int32 [B, L] and mask bool [B, L] (True = token).

Reads `tokenizer.json` with the `tokenizers` library (its post-processor adds the model's
special tokens: [CLS]/[SEP] for BERT, </s> for T5, BOS/EOS for CLIP). Padding and truncation
are forced to exactly `max_length` here, whatever the file says. Without `tokenizer.json`, a
SentencePiece `spiece.model` (T5/UMT5 downloads) is used when `sentencepiece` is installed; it
appends EOS like HF's T5Tokenizer.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np


def _declared_pad_token(directory: str) -> str | None:
    """The pad token named by special_tokens_map.json / tokenizer_config.json, if any."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                tok = json.load(f).get("pad_token")
            if isinstance(tok, dict):
                tok = tok.get("content")
            if isinstance(tok, str):
                return tok
    return None


def _has_tokenizer(directory: str) -> bool:
    return any(
        os.path.isfile(os.path.join(directory, n)) for n in ("tokenizer.json", "spiece.model")
    )


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` (or a SentencePiece model) padded/truncated to L."""

    def __init__(self, backend, max_length: int, *, pad_id: int = 0, eos_id: int | None = None):
        if max_length < 1:
            raise ValueError(f"{max_length=} must be ≥ 1")
        self.max_length = max_length
        self.backend = backend
        self.truncated = 0  # prompts cut to max_length so far (their tails were dropped)
        self._sp = None
        if hasattr(backend, "encode_as_ids"):  # sentencepiece.SentencePieceProcessor
            self._sp = backend
            self.pad_id, self.eos_id = pad_id, eos_id
            return
        # Keep the file's pad id/token when it declares one (e.g. BERT's [PAD] = 0).
        padding = backend.padding or {}
        self.pad_id = int(padding.get("pad_id", pad_id))
        pad_token = padding.get("pad_token") or backend.id_to_token(self.pad_id) or ""
        backend.enable_truncation(max_length)
        backend.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=pad_token)

    @classmethod
    def from_dir(
        cls, directory: str, max_length: int, *, pad_id: int = 0, eos_id: int | None = None
    ) -> Tokenizer:
        """Tokenizer of an HF model dir, or of its diffusers sibling (text_encoder_2 → tokenizer_2)."""
        directory = os.path.normpath(directory)
        base = os.path.basename(directory)
        if base.startswith("text_encoder") and not _has_tokenizer(directory):
            sibling = os.path.join(
                os.path.dirname(directory), base.replace("text_encoder", "tokenizer", 1)
            )
            if _has_tokenizer(sibling):
                directory = sibling
        path = os.path.join(directory, "tokenizer.json")
        if os.path.isfile(path):
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(path)
            declared = _declared_pad_token(directory)
            if declared is not None and backend.token_to_id(declared) is not None:
                pad_id = backend.token_to_id(declared)
            return cls(backend, max_length, pad_id=pad_id)
        spm_path = os.path.join(directory, "spiece.model")
        if os.path.isfile(spm_path):
            try:
                import sentencepiece
            except ImportError:
                raise ImportError(
                    f"{directory!r} has spiece.model but no tokenizer.json: pip install "
                    "sentencepiece, or save a tokenizer.json with transformers"
                ) from None
            if eos_id is None:
                raise ValueError(f"{spm_path!r}: an eos_id is needed to terminate sequences")
            sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
            return cls(sp, max_length, pad_id=pad_id, eos_id=eos_id)
        raise FileNotFoundError(
            f"no tokenizer in {directory!r}: expected tokenizer.json (or spiece.model), here or "
            "in a diffusers sibling tokenizer/ directory"
        )

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), self.max_length), self.pad_id, np.int32)
        mask = np.zeros((len(texts), self.max_length), bool)
        cut = []
        if self._sp is not None:
            for i, t in enumerate(texts):
                row = self._sp.encode_as_ids(t)
                if len(row) > self.max_length - 1:
                    cut.append(t)
                row = row[: self.max_length - 1] + [self.eos_id]
                ids[i, : len(row)], mask[i, : len(row)] = row, True
        else:
            for i, e in enumerate(self.backend.encode_batch(texts)):
                ids[i] = e.ids
                mask[i] = np.asarray(e.attention_mask, bool)
                if e.overflowing:
                    cut.append(texts[i])
        if cut:
            self._report_truncation(cut)
        return ids, mask

    def _report_truncation(self, cut: list[str]) -> None:
        """Warn on the first truncated prompt and when the count reaches each power of ten."""
        before, self.truncated = self.truncated, self.truncated + len(cut)
        if before == 0 or len(str(self.truncated)) > len(str(before)):
            logging.warning(
                "%d prompt(s) longer than text_encoder.max_length=%d tokens were cut (their "
                "ends are not seen by the model), e.g. %r",
                self.truncated,
                self.max_length,
                cut[0],
            )
