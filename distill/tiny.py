"""Tiny, deterministic, self-built models for tests and the smoke config.

Nothing here downloads anything: a synthetic news/bio corpus is generated from templates, a
byte-level BPE tokenizer is trained on it, and three tiny models are built from fixed seeds:

* ``tiny-gpt2`` -- a GPT-2 teacher trained for a few seconds on the corpus. Passages restate their
  facts through several templates, so sampling many continuations of one context yields different
  wordings (some shorter) of the same fact: paraphrases and summaries.
* ``tiny-nli``  -- a RoBERTa sequence classifier trained on premise/hypothesis pairs made from the
  same templates; labels ``{0: contradiction, 1: entailment, 2: neutral}`` (WANLI order, on purpose
  not the MNLI order).
* ``tiny-t5``   -- a T5 pretrained as a denoising autoencoder on the corpus (the pipeline then
  fine-tunes it into the student).

Use :func:`distill.models.resolve` (``"tiny-gpt2"`` -> cached folder) rather than calling the
builders directly; from the shell: ``python -m distill.tiny build [NAME ...]`` (missing models are
built side by side, one process each).

Builds are deterministic: seeded data and initialisation, single-threaded torch with deterministic
algorithms, fixed data order; building twice gives byte-identical safetensors. To stay within a
few tens of seconds on 2 CPU cores, training is shaped for these tiny models: the teacher's loss
weighs the tokens that restate a value from the context more, its last attention layer starts as
a copier, the NLI model's first attention layer starts as a same-token matcher and gets a
per-token "is this word in the premise?" auxiliary loss, and both train until held-out checks
(teacher: loss and copy accuracy for numbers, names, places; NLI: accuracy of every label) pass,
then anneal briefly -- see ``RECIPES``.

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
from string import Formatter

_FORMATTER = Formatter()

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
    "the local hospital", "the labor union", "UNICEF", "Oxfam", "Amnesty International",
    "Doctors Without Borders",
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
    Template.of("{last} said {noun} {action} in {city} on {day}.",
                "last", "noun", "action", "city", "day"),
    Template.of("{num} {noun} {action}, {last} said.", "last", "num", "noun", "action"),
    Template.of("{last} of {org} said {num} {noun} {action}.", "last", "org", "num", "noun", "action"),
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
    Template.of("{last} said the work would cost {amt} million dollars.", "last", "amt"),
    Template.of("{last} said {org} hopes to {plan}.", "last", "org", "plan"),
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


@functools.lru_cache(maxsize=None)
def _pool(kind: str, known: frozenset) -> tuple:
    """The templates of ``kind`` whose slots ``known`` covers."""
    return tuple(t for t in TEMPLATES[kind][1] if _covered(t.slots, known))


def render(t: Template, fact: Fact, rng: random.Random) -> str:
    """``t`` filled with ``fact``'s values (numbers as digits or words, chosen per sentence)."""
    return _render(t, fact, rng)[0]


