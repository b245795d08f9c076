"""Tiny, deterministic, self-built models for tests and the smoke config.

Nothing here downloads anything: a synthetic news/bio corpus is generated from templates, a
byte-level BPE tokenizer is trained on it, and three tiny models are built from fixed seeds:

* ``tiny-gpt2`` -- a GPT-2 teacher trained for a few seconds on the corpus. Passages restate their
  facts through several templates, so sampling many continuations of one context yields different
  wordings (some shorter) of the same fact: paraphrases and summaries.
* ``tiny-nli``  -- a RoBERTa sequence classifier trained on premise/hypothesis pairs made from the
  same templates; labels ``{0: contradiction, 1: entailment, 2: neutral}`` (WANLI order, on purpose
  not the MNLI order).
* ``tiny-t5``   -- a randomly initialised T5 (trained later by the pipeline).

Use :func:`distill.models.resolve` (``"tiny-gpt2"`` -> cached folder) rather than calling the
builders directly; from the shell: ``python -m distill.tiny build [NAME ...]``.

Also home of :func:`load_outlets` and :func:`load_places`, the readers of ``distill/resources``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from importlib import resources as _resources
from pathlib import Path

# --------------------------------------------------------------------------------------------
# resources


def _resource_text(name: str) -> str:
    return _resources.files("distill").joinpath("resources", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _outlets() -> tuple[str, ...]:
    lines = (line.strip() for line in _resource_text("news_outlets.txt").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@functools.lru_cache(maxsize=None)
def _places() -> tuple[tuple[str, str], ...]:
    out = []
    for line in _resource_text("places.tsv").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        city, country = line.rstrip("\n").split("\t")
        out.append((city.strip(), country.strip()))
    return tuple(out)


def load_outlets() -> list[str]:
    """News outlet names from ``distill/resources/news_outlets.txt`` (file order)."""
    return list(_outlets())


def load_places() -> list[tuple[str, str]]:
    """``(city, country)`` pairs from ``distill/resources/places.tsv`` (file order, normal case)."""
    return list(_places())


# --------------------------------------------------------------------------------------------
# synthetic corpus

NUMBER_WORDS = {
    2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
    10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen",
    16: "sixteen", 17: "seventeen", 18: "eighteen", 19: "nineteen", 20: "twenty", 30: "thirty",
    40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety",
}
NUMBERS = tuple(NUMBER_WORDS)
PERCENTS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
WEEKS = tuple(range(2, 21))
NUMERIC_SLOTS = ("num", "amt", "pct", "weeks")

FIRST_NAMES = (
    "Maria", "John", "Amina", "David", "Sarah", "Ahmed", "Elena", "James", "Fatima", "Carlos",
    "Anna", "Peter", "Grace", "Omar", "Laura", "Daniel", "Sofia", "Samuel", "Priya", "Michael",
    "Nadia", "Paul", "Ruth", "Thomas",
)
LAST_NAMES = (
    "Lopez", "Smith", "Okafor", "Khan", "Garcia", "Mueller", "Wang", "Silva", "Brown", "Ali",
    "Rossi", "Kim", "Tanaka", "Mensah", "Novak", "Patel", "Cohen", "Ivanova", "Dubois", "Johnson",
    "Mwangi", "Santos", "Nguyen", "Haddad",
)
ROLES = ("a spokesperson", "an official", "a director", "a senior official", "a spokeswoman",
         "a spokesman")
ORGS = (
    "the Red Cross", "the United Nations", "the World Bank", "the health ministry",
    "the interior ministry", "the city council", "the fire department", "the police",
    "the education ministry", "the transport authority", "the national railway", "the army",
    "the local hospital", "the labor union",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EVENTS = {  # noun -> actions that fit it
    "people": ("were injured", "were evacuated", "were rescued", "were arrested", "were displaced"),
    "workers": ("were laid off", "were hired", "went on strike"),
    "students": ("were sent home", "were tested", "were moved"),
    "homes": ("were destroyed", "were damaged", "were flooded"),
    "schools": ("were closed", "were reopened", "were damaged"),
    "flights": ("were cancelled", "were delayed"),
    "patients": ("were treated", "were discharged", "were moved"),
}
PLANS = (
    "build new homes", "open a new hospital", "repair the roads", "hire more staff",
    "reopen the schools", "expand the airport", "build a new bridge", "clean the river",
    "buy new buses", "train more nurses",
)
WHENS = ("March", "June", "September", "December", "next year", "the end of the year", "May")
DISEASES = ("asthma", "diabetes", "malaria", "migraine", "influenza", "hypertension", "arthritis")
DRUGS = ("aspirin", "metformin", "ibuprofen", "vitamin D", "a new vaccine", "zinc", "insulin")
BIO_PREFIXES = ("Abstract:", "Introduction:", "Method:", "Conclusion:")


@dataclass(frozen=True)
class Template:
    text: str
    slots: frozenset

    @staticmethod
    def of(text: str, *slots: str) -> "Template":
        return Template(text, frozenset(slots))


_EV = ("num", "noun", "action", "city")  # the core of an event fact
EVENT_INTRO = (
    Template.of("{person}, {role} for {org}, said on {day} that {num} {noun} {action} in {city}.",
                "person", "role", "org", "day", *_EV),
    Template.of("{num} {noun} {action} in {city} on {day}, according to {person}, {role} for {org}.",
                "person", "role", "org", "day", *_EV),
    Template.of("{num} {noun} {action} in {city} on {day}, {person} of {org} said.",
                "person", "org", "day", *_EV),
    Template.of("{org} said on {day} that {num} {noun} {action} in {city}.", "org", "day", *_EV),
)
EVENT_RESTATE = (
    Template.of("{last} said {num} {noun} {action} in {city}.", "last", *_EV),
    Template.of("{num} {noun} {action} in {city}, {last} said.", "last", *_EV),
    Template.of("According to {org}, {num} {noun} {action} in {city} on {day}.", "org", "day", *_EV),
    Template.of("On {day}, {num} {noun} {action} in {city}.", "day", *_EV),
    Template.of("{num} {noun} {action} in {city}.", *_EV),
    Template.of("In {city}, {num} {noun} {action}.", *_EV),
    Template.of("{num} {noun} {action} on {day}.", "num", "noun", "action", "day"),
    Template.of("{noun} {action} in {city}.", "noun", "action", "city"),
    Template.of("{org} confirmed that {num} {noun} {action}.", "org", "num", "noun", "action"),
    Template.of("{last} told reporters that {num} {noun} {action} in {city} on {day}.",
                "last", "day", *_EV),
)
PLAN_INTRO = (
    Template.of("{org} plans to {plan} by {when}, {last} said.", "org", "plan", "when", "last"),
    Template.of("{last} said {org} would {plan} by {when}.", "org", "plan", "when", "last"),
    Template.of("{org} will spend {amt} million dollars to {plan} by {when}, {last} said.",
                "org", "amt", "plan", "when", "last"),
    Template.of("By {when}, {org} will {plan} at a cost of {amt} million dollars.",
                "when", "org", "plan", "amt"),
)
PLAN_RESTATE = (
    Template.of("{org} will spend {amt} million dollars to {plan}.", "org", "amt", "plan"),
    Template.of("The plan to {plan} will cost {amt} million dollars, {last} added.", "plan", "amt", "last"),
    Template.of("{org} hopes to {plan} by {when}.", "org", "plan", "when"),
    Template.of("{org} plans to {plan}.", "org", "plan"),
    Template.of("The work will cost {amt} million dollars.", "amt"),
)
STUDY_INTRO = (
    Template.of("We studied {num} patients with {disease} who received {drug} for {weeks} weeks.",
                "num", "disease", "drug", "weeks"),
    Template.of("{drug} reduced symptoms of {disease} by {pct} percent in {num} patients.",
                "drug", "disease", "pct", "num"),
    Template.of("In {num} patients with {disease}, {drug} lowered symptoms by {pct} percent over {weeks} weeks.",
                "num", "disease", "drug", "pct", "weeks"),
)
STUDY_RESTATE = (
    Template.of("Patients who took {drug} had {pct} percent fewer symptoms of {disease}.",
                "drug", "pct", "disease"),
    Template.of("{drug} reduced symptoms of {disease}.", "drug", "disease"),
    Template.of("The trial lasted {weeks} weeks and included {num} patients.", "weeks", "num"),
    Template.of("We found that {drug} helps patients with {disease}.", "drug", "disease"),
    Template.of("Symptoms fell by {pct} percent with {drug}.", "pct", "drug"),
    Template.of("{num} patients with {disease} took {drug} for {weeks} weeks.",
                "num", "disease", "drug", "weeks"),
)
TEMPLATES = {
    "event": (EVENT_INTRO, EVENT_INTRO + EVENT_RESTATE),
    "plan": (PLAN_INTRO, PLAN_INTRO + PLAN_RESTATE),
    "study": (STUDY_INTRO, STUDY_INTRO + STUDY_RESTATE),
}


@dataclass
class Fact:
    kind: str  # "event" | "plan" | "study"
    values: dict


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def number_text(n: int, words: bool) -> str:
    return NUMBER_WORDS[n] if words and n in NUMBER_WORDS else str(n)


def _covered(slots: frozenset, known: frozenset) -> bool:
    """Whether every slot of a template is stated by ``known`` (a full name covers the last name)."""
    return all(s in known or (s == "last" and "person" in known) for s in slots)


def render(t: Template, fact: Fact, rng: random.Random) -> str:
    words = rng.random() < 0.5  # numbers as words ("twelve") or digits ("12"), per sentence
    v = dict(fact.values)
    for k in NUMERIC_SLOTS:
        if k in v:
            v[k] = number_text(v[k], words)
    if "person" in v:
        v["last"] = v["person"].split()[-1]
    return _cap(t.text.format(**v))


def event_fact(rng: random.Random, city: str | None = None) -> Fact:
    noun = rng.choice(sorted(EVENTS))
    return Fact("event", {
        "person": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "role": rng.choice(ROLES), "org": rng.choice(ORGS), "day": rng.choice(DAYS),
        "num": rng.choice(NUMBERS), "noun": noun, "action": rng.choice(EVENTS[noun]),
        "city": city or rng.choice(_places())[0],
    })


def plan_fact(rng: random.Random, event: Fact | None = None) -> Fact:
    org = event.values["org"] if event is not None and rng.random() < 0.7 else rng.choice(ORGS)
    person = event.values["person"] if event is not None else \
        f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    return Fact("plan", {"org": org, "person": person, "plan": rng.choice(PLANS),
                         "when": rng.choice(WHENS), "amt": rng.choice(NUMBERS)})


def study_fact(rng: random.Random) -> Fact:
    return Fact("study", {"num": rng.choice(NUMBERS), "disease": rng.choice(DISEASES),
                          "drug": rng.choice(DRUGS), "pct": rng.choice(PERCENTS),
                          "weeks": rng.choice(WEEKS)})


def random_fact(rng: random.Random) -> Fact:
    r = rng.random()
    if r < 0.45:
        return event_fact(rng)
    if r < 0.75:
        return plan_fact(rng, event_fact(rng) if rng.random() < 0.5 else None)
    return study_fact(rng)


def news_prefix(rng: random.Random) -> tuple[str, str | None, str | None]:
    """A dateline in one of the paper's forms, with the city and country it names (or None)."""
    outlet = rng.choice(_outlets())
    city, country = rng.choice(_places())
    form = rng.randrange(3)
    if form == 0:
        return f"({outlet}) --", None, None
    if form == 1:
        return f"{country.upper()} ({outlet}) --", None, country
    return f"{city}, {country.upper()} ({outlet}) --", city, country


