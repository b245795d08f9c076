"""Sentence splitting with NLTK's Punkt, without downloaded data.

Punkt's statistics need a trained model (``punkt_tab``) that cannot be downloaded everywhere; the
algorithm itself works from parameters, so we give it a hand-written list of common English
abbreviations. That is enough for the sentence boundaries of news and abstract prose.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Abbreviations that end with a period but not a sentence (lower case, without the final period).
ABBREVIATIONS = (
    "mr mrs ms dr prof sr jr st mt ft gen col lt sgt capt cmdr adm gov sen rep rev pres supt "
    "inc ltd co corp bros dept univ assn est vs etc approx fig figs eq eqs ref refs vol no nos pp "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun "
    "u.s u.k u.n e.u u.s.a e.g i.e a.m p.m d.c n.y l.a al et al"
).split()

_END = re.compile(r"""[.!?]["'”’)\]]*$""")


@lru_cache(maxsize=1)
def _tokenizer():
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order (the last one may be incomplete)."""
    text = text.strip()
    if not text:
        return []
    return [s.strip() for s in _tokenizer().tokenize(text) if s.strip()]


def is_complete(sentence: str) -> bool:
    """A usable sentence: at least 3 characters, ends in . ? ! (optionally closed by a quote), no newline."""
    return len(sentence) >= 3 and "\n" not in sentence and "\r" not in sentence and bool(_END.search(sentence))


def first_sentence(text: str) -> str | None:
    """The first complete sentence of a continuation, or None."""
    sents = split_sentences(text)
    if not sents:
        return None
    first = sents[0]
    return first if is_complete(first) else None


def has_complete_first_sentence(text: str) -> bool:
    """True once a continuation holds a complete first sentence followed by more text (safe to stop)."""
    sents = split_sentences(text)
    return len(sents) >= 2 and is_complete(sents[0])
