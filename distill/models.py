"""Model loading: real Hugging Face names for users, ``tiny-*`` names for tests and smoke runs.

``resolve("tiny-gpt2")`` builds the tiny model on first use (see :mod:`distill.tiny`) into
``$DISTILL_CACHE`` (default ``~/.cache/distill``) and returns its folder; any other name or path
is returned unchanged, so ``load_causal_lm("gpt2-xl")`` is a plain ``from_pretrained``.

Heavy imports (torch, transformers) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

TINY_PREFIX = "tiny-"
_LABEL_KEYS = ("entailment", "neutral", "contradiction")


# --------------------------------------------------------------------------------------------
# tiny models: cache, lock, atomic build


def cache_dir() -> Path:
    """``$DISTILL_CACHE`` if set, else ``~/.cache/distill``."""
    env = os.environ.get("DISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distill"


def is_tiny(name_or_path: str) -> bool:
    return str(name_or_path).startswith(TINY_PREFIX)


def tiny_path(name: str) -> Path:
    """Where tiny model ``name`` lives (or will): ``<cache>/tiny/<name>-<recipe hash>``."""
    from distill import tiny

    return cache_dir() / "tiny" / f"{name}-{tiny.recipe_hash(name)}"


def resolve(name_or_path: str) -> str:
    """A ``from_pretrained``-able name or path.

    ``tiny-gpt2``, ``tiny-nli``, ``tiny-t5`` are built on first use into the cache (under a file
    lock, in a temporary folder renamed into place, so concurrent processes build once and never
    see a half-written folder) and their folder is returned; anything else comes back unchanged.
    """
    name_or_path = str(name_or_path)
    if not is_tiny(name_or_path):
        return name_or_path
    from distill import tiny

    if name_or_path not in tiny.RECIPES:
        if os.path.exists(name_or_path):  # a local folder that happens to be called tiny-...
            return name_or_path
        raise ValueError(f"unknown tiny model {name_or_path!r}; known: {', '.join(tiny.NAMES)}")
    final = tiny_path(name_or_path)
    if final.is_dir():
        return str(final)

    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():  # built by another process while we waited
            return str(final)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            tiny.build(name_or_path, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp (and safetensors) make things private; caches may be shared
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return str(final)


def prefetch(names=None, processes: int | None = None) -> dict[str, str]:
    """Resolve several tiny models (default: all), building the missing ones side by side in
    spawned processes (each build is single-threaded), e.g. before a test session or in CI.
    Returns ``{name: folder}``."""
    from distill import tiny

    names = list(names or tiny.NAMES)
    missing = [n for n in names if is_tiny(n) and not tiny_path(n).is_dir()]
    workers = min(len(missing), processes or os.cpu_count() or 1)
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(resolve, missing, chunksize=1)
    return {n: resolve(n) for n in names}


# --------------------------------------------------------------------------------------------
# loading


def _torch_dtype(dtype: Any, device: str):
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    try:
        return table[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def _dtype_kwarg() -> str:
    """``dtype`` (transformers >= 4.56) or ``torch_dtype`` (older) for ``from_pretrained``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _load(auto_cls_name: str, name_or_path: str, device: str, dtype: Any,
          trust_remote_code: bool, padding_side: str):
    import transformers

    path = resolve(name_or_path)
    torch_dtype = _torch_dtype(dtype, device)
    auto_cls = getattr(transformers, auto_cls_name)
    model = auto_cls.from_pretrained(path, trust_remote_code=trust_remote_code,
                                     **{_dtype_kwarg(): torch_dtype})
    model.to(device)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_causal_lm(name_or_path: str, *, device: str = "cpu", dtype: Any = "auto",
                   trust_remote_code: bool = False):
    """``(model, tokenizer)`` of a causal LM in eval mode on ``device``.

    The tokenizer pads on the left (for batched generation) and falls back to eos as pad token.
    ``dtype="auto"``: bfloat16 on cuda, float32 on cpu; or "float32" / "bfloat16" / "float16".
    """
    model, tokenizer = _load("AutoModelForCausalLM", name_or_path, device, dtype,
                             trust_remote_code, "left")
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_nli(name_or_path: str, *, device: str = "cpu", dtype: Any = "auto",
             trust_remote_code: bool = False):
    """``(model, tokenizer)`` of a sequence classifier (NLI) in eval mode; right padding.

    Use :func:`label_indices` / :func:`entailment_index` on ``model.config`` for the label order.
    """
    return _load("AutoModelForSequenceClassification", name_or_path, device, dtype,
                 trust_remote_code, "right")


def load_seq2seq(name_or_path: str, *, device: str = "cpu", dtype: Any = "auto",
                 trust_remote_code: bool = False):
    """``(model, tokenizer)`` of an encoder-decoder LM (e.g. T5) in eval mode; right padding."""
    return _load("AutoModelForSeq2SeqLM", name_or_path, device, dtype, trust_remote_code, "right")


# --------------------------------------------------------------------------------------------
# labels and vocabulary


def _id2label(config) -> dict[int, str]:
    raw = getattr(config, "id2label", None) or {}
    return {int(k): str(v) for k, v in raw.items()}


def _model_name(config) -> str:
    return getattr(config, "_name_or_path", "") or getattr(config, "model_type", "") or "model"


def label_indices(config) -> dict[str, int]:
    """``{"entailment": i, "neutral": j, "contradiction": k}`` from ``config.id2label``.

    Matched by substring, case-insensitive ("ENTAILMENT", "entailment", "Entail"...): MNLI models
    order labels contradiction/neutral/entailment, WANLI models contradiction/entailment/neutral.
    Raises ``ValueError`` if there is no entailment label; "neutral"/"contradiction" are left out
    when the model has no such label (e.g. a 2-way entailment classifier).
    """
    id2label = _id2label(config)
    found: dict[str, int] = {}
    for key, needle in zip(_LABEL_KEYS, ("entail", "neutral", "contradict")):
        hits = sorted(i for i, lab in id2label.items()
                      if needle in lab.lower() and not (key == "entailment" and "not" in lab.lower()))
        if hits:
            found[key] = hits[0]
    if "entailment" not in found:
        labels = ", ".join(f"{i}={lab}" for i, lab in sorted(id2label.items())) or "none"
        raise ValueError(f"NLI model {_model_name(config)!r} has no entailment label "
                         f"(id2label: {labels})")
    return found


def entailment_index(config) -> int:
    """Index of the label whose name contains "entail" (see :func:`label_indices`)."""
    return label_indices(config)["entailment"]


def newline_token_ids(tokenizer) -> list[int]:
    """Every vocabulary id whose decoded text contains "\\n" or "\\r" (to ban newlines)."""
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    return [i for i, t in zip(ids, texts) if "\n" in t or "\r" in t]
