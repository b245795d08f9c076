"""``distill export RUN --to-hub OWNER/NAME``: a finished run as a Hugging Face dataset.

The folder that is uploaded (``dry_run_dir`` writes exactly this and uploads nothing)::

    README.md                                   dataset card: YAML metadata + method, models, config,
                                                funnel and quality report per round, citation
    data/paraphrase/train-00000-of-00001.parquet
    data/paraphrase/validation-00000-of-00001.parquet
    data/summary/train-...parquet, data/summary/validation-...parquet
    data/rejected/train-...parquet              only with ``with_rejected``: every rejected pair + ``reject``
    figures/round-<r>-*.png                     the report's figures, linked from the card

One config per task, over all rounds (the ``round`` column tells them apart). The split is
deterministic: a pair goes to validation when the BLAKE2b hash of its split key, read as a number
in [0, 1), is below ``validation_fraction`` (5%). The split key is by default the pair's record
(the context both sentences continue: the pair id without its ":<task>:<i>-<j>" tail), so all
pairs of one context, in both tasks, land in the same split and no sentence is shared between
train and validation; ``split_by="pair"`` hashes the whole pair id instead.

Pushing: ``create_repo(repo_type="dataset", exist_ok=True)``, then ONE commit with the whole folder
(``upload_folder``), then ``create_tag`` if asked; each call is retried with exponential backoff on
HTTP 429 / 5xx and connection errors. The token comes from ``token``, else ``$HF_TOKEN``, else
huggingface_hub's stored login; it is passed to the client only: never printed, logged or written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from distill import quality as Q
from distill.config import ConfigError, RunConfig, dump
from distill.report import (check_run, cached_report, extra_markdown, figures_markdown, funnel_markdown,
                            pass_rate_markdown, read_corpus, read_critique, table1_markdown)

log = logging.getLogger("distill.export")

CORPUS_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("source", pa.string()), ("target", pa.string()),
    ("context", pa.string()), ("round", pa.int64()), ("length_ratio", pa.float64()),
    ("numbers_match", pa.float64()), ("diversity_rougeL", pa.float64()), ("nli_forward", pa.float64()),
    ("nli_reverse", pa.float64()), ("generator", pa.string()), ("critic", pa.string()), ("seed", pa.int64()),
])
REJECTED_SCHEMA = CORPUS_SCHEMA.append(pa.field("reject", pa.string()))

COLUMN_DOCS = {
    "id": "pair id `<record>:<task>:<i>-<j>` (i, j: candidate indices within the record)",
    "task": "`paraphrase` or `summary`",
    "source": "the input sentence",
    "target": "its paraphrase / summary",
    "context": "the passage text (prefix and earlier sentences) that both sentences continue",
    "round": "distillation round (0 = sampled from the teacher)",
    "length_ratio": "len(target) / len(source), characters",
    "numbers_match": "1.0 if the numbers check passed",
    "diversity_rougeL": "ROUGE-L F1 of source and target (paraphrase only)",
    "nli_forward": "p(source entails target)",
    "nli_reverse": "p(target entails source) (paraphrase)",
    "generator": "the model that generated both sentences",
    "critic": "the NLI model that scored the pair",
    "seed": "the run's global seed",
    "reject": "(rejected config) the first critic that rejected the pair",
}

CITATION = """\
@inproceedings{jung-etal-2024-impossible,
    title = "Impossible Distillation for Paraphrasing and Summarization: How to Make High-quality Lemonade out of Small, Low-quality Model",
    author = "Jung, Jaehun  and
      West, Peter  and
      Jiang, Liwei  and
      Brahman, Faeze  and
      Lu, Ximing  and
      Fisher, Jillian  and
      Sorensen, Taylor  and
      Choi, Yejin",
    booktitle = "Proceedings of the 2024 Conference of the North American Chapter of the Association for Computational Linguistics: Human Language Technologies (Volume 1: Long Papers)",
    month = jun,
    year = "2024",
    address = "Mexico City, Mexico",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2024.naacl-long.250",
    pages = "4439--4454",
}"""

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXPORT_TOP_LEVEL = {"README.md", "data", "figures"}
_SIZE_BOUNDS = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M"),
                (1e8, "10M<n<100M"), (1e9, "100M<n<1B"), (1e10, "1B<n<10B"), (1e11, "10B<n<100B"),
                (1e12, "100B<n<1T")]


# ------------------------------------------------------------------------------------------------
# pure helpers


def size_category(n_rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n_rows``."""
    for bound, label in _SIZE_BOUNDS:
        if n_rows < bound:
            return label
    return "n>1T"


