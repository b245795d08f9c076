"""The typed run config: YAML in, dotted overrides on top, one-line errors out.

Every default is written once, here, with its source: "paper" is Jung et al. 2024 (arXiv 2305.16635),
"code" the authors' public implementation where it differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config problem, already phrased as one line for the user (the CLI exits 2 with it)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which Hugging Face model to load, and how."""

    model: str  # a Hub name or a local path; "tiny-*" names are built locally (distill.models)
    device: str = "auto"  # "auto" = cuda if available, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    trust_remote_code: bool = False  # off unless a user turns it on


class ResourcesConfig(_Strict):
    """What one worker of a stage asks Ray for (ignored by the local runner)."""

    num_gpus: float = Field(0.0, ge=0)  # fractions let the generator and the NLI critic share a GPU
    num_cpus: float = Field(1.0, gt=0)
    concurrency: int = Field(1, ge=1)  # actors in the pool


class ContextsConfig(_Strict):
    """Step 1: the teacher samples passages from domain prefixes; each complete sentence is a record."""

    n_passages: int = Field(64, ge=1)
    passages_per_shard: int = Field(16, ge=1)
    max_new_tokens: int = Field(150, ge=1)  # paper: up to 150 new tokens
    top_p: float = Field(0.9, gt=0, le=1)  # paper
    temperature: float = Field(1.0, gt=0)  # paper
    batch_size: int = Field(16, ge=1)  # passages per generate call
    resources: ResourcesConfig = ResourcesConfig()


class CandidatesConfig(_Strict):
    """Step 2: k continuations of each record's context; the first complete sentence of each is a candidate."""

    k: int = Field(100, ge=2)  # paper: k=100
    top_p: float = Field(0.9, gt=0, le=1)  # paper
    temperature: float = Field(0.7, gt=0)  # paper 0.7 (code: 0.5)
    no_repeat_ngram_size: int = Field(3, ge=0)  # paper
    max_new_tokens: int = Field(100, ge=1)  # paper
    rows_per_batch: int = Field(512, ge=1)  # sequences per generate call (contexts x k), across contexts
    stop_at_sentence: bool = True  # stop a sample once its first sentence is complete
    max_sentences_per_passage: int | None = Field(None, ge=1)  # only the first N records of each passage get candidates
    resources: ResourcesConfig = ResourcesConfig()


class LengthConfig(_Strict):
    paraphrase_min: float = Field(0.8, gt=0)  # paper: 0.8 <= len(y)/len(x) <= 1.5
    paraphrase_max: float = Field(1.5, gt=0)
    summary_max: float = Field(0.8, gt=0)  # paper: len(y) < 0.8 len(x)


class DiversityConfig(_Strict):
    max_rougeL: float = Field(0.75, ge=0, le=1)  # paper: ROUGE-L F1 <= 0.75 (paraphrase only)


class NLIConfig(ModelConfig):
    model: str = "alisawuffles/roberta-large-wanli"  # paper
    threshold: float = Field(0.75, ge=0, le=1)  # paper: p_entail >= 0.75 (both directions for paraphrase)
    max_tokens_per_batch: int = Field(16384, ge=16)  # padded tokens per forward pass (length-sorted batches)
    max_length: int = Field(256, ge=8)


class CritiqueConfig(_Strict):
    """Step 4: the critics. Scores are stored; keeping is a threshold on them (``distill select``)."""

    length: LengthConfig = LengthConfig()
    numbers: bool = True
    diversity: DiversityConfig = DiversityConfig()
    nli: NLIConfig = NLIConfig()
    dedup: bool = True
    score_all: bool = False  # True: NLI scores every pair, not only cheap-critic survivors (costly; lets `select` loosen any threshold)
    resources: ResourcesConfig = ResourcesConfig()


class TrainConfig(_Strict):
    """The student: a seq2seq model fine-tuned on each round's kept pairs (both tasks)."""

    student: ModelConfig = ModelConfig(model="google/t5-v1_1-large")  # paper: T5-v1.1-large (770M)
    epochs: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(32, ge=1)  # pairs per optimizer step (per worker on Ray Train)
    max_source_tokens: int = Field(128, ge=8)
    max_target_tokens: int = Field(128, ge=8)
    validation_fraction: float = Field(0.05, ge=0, lt=1)  # held out by a hash of the record id
    mix: Literal["latest", "all"] = "all"  # train round r's student on D_r ("latest") or D_0..D_r ("all")
    init: Literal["previous", "base"] = "previous"  # start from the previous round's student or the base model
    eval_samples: int = Field(64, ge=0)  # validation pairs the student generates for ROUGE-L and critic pass rate
    resources: ResourcesConfig = ResourcesConfig()  # concurrency = Ray Train workers (data parallel)


class StudentGenConfig(_Strict):
    """Round r >= 1: the previous student generates candidates for held-out records."""

    k: int = Field(10, ge=1)  # paper: k=10
    top_p: float = Field(0.9, gt=0, le=1)  # paper
    temperature: float = Field(0.7, gt=0)  # paper
    no_repeat_ngram_size: int = Field(3, ge=0)  # paper
    max_new_tokens: int = Field(64, ge=1)
    rows_per_batch: int = Field(256, ge=1)
    resources: ResourcesConfig = ResourcesConfig()


class RunConfig(_Strict):
    """One distillation run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 0
    domain: Literal["news", "bio"] = "news"
    tasks: list[Literal["paraphrase", "summary"]] = ["paraphrase", "summary"]
    license: str = "other"  # the corpus license on the dataset card (an SPDX id such as cc-by-4.0, or "other")
    teacher: ModelConfig = ModelConfig(model="gpt2-xl")  # paper (bio: microsoft/BioGPT-Large)
    contexts: ContextsConfig = ContextsConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    critique: CritiqueConfig = CritiqueConfig()
    rounds: int = Field(1, ge=1)  # round 0 from the teacher, then rounds 1..N-1 from the previous round's student
    train: TrainConfig = TrainConfig()
    student: StudentGenConfig = StudentGenConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if not self.tasks:
            raise ValueError("tasks must name at least one of paraphrase, summary")
        if self.critique.length.paraphrase_min > self.critique.length.paraphrase_max:
            raise ValueError("critique.length.paraphrase_min must not exceed paraphrase_max")
        return self


# ---------------------------------------------------------------------------------------------
# loading


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at ``loc`` (for the unknown-key message)."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return sorted(cls.model_fields)


def _one_line(err: ValidationError, source: str, model: type[BaseModel] = None) -> str:
    model = model or RunConfig
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if p not in ("function-after",))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        allowed = _allowed(model, loc)
        return f"{source}: unknown key '{key}' (allowed here: {', '.join(allowed)})"
    if e["type"] == "missing":
        return f"{source}: missing required key '{key}'"
    value = e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{source}: {msg}"
    return f"{source}: {key}={value!r} is not allowed: {msg}"


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> ("a.b.c", yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. critique.nli.threshold=0.8")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Reads a YAML run config; raises ConfigError with one line naming file, key, value and what is allowed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    return validate(data, str(path))


def validate(data: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err, source)) from None


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def diff(a: RunConfig, b: RunConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (for the 'run folder made with another config' message)."""
    out: list[str] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
        elif x != y:
            out.append(f"{key}: {x!r} -> {y!r}")

    walk(a.model_dump(mode="json"), b.model_dump(mode="json"), prefix)
    return out
