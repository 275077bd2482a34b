"""Token ids → text for streaming: released only at UTF-8 character boundaries, never across a stop string.

Qwen2.5's byte-level BPE has about 1,450 tokens that are not valid UTF-8 alone (every continuation byte among them):
a Thai, Burmese or Khmer character often spans two or three tokens, and decoding token by token emits U+FFFD.
Each token is turned into its bytes (the byte-level alphabet inverted; an added token is its content) and fed to
Python's incremental UTF-8 decoder, which keeps an incomplete tail until the next bytes complete it; bytes that can
never form a character become U+FFFD exactly where `tokenizers`' own decode puts them (both replace maximal invalid
subparts), so the streamed text is the batch decode of the same ids (tested).

Stop strings: text that could still be the start of a stop string is held back; when a stop string appears, the
text before it is released and the sample ends (OpenAI's and vLLM's behaviour: the stop string itself is not
returned).
"""

from __future__ import annotations

import codecs
import functools

import tokenizers


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (`bytes_to_unicode`) inverted: printable bytes map to themselves, the others to
    code points from 256 up."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenBytes:
    """The bytes of every token id of a byte-level tokenizer; special added tokens (skipped in output text, as
    `decode(skip_special_tokens=True)` does) have none."""

    def __init__(self, tok: tokenizers.Tokenizer):
        decoder = _byte_decoder()
        self.special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        added = {i: t.content.encode() for i, t in tok.get_added_tokens_decoder().items()}
        self.table: list[bytes] = []
        for i in range(tok.get_vocab_size(with_added_tokens=True)):
            if i in added:
                self.table.append(b"" if i in self.special else added[i])
                continue
            piece = tok.id_to_token(i) or ""
            try:
                self.table.append(bytes(decoder[c] for c in piece))
            except KeyError:
                raise ValueError(f"token {i} ({piece!r}) is not byte-level BPE: serving streams byte-level "
                                 "tokenizers (Qwen2.5's) only") from None

    def __getitem__(self, token_id: int) -> bytes:
        return self.table[token_id] if 0 <= token_id < len(self.table) else b""  # ids past the vocab: padding rows

    def text(self, token_id: int) -> str:
        """A token's text on its own, for logprobs (U+FFFD where its bytes are not whole characters)."""
        return self[token_id].decode("utf-8", errors="replace")


class TextStream:
    """One sample's text: `push` a token, get the text it releases and whether a stop string ended the sample."""

    def __init__(self, table: TokenBytes, stops: list[str] = ()):
        self.table, self.stops = table, [s for s in stops if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""      # decoded, not yet released: it may be the start of a stop string
        self.stopped = False

    def push(self, token_id: int) -> str:
        return self._release(self.held + self.decoder.decode(self.table[token_id]))

    def finish(self) -> str:
        """The text still held at the end of the sample (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        return self._release(self.held + self.decoder.decode(b"", final=True), final=True)

    def _release(self, text: str, final: bool = False) -> str:
        hits = [(text.find(s), s) for s in self.stops if s in text]
        if hits:
            self.stopped, self.held = True, ""
            return text[:min(hits)[0]]
        keep = 0 if final else max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])),
                                   default=0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]
