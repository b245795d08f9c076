"""Small runtime helpers shared by stages: device choice, torch threads, quiet safetensors saves, peak memory."""

from __future__ import annotations

import contextlib
import inspect
import resource
import sys
from pathlib import Path


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@contextlib.contextmanager
def torch_threads(n: int):
    """torch uses ``n`` intra-op threads inside the block; the caller's count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save_safetensors(model, out: str | Path) -> None:
    """``model.save_pretrained(out)`` as safetensors, without transformers' per-save progress bar
    (students save every epoch: the bar would fill the logs)."""
    from transformers.utils import logging as hf_logging

    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out), **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
