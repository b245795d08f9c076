"""The student: a seq2seq model (paper: T5-v1.1-large) fine-tuned on a round's kept pairs, both tasks.

Input format (one line of text; the target is the plain output sentence)::

    <task> length: <L> diversity: <D> text: <source>

* ``<task>`` is ``paraphrase`` or ``summarize`` (the ``summary`` task).
* ``<L>`` is the length bucket of ``len(target) / len(source)`` in characters (for a summary: its
  compression). ``LENGTH_EDGES = (0.5, 0.7, 0.9, 1.1, 1.3)``, a ratio lands in the bucket of the
  edges it reaches: 0 = below 0.5, 1 = [0.5, 0.7), 2 = [0.7, 0.9), 3 = [0.9, 1.1) (about the same
  length), 4 = [1.1, 1.3), 5 = 1.3 and above.
* ``<D>`` is the lexical-diversity bucket of the ROUGE-L F1 of source and target (``rouge-score``,
  as the diversity critic computes it); lower is more diverse. ``DIVERSITY_EDGES = (0.2, 0.4, 0.6)``:
  0 = below 0.2, 1 = [0.2, 0.4), 2 = [0.4, 0.6), 3 = 0.6 and above.
* Defaults when a user sets no code: paraphrase ``length: 3 diversity: 0`` (same length, most
  diverse); summary ``length: 1 diversity: 2`` (about 60% of the source, moderately abstractive).

Example: ``paraphrase length: 3 diversity: 0 text: The council approved the budget on Monday.``

The separator is ``text:`` rather than a symbol such as ``|``: T5's SentencePiece vocabulary lacks
some symbols (they encode to ``<unk>``) while ``text:`` is plain words.

Training (``train_student``): AdamW, linear warm-up then linear decay, gradient clipping at 1.0,
bf16 autocast on CUDA (never fp16: T5 overflows), fp32 on CPU. A step's loss is the summed token
cross-entropy of its batch divided by its number of target tokens (on Ray Train: summed over the
workers, so the gradient is that of one big batch). Batches are grouped by source length (sorted
inside chunks of 50 batches of a seeded permutation) and then shuffled with a seeded generator.
A batch that runs out of GPU memory is split into halves with gradient accumulation (never
skipped). The validation split is a hash of each pair's record id (the part of the id before the
first ``:``), so it is the same in every round and for every seed.

Checkpoint folder ``out_dir`` (complete once ``metrics.json`` is there)::

    model.safetensors config.json generation_config.json   the student (save_pretrained)
    tokenizer.json tokenizer_config.json ...               its tokenizer
    training_config.json   TrainConfig, init, seed, counts, the control-code definition
    train_metrics.json     what training measured (written by the rank-0 worker)
    eval_outputs.parquet   the student's outputs on the first eval_samples validation pairs
    metrics.json           train_loss, validation_loss, rougeL, critic_pass_rate, ... (last)
    last/                  resume state while training (weights, optimizer, scheduler, RNG,
                           step, epoch); written atomically, removed when metrics.json exists

Ray Train (``train_student_ray``): the same loop runs in every worker of a ``TorchTrainer``; each
worker takes every world_size-th batch of the same epoch order and gradients are all-reduced once
per step. Rank 0 writes ``out_dir`` directly, so ``out_dir`` must be a path every worker can read
and write: any path on a single node; on several nodes, shared storage (NFS and the like).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from distill.config import StudentGenConfig, TrainConfig
from distill.records import PAIR_COLUMNS
from distill.seeding import derive_seed

FORMAT_VERSION = 1
LENGTH_EDGES: tuple[float, ...] = (0.5, 0.7, 0.9, 1.1, 1.3)
DIVERSITY_EDGES: tuple[float, ...] = (0.2, 0.4, 0.6)
TASK_WORDS = {"paraphrase": "paraphrase", "summary": "summarize"}
SEPARATOR = "text:"
GROUP_BATCHES = 50  # length grouping: sort by source length inside chunks of this many batches
PAIRS_COLUMNS = ["id", "task", "source", "target", "length_ratio", "diversity_rougeL"]

# ---------------------------------------------------------------------------------------------
# control codes


def length_bucket(ratio: float) -> int:
    """The length code of a target/source character ratio (0 .. len(LENGTH_EDGES))."""
    r = float(ratio)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"length ratio must be a finite number >= 0, got {ratio!r}")
    return bisect.bisect_right(LENGTH_EDGES, r)


def diversity_bucket(rougeL: float) -> int:
    """The diversity code of a source/target ROUGE-L F1 (0 = most diverse .. len(DIVERSITY_EDGES))."""
    r = float(rougeL)
    if not math.isfinite(r) or not 0 <= r <= 1:
        raise ValueError(f"ROUGE-L F1 must be in [0, 1], got {rougeL!r}")
    return bisect.bisect_right(DIVERSITY_EDGES, r)


DEFAULT_CODES: dict[str, tuple[int, int]] = {
    "paraphrase": (length_bucket(1.0), 0),  # the same length, the most diverse bucket
    "summary": (length_bucket(0.6), diversity_bucket(0.5)),  # 60% of the source, moderately abstractive
}


def format_input(task: str, source: str, length: int | None = None, diversity: int | None = None) -> str:
    """The student's input: task word, length and diversity codes (None: the task's default), source."""
    if task not in TASK_WORDS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_WORDS)}")
    d_len, d_div = DEFAULT_CODES[task]
    length = d_len if length is None else int(length)
    diversity = d_div if diversity is None else int(diversity)
    if not 0 <= length <= len(LENGTH_EDGES):
        raise ValueError(f"length code must be in 0..{len(LENGTH_EDGES)}, got {length}")
    if not 0 <= diversity <= len(DIVERSITY_EDGES):
        raise ValueError(f"diversity code must be in 0..{len(DIVERSITY_EDGES)}, got {diversity}")
    return f"{TASK_WORDS[task]} length: {length} diversity: {diversity} {SEPARATOR} {' '.join(str(source).split())}"


def format_spec() -> dict:
    """The control-code definition stored with every checkpoint."""
    return {"version": FORMAT_VERSION, "template": "<task> length: <L> diversity: <D> text: <source>",
            "task_words": TASK_WORDS, "length_edges": list(LENGTH_EDGES),
            "diversity_edges": list(DIVERSITY_EDGES),
            "defaults": {t: {"length": l, "diversity": d} for t, (l, d) in DEFAULT_CODES.items()}}


# ---------------------------------------------------------------------------------------------
# data


def record_of(pair_id: str) -> str:
    """``p0000012-s03:paraphrase:4-7`` -> ``p0000012-s03``."""
    return str(pair_id).split(":", 1)[0]


def is_validation(record: str, fraction: float) -> bool:
    """A pure function of the record id: the same record is held out in every round and run."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(str(record).encode(), digest_size=8).digest(), "little")
    return h / 2.0**64 < fraction