def _render(t: Template, fact: Fact, rng: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    """The sentence and the ``(slot, start, end)`` character span of every filled slot."""
    words = rng.random() < 0.5  # numbers as words ("twelve") or digits ("12"), per sentence
    v = dict(fact.values)
    for k in NUMERIC_SLOTS:
        if k in v:
            v[k] = number_text(v[k], words)
    if "person" in v:
        v["last"] = v["person"].split()[-1]
    text, spans = "", []
    for literal, field, _, _ in _FORMATTER.parse(t.text):
        text += literal
        if field is not None:
            spans.append((field, len(text), len(text) + len(v[field])))
            text += v[field]
    return _cap(text), spans


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
    """A dateline in one of the paper's forms, as the contexts stage writes them: ``(<outlet>) --``
    half of the time, ``<COUNTRY> (<outlet>) --`` or ``<CITY>, <Country> (<outlet>) --`` a
    quarter each; with the city and country it names (or None)."""
    outlet = rng.choice(_outlets())
    city, country = rng.choice(_places())
    r = rng.random()
    if r < 0.5:
        return f"({outlet}) --", None, None
    if r < 0.75:
        return f"{country.upper()} ({outlet}) --", None, country
    return f"{city.upper()}, {country} ({outlet}) --", city, country


def _statement(fact: Fact, known: frozenset, last: str | None, rng: random.Random,
               intro: bool) -> tuple[str, list, Template]:
    intros, every = TEMPLATES[fact.kind]
    if intro:
        pool = list(intros)
    else:
        pool = list(_pool(fact.kind, known)) if rng.random() < 0.9 else list(every)
        pool = [t for t in pool if t.text != last] or list(every)
    t = rng.choice(pool)
    text, spans = _render(t, fact, rng)
    return text, spans, t


def _passage(rng: random.Random, prefix: str, facts: list[Fact], n: int,
             second_p: float) -> tuple[str, list[tuple[str, int, int]]]:
    """``n`` sentences: the first fact introduced, then restatements, maybe introducing the second.

    Also returns ``(slot, start, end)`` character spans of restated slot values (values already in
    the text before: what a teacher must copy from its context), used to weight the teacher's loss.
    """
    known = [frozenset(), frozenset()]
    last = [None, None]
    out: list[str] = []
    text = prefix
    copies: list[tuple[str, int, int]] = []
    while len(out) < n:
        if not out:
            i = 0
        elif len(facts) > 1 and not known[1]:
            i = 1 if rng.random() < second_p else 0
        else:
            i = 1 if len(facts) > 1 and rng.random() < 0.4 else 0
        for _ in range(4):
            s, spans, t = _statement(facts[i], known[i], last[i], rng, intro=not known[i])
            if s not in out:
                break
        start = len(text) + 1
        lowered = text.lower()
        for slot, a, b in spans:
            if _covered(frozenset([slot]), known[i]) or s[a:b].lower() in lowered:
                copies.append((slot, start + a, start + b))
        out.append(s)
        text += " " + s
        known[i] = known[i] | t.slots
        last[i] = t.text
    return text, copies


def _news(rng: random.Random):
    prefix, city, country = news_prefix(rng)
    if country is not None and (city is None or rng.random() < 0.2):
        city = rng.choice([c for c, k in _places() if k == country])  # a city of the dateline
    if rng.random() < 0.15:
        city = None  # anywhere
    event = event_fact(rng, city)
    return _passage(rng, prefix, [event, plan_fact(rng, event)], rng.randint(3, 5), 0.35)


def _bio(rng: random.Random):
    return _passage(rng, rng.choice(BIO_PREFIXES), [study_fact(rng)], rng.randint(3, 5), 0.0)


def _any(rng: random.Random):
    return _bio(rng) if rng.random() < 0.15 else _news(rng)


def news_passage(rng: random.Random) -> str:
    """A news passage: a dateline prefix, then 3-5 sentences stating and restating two facts."""
    return _news(rng)[0]


def bio_passage(rng: random.Random) -> str:
    """A bio passage: ``Abstract:``-style prefix, then 3-5 sentences about one study."""
    return _bio(rng)[0]


def passage(rng: random.Random) -> str:
    """One synthetic passage: mostly news with a dateline prefix, sometimes a bio abstract."""
    return _any(rng)[0]


def corpus_marked(n: int, seed: int | random.Random) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """``n`` passages with the ``(slot, start, end)`` spans of their restated (copied) values."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return [_any(rng) for _ in range(n)]


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


def nli_pair(rng: random.Random, minimal: float = 0.5) -> tuple[str, str, int]:
    """A synthetic (premise, hypothesis, label id) from the corpus templates.

    entailment: the same fact, the hypothesis template states a subset of the premise's slots
    (paraphrase or shorter summary); contradiction: as entailment but one shared slot changed
    (number, name, city, day, ...); neutral: an unrelated fact, or the same fact with details the
    premise does not state. A share ``minimal`` of the entailments and contradictions are minimal
    pairs (the hypothesis in the premise's own template).
    """
    fact = random_fact(rng)
    every = TEMPLATES[fact.kind][1]
    p = rng.choice(every)
    premise = render(p, fact, rng)
    covered = _pool(fact.kind, p.slots)
    # half of the entailments / contradictions are minimal pairs: the premise's own template
    h = p if rng.random() < minimal else rng.choice(covered)
    r = rng.random()
    if r < 0.42:
        return premise, render(h, fact, rng), LABEL_IDS["entailment"]
    if r < 0.77:
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


# --------------------------------------------------------------------------------------------
# recipes

NAMES = ("tiny-gpt2", "tiny-nli", "tiny-t5")
SPECIAL_TOKENS = ("<|endoftext|>", "<pad>", "<s>", "</s>", "<unk>", "<mask>")  # ids 0..5
EOT, PAD, BOS, EOS, UNK, MASK = range(6)
# Builds run single-threaded: the bytes then do not depend on the core count, and a busy machine
# (CI running other jobs) does not stall OpenMP barriers -- with 2 threads and one core taken,
# a training step was measured ~20x slower than with 1 thread.
NUM_THREADS = 1
RECIPE_VERSION = 1

TOKENIZER_RECIPE = {"vocab_size": 1600, "min_frequency": 2, "passages": 6000, "seed": 11}
RECIPES: dict[str, dict] = {
    "tiny-gpt2": {
        "tokenizer": TOKENIZER_RECIPE,
        "config": {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_inner": 128, "n_positions": 256},
        "train": {"seed": 1234, "data_seed": 21, "batch_size": 32, "lr": 8e-3, "warmup": 30,
                  "weight_decay": 0.01, "copy_weight": 10.0, "keep": 0.5, "copy_init": 4.0,
                  # adaptive length: stop (after a short anneal) once the held-out loss and copy
                  # accuracy reach their targets, at most ``steps`` steps
                  "steps": 700, "min_steps": 200, "check_every": 25, "anneal": 60,
                  "check_passages": 128, "loss_target": 1.25,
                  "copy_targets": {"numbers": 0.85, "names": 0.8, "places": 0.9}},
    },
    "tiny-nli": {
        "tokenizer": TOKENIZER_RECIPE,
        "config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 128, "max_positions": 256},
        "train": {"seed": 4321, "data_seed": 31, "batch_size": 32, "lr": 3e-3, "warmup": 30,
                  "weight_decay": 0.01, "aux_weight": 2.0, "match_init": 6.0,
                  # adaptive length, as for tiny-gpt2: held-out accuracy of every label
                  "steps": 1500, "min_steps": 300, "check_every": 50, "anneal": 150,
                  "check_pairs": 300, "accuracy_target": 0.85, "adaptive": True,
                  "minimal_pairs": 0.5},
    },
    "tiny-t5": {
        "tokenizer": TOKENIZER_RECIPE,
        "config": {"d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2,
                   "num_heads": 2, "dropout_rate": 0.0},
        # denoising pretraining on the corpus (a few seconds): drop 15% of the tokens, swap 10% of
        # neighbour pairs, reconstruct
        "train": {"seed": 777, "data_seed": 41, "batch_size": 32, "lr": 3e-3, "warmup": 30,
                  "weight_decay": 0.01, "steps": 600, "drop": 0.15, "swap": 0.1, "max_tokens": 48},
    },
}


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
    """What a build depends on besides its recipe: this module's code (its syntax tree without
    docstrings, so comments and docs do not force a rebuild) and the resource files."""
    import ast

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            body[0] = ast.Pass()
    h = hashlib.sha256(ast.dump(tree).encode())
    for name in ("news_outlets.txt", "places.tsv"):
        h.update(_resource_text(name).encode())
    return h.hexdigest()


def recipe_hash(name: str) -> str:
    """Short hash of ``name``'s recipe (and of the code and data that build it)."""
    if name not in RECIPES:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(NAMES)}")
    blob = json.dumps({"name": name, "version": RECIPE_VERSION, "recipe": RECIPES[name],
                       "source": _source_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# build helpers


@contextlib.contextmanager
def _deterministic(seed: int):
    """Seeded, fixed-thread-count, deterministic torch; the caller's settings are restored after."""
    import torch

    from distill.runtime import torch_threads

    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]), torch_threads(NUM_THREADS):
        torch.use_deterministic_algorithms(True)
        # Denormal floats (tiny Adam moments of rare tokens) make CPU math 10-100x slower.
        torch.set_flush_denormal(True)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)
            torch.use_deterministic_algorithms(det, warn_only=warn_only)