def split_key(pair_id: str, split_by: str = "record") -> str:
    if split_by == "pair":
        return pair_id
    if split_by == "record":
        parts = pair_id.rsplit(":", 2)
        return parts[0] if len(parts) == 3 else pair_id
    raise ValueError(f"split_by must be 'record' or 'pair', not {split_by!r}")


def hash_unit(key: str) -> float:
    """A number in [0, 1) from the BLAKE2b hash of ``key`` (stable across runs, machines and Python versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") / 2.0 ** 64


def assign_splits(ids, validation_fraction: float = 0.05, split_by: str = "record") -> np.ndarray:
    """``"train"`` / ``"validation"`` per pair id."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation fraction {validation_fraction} is not allowed: expected 0 <= f < 1")
    return np.array(["validation" if hash_unit(split_key(str(i), split_by)) < validation_fraction else "train"
                     for i in ids], dtype=object)


def _conform(df: pd.DataFrame, schema: pa.Schema, seed: int) -> pa.Table:
    """``df`` with exactly the schema's columns and types (missing score columns -> null)."""
    out = {}
    for field in schema:
        name = field.name
        if name == "seed" and name not in df:
            col = pd.Series([seed] * len(df), dtype="int64")
        elif name not in df:
            col = pd.Series([None] * len(df), dtype=object)
        else:
            col = df[name].reset_index(drop=True)
        if pa.types.is_floating(field.type):
            col = pd.to_numeric(col, errors="coerce").astype("float64")
        elif pa.types.is_integer(field.type):
            col = pd.to_numeric(col, errors="coerce").fillna(seed if name == "seed" else 0).astype("int64")
        else:
            col = col.astype(object).where(col.notna(), None)
            col = col.map(lambda v: v if v is None else str(v))
        out[name] = pa.array(col, type=field.type, from_pandas=True)  # NaN -> null (never scored)
    return pa.table(out, schema=schema)


