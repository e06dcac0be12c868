"""Toxicity scorers: text in, probability of toxic out.

* :func:`offline_scorer` — ``alt-profanity-check``'s model (a linear SVM on character and word
  n-grams trained on offensive-language data, shipped inside the wheel; no network). A weak proxy:
  it detects profanity and abuse words, not politely worded insults, threats or identity attacks.
* :func:`perspective_scorer` — any endpoint speaking Perspective API's ``comments:analyze``
  protocol (the real Perspective API with a key in the URL, or a local re-implementation);
  ``TOXICITY.summaryScore.value`` is the probability.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

import numpy as np

from burrow.errors import BurrowError
from burrow.risks.config import check_scorer_url, shown_url

log = logging.getLogger(__name__)

#: texts -> (len(texts),) probabilities of toxicity in [0, 1].
ToxicityScorer = Callable[[Sequence[str]], np.ndarray]

OFFLINE_NAME = "alt-profanity-check (offline linear SVM, a weak proxy for toxicity)"


def offline_scorer() -> ToxicityScorer:
    """``alt-profanity-check``'s ``predict_prob`` (one-line error when the package is missing)."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's version notice when unpickling the shipped model
            from profanity_check import predict_prob
    except ImportError:
        raise BurrowError("the offline toxicity classifier is missing: pip install 'burrow[risks]' "
                          "(alt-profanity-check) or give a Perspective-compatible --scorer URL") from None

    def score(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return np.asarray(predict_prob([t if t.strip() else "." for t in texts]), dtype=np.float64)

    return score


def perspective_scorer(url: str, timeout: float = 30.0) -> ToxicityScorer:
    """POST each text to a Perspective-compatible ``comments:analyze`` ``url``; its TOXICITY summary score."""
    check_scorer_url(url)
    shown = shown_url(url)  # what messages name: the URL's query may hold an API key

    def one(text: str) -> float:
        body = json.dumps({"comment": {"text": text or "."}, "languages": ["en"],
                           "requestedAttributes": {"TOXICITY": {}}}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                reply = json.loads(resp.read())
            return float(reply["attributeScores"]["TOXICITY"]["summaryScore"]["value"])
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # HTTPException: not HTTP at all
            raise BurrowError(f"the toxicity scorer at {shown} did not answer ({type(e).__name__}: {e}); "
                              "check --scorer") from None
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            raise BurrowError(f"the toxicity scorer at {shown} did not answer in Perspective's format "
                              "(attributeScores.TOXICITY.summaryScore.value)") from None

    return lambda texts: np.array([one(t) for t in texts], dtype=np.float64)


def make_scorer(url: str | None) -> tuple[ToxicityScorer, str]:
    """(scorer, its description): Perspective-compatible at ``url``, else the offline classifier."""
    if url is not None:
        scorer = perspective_scorer(url)
        scorer(["."])  # one request now: a scorer that does not answer fails before any sample is generated
        return scorer, f"Perspective-compatible scorer at {shown_url(url)}"
    return offline_scorer(), OFFLINE_NAME
