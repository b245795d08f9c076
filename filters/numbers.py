"""Numbers critic: a pair must not change, add (or, for paraphrases, drop) numbers.

Extraction (``extract_numbers``) normalises every number mention to an exact ``Decimal`` value:

* digits: ``12`` -> 12, ``3.5`` / ``3.50`` -> 3.5, ``1,200`` / ``12,000,000`` -> 1200 / 12000000
  (a comma is a thousands separator only when exactly three digits follow it, so ``3, 4`` is two
  numbers), ``12%`` -> 12 (the sign is dropped, as is the word "percent"), ``21st`` -> 21,
  ``$5`` -> 5. Signs are ignored (``-5`` -> 5: hyphens are mostly ranges such as ``2010-2012``).
* English number words: ``zero`` .. ``nineteen``, ``twenty`` .. ``ninety`` (``twenty-five`` and
  ``twenty five`` -> 25), ``hundred`` (``one hundred and five`` -> 105, ``nineteen hundred`` ->
  1900), scale words ``thousand``/``million``/``billion``/``trillion`` multiply what precedes them,
  also digits: ``3 million`` == ``three million`` == ``3,000,000`` -> 3000000, ``3.5 billion`` ->
  3500000000, ``a hundred`` / ``a million`` -> 100 / 1000000, ``two thousand and ten`` -> 2010.
  Punctuation (not a hyphen) ends a spelled-out number, and scale words must decrease within one
  number: ``two million, three million`` and ``two million three million`` are two numbers.
* ordinal words: ``third`` .. ``ninetieth`` -> their value (``twenty-first`` -> 21). Bare ``first`` and
  ``second`` are NOT numbers (``at first``, ``a second``); after a tens/hundred/scale word they are.
* not handled (documented limits): plurals (``hundreds``, ``millions`` are vague, ignored),
  ``dozen``, fractions (``half``; ``a third`` reads as 3), abbreviations (``$5bn``, ``3m`` give
  5 and 3), roman numerals, a year said as ``nineteen ninety`` (gives 19 and 90).
  ``one`` always counts as 1, also as a pronoun ("one of them"): a false rejection is cheaper than
  letting a changed number through.

Comparison is on SETS of values (repeats do not matter: "3 cats and 3 dogs" vs "3 cats and dogs"
match), so a paraphrase may merge repeated mentions.

* paraphrase: set(source) == set(target).
* summary: set(target) <= set(source): a summary may drop a number but must not introduce one
  the source lacks.

Note: the paper's public code meant to compare the numbers of source and target but compared the
target's numbers with themselves (so it never rejected anything); this implementation compares
source with target.
"""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np
import pandas as pd

from distill.filters.base import Filter

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORD_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
              "eighth": 8, "ninth": 9}