def _statement(fact: Fact, known: frozenset, last: str | None, rng: random.Random,
               intro: bool) -> tuple[str, Template]:
    intros, every = TEMPLATES[fact.kind]
    if intro:
        pool = list(intros)
    else:
        pool = [t for t in every if _covered(t.slots, known)] if rng.random() < 0.9 else list(every)
        pool = [t for t in pool if t.text != last] or list(every)
    t = rng.choice(pool)
    return render(t, fact, rng), t


def _passage(rng: random.Random, prefix: str, facts: list[Fact], n: int, second_p: float) -> str:
    """``n`` sentences: the first fact introduced, then restatements, maybe introducing the second."""
    known = [frozenset(), frozenset()]
    last = [None, None]
    out: list[str] = []
    while len(out) < n:
        if not out:
            i = 0
        elif len(facts) > 1 and not known[1]:
            i = 1 if rng.random() < second_p else 0
        else:
            i = 1 if len(facts) > 1 and rng.random() < 0.55 else 0
        for _ in range(4):
            s, t = _statement(facts[i], known[i], last[i], rng, intro=not known[i])
            if s not in out:
                break
        out.append(s)
        known[i] = known[i] | t.slots
        last[i] = t.text
    return prefix + " " + " ".join(out)


def news_passage(rng: random.Random) -> str:
    prefix, city, country = news_prefix(rng)
    if country is not None and (city is None or rng.random() < 0.2):
        city = rng.choice([c for c, k in _places() if k == country])  # a city of the dateline
    if rng.random() < 0.15:
        city = None  # anywhere
    event = event_fact(rng, city)
    return _passage(rng, prefix, [event, plan_fact(rng, event)], rng.randint(3, 5), 0.45)


