"""Length-sorted batching gives every text its own key, in the caller's order."""

from __future__ import annotations

import numpy as np


def test_keys_follow_input_order_whatever_the_batching(encoder) -> None:
    texts = ["a cat", "the river floods the valley every spring and farmers plant rice in the wet fields",
             "owls hunt at night", "", "glaciers carve deep valleys as they slide slowly down from the peaks",
             "bees", "a violin has four strings tuned in fifths"] * 3
    keys = encoder.encode(texts)
    one_by_one = np.concatenate([encoder.encode([t]) for t in texts])
    assert keys.shape == (len(texts), encoder.dim)
    cos = (keys * one_by_one).sum(1) / (np.linalg.norm(keys, axis=1) * np.linalg.norm(one_by_one, axis=1))
    assert cos.min() > 0.9999
    order = encoder.length_order(texts)
    assert sorted(order.tolist()) == list(range(len(texts)))
    lengths = encoder.token_counts(texts)
    assert [lengths[i] for i in order] == sorted(lengths)


def test_a_query_with_lone_surrogates_is_encoded_as_valid_text(encoder) -> None:
    """A shell's undecodable bytes reach Python as lone surrogates (``memory search $'caf\\xff'``); the
    tokenizer refuses those, so the encoder reads them as U+FFFD."""
    from burrow.data.tokenizer import valid_text

    bad = "caf\udcff purr"
    keys = encoder.encode([bad, "owls hunt"])
    assert np.isfinite(keys).all()
    np.testing.assert_allclose(keys[0], encoder.encode([valid_text(bad)])[0], atol=1e-6)