_ROUGE = None


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two strings (rouge-score, default tokenizer, no stemming; symmetric)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"])
    return float(_ROUGE.score(str(a), str(b))["rougeL"].fmeasure)


def prepare_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Kept pairs -> sorted by id, with ``length_ratio`` / ``diversity_rougeL`` filled and ``input`` formatted."""
    missing = [c for c in ("id", "task", "source", "target") if c not in pairs.columns]
    if missing:
        raise KeyError(f"training pairs lack column(s) {', '.join(missing)}")
    df = pairs.reset_index(drop=True).copy()
    df["id"] = df["id"].astype(str)
    df = df.sort_values(["id", "task", "source", "target"], kind="stable").reset_index(drop=True)
    src, tgt = df["source"].astype(str), df["target"].astype(str)
    ratio = df["length_ratio"].astype(float) if "length_ratio" in df else pd.Series(np.nan, index=df.index)
    fill = ratio.isna()
    ratio[fill] = [len(t) / max(1, len(s)) for s, t in zip(src[fill], tgt[fill])]
    div = df["diversity_rougeL"].astype(float) if "diversity_rougeL" in df else pd.Series(np.nan, index=df.index)
    fill = div.isna()
    div[fill] = [rouge_l(s, t) for s, t in zip(src[fill], tgt[fill])]
    df["length_ratio"], df["diversity_rougeL"] = ratio, div
    df["input"] = [format_input(t, s, length_bucket(r), diversity_bucket(d))
                   for t, s, r, d in zip(df["task"], src, ratio, div)]
    return df


def split_pairs(pairs: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) of ``prepare_pairs(pairs)``, split by a hash of each pair's record id."""
    df = prepare_pairs(pairs)
    val = np.array([is_validation(record_of(i), fraction) for i in df["id"]], dtype=bool)
    return df[~val].reset_index(drop=True), df[val].reset_index(drop=True)


