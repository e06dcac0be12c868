"""Streaming text: deltas add up to the decoded text; stop strings are never shown, even in pieces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.generate.text import Detokenizer, StopMatcher


def test_deltas_add_up_to_the_decoded_text_with_multibyte_characters(gen_memory) -> None:
    tok = gen_memory.tokenizer
    context = tok.encode("Owls")
    text = " hunt — café ☕ at night, 鳥"
    ids = tok.encode(text)
    detok = Detokenizer(tok, context)
    pieces = [detok.push(t) for t in ids] + [detok.flush()]
    assert "".join(pieces) == detok.text == tok.decode(context + ids)[len(tok.decode(context)):]
    assert all("\ufffd" not in p for p in pieces)
    assert detok.starts == sorted(detok.starts) and len(detok.starts) == len(ids)


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet="aU:\nser ", max_size=30), cuts=st.lists(st.integers(1, 5), max_size=12))
def test_stop_strings_are_cut_and_never_released(text: str, cuts: list[int]) -> None:
    stop = "\nUser:"
    matcher = StopMatcher([stop])
    shown, pos = "", 0
    for c in [*cuts, len(text)]:
        shown += matcher.feed(text[pos:pos + c])
        pos += c
        if matcher.cut is not None:
            break
    shown += matcher.finish()
    expected = text[:text.find(stop)] if stop in text else text
    assert shown == expected == matcher.final_text[:len(expected)]
    assert stop not in shown