def _write_split(table: pa.Table, folder: Path, split: str, max_rows: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    n = table.num_rows
    n_files = max(1, -(-n // max_rows))
    names = []
    for k in range(n_files):
        name = f"{split}-{k:05d}-of-{n_files:05d}.parquet"
        pq.write_table(table.slice(k * max_rows, max_rows), folder / name, compression="zstd",
                       row_group_size=min(max(n, 1), 10_000))
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------
# the dataset card


def _card_metadata(cfg: RunConfig, configs: list[dict], n_rows: int, pretty_name: str) -> dict:
    tasks = {c["config_name"] for c in configs}
    categories = []
    if "summary" in tasks:
        categories.append("summarization")
    if "paraphrase" in tasks:
        categories.append("text2text-generation")
    categories.append("text-generation")
    return {
        "license": getattr(cfg, "license", None) or "other",
        "language": ["en"],
        "pretty_name": pretty_name,
        "size_categories": [size_category(n_rows)],
        "task_categories": categories,
        "tags": ["paraphrase", "summarization", "synthetic", "distillation", "impossible-distillation"],
        "configs": configs,
    }


def _card(cfg: RunConfig, meta: dict, counts: dict, frames: dict[str, pd.DataFrame], report: dict,
          repo_id: str | None, with_rejected: bool, validation_fraction: float, split_by: str,
          skipped: list[str]) -> str:
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    generators = sorted({str(g) for df in frames.values() for g in df.get("generator", pd.Series(dtype=object)).dropna()})
    critics = sorted({str(c) for df in frames.values() for c in df.get("critic", pd.Series(dtype=object)).dropna()})
    name = repo_id or f"<owner>/{cfg.name}"
    first = next(iter(counts))
    split_rule = ("the pair's record (the context both sentences continue), so all pairs of one context stay "
                  "in one split" if split_by == "record" else "the pair id")
    lines = [
        f"# {meta['pretty_name']}",
        "",
        f"Sentence-level **paraphrase** and **summary** pairs distilled from a small off-the-shelf language model "
        f"with *Impossible Distillation* (Jung et al., NAACL 2024, [arXiv 2305.16635](https://arxiv.org/abs/2305.16635)), "
        f"made by `distill` from the run `{cfg.name}` (round(s) {', '.join(report['rounds'])}).",
        "",
        "## Method in short",
        "",
        "The teacher LM writes passages from domain prefixes; for each sentence's preceding context it samples many "
        "continuations (k per context, nucleus sampling), and the first sentence of each is a candidate. Candidates "
        "of one context tend to be paraphrases of one another (\"paraphrastic proximity\"), so every pair of "
        "candidates of a context is a candidate pair: a paraphrase pair (i, j), or a summary pair with the longer "
        "sentence as source. Critics keep a pair only if it passes, in order: a length-ratio bound, a numbers check, "
        "a lexical-diversity bound (ROUGE-L, paraphrase), bidirectional (paraphrase) or forward (summary) NLI "
        "entailment, and per-context de-duplication. Nothing is written by humans or by a larger model.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{name}", "{first}")',
        "```",
        "",
        "## Configs and splits",
        "",
        "| config | split | rows |",
        "|---|---|---:|",
    ]
    for config, splits in counts.items():
        for split, n in splits.items():
            lines.append(f"| {config} | {split} | {n:,} |")
    lines += [
        "",
        f"Validation holds about {100 * validation_fraction:g}% of the pairs, chosen deterministically by a BLAKE2b "
        f"hash of {split_rule}. All rounds are in one config; the `round` column tells them apart.",
    ]
    no_val = [c for c, splits in counts.items() if c != "rejected" and "validation" not in splits]
    if no_val:
        lines.append(f"No validation split for {', '.join(no_val)}: no record hashed below the fraction.")
    if with_rejected:
        lines.append("The `rejected` config holds every pair a critic rejected, with the reason in `reject`.")
    if skipped:
        lines.append(f"Not exported (no kept pairs): {', '.join(skipped)}.")
    lines += ["", "### Columns", "", "| column | meaning |", "|---|---|"]
    lines += [f"| `{c}` | {d} |" for c, d in COLUMN_DOCS.items() if with_rejected or c != "reject"]
    lines += [
        "",
        "## Models",
        "",
        f"- Teacher (generator): {', '.join(f'`{g}`' for g in generators) or 'n/a'} "
        f"(configured: `{cfg.teacher.model}`)",
        f"- Critic (NLI): {', '.join(f'`{c}`' for c in critics) or 'n/a'} (configured: `{cfg.critique.nli.model}`)",
        "",
        "## Funnel per round",
    ]
    for r, rnd in report["rounds"].items():
        lines += ["", f"### Round {r}", "", funnel_markdown(rnd["funnel"])]
    lines += [
        "",
        "## Quality",
        "",
        "The measures of the paper's Table 1, computed by `distill report` on this data; the paper's rows are "
        "quoted from Jung et al. 2024 for reference (H2/H3 grow with corpus size, so they compare only between "
        "corpora of similar size).",
        "",
        table1_markdown(report),
        "",
        (f"Embedding model: `{report['settings']['embedding_model']}`." if report["settings"]["embedding_model"]
         else "Cos was not computed (no embedding model).") + " Tokens: lowercase `\\w+` matches.",
        "",
        extra_markdown(report),
        "",
        "Critic pass rates (%, 1 - removed / pairs reaching the critic):",
        "",
        pass_rate_markdown(report),
        "",
        figures_markdown(report),
        "",
        "## Config snapshot",
        "",
        "```yaml",
        dump(cfg).rstrip(),
        "```",
        "",
        "## License",
        "",
        f"`{meta['license']}`. The pairs are generated by the teacher model above; its license terms may apply.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return f"---\n{header}---\n\n" + "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# building the folder


def build_dataset_folder(run_dir: str | Path, folder: str | Path, *, repo_id: str | None = None,
                         with_rejected: bool = False, validation_fraction: float = 0.05, split_by: str = "record",
                         max_rows_per_shard: int = 250_000,
                         embedding_model: str | None = Q.DEFAULT_EMBEDDING_MODEL,
                         report_dir: str | Path | None = None) -> dict:
    """Writes the dataset folder (data, figures, README.md) into the empty/new ``folder``; returns row counts."""
    if split_by not in ("record", "pair"):
        raise ConfigError(f"split_by={split_by!r} is not allowed: expected 'record' or 'pair'")
    if max_rows_per_shard < 1:
        raise ConfigError("max_rows_per_shard must be >= 1")
    cfg, shards = check_run(run_dir, strict=True)
    folder = Path(folder)
    frames: dict[str, pd.DataFrame] = {}
    for task in cfg.tasks:
        parts = [read_corpus(run_dir, r, task, names) for r, names in shards.items()]
        frames[task] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if sum(len(df) for df in frames.values()) == 0:
        raise ConfigError(f"{run_dir}: the corpus is empty (no kept pairs in any round); nothing to export")
    report = cached_report(run_dir, report_dir, embedding_model=embedding_model)

    configs: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    skipped = []
    for task in cfg.tasks:
        df = frames[task]
        if len(df) == 0:
            skipped.append(task)
            continue
        table = _conform(df, CORPUS_SCHEMA, cfg.seed)
        splits = assign_splits(table.column("id").to_pylist(), validation_fraction, split_by)
        data_files = []
        counts[task] = {}
        for split in ("train", "validation"):
            sub = table.filter(pa.array(splits == split))
            if sub.num_rows == 0:
                continue  # an empty split would not load; it is left out of the config
            _write_split(sub, folder / "data" / task, split, max_rows_per_shard)
            data_files.append({"split": split, "path": f"data/{task}/{split}-*.parquet"})
            counts[task][split] = sub.num_rows
        entry = {"config_name": task, "data_files": data_files}
        if not configs:
            entry["default"] = True
        configs.append(entry)

    if with_rejected:
        parts = []
        for r, names in shards.items():
            crit = read_critique(run_dir, r, names)
            crit = crit[crit["reject"].fillna("").astype(str) != ""]
            parts.append(crit.rename(columns={"pair_id": "id"}))
        rejected = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(rejected):
            _write_split(_conform(rejected, REJECTED_SCHEMA, cfg.seed), folder / "data" / "rejected", "train",
                         max_rows_per_shard)
            configs.append({"config_name": "rejected",
                            "data_files": [{"split": "train", "path": "data/rejected/train-*.parquet"}]})
            counts["rejected"] = {"train": len(rejected)}
        else:
            skipped.append("rejected")

    src_report = Path(report_dir) if report_dir is not None else Path(run_dir) / "report"
    for rnd in report["rounds"].values():
        for rel in rnd.get("figures", []):
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_report / rel, dest)

    n_kept = sum(n for c, splits in counts.items() if c != "rejected" for n in splits.values())
    pretty = f"distill {cfg.name}: Impossible Distillation paraphrase and summary pairs"
    meta = _card_metadata(cfg, configs, n_kept, pretty)
    text = _card(cfg, meta, counts, frames, report, repo_id, with_rejected, validation_fraction, split_by, skipped)
    (folder / "README.md").write_text(text, encoding="utf-8")
    return counts


def _prepare_dry_run_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder")
    if path.is_dir():
        entries = {p.name for p in path.iterdir()}
        if entries - _EXPORT_TOP_LEVEL:
            raise ConfigError(f"{path}: exists and holds more than an earlier export "
                              f"({', '.join(sorted(entries - _EXPORT_TOP_LEVEL)[:3])}); choose an empty folder")


# ------------------------------------------------------------------------------------------------
# pushing


def resolve_token(token: str | None = None) -> str:
    """``token``, else ``$HF_TOKEN``, else huggingface_hub's stored login; ConfigError if none."""
    if token:
        return token
    env = os.environ.get("HF_TOKEN")
    if env:
        return env
    try:
        from huggingface_hub import get_token

        stored = get_token()
    except Exception:  # noqa: BLE001 - an unreadable token file counts as no token
        stored = None
    if stored:
        return stored
    raise ConfigError("no Hugging Face token: set HF_TOKEN or run 'huggingface-cli login'")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """HTTP 429 / 5xx, or a connection / timeout error of the HTTP client."""
    code = _status(exc)
    if code is not None:
        return code == 429 or 500 <= code < 600
    if type(exc).__name__ == "OfflineModeIsEnabled":  # a ConnectionError, but retrying cannot help
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        classes = tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))
        if classes and isinstance(exc, classes):
            return True
    return False