_ORD_TEENS = {"tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
              "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19}
_ORD_TENS = {"twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60,
             "seventieth": 70, "eightieth": 80, "ninetieth": 90}
_AMBIGUOUS_ORDINALS = {"first", "second"}  # numbers only inside a compound ("twenty-first")

# (kind, value) per number word; kinds: unit, teen, tens, hundred, scale; ordinals carry ord=True.
_WORDS: dict[str, tuple[str, int, bool]] = {}
_WORDS.update({w: ("unit", v, False) for w, v in _UNITS.items()})
_WORDS.update({w: ("teen", v, False) for w, v in _TEENS.items()})
_WORDS.update({w: ("tens", v, False) for w, v in _TENS.items()})
_WORDS["hundred"] = ("hundred", 100, False)
_WORDS.update({w: ("scale", v, False) for w, v in _SCALES.items()})
_WORDS.update({w: ("unit", v, True) for w, v in _ORD_UNITS.items()})
_WORDS.update({w: ("teen", v, True) for w, v in _ORD_TEENS.items()})
_WORDS.update({w: ("tens", v, True) for w, v in _ORD_TENS.items()})

NUMBER_WORDS = frozenset(_WORDS)

# digits with thousands separators (only groups of exactly 3 digits), plain digits/decimals, a word,
# or punctuation (other than a hyphen), which ends a number word sequence ("3 million, three million")
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|[a-z]+|[^\w\s-]")

# what may come right before a word of a given kind for it to continue the current number
_CONTINUES = {
    "unit": {"tens", "hundred", "scale", "and"},
    "teen": {"hundred", "scale", "and"},
    "tens": {"hundred", "scale", "and"},
    "hundred": {"unit", "teen", "digit", "a"},
    "scale": {"unit", "teen", "tens", "hundred", "digit", "a"},
}


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def extract_numbers(text: str) -> list[Decimal]:
    """All number mentions of ``text`` as exact Decimal values, in order (see the module docstring)."""
    toks = _tokens(text)
    found: list[Decimal] = []
    total = Decimal(0)  # completed scale groups ("two million" in "two million three hundred")
    current: Decimal | None = None  # the group under construction; None when no number is open
    last = None  # kind of the previous number token
    last_scale = None  # the smallest scale word used so far in this number

    def flush():
        nonlocal total, current, last, last_scale
        if current is not None:
            found.append(total + current)
        total, current, last, last_scale = Decimal(0), None, None, None

    for i, tok in enumerate(toks):
        if tok[0].isdigit():
            flush()
            current, last = Decimal(tok.replace(",", "")), "digit"
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok == "a" and _WORDS.get(nxt, ("",))[0] in ("hundred", "scale"):
            flush()
            current, last = Decimal(1), "a"
            continue
        if tok == "and" and last in ("hundred", "scale") and _WORDS.get(nxt, ("",))[0] in ("unit", "teen", "tens"):
            last = "and"
            continue
        word = _WORDS.get(tok)
        if word is None:
            flush()
            continue
        kind, value, ordinal = word
        joins = current is not None and last in _CONTINUES[kind]
        if joins and kind == "scale" and last_scale is not None and value >= last_scale:
            # "two million three million": scales must decrease within one number; the words since
            # the last scale start a new number
            found.append(total)
            total, current, last_scale, last = current * value, Decimal(0), value, kind
            continue
        if not joins:
            flush()
            if tok in _AMBIGUOUS_ORDINALS:
                continue
            current, last = Decimal(0), None
            if kind in ("hundred", "scale"):  # bare "hundred" / "million" -> 100 / 10**6
                current = Decimal(1)
        if kind in ("unit", "teen", "tens"):
            current += value
        elif kind == "hundred":
            current *= value
        else:  # scale
            total += current * value
            current = Decimal(0)
            last_scale = value
        last = kind
        if ordinal:  # an ordinal ends its number ("twenty-first floor")
            flush()
    flush()
    return found


def format_number(v: Decimal) -> str:
    """Canonical text of a value: integers without exponent/decimals, others in plain notation."""
    if v == v.to_integral_value():
        return str(int(v))
    return format(v.normalize(), "f")


def number_set(text: str) -> frozenset[Decimal]:
    return frozenset(extract_numbers(text))


def format_set(values) -> str:
    """Sorted (by value) canonical values joined by "," ("" when there are none)."""
    return ",".join(format_number(v) for v in sorted(values))


def numbers_match(source: str, target: str, task: str) -> bool:
    """paraphrase: equal sets; summary: target's set is a subset of source's."""
    s, t = number_set(source), number_set(target)
    if task == "paraphrase":
        return s == t
    if task == "summary":
        return t <= s
    raise ValueError(f"unknown task {task!r}")


class NumbersFilter(Filter):
    """Numbers in source and target must agree (both tasks).

    paraphrase: the SET of normalised values of the target equals that of the source;
    summary: the target's set is a subset of the source's (a summary may drop a number, never add
    one). See the module docstring for the normalisation ("3" == "three", "1,200" == "1200",
    "3 million" == "3,000,000").

    Columns: ``numbers_match`` (1.0 / 0.0), ``numbers_source`` / ``numbers_target`` (sorted canonical
    values joined by ","). Reason: ``numbers_mismatch``.

    (The paper's public code intended this check but compared the target with itself; here the
    source is compared with the target.)
    """

    name = "numbers"
    columns = ("numbers_match", "numbers_source", "numbers_target")
    cheap = True

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.check_input(pairs)
        out = pairs.copy()
        cache: dict[str, frozenset] = {}  # candidates recur across many pairs of a record

        def nums(text) -> frozenset:
            text = str(text)
            if text not in cache:
                cache[text] = number_set(text)
            return cache[text]

        match, src_s, tgt_s = [], [], []
        for task, src, tgt in zip(pairs["task"], pairs["source"], pairs["target"]):
            s, t = nums(src), nums(tgt)
            match.append(1.0 if (s == t if task == "paraphrase" else t <= s) else 0.0)
            src_s.append(format_set(s))
            tgt_s.append(format_set(t))
        out["numbers_match"] = np.asarray(match, dtype=float)
        out["numbers_source"] = pd.Series(src_s, index=out.index, dtype=object)
        out["numbers_target"] = pd.Series(tgt_s, index=out.index, dtype=object)
        return out

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        m = self.stored(pairs, "numbers_match")
        out = self.keep_all(len(pairs))
        with np.errstate(invalid="ignore"):
            out[~np.isnan(m) & (m != 1.0)] = "numbers_mismatch"
        out[np.isnan(m) & self.applies(pairs)] = self.not_scored
        return out
