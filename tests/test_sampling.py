"""Row-seeded sampling: exact top-p samples whose randomness belongs to the row, not the batch."""

import numpy as np
import pytest
import torch

from distill.sampling import RowSampler, hash_uniform


def test_hash_uniform_is_deterministic_and_uniform():
    seeds = torch.tensor([1, 2, 3], dtype=torch.int64)
    u = hash_uniform(seeds, step=0, vocab=50_000)
    assert torch.equal(u, hash_uniform(seeds, step=0, vocab=50_000))
    assert not torch.equal(u, hash_uniform(seeds, step=1, vocab=50_000))
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert not torch.equal(u[0], u[1])  # another seed, another stream
    # a row's numbers do not depend on its batch-mates
    assert torch.equal(hash_uniform(seeds[1:2], 0, 50_000)[0], u[1])


def test_gumbel_argmax_samples_the_top_p_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -3.0])
    n = 20_000
    seeds = torch.arange(n, dtype=torch.int64) * 7919 + 13
    proc = RowSampler(seeds, prompt_len=0, temperature=1.0, top_p=1.0)
    picks = proc(torch.zeros(n, 0, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    freq = np.bincount(picks.numpy(), minlength=5) / n
    np.testing.assert_allclose(freq, logits.softmax(-1).numpy(), atol=0.012)
    # probabilities .577 .212 .129 .078 .004: top-p 0.75 keeps the smallest set reaching 0.75, tokens 0 and 1
    proc = RowSampler(seeds, prompt_len=0, temperature=1.0, top_p=0.75)
    picks = proc(torch.zeros(n, 0, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    assert set(picks.tolist()) == {0, 1}
    p = logits.softmax(-1)[:2]
    assert abs((picks == 0).float().mean().item() - (p[0] / p.sum()).item()) < 0.012


def test_banned_tokens_are_never_sampled():
    n = 2000
    seeds = torch.arange(n, dtype=torch.int64)
    proc = RowSampler(seeds, prompt_len=0, temperature=1.0, top_p=1.0, banned_ids=[0])
    picks = proc(torch.zeros(n, 0, dtype=torch.long), torch.tensor([5.0, 0.0, 0.0]).repeat(n, 1)).argmax(-1)
    assert 0 not in picks.tolist() and {1, 2} <= set(picks.tolist())


def test_teacher_samples_do_not_depend_on_the_batch():
    from distill.models import load_causal_lm, newline_token_ids
    from distill.sampling import sample
    from distill.text import has_complete_first_sentence

    model, tok = load_causal_lm("tiny-gpt2")
    prompts = ["(Reuters) --", "NAIROBI, Kenya (AP) -- The council met on Monday.", "(BBC) -- Police said",
               "(Reuters) --", "(Reuters) --"]
    seeds = [11, 22, 33, 11, 12]
    kw = dict(max_new_tokens=30, temperature=0.7, top_p=0.9, no_repeat_ngram_size=3,
              banned_ids=newline_token_ids(tok))
    together = sample(model, tok, prompts, seeds, **kw)
    alone = [sample(model, tok, [p], [s], **kw)[0] for p, s in zip(prompts, seeds)]
    reversed_ = sample(model, tok, prompts[::-1], seeds[::-1], **kw)[::-1]
    assert together == alone == reversed_
    assert together[0] == together[3]  # same prompt, same seed: the same sample
    assert together[0] != together[4]  # same prompt, another seed: another sample
    assert all("\n" not in t for t in together)
    # stopping at the first sentence gives a prefix of the unstopped sample
    stopped = sample(model, tok, prompts, seeds, stop=has_complete_first_sentence, **kw)
    for full, short in zip(together, stopped):
        assert full.startswith(short)


def test_split_on_oom_halves_until_rows_fit_and_keeps_order():
    from distill.sampling import split_on_oom

    calls = []

    def fn(rows, seeds, *, suffix):
        calls.append(len(rows))
        if len(rows) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"{r}-{s}{suffix}" for r, s in zip(rows, seeds)]

    rows, seeds = list("abcde"), [1, 2, 3, 4, 5]
    assert split_on_oom(fn, rows, seeds, suffix="!") == ["a-1!", "b-2!", "c-3!", "d-4!", "e-5!"]
    assert calls == [5, 2, 3, 1, 2]  # every row once, in order, after the splits

    def broken(rows, seeds):
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        split_on_oom(broken, rows, seeds)
