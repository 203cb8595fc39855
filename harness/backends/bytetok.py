"""A deterministic byte-level tokenizer for models shipped without one (``random:molmoe-1b``,
tests): id = byte + 3, with pad 0, bos 1, eos 2. Same call interface as a Hugging Face tokenizer
where the harness uses it."""

from __future__ import annotations

OFFSET = 3


class ByteTokenizer:
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2

    def __init__(self, vocab_size: int = 259, bos: bool = True):
        if vocab_size < 256 + OFFSET:
            raise ValueError("ByteTokenizer needs a vocabulary of at least 259 ids")
        self.vocab_size = vocab_size
        if not bos:
            self.bos_token_id = None

    def encode(self, text: str) -> list[int]:
        return [b + OFFSET for b in text.encode("utf-8")]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids = self.encode(text)
        if add_special_tokens and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if OFFSET <= i < 256 + OFFSET:
                out.append(i - OFFSET)
            elif not skip_special_tokens:
                out.extend(f"<{i}>".encode())
        return out.decode("utf-8", errors="replace")