def with_retries(fn: Callable[[], Any], what: str, *, attempts: int = 5, backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> Any:
    """Calls ``fn``; on a transient error waits backoff_s * 2**k and tries again, ``attempts`` tries in all."""
    for k in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or k == attempts - 1:
                raise
            delay = backoff_s * (2 ** k)
            log.warning("%s: transient error (%s), retrying in %.1fs (%d/%d)", what, type(exc).__name__, delay,
                        k + 1, attempts - 1)
            sleep(delay)
    raise AssertionError("unreachable")


def _one_line_hub_error(exc: BaseException, repo_id: str, token: str) -> ConfigError | None:
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return ConfigError("HF_HUB_OFFLINE is set: unset it to push, or use --dry-run DIR")
    code = _status(exc)
    if code in (401, 403):
        return ConfigError(f"the Hugging Face Hub refused access to {repo_id} (HTTP {code}): check the token's "
                           "write permission")
    if code == 409:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "conflict"
        return ConfigError(f"{repo_id}: {msg.replace(token, '***')} (HTTP 409)")
    return None


def push_folder(folder: str | Path, repo_id: str, *, token: str, private: bool = False, tag: str | None = None,
                commit_message: str = "distill export", api=None, attempts: int = 5, backoff_s: float = 2.0,
                sleep: Callable[[float], None] = time.sleep) -> str:
    """create_repo (dataset, exist_ok), ONE upload_folder commit, create_tag; returns the commit's URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    retry = dict(attempts=attempts, backoff_s=backoff_s, sleep=sleep)
    try:
        with_retries(lambda: api.create_repo(repo_id, token=token, private=private, repo_type="dataset",
                                             exist_ok=True), "create_repo", **retry)
        info = with_retries(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset",
                                                      commit_message=commit_message, token=token),
                            "upload_folder", **retry)
        if tag:
            oid = getattr(info, "oid", None)
            with_retries(lambda: api.create_tag(repo_id, tag=tag, revision=oid, repo_type="dataset", token=token),
                         "create_tag", **retry)
    except Exception as exc:
        err = _one_line_hub_error(exc, repo_id, token)
        if err is not None:
            raise err from None
        raise
    return getattr(info, "commit_url", None) or f"https://huggingface.co/datasets/{repo_id}"


# ------------------------------------------------------------------------------------------------
# the entry point


def export_run(run_dir: str | Path, *, repo_id: str | None = None, private: bool = False, tag: str | None = None,
               dry_run_dir: str | Path | None = None, with_rejected: bool = False, token: str | None = None,
               validation_fraction: float = 0.05, split_by: str = "record", max_rows_per_shard: int = 250_000,
               embedding_model: str | None = Q.DEFAULT_EMBEDDING_MODEL, report_dir: str | Path | None = None,
               api=None, attempts: int = 5, backoff_s: float = 2.0,
               sleep: Callable[[float], None] = time.sleep) -> Path | str:
    """Exports a finished run as a Hub dataset.

    With ``dry_run_dir``: writes the folder that would be uploaded there, uploads nothing, returns its
    Path. Otherwise pushes it to the dataset repo ``repo_id`` in one commit and returns the commit URL.
    The quality report is reused from ``report_dir`` (default ``<run>/report``) when it was made from
    this run folder with the same settings, else written there first.
    """
    if repo_id is not None and not _REPO_ID.match(repo_id):
        raise ConfigError(f"--to-hub {repo_id!r} is not allowed: expected OWNER/NAME")
    if dry_run_dir is None and repo_id is None:
        raise ConfigError("nothing to do: give --to-hub OWNER/NAME, or --dry-run DIR to write the folder only")
    if tag is not None and dry_run_dir is None and not tag.strip():
        raise ConfigError("--tag must not be empty")
    build = dict(repo_id=repo_id, with_rejected=with_rejected, validation_fraction=validation_fraction,
                 split_by=split_by, max_rows_per_shard=max_rows_per_shard, embedding_model=embedding_model,
                 report_dir=report_dir)

    if dry_run_dir is not None:
        dest = Path(dry_run_dir)
        _prepare_dry_run_dir(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            build_dataset_folder(run_dir, staging, **build)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("wrote %s (dry run: nothing uploaded)", dest)
        return dest

    secret = resolve_token(token)  # before any work: a missing token fails fast
    if api is None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise ConfigError("HF_HUB_OFFLINE is set: unset it to push, or use --dry-run DIR")
    with tempfile.TemporaryDirectory(prefix="distill-export-") as tmp:
        folder = Path(tmp) / "dataset"
        folder.mkdir()
        build_dataset_folder(run_dir, folder, **build)
        cfg_name = Path(run_dir).name
        url = push_folder(folder, repo_id, token=secret, private=private, tag=tag,
                          commit_message=f"distill export of run {cfg_name}", api=api, attempts=attempts,
                          backoff_s=backoff_s, sleep=sleep)
    log.info("pushed to %s", url)
    return url