def train_bpe(recipe: dict = TOKENIZER_RECIPE):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on the synthetic corpus (deterministic;
    trained once per process and recipe)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_train_bpe_json(json.dumps(recipe, sort_keys=True)))


@functools.lru_cache(maxsize=4)
def _train_bpe_json(recipe_json: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    recipe = json.loads(recipe_json)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe["vocab_size"], min_frequency=recipe["min_frequency"],
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    texts = corpus(recipe["passages"], recipe["seed"])
    nli_rng = random.Random(recipe["seed"] + 1)
    texts += [" ".join(nli_pair(nli_rng)[:2]) for _ in range(recipe["passages"] // 4)]
    tok.train_from_iterator(texts, trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok.to_str()


def _flavour(raw, flavour: str):
    """(tokenizers.Tokenizer, PreTrainedTokenizerFast) set up for "gpt2" | "nli" | "t5"."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(raw.to_str())
    if flavour == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        special = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                       unk_token="<|endoftext|>", pad_token="<pad>")
    elif flavour == "nli":  # RoBERTa: <s> A </s></s> B </s>, a space before the first word
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", EOS), ("<s>", BOS), trim_offsets=False, add_prefix_space=True)
        special = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                       unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    elif flavour == "t5":  # T5: A </s>
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS)])
        special = dict(eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    else:
        raise ValueError(flavour)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=256, **special)
    return tok, fast


def _save_tokenizer(fast, out: Path) -> None:
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loadable by transformers 4.x and 5.x
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _save_model(model, out: Path) -> None:
    from distill.runtime import save_safetensors

    save_safetensors(model, out)


def _schedule(step: int, steps: int, warmup: int) -> float:
    import math

    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _pad(seqs: list[list[int]], pad: int):
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _bucketed(columns: list[list], batch_size: int, seed: int) -> list[list]:
    """Reorder rows so each batch holds sequences of similar length (less padding), batches in
    a seeded random order. ``columns[0]`` holds the sequences."""
    n, group = len(columns[0]), batch_size * 16
    order: list[list[int]] = []
    for lo in range(0, n, group):
        idx = sorted(range(lo, min(n, lo + group)), key=lambda i: (len(columns[0][i]), i))
        order += [idx[i: i + batch_size] for i in range(0, len(idx), batch_size)]
    random.Random(seed).shuffle(order)
    flat = [i for batch in order for i in batch]
    return [[col[i] for i in flat] for col in columns]


def _train(model, loss_at, train: dict, log=None, extra=None, ready=None) -> int:
    """AdamW on ``loss_at(step)`` (the loss tensor of a step's batch); returns the steps taken.

    Without ``ready``: linear warmup, then cosine decay to 10% over ``train["steps"]``.
    With ``ready`` (a callable giving ``(done, message)``, asked every ``check_every`` steps from
    ``min_steps``): warmup, constant rate until ``ready`` says done (or ``steps - anneal`` is
    reached), then a linear decay to 10% over ``anneal`` more steps. Training thus stops once
    the model can do what it is built for, whatever the speed of the machine's arithmetic.
    ``extra``: a module trained along (an auxiliary head that is not saved).
    """
    import torch

    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.AdamW(params, lr=train["lr"], betas=(0.9, 0.98),
                            weight_decay=train["weight_decay"], foreach=False)
    steps, warmup = train["steps"], train["warmup"]
    anneal_from: int | None = None
    losses: list[float] = []
    model.train()
    step = 0
    while True:
        if ready is None:
            factor = _schedule(step, steps, warmup)
        elif step < warmup:
            factor = (step + 1) / warmup
        elif anneal_from is None:
            factor = 1.0
        else:
            factor = 1.0 - 0.9 * (step - anneal_from) / train["anneal"]
        for group in opt.param_groups:
            group["lr"] = train["lr"] * factor
        loss = loss_at(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
        if log is not None and step % 50 == 0:
            log(f"step {step} loss {sum(losses[-50:]) / 50:.3f}")
        if ready is None:
            if step >= steps:
                break
        elif anneal_from is None:
            if step >= steps - train["anneal"]:
                anneal_from = step
                if log is not None:
                    log(f"step {step}: step cap reached, annealing")
            elif step >= train["min_steps"] and step % train["check_every"] == 0:
                model.eval()
                done, message = ready()
                model.train()
                if log is not None:
                    log(f"step {step}: {message}")
                if done:
                    anneal_from = step
        elif step - anneal_from >= train["anneal"]:
            break
    model.eval()
    return step


class _Stream:
    """Training batches made on demand, chunk by chunk, from one seeded generator (so the data
    of step ``k`` never depends on how many steps are eventually taken)."""

    def __init__(self, make_chunk, chunk_steps: int):
        self.make_chunk, self.chunk_steps = make_chunk, chunk_steps
        self.batches: list = []

    def __getitem__(self, step: int):
        while step >= len(self.batches):
            self.batches += self.make_chunk(self.chunk_steps)
        return self.batches[step]


# --------------------------------------------------------------------------------------------
# builders


_COPY_GROUPS = {"num": "numbers", "amt": "numbers", "pct": "numbers", "weeks": "numbers",
                "last": "names", "person": "names", "city": "places"}


def _number_values(tok) -> dict[int, int]:
    """Token id -> value, for tokens that spell a number ("12", "twelve", "Twelve")."""
    words = {w: n for n, w in NUMBER_WORDS.items()}
    out = {}
    for t, i in tok.get_vocab().items():
        w = t.lstrip("\u0120").lower()
        if w.isascii() and w.isdigit():
            out[i] = int(w)
        elif w in words:
            out[i] = words[w]
    return out


def _encode_passages(tok, marked, n_positions: int, copy_weight: float):
    """Token ids + ``<|endoftext|>``, per-token loss weights (``copy_weight`` on restated values),
    and ``(token index, slot)`` of the first token of every restated value."""
    seqs, weights, firsts = [], [], []
    for e, (_, spans) in zip(tok.encode_batch([t for t, _ in marked]), marked):
        ids, offs = e.ids[: n_positions - 1], e.offsets[: n_positions - 1]
        w, first = [1.0] * (len(ids) + 1), []
        for slot, a2, b2 in spans:
            hit = [j for j, (a, b) in enumerate(offs) if a < b2 and b > a2]
            for j in hit:
                w[j] = copy_weight
            if hit:
                first.append((hit[0], slot))
        seqs.append(ids + [EOT])
        weights.append(w)
        firsts.append(first)
    return seqs, weights, firsts


def _batch(seqs, weights):
    import torch

    ids, mask = _pad(seqs, PAD)
    w = torch.zeros(ids.shape)
    for i, ws in enumerate(weights):
        w[i, : len(ws)] = torch.tensor(ws)
    return ids, mask, w


def _build_gpt2(out: Path, recipe: dict, log=None) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    raw = train_bpe(recipe["tokenizer"])
    tok, fast = _flavour(raw, "gpt2")
    c, tr = recipe["config"], recipe["train"]
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=c["n_positions"], n_embd=c["n_embd"],
        n_layer=c["n_layer"], n_head=c["n_head"], n_inner=c["n_inner"], resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=PAD)
    bs = tr["batch_size"]

    # Tokens that restate a value already in the passage (the ones the teacher must copy from its
    # context) weigh ``copy_weight`` times more in the loss: copying is what makes continuations
    # of one context paraphrases, and a plain loss takes a tiny model much longer to learn it.
    data_rng = random.Random(tr["data_seed"])

    def make_chunk(steps: int) -> list:
        marked = corpus_marked(steps * bs, data_rng)
        seqs, weights, _ = _encode_passages(tok, marked, c["n_positions"], tr["copy_weight"])
        seqs, weights = _bucketed([seqs, weights], bs, data_rng.randrange(2**31))
        return [_batch(seqs[i: i + bs], weights[i: i + bs]) for i in range(0, len(seqs), bs)]

    stream = _Stream(make_chunk, tr["check_every"] * 4)

    # The output layer and softmax are half the cost of a step: they are computed for every
    # restated-value position but only for a seeded random ``keep`` share of the others (which
    # weigh 1 / keep, so the loss keeps its expectation).
    keep_gen = torch.Generator().manual_seed(tr["seed"])

    def loss_at(step: int):
        ids, mask, w = stream[step]
        hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        target, w = ids[:, 1:], w[:, 1:].clone()
        rest = (w == 1.0) & (torch.rand(w.shape, generator=keep_gen) >= tr["keep"])
        w[rest] = 0.0
        w[w == 1.0] = 1.0 / tr["keep"]
        sel = w > 0
        logits = model.lm_head(hidden[sel])
        nll = torch.nn.functional.cross_entropy(logits, target[sel], reduction="none")
        return (nll * w[sel]).sum() / mask[:, 1:].sum()

    # Held-out check: at the first token of a restated number, name or city, is the most likely
    # token *of that kind* the value from the context (a number in either spelling counts)?
    # Restricting to the kind leaves out which template comes next, which is chance, not copying.
    held = corpus_marked(tr["check_passages"], tr["data_seed"] + 1)
    h_seqs, h_weights, h_firsts = _encode_passages(tok, held, c["n_positions"], 1.0)
    values = _number_values(tok)

    def first_ids(words) -> list[int]:
        return sorted({tok.encode(p + w).ids[0] for w in words for p in ("", " ")})

    kinds = {"numbers": sorted(values), "names": first_ids(FIRST_NAMES + LAST_NAMES),
             "places": first_ids([city for city, _ in _places()])}
    kind_ids = {k: torch.tensor(v) for k, v in kinds.items()}

    def ready():
        hits: dict[str, list[bool]] = {}
        nll, count = 0.0, 0
        with torch.no_grad():
            for lo in range(0, len(h_seqs), 64):
                ids, mask, _ = _batch(h_seqs[lo: lo + 64], h_weights[lo: lo + 64])
                logits = model(input_ids=ids, attention_mask=mask).logits
                tgt = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                nll += float(torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                    ignore_index=-100, reduction="sum"))
                count += int(mask[:, 1:].sum())
                for r, first in enumerate(h_firsts[lo: lo + 64]):
                    for j, slot in first:
                        kind = _COPY_GROUPS.get(slot)
                        if kind is None or j == 0:
                            continue
                        cand = kind_ids[kind]
                        p, y = int(cand[logits[r, j - 1, cand].argmax()]), int(ids[r, j])
                        hits.setdefault(kind, []).append(
                            p == y or (y in values and values.get(p) == values[y]))
        acc = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
        done = all(acc.get(k, 0.0) >= t for k, t in tr["copy_targets"].items())
        done = done and nll / count <= tr["loss_target"]
        return done, (f"held-out loss {nll / count:.3f}, copy accuracy "
                      + ", ".join(f"{k} {a:.2f}" for k, a in acc.items()))

    with _deterministic(tr["seed"]):
        model = GPT2LMHeadModel(config)
        _copy_init(model, tr["copy_init"])
        _train(model, loss_at, tr, log, ready=ready)
    model.generation_config.pad_token_id = PAD
    _save_model(model, out)
    _save_tokenizer(fast, out)


def _copy_init(model, scale: float) -> None:
    """Start the last layer's attention as a copier: values and output projection are scaled
    identities, so a head adds (the embedding of) whatever it attends to to the residual stream,
    and with tied input/output embeddings raises that token's logit. Only *where* to look is then
    left to learn, which is what makes a tiny teacher restate the facts of its context quickly."""
    import torch

    if not scale:
        return
    block = model.transformer.h[-1].attn
    d = model.config.n_embd
    with torch.no_grad():
        block.c_attn.weight[:, 2 * d:] = torch.eye(d) * scale
        block.c_attn.bias[2 * d:] = 0.0
        block.c_proj.weight.copy_(torch.eye(d) * scale)
        block.c_proj.bias.zero_()


def _build_nli(out: Path, recipe: dict, log=None) -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification
    import torch

    raw = train_bpe(recipe["tokenizer"])
    tok, fast = _flavour(raw, "nli")
    c, tr = recipe["config"], recipe["train"]
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        max_position_embeddings=c["max_positions"] + PAD + 1, type_vocab_size=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, num_labels=len(LABELS),
        id2label=dict(LABELS), label2id=dict(LABEL_IDS))
    # Auxiliary per-token target (a throw-away linear head on the last layer): does this
    # hypothesis token's word occur in the premise (numbers: as digits or as a word)? It gives
    # a dense signal for token matching, which the 3-way label alone teaches a tiny model slowly.
    canon = {w: str(n) for n, w in NUMBER_WORDS.items()}
    vocab = {i: canon.get(t.lstrip("\u0120").lower(), t.lstrip("\u0120").lower())
             for t, i in tok.get_vocab().items()}
    bs = tr["batch_size"]

    def encode(pairs):
        enc, aux = [], []
        for e in tok.encode_batch([(p, h) for p, h, _ in pairs]):
            ids, seq = e.ids[: c["max_positions"]], e.sequence_ids[: c["max_positions"]]
            premise = {vocab[i] for i, q in zip(ids, seq) if q == 0}
            enc.append(ids)
            aux.append([-1.0 if q != 1 else float(vocab[i] not in premise) for i, q in zip(ids, seq)])
        return enc, aux, [y for _, _, y in pairs]

    data_rng = random.Random(tr["data_seed"])

    def make_chunk(steps: int) -> list:
        enc, aux, labels = encode([nli_pair(data_rng, tr["minimal_pairs"]) for _ in range(steps * bs)])
        enc, aux, labels = _bucketed([enc, aux, labels], bs, data_rng.randrange(2**31))
        out = []
        for lo in range(0, len(enc), bs):
            ids, mask = _pad(enc[lo: lo + bs], PAD)
            target = torch.full(ids.shape, -1.0)
            for i, a in enumerate(aux[lo: lo + bs]):
                target[i, : len(a)] = torch.tensor(a)
            out.append((ids, mask, target, torch.tensor(labels[lo: lo + bs], dtype=torch.long)))
        return out

    stream = _Stream(make_chunk, tr["check_every"])

    def loss_at(step: int):
        ids, mask, target, y = stream[step]
        out = model(input_ids=ids, attention_mask=mask, labels=y, output_hidden_states=True)
        if not tr["aux_weight"]:
            return out.loss
        keep = target >= 0
        logit = head(out.hidden_states[-1]).squeeze(-1)[keep]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, target[keep])
        return out.loss + tr["aux_weight"] * bce

    held_rng = random.Random(tr["data_seed"] + 1)
    # checked on the harder half: no minimal pairs, the premise and hypothesis worded differently
    h_enc, _, h_labels = encode([nli_pair(held_rng, 0.0) for _ in range(tr["check_pairs"])])
    h_ids, h_mask = _pad(h_enc, PAD)
    h_y = torch.tensor(h_labels)

    def ready():
        with torch.no_grad():
            pred = model(input_ids=h_ids, attention_mask=h_mask).logits.argmax(-1)
        acc = {LABELS[k]: float((pred[h_y == k] == k).float().mean()) for k in sorted(LABELS)}
        done = all(a >= tr["accuracy_target"] for a in acc.values())
        return done, "held-out accuracy " + ", ".join(f"{k} {a:.2f}" for k, a in acc.items())

    with _deterministic(tr["seed"]):
        model = RobertaForSequenceClassification(config)
        head = torch.nn.Linear(config.hidden_size, 1)
        _match_init(model, tr.get("match_init", 0.0))
        _train(model, loss_at, tr, log, extra=head, ready=ready if tr["adaptive"] else None)
    _save_model(model, out)
    _save_tokenizer(fast, out)


def _match_init(model, scale: float) -> None:
    """Make the first layer's attention look for the same token elsewhere (query = key weights,
    scaled up), so comparing hypothesis tokens with premise tokens -- the heart of this synthetic
    NLI -- is there from the start instead of being discovered slowly."""
    import torch

    if not scale:
        return
    attn = model.roberta.encoder.layer[0].attention.self
    with torch.no_grad():
        attn.query.weight.mul_(scale)
        attn.key.weight.copy_(attn.query.weight)
        attn.query.bias.zero_()
        attn.key.bias.zero_()


def _build_t5(out: Path, recipe: dict, log=None) -> None:
    """A T5 that has read the synthetic corpus, as T5 had read C4: pretrained as a denoising
    autoencoder (corpus sentences with ``drop`` of their tokens removed and ``swap`` of neighbour
    pairs swapped -> the sentence). Nothing paraphrase- or summary-specific: the pipeline teaches that."""
    from transformers import T5Config, T5ForConditionalGeneration

    from distill.text import split_sentences

    raw = train_bpe(recipe["tokenizer"])
    tok, fast = _flavour(raw, "t5")
    c, tr = recipe["config"], recipe["train"]
    config = T5Config(vocab_size=tok.get_vocab_size(), pad_token_id=PAD, eos_token_id=EOS,
                      decoder_start_token_id=PAD, **c)
    bs, data_rng = tr["batch_size"], random.Random(tr["data_seed"])

    def noisy(ids: list[int]) -> list[int]:
        kept = [t for t in ids if data_rng.random() >= tr["drop"]] or ids[:1]
        for i in range(len(kept) - 1):
            if data_rng.random() < tr["swap"]:
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
        return kept

    def make_chunk(steps: int) -> list:
        sents = [x.split(" -- ", 1)[-1] for p in corpus(steps * bs // 4 + 1, data_rng.randrange(2**31))
                 for x in split_sentences(p)]
        data_rng.shuffle(sents)
        batches = []
        for i in range(0, min(len(sents), steps * bs) - bs + 1, bs):
            targets = [tok.encode(x).ids[: tr["max_tokens"]] + [EOS] for x in sents[i: i + bs]]
            inputs = [noisy(t[:-1]) + [EOS] for t in targets]
            ids, mask = _pad(inputs, PAD)
            labels, _ = _pad(targets, -100)
            batches.append((ids, mask, labels))
        return batches

    stream = _Stream(make_chunk, 50)

    def loss_at(step: int):
        ids, mask, labels = stream[step]
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    with _deterministic(tr["seed"]):
        model = T5ForConditionalGeneration(config)
        if tr.get("steps"):
            _train(model, loss_at, tr, log)
    model.eval()
    model.generation_config.decoder_start_token_id = PAD
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    _save_model(model, out)
    _save_tokenizer(fast, out)


_BUILDERS = {"tiny-gpt2": _build_gpt2, "tiny-nli": _build_nli, "tiny-t5": _build_t5}


def build(name: str, out_dir: str | os.PathLike, log=None) -> Path:
    """Build tiny model ``name`` into ``out_dir`` (created; should be empty). Deterministic.

    Prefer :func:`distill.models.resolve`, which caches, locks and builds atomically.
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    _BUILDERS[name](out, RECIPES[name], log)
    (out / "tiny_recipe.json").write_text(json.dumps(
        {"name": name, "hash": recipe_hash(name), "recipe": RECIPES[name]},
        indent=2, sort_keys=True) + "\n")
    if log is not None:
        log(f"built {name} in {time.perf_counter() - t0:.1f}s ({time.process_time() - c0:.1f}s CPU)")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m distill.tiny",
                                 description="Build the tiny test models into the distill cache.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (if missing) and print the cache paths")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NAMES)}")
    b.add_argument("-j", "--jobs", type=int, default=None,
                   help="build this many models at once (default: one per CPU core)")
    args = ap.parse_args(argv)
    from distill.models import prefetch

    for name in args.names:
        if name not in RECIPES:
            ap.error(f"unknown tiny model {name!r}; known: {', '.join(NAMES)}")
    t0 = time.perf_counter()
    for name, path in prefetch(args.names or NAMES, processes=args.jobs).items():
        print(f"{name}\t{path}", flush=True)
    print(f"done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