def bio_passage(rng: random.Random) -> str:
    return _passage(rng, rng.choice(BIO_PREFIXES), [study_fact(rng)], rng.randint(3, 5), 0.0)


def passage(rng: random.Random) -> str:
    """One synthetic passage: mostly news with a dateline prefix, sometimes a bio abstract."""
    return bio_passage(rng) if rng.random() < 0.15 else news_passage(rng)


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [passage(rng) for _ in range(n)]


# --- NLI pairs

LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}
LABEL_IDS = {v: k for k, v in LABELS.items()}
_CHANGEABLE = ("num", "city", "last", "person", "day", "amt", "when", "plan", "pct", "weeks",
               "drug", "disease", "action", "org")


def _changed(fact: Fact, slot: str, rng: random.Random) -> Fact:
    v = dict(fact.values)
    key = "person" if slot in ("last", "person") else slot
    cur = v[key]
    if key == "person":
        first, last = cur.split(" ", 1)
        v[key] = f"{first} {rng.choice([x for x in LAST_NAMES if x != last])}"
    elif key == "num" or key == "amt":
        v[key] = rng.choice([x for x in NUMBERS if x != cur])
    elif key == "pct":
        v[key] = rng.choice([x for x in PERCENTS if x != cur])
    elif key == "weeks":
        v[key] = rng.choice([x for x in WEEKS if x != cur])
    elif key == "city":
        v[key] = rng.choice([c for c, _ in _places() if c != cur])
    elif key == "action":
        same = [a for a in EVENTS[v["noun"]] if a != cur]
        v[key] = rng.choice(same or [a for a in sum(EVENTS.values(), ()) if a != cur])
    else:
        pools = {"day": DAYS, "when": WHENS, "plan": PLANS, "drug": DRUGS, "disease": DISEASES,
                 "org": ORGS}
        v[key] = rng.choice([x for x in pools[key] if x != cur])
    return Fact(fact.kind, v)


