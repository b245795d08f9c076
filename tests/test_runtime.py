"""distill.runtime: thread pinning that restores, quiet safetensors saves."""

import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.utils import logging as hf_logging

from distill.runtime import save_safetensors, torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    try:
        with torch_threads(0.5):  # a fractional Ray num_cpus still means one thread
            assert torch.get_num_threads() == 1
            raise KeyError("inside")
    except KeyError:
        pass
    assert torch.get_num_threads() == before


def test_save_safetensors_is_quiet_and_restores_progress_bars(tmp_path, capfd):
    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0))
    assert hf_logging.is_progress_bar_enabled()
    save_safetensors(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file() and not list((tmp_path / "m").glob("*.bin"))
    assert "Writing model shards" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is back