def _data_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for i, x, y in zip(df["id"], df["input"], df["target"]):
        h.update(f"{i}\x1f{x}\x1f{y}\x1e".encode())
    return h.hexdigest()


def epoch_batches(src_lens: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches (row indices): a seeded permutation, sorted by source length inside chunks of
    ``GROUP_BATCHES`` batches, cut into batches, batch order shuffled. A pure function of its arguments."""
    import torch

    n = len(src_lens)
    g = torch.Generator().manual_seed(derive_seed(seed, "train-order", epoch))
    perm = torch.randperm(n, generator=g).tolist()
    chunk = GROUP_BATCHES * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = sorted(perm[start:start + chunk], key=lambda i: (src_lens[i], i))
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


# ---------------------------------------------------------------------------------------------
# model helpers


def load_student(name_or_path: str | Path, *, device: str = "cpu", dtype: str = "auto",
                 trust_remote_code: bool = False):
    """(model, tokenizer) through ``distill.models.load_seq2seq`` (tiny-* names, Hub names, folders)."""
    from distill.models import load_seq2seq

    return load_seq2seq(str(name_or_path), device=device, dtype=dtype, trust_remote_code=trust_remote_code)


def _unwrap(model):
    return getattr(model, "module", model)


def save_model(model, tokenizer, out: Path) -> None:
    """save_pretrained (safetensors) of the model and its tokenizer into ``out``."""
    from distill.runtime import save_safetensors

    save_safetensors(_unwrap(model), out)
    tokenizer.save_pretrained(str(out))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x).__name__)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _autocast(device):
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)  # bf16, never fp16: T5 overflows in fp16
    return contextlib.nullcontext()


def _pad(seqs: list[list[int]], value: int, device):
    import torch

    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device)


def _batch_loss(model, src: list[list[int]], tgt: list[list[int]], pad_id: int, device):
    """Summed token cross-entropy (fp32) of one batch, and its number of target tokens."""
    import torch.nn.functional as F

    input_ids = _pad(src, pad_id, device)
    labels = _pad(tgt, -100, device)
    with _autocast(device):
        logits = model(input_ids=input_ids, attention_mask=(input_ids != pad_id).long(), labels=labels).logits
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")
    return loss, sum(len(t) for t in tgt)


def _lr_lambda(total: int):
    warmup = max(1, min(100, math.ceil(0.06 * total)))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


# ---------------------------------------------------------------------------------------------
# the training loop (in-process, or one Ray Train worker)


class _Dist:
    """Rank, world size and the few collectives the loop needs (no-ops in-process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    def sum_(self, t):
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_grads(self, params: list, bucket: int = 1 << 24) -> None:
        """All-reduce (sum) every parameter's gradient, flattened into buckets of ~``bucket`` elements."""
        if self.world == 1:
            return
        import torch

        grads = []
        for p in params:
            if p.grad is None:  # an idle worker (or an unused parameter) contributes zeros
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        i = 0
        while i < len(grads):
            j, n = i, 0
            while j < len(grads) and (n == 0 or n + grads[j].numel() <= bucket):
                n, j = n + grads[j].numel(), j + 1
            flat = self.sum_(torch.cat([g.reshape(-1) for g in grads[i:j]]))
            offset = 0
            for g in grads[i:j]:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            i = j

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _init_key(init: str, out_dir: Path) -> str:
    """``init`` as recorded: a local folder relative to ``out_dir`` (so a moved run folder still matches)."""
    p = Path(init)
    return os.path.relpath(p.resolve(), Path(out_dir).resolve()) if p.exists() else str(init)


def _fingerprint(cfg: TrainConfig, init: str, seed: int, world: int, train: pd.DataFrame, val: pd.DataFrame,
                 out_dir: Path) -> dict:
    return {"train": cfg.model_dump(mode="json"), "init": _init_key(init, out_dir), "seed": int(seed), "world_size": world,
            "train_pairs": len(train), "validation_pairs": len(val), "data_sha256": _data_digest(train),
            "format": format_spec()}


def _same_run(stored: dict, fp: dict) -> list[str]:
    keys = ("train", "init", "seed", "world_size", "train_pairs", "validation_pairs", "data_sha256")
    return [k for k in keys if stored.get(k) != fp.get(k)]


def _save_last(out_dir: Path, model, tokenizer, state: dict, rngs: list[dict]) -> None:
    """``out_dir/last`` atomically: written to a temporary folder, then renamed over the old one."""
    import torch

    tmp = out_dir / f".last-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    save_model(model, tokenizer, tmp)
    torch.save({**state, "rng": rngs}, tmp / "trainer_state.pt")
    last, old = out_dir / "last", out_dir / f".last-{uuid.uuid4().hex[:8]}.old"
    if last.exists():
        os.replace(last, old)
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


def _is_complete(out_dir: Path) -> bool:
    need = ("metrics.json", "training_config.json", "config.json", "model.safetensors", "tokenizer_config.json")
    return all((out_dir / n).is_file() for n in need)


class _Trainer:
    """Trains one student; rank 0 writes the checkpoint. Shared by ``train_student`` and the Ray workers."""

    def __init__(self, pairs: pd.DataFrame, cfg: TrainConfig, out_dir: Path, *, init: str, seed: int,
                 device, dist: _Dist, log: Callable[[str], Any] | None, save_every_steps: int | None,
                 prepare: Callable | None = None):
        self.cfg, self.out_dir, self.init, self.seed = cfg, Path(out_dir), str(init), int(seed)
        self.device, self.dist, self.prepare = device, dist, prepare
        self.log = log if (log is not None and dist.rank == 0) else (lambda msg: None)
        self.save_every = save_every_steps
        self.train, self.val = split_pairs(pairs, cfg.validation_fraction)
        if len(self.train) == 0:
            raise ValueError("no training pairs (all pairs were held out or the table is empty)")
        self.fp = _fingerprint(cfg, init, seed, dist.world, self.train, self.val, self.out_dir)
        self.micro: int | None = None  # largest micro-batch that fit (set after an OOM)

    # -- data ---------------------------------------------------------------------------------------
    def _tokenize(self, tok, df: pd.DataFrame) -> tuple[list[list[int]], list[list[int]]]:
        src = tok(list(df["input"]), truncation=True, max_length=self.cfg.max_source_tokens)["input_ids"]
        tgt = tok(list(df["target"].astype(str)), truncation=True, max_length=self.cfg.max_target_tokens)["input_ids"]
        return [list(s) for s in src], [list(t) for t in tgt]

    # -- one optimizer step ------------------------------------------------------------------------
    def _accumulate(self, model, rows: list[int], src, tgt, pad_id, scale: float) -> float:
        """Forward/backward of ``rows`` (split into micro-batches after an OOM); returns the summed loss."""
        import torch

        from distill.sampling import is_oom

        while True:
            size = self.micro or max(1, len(rows))
            parts = [rows[i:i + size] for i in range(0, len(rows), size)]
            total = 0.0
            try:
                for part in parts:
                    loss, _ = _batch_loss(model, [src[i] for i in part], [tgt[i] for i in part], pad_id, self.device)
                    (loss * scale).backward()
                    total += float(loss.detach())
                return total
            except Exception as exc:  # noqa: BLE001 - only OOM is handled
                if not is_oom(exc) or size <= 1:
                    raise
                for p in model.parameters():  # a failed backward may have left partial gradients
                    p.grad = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.micro = max(1, size // 2)
                self.log(f"out of memory with {size} pairs per forward pass: retrying the step with {self.micro}")

    def _validation_loss(self, model, tok) -> float | None:
        import torch

        if len(self.val) == 0:
            return None
        src, tgt = self._tokenize(tok, self.val)
        order = sorted(range(len(src)), key=lambda i: (len(src[i]), i))
        bs = self.cfg.batch_size
        total, tokens = 0.0, 0
        model.eval()
        with torch.no_grad():
            for j in range(0, len(order), bs):
                rows = order[j:j + bs]
                loss, n = _batch_loss(model, [src[i] for i in rows], [tgt[i] for i in rows], tok.pad_token_id,
                                      self.device)
                total, tokens = total + float(loss), tokens + n
        return total / max(1, tokens)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict | None:
        """Trains (resuming from ``last/``); rank 0 writes the checkpoint and returns the training metrics.

        On CPU, torch uses ``train.resources.num_cpus`` threads here, locally as on a Ray Train worker:
        a float sum's order depends on the thread count, so the same config gives the same student."""
        from distill.runtime import torch_threads

        if self.device.type != "cpu":
            return self._run()
        with torch_threads(self.cfg.resources.num_cpus):
            return self._run()

    def _run(self) -> dict | None:
        import torch

        cfg, out, dist = self.cfg, self.out_dir, self.dist
        out.mkdir(parents=True, exist_ok=True)
        last = out / "last"
        state_path = last / "trainer_state.pt"
        resume = state_path.is_file()
        state: dict = {}
        if resume:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            diff = _same_run(state["fingerprint"], self.fp)
            if diff:
                raise ValueError(f"{last} was written by another training run (differs in: {', '.join(diff)}); "
                                 f"use another output folder or delete {last}")
        torch.manual_seed(derive_seed(self.seed, "train", dist.rank))
        model, tok = load_student(last if resume else self.init, device="cpu", dtype="float32",
                                  trust_remote_code=cfg.student.trust_remote_code)
        model = self.prepare(model) if self.prepare is not None else model.to(self.device)
        core = _unwrap(model)  # forward through the bare module: gradients are all-reduced by hand, once a step
        pad_id = tok.pad_token_id
        src, tgt = self._tokenize(tok, self.train)
        n_batches = math.ceil(len(src) / cfg.batch_size)
        per_epoch = math.ceil(n_batches / dist.world)
        total_steps = per_epoch * cfg.epochs
        params = [p for p in core.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps))
        step, epoch_sums, seconds = 0, [], 0.0
        if resume:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, epoch_sums, seconds = state["step"], state["epoch_sums"], state["seconds"]
            _set_rng_state(state["rng"][dist.rank])
            self.micro = state.get("micro")
            self.log(f"resuming from {last} at step {step}/{total_steps}")
        t0 = time.perf_counter()

        def save() -> None:
            rngs = dist.gather(_rng_state())
            if dist.rank == 0:
                _save_last(out, core, tok, {"fingerprint": self.fp, "optimizer": opt.state_dict(),
                                            "scheduler": sched.state_dict(), "step": step,
                                            "epoch_sums": epoch_sums, "micro": self.micro,
                                            "seconds": seconds + time.perf_counter() - t0}, rngs)
            dist.barrier()
            self.log(f"saved {last} at step {step}")

        core.train()
        log_every = max(1, per_epoch // 10)
        src_lens = [len(s) for s in src]
        batches, batches_epoch = [], -1
        while step < total_steps:
            epoch, in_epoch = divmod(step, per_epoch)
            if len(epoch_sums) <= epoch:
                epoch_sums.append([0.0, 0])
            if batches_epoch != epoch:
                batches, batches_epoch = epoch_batches(src_lens, cfg.batch_size, self.seed, epoch), epoch
            idx = in_epoch * dist.world + dist.rank
            rows = batches[idx] if idx < len(batches) else []  # the last step may leave a worker idle
            n_tok = dist.sum_(torch.tensor([sum(len(tgt[i]) for i in rows)], dtype=torch.float64,
                                           device=self.device)).item()
            loss_sum = self._accumulate(core, rows, src, tgt, pad_id, 1.0 / n_tok) if rows else 0.0
            dist.sum_grads(params)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step_loss = dist.sum_(torch.tensor([loss_sum], dtype=torch.float64, device=self.device)).item()
            epoch_sums[epoch][0] += step_loss
            epoch_sums[epoch][1] += int(n_tok)
            step += 1
            if step % log_every == 0 or step == total_steps:
                self.log(f"epoch {epoch} step {step}/{total_steps} loss {step_loss / n_tok:.4f}")
            if step % per_epoch == 0 or (self.save_every and step % self.save_every == 0):
                save()
        seconds += time.perf_counter() - t0
        if dist.rank != 0:
            return None

        core.eval()
        save_model(core, tok, out)
        _write_json(out / "training_config.json", {**self.fp, "steps": total_steps, "epochs": cfg.epochs})
        losses = [s / max(1, n) for s, n in epoch_sums]
        metrics = {"train_loss": losses[-1], "train_loss_by_epoch": losses,
                   "validation_loss": _finite(self._validation_loss(core, tok)),
                   "train_pairs": len(self.train), "validation_pairs": len(self.val), "steps": total_steps,
                   "seconds": round(seconds, 3), "world_size": dist.world}
        outputs = generate_eval(core, tok, self.val, n=cfg.eval_samples, seed=self.seed,
                                max_source_tokens=cfg.max_source_tokens, max_new_tokens=cfg.max_target_tokens,
                                generator=str(out))
        outputs.to_parquet(out / "eval_outputs.parquet", index=False)
        _write_json(out / "train_metrics.json", metrics)
        self.log(f"trained {len(self.train)} pairs in {total_steps} steps, {seconds:.1f} s: "
                 f"train loss {metrics['train_loss']:.4f}, validation loss {metrics['validation_loss']}")
        return metrics


def _finish(out_dir: Path, critique=None) -> dict:
    """Scores the stored eval outputs (ROUGE-L, critics), writes metrics.json and drops ``last/``."""
    metrics = json.loads((out_dir / "train_metrics.json").read_text())
    outputs = pd.read_parquet(out_dir / "eval_outputs.parquet")
    metrics.update(score_eval(outputs, critique=critique))
    _write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(out_dir / "last", ignore_errors=True)
    for stale in out_dir.glob(".last-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return metrics


def _stored(out_dir: Path, cfg: TrainConfig, init: str, seed: int, world: int, pairs: pd.DataFrame) -> dict | None:
    """The stored metrics when ``out_dir`` holds a complete checkpoint of this very training run."""
    if not _is_complete(out_dir):
        return None
    stored = json.loads((out_dir / "training_config.json").read_text())
    train, val = split_pairs(pairs, cfg.validation_fraction)
    diff = _same_run(stored, _fingerprint(cfg, init, seed, world, train, val, Path(out_dir)))
    if diff:
        raise ValueError(f"{out_dir} holds a student trained with other settings (differs in: {', '.join(diff)}); "
                         "use another output folder")
    return json.loads((out_dir / "metrics.json").read_text())


def train_student(pairs: pd.DataFrame, cfg: TrainConfig, out_dir: str | Path, *, init: str, seed: int,
                  device: str = "auto", log: Callable[[str], Any] | None = None, critique=None,
                  save_every_steps: int | None = 1000) -> dict:
    """Fine-tunes the seq2seq model ``init`` on ``pairs`` in this process; ``out_dir`` is the checkpoint.

    Resumes from ``out_dir/last`` (saved at every epoch end and every ``save_every_steps`` steps);
    returns the stored metrics without training when ``out_dir`` is already complete.
    ``critique`` (a CritiqueStage-like callable) adds ``critic_pass_rate`` to the metrics.
    """
    from distill.runtime import pick_device

    out_dir = Path(out_dir).resolve()
    done = _stored(out_dir, cfg, init, seed, 1, pairs)
    if done is not None:
        return done
    import torch

    dev = torch.device(pick_device(cfg.student.device if device == "auto" else device))
    trainer = _Trainer(pairs, cfg, out_dir, init=init, seed=seed, device=dev, dist=_Dist(), log=log,
                       save_every_steps=save_every_steps)
    trainer.run()
    return _finish(out_dir, critique)


# ---------------------------------------------------------------------------------------------
# Ray Train


def _ray_worker(config: dict) -> None:
    """The per-worker function of ``TorchTrainer``: the same loop, this worker's share of every step."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    trainer = _Trainer(config["pairs"], TrainConfig.model_validate(config["cfg"]), Path(config["out_dir"]),
                       init=config["init"], seed=config["seed"], device=ray.train.torch.get_device(),
                       dist=_Dist(ctx.get_world_rank(), ctx.get_world_size()), log=print,
                       save_every_steps=config["save_every_steps"], prepare=ray.train.torch.prepare_model)
    trainer.run()


def train_student_ray(pairs: pd.DataFrame, cfg: TrainConfig, out_dir: str | Path, *, init: str, seed: int,
                      critique=None, save_every_steps: int | None = 1000, storage_path: str | Path | None = None) -> dict:
    """``train_student`` on Ray Train: ``cfg.resources.concurrency`` data-parallel workers (a ``TorchTrainer``).

    Needs a running Ray (``ray.init``). Rank 0 writes ``out_dir`` itself, so ``out_dir`` must be reachable
    from every worker (single node: any local path; several nodes: shared storage). Ray Train's own run
    folder goes to ``storage_path`` (default ``out_dir/ray``, removed on success). The critics (if any)
    score the eval outputs here, in the driver.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    out_dir = Path(out_dir).resolve()
    world = cfg.resources.concurrency
    done = _stored(out_dir, cfg, init, seed, world, pairs)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    use_gpu = cfg.resources.num_gpus > 0
    resources = {"CPU": cfg.resources.num_cpus}
    if use_gpu:
        resources["GPU"] = cfg.resources.num_gpus
    storage = Path(storage_path).resolve() if storage_path else out_dir / "ray"
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"pairs": pairs.reset_index(drop=True), "cfg": cfg.model_dump(mode="json"),
                           "out_dir": str(out_dir), "init": str(init), "seed": int(seed),
                           "save_every_steps": save_every_steps},
        scaling_config=ray.train.ScalingConfig(num_workers=world, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=f"train-{out_dir.name}", storage_path=str(storage)),
    )
    trainer.fit()
    metrics = _finish(out_dir, critique)
    if storage_path is None:
        shutil.rmtree(storage, ignore_errors=True)
    return metrics


# ---------------------------------------------------------------------------------------------
# evaluation


def generate_eval(model, tokenizer, val: pd.DataFrame, *, n: int, seed: int, max_source_tokens: int = 128,
                  max_new_tokens: int = 128, gen: StudentGenConfig | None = None, generator: str = "",
                  batch_size: int = 32) -> pd.DataFrame:
    """The student's output for the first ``n`` validation pairs (by id), each with its own control codes.

    Greedy unless ``gen`` is given (then row-seeded sampling with its temperature / top-p / no-repeat).
    """
    from distill.stages.student import sample_seq2seq_split_on_oom

    df = val if "input" in val else prepare_pairs(val)
    df = df.sort_values("id", kind="stable").head(max(0, n)).reset_index(drop=True)
    outputs: list[str] = []
    for j in range(0, len(df), batch_size):
        part = df.iloc[j:j + batch_size]
        outputs += sample_seq2seq_split_on_oom(
            model, tokenizer, list(part["input"]), [derive_seed(seed, "eval", i) for i in part["id"]],
            max_new_tokens=gen.max_new_tokens if gen else max_new_tokens,
            temperature=gen.temperature if gen else 1.0, top_p=gen.top_p if gen else 1.0,
            no_repeat_ngram_size=gen.no_repeat_ngram_size if gen else 0, greedy=gen is None,
            max_source_tokens=max_source_tokens)
    context = df["context"].astype(str) if "context" in df else pd.Series([""] * len(df))
    return pd.DataFrame({"id": df["id"].astype(str), "task": df["task"].astype(str),
                         "source": df["source"].astype(str), "target": df["target"].astype(str),
                         "input": df["input"].astype(str), "output": outputs, "context": list(context),
                         "generator": generator})


def score_eval(outputs: pd.DataFrame, critique=None) -> dict:
    """``rougeL``: mean ROUGE-L F1 of output vs reference; ``critic_pass_rate`` when ``critique`` is given."""
    n = len(outputs)
    result: dict = {"eval_pairs": n, "rougeL": None}
    if n:
        scores = [rouge_l(t, o) for t, o in zip(outputs["target"], outputs["output"])]
        result["rougeL"] = float(np.mean(scores))
        for task in sorted(outputs["task"].unique()):
            m = (outputs["task"] == task).to_numpy()
            result[f"rougeL_{task}"] = float(np.mean(np.asarray(scores)[m]))
    if critique is not None:
        result["critic_pass_rate"] = None
        if n:
            ids = outputs["id"].astype(str)
            pairs = pd.DataFrame({
                "pair_id": [f"{i}:eval" for i in ids], "record_id": [f"{i}:eval" for i in ids],  # one pair per "record": no cross-row dedup
                "task": outputs["task"], "source": outputs["source"], "target": outputs["output"],
                "source_idx": 0, "target_idx": 1, "context": outputs["context"], "round": -1,
                "generator": outputs["generator"]})[PAIR_COLUMNS]
            judged = critique(pairs)
            result["critic_pass_rate"] = float((judged["reject"].astype(str) == "").mean())
    return result


def evaluate(checkpoint_dir: str | Path, val_pairs: pd.DataFrame, *, critique=None, n: int = 64, seed: int = 0,
             device: str = "auto", gen: StudentGenConfig | None = None, max_source_tokens: int = 128,
             max_new_tokens: int = 128) -> dict:
    """Loads the student at ``checkpoint_dir`` and scores it on up to ``n`` validation pairs (first by id):
    ``rougeL`` (mean F1 of output vs reference target) and, with ``critique``, ``critic_pass_rate``."""
    from distill.runtime import pick_device

    model, tok = load_student(checkpoint_dir, device=pick_device(device))
    model.eval()
    outputs = generate_eval(model, tok, val_pairs, n=n, seed=seed, max_source_tokens=max_source_tokens,
                            max_new_tokens=max_new_tokens, gen=gen, generator=str(checkpoint_dir))
    return score_eval(outputs, critique=critique)