def nli_pair(rng: random.Random) -> tuple[str, str, int]:
    """A synthetic (premise, hypothesis, label id) from the corpus templates.

    entailment: the same fact, the hypothesis template states a subset of the premise's slots
    (paraphrase or shorter summary); contradiction: as entailment but one shared slot changed
    (number, name, city, day, ...); neutral: an unrelated fact, or the same fact with details the
    premise does not state.
    """
    fact = random_fact(rng)
    every = TEMPLATES[fact.kind][1]
    p = rng.choice(every)
    premise = render(p, fact, rng)
    r = rng.random()
    if r < 0.42:
        h = rng.choice([t for t in every if _covered(t.slots, p.slots)])
        return premise, render(h, fact, rng), LABEL_IDS["entailment"]
    if r < 0.77:
        pool = [t for t in every if _covered(t.slots, p.slots)]
        h = rng.choice(pool)
        shared = [s for s in _CHANGEABLE
                  if s in h.slots and (s in p.slots or (s == "last" and "person" in p.slots))]
        weights = [6.0 if s in NUMERIC_SLOTS else 1.0 for s in shared]
        slot = rng.choices(shared, weights)[0]
        return premise, render(h, _changed(fact, slot, rng), rng), LABEL_IDS["contradiction"]
    extra = [t for t in every if not _covered(t.slots, p.slots)]
    if extra and rng.random() < 0.4:
        return premise, render(rng.choice(extra), fact, rng), LABEL_IDS["neutral"]
    other = random_fact(rng)
    return premise, render(rng.choice(TEMPLATES[other.kind][1]), other, rng), LABEL_IDS["neutral"]
