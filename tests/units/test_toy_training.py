"""The toy task suite and the training script: data, masks, export (fast, no server)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from sglang_llada.toy import tasks
from sglang_llada.toy.train import (
    BLOCK,
    Encoder,
    TrainConfig,
    answer_spans,
    ar_batch,
    diffusion_batch,
    train,
)


@pytest.fixture(scope="module")
def enc() -> Encoder:
    return Encoder()


def test_heldout_is_balanced_deterministic_and_disjoint_from_training() -> None:
    held = tasks.heldout_split()
    assert len(held) == tasks.HELDOUT_PER_TASK * len(tasks.TASK_NAMES)
    assert held == tasks.heldout_split()
    counts = {t: sum(e.task == t for e in held) for t in tasks.TASK_NAMES}
    assert set(counts.values()) == {tasks.HELDOUT_PER_TASK}
    prompts = {e.prompt for e in held}
    assert len(prompts) == len(held)
    train = list(itertools.islice(tasks.train_stream(0), 3000))
    assert not prompts & {e.prompt for e in train}
    assert train[:50] == list(itertools.islice(tasks.train_stream(0), 50))


def _assert_arithmetic_is_right(ex: tasks.Example) -> None:
    a, b = ex.prompt.split(": ", 1)[1].split("+" if ex.task == "add" else "-")
    assert len(a) == len(b) == tasks.DIGITS  # fixed width, zero-padded
    want = int(a) + int(b) if ex.task == "add" else int(a) - int(b)
    assert want >= 0 and int(ex.answer) == want
    assert len(ex.answer) == tasks.DIGITS + (ex.task == "add")


def test_answers_are_right() -> None:
    for ex in tasks.heldout_split():
        body = ex.prompt.split(": ", 1)[1]
        if ex.task in ("add", "sub"):
            _assert_arithmetic_is_right(ex)
        else:
            assert len(body) == tasks.TEXT_LEN and body == body.strip()
            want = {"copy": body, "upper": body.upper(), "lower": body.lower()}[ex.task]
            assert ex.answer == want
    first = tasks.heldout_split()[0]
    assert tasks.is_correct(first, f"  {first.answer}\n")
    assert not tasks.is_correct(first, first.answer + "x")


def test_training_arithmetic_has_zeroed_digits_and_heldout_does_not() -> None:
    """A share of training pairs has digits zeroed (the alignment curriculum); the held-out split
    draws every digit uniformly. Both keep the fixed zero-padded layout and right answers."""

    def zero_share(examples: list[tasks.Example]) -> float:
        digits = "".join(e.prompt.split(": ", 1)[1].replace("+", "").replace("-", "") for e in examples)
        return digits.count("0") / len(digits)

    train = [e for e in itertools.islice(tasks.train_stream(0), 6000) if e.task in ("add", "sub")]
    held = [e for e in tasks.heldout_split() if e.task in ("add", "sub")]
    # P(digit == 0): 0.1 when uniform; share * (zero_p + (1 - zero_p) * 0.1) + (1 - share) * 0.1.
    p, z = tasks.ARITH_SPARSE_SHARE, tasks.ARITH_ZERO_P
    want = p * (z + (1 - z) * 0.1) + (1 - p) * 0.1
    assert len(train) > 1000 and abs(zero_share(train) - want) < 0.03
    assert abs(zero_share(held) - 0.1) < 0.04
    for ex in train[:500]:
        _assert_arithmetic_is_right(ex)


def test_answers_span_one_to_four_blocks_at_fixed_offsets(enc: Encoder) -> None:
    """Arithmetic answers fit one block, text answers span four; within a task every prompt has
    the same length (fixed layout), and each character is one token."""
    spans, lengths = {}, {}
    for ex in tasks.heldout_split():
        P = len(enc.prompt_ids(ex))
        end = P + len(enc.answer_ids(ex))
        spans.setdefault(ex.task, set()).add(-(-end // BLOCK) - P // BLOCK)
        lengths.setdefault(ex.task, set()).add(P)
        assert len(enc.answer_ids(ex)) == len(ex.answer) + 1  # + <|endoftext|>
    assert spans == {"copy": {4}, "upper": {4}, "lower": {4}, "add": {1}, "sub": {1}}
    assert all(len(v) == 1 for v in lengths.values())
    # The 12 template tokens plus one token per character of the user message.
    assert lengths["add"] == {12 + len("Add: 123+456")}


def test_training_batches_fill_a_token_budget_by_family(enc: Encoder) -> None:
    from sglang_llada.toy.train import batch_sizes, diffusion_row_tokens

    sizes = batch_sizes(enc, TrainConfig())
    assert sizes == {"text": 16, "arith": 144}  # 4608 tokens: 16 rows of 288, 144 of 32
    batches = list(itertools.islice(tasks.train_batches(0, sizes), 20))
    for b in batches:
        fams = {f for f, names in tasks.FAMILIES.items() for e in b if e.task in names}
        assert len(fams) == 1 and len(b) == sizes[fams.pop()]
        rows = {diffusion_row_tokens(len(enc.prompt_ids(e)), len(enc.answer_ids(e))) for e in b}
        assert len(rows) == 1  # no padding
    assert {len(b) for b in batches} == {16, 144}


def test_training_draws_tasks_by_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRAIN_TASK_WEIGHT sets how often each task of a family is drawn. Unweighted is uniform, and
    a weight draws exactly as repeating the task in its family would (one rng.choice per example),
    so the shipped (unweighted) stream is the one its checkpoint was trained on."""

    def stream(weights: dict[str, int]) -> list[str]:
        monkeypatch.setattr(tasks, "TRAIN_TASK_WEIGHT", weights)
        batches = itertools.islice(tasks.train_batches(0, {"text": 1, "arith": 200}), 40)
        return [e.task for b in batches for e in b]

    assert tasks.TRAIN_TASK_WEIGHT == {}
    even, weighted = stream({}), stream({"sub": 3})
    assert abs(even.count("sub") / even.count("add") - 1.0) < 0.15
    assert abs(weighted.count("sub") / weighted.count("add") - 3.0) < 0.4
    monkeypatch.setitem(tasks.FAMILIES, "arith", ("add", "sub", "sub", "sub"))
    assert stream({}) == weighted


def test_diffusion_batch_masks(enc: Encoder) -> None:
    """Noisy blocks see clean earlier blocks and themselves; prompts are never masked."""
    exs = list(itertools.islice(tasks.train_stream(3), 4))
    samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in exs]
    b = diffusion_batch(samples, enc, torch.Generator().manual_seed(0))
    for r, (prompt, answer) in enumerate(samples):
        P = len(prompt)
        N = -(-(P + len(answer)) // BLOCK) * BLOCK
        clean = N - BLOCK
        pos = b.positions[r]
        noisy_idx = torch.arange(clean, clean + N - (P // BLOCK) * BLOCK)
        assert pos[:clean].tolist() == list(range(clean))
        assert pos[noisy_idx].tolist() == list(range((P // BLOCK) * BLOCK, N))
        masked = b.ids[r, noisy_idx] == enc.mask
        assert masked.any()
        assert not masked[pos[noisy_idx] < P].any(), "a prompt position was masked"
        assert (b.targets[r, noisy_idx][masked] != -100).all()
        assert (b.weights[r, noisy_idx][masked] >= 1.0).all()
        for q in noisy_idx.tolist():
            keys = b.allowed[r, q].nonzero().flatten()
            qb = int(pos[q]) // BLOCK
            for k in keys.tolist():
                kb = int(pos[k]) // BLOCK
                assert (k < clean and kb < qb) or (k >= clean and kb == qb)
        # The clean copy is block-causal and carries no loss.
        assert (b.targets[r, :clean] == -100).all()
        q = clean - 1
        assert b.allowed[r, q, :clean].sum() == clean


def test_ar_batch_is_causal_next_token(enc: Encoder) -> None:
    ex = next(tasks.train_stream(1))
    prompt, answer = enc.prompt_ids(ex), enc.answer_ids(ex)
    b = ar_batch([(prompt, answer)], enc)
    tgt = b.targets[0]
    assert tgt[tgt != -100].tolist() == answer
    assert b.allowed[0].equal(torch.ones_like(b.allowed[0]).tril())


@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_training_is_seeded_and_exports_a_loadable_checkpoint(objective: str, tmp_path: Path) -> None:
    """Two 3-step runs give the same bytes; the export loads into the independent reference."""
    from safetensors.torch import load_file

    from sglang_llada.testing.reference_llada2 import load_reference

    cfg = TrainConfig(objective=objective, steps=3, batch_size=4, threads=1)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    if objective == "ar":
        assert config["architectures"] == ["BailingMoeV2ForCausalLM"]
        assert (tmp_path / "a" / "configuration_bailing_moe_v2.py").exists()
        config = dict(config, architectures=["LLaDA2MoeModelLM"])
        (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    load_reference(tmp_path / "a")  # strict: every tensor present, named and shaped right


def test_training_model_matches_the_reference_architecture(tmp_path: Path) -> None:
    """The module we train, exported and loaded back, computes the reference logits: its
    parameters are the checkpoint's tensors, and its batched forward (the shared one) gives the
    reference's one-sequence logits."""
    from sglang_llada.testing.reference_llada2 import block_causal_mask, load_reference
    from sglang_llada.toy.torch_model import ToyLLaDA2
    from sglang_llada.toy.train import arch_config

    torch.manual_seed(0)
    model = ToyLLaDA2(arch_config("diffusion"))
    with torch.no_grad():  # non-trivial norms and expert biases, so each must be wired right
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        biases = [b for name, b in model.named_buffers() if name.endswith("gate.expert_bias")]
        assert len(biases) == model.cfg["num_hidden_layers"] - model.cfg["first_k_dense_replace"]
        for bias in biases:
            bias.normal_(0, 0.1)
    from sglang_llada.toy.checkpoint import write_checkpoint

    write_checkpoint(tmp_path, model.cfg, model.export_state())
    ref = load_reference(tmp_path)
    ids = torch.randint(0, 256, (75,))
    T = ids.shape[0]
    with torch.no_grad():
        ours = model(ids[None], torch.arange(T)[None], block_causal_mask(T, BLOCK)[None])[0]
    torch.testing.assert_close(ours, ref.forward(ids, BLOCK), rtol=1e-4, atol=1e-4)


# --- the general recipe: inputs of any length, multi-turn chats, the JSON task ---------------------


def _right_answer(ex: tasks.Example) -> str:
    """The answer recomputed from the prompt alone."""
    kind, body = ex.prompt.split(": ", 1)
    if kind in ("Copy", "Upper", "Lower"):
        return {"Copy": body, "Upper": body.upper(), "Lower": body.lower()}[kind]
    op = "+" if "+" in body else "-"
    a, b = (int(x) for x in body.split(op))
    value = a + b if op == "+" else a - b
    digits = f"{value:0{tasks.DIGITS + (op == '+')}d}"
    if kind == "JSON":
        return json.dumps({"op": "add" if op == "+" else "sub", "result": digits})
    return digits


def test_general_splits_are_deterministic_distinct_and_right() -> None:
    splits = tasks.general_splits()
    assert splits == tasks.general_splits()
    assert set(splits) | {"heldout", "heldout-small", "multi", "help"} == set(tasks.SPLITS)
    for name, examples in splits.items():
        assert len({(e.history, e.prompt) for e in examples}) == len(examples), name
        for ex in [*examples, *(tasks.Example("", u, a) for e in examples for u, a in e.history)]:
            assert ex.answer == _right_answer(ex), (name, ex)
    short = [len(e.answer) for e in splits["short"]]
    assert min(short) == 1 and max(short) <= 12
    varlen = [len(e.answer) for e in splits["varlen"]]
    assert min(varlen) < 13 and max(varlen) > 60
    assert any(c.isdigit() for e in splits["varlen"] for c in e.answer)  # words and digits
    assert {e.task for e in splits["multiturn"]} == set(tasks.GENERAL_TASKS)
    assert all(1 <= len(e.history) <= 2 for e in splits["multiturn"])
    assert {json.loads(e.answer)["op"] for e in splits["json"]} == {"add", "sub"}


def test_json_answers_follow_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for ex in tasks.split("json"):
        jsonschema.validate(json.loads(ex.answer), tasks.JSON_SCHEMA)


def test_multiturn_examples_render_every_turn(enc: Encoder) -> None:
    ex = tasks.split("multiturn")[0]
    text = enc.tok.decode(enc.prompt_ids(ex))
    for user, assistant in ex.history:
        assert user in text and assistant in text
    assert text.rstrip().endswith("<role>ASSISTANT</role>") and text.index(ex.prompt) > text.index(ex.history[-1][1])


def test_general_batches_hold_no_heldout_prompt_and_follow_the_mix(enc: Encoder) -> None:
    cfg = TrainConfig(recipe="general")
    # multi / help are the multi recipe's splits (there, a short text input gets the help reply)
    held = {e.prompt for name in tasks.SPLITS if name not in ("multi", "help") for e in tasks.split(name)}
    batches = list(itertools.islice(tasks.general_train_batches(0, lambda e: len(e.answer) + 8, cfg.batch_tokens), 300))
    assert batches[:5] == list(itertools.islice(tasks.general_train_batches(0, lambda e: len(e.answer) + 8, cfg.batch_tokens), 5))
    families = []
    for batch in batches:
        assert not held & {e.prompt for e in batch}
        chat = [bool(e.history) for e in batch]
        assert all(chat) or not any(chat)  # chat examples come in their own batches
        families.append("chat" if chat[0] else {"add": "arith", "sub": "arith"}.get(batch[0].task, batch[0].task))
        assert len(batch) * max(len(e.answer) + 8 for e in batch) >= cfg.batch_tokens
    share = {f: families.count(f) / len(families) for f in ("copy", "upper", "lower", "arith", "json", "chat")}
    assert abs(share["arith"] - tasks.GENERAL_MIX["arith"]) < 0.1 and abs(share["chat"] - tasks.GENERAL_MIX["chat"]) < 0.08


def test_t2t_stream_corrupts_unmasked_answer_positions_and_targets_every_one(enc: Encoder) -> None:
    exs = tasks.split("varlen")[:6]
    samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in exs]
    plain = diffusion_batch(samples, enc, torch.Generator().manual_seed(0))
    edit = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), t2t=0.6)
    corrupted = 0
    for r, (prompt, answer) in enumerate(samples):
        P = len(prompt)
        N = -(-(P + len(answer)) // BLOCK) * BLOCK
        clean = N - BLOCK
        pos = edit.positions[r]
        answer_idx = [i for i in range(clean, edit.ids.shape[1]) if P <= int(pos[i]) < N and i - clean < N - (P // BLOCK) * BLOCK]
        full = prompt + answer + [enc.eos] * (N - P - len(answer))
        for i in answer_idx:
            true = full[int(pos[i])]
            assert int(edit.targets[r, i]) == true  # every answer position has a loss: keep or restore
            if int(edit.ids[r, i]) not in (enc.mask, true):
                corrupted += 1
                assert int(edit.ids[r, i]) in enc.confusable.get(true, enc.answer_alphabet) and float(edit.weights[r, i]) == 1.0
        masked = edit.ids[r] == enc.mask
        assert masked.any() and (edit.weights[r][masked] >= 1.0).all()
    assert corrupted > 0
    # Off, the stream draws nothing: the batch is the one the shipped toy was trained on.
    again = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), t2t=0.0)
    assert torch.equal(again.ids, plain.ids) and torch.equal(again.targets, plain.targets)


def test_t2t_mix_writes_corrupted_positions_from_another_valid_answer(enc: Encoder) -> None:
    """`--t2t-mix`: a corrupted multi-answer position holds the sibling answer's token at the same
    offset (a draft mixed from two answers); under `indel`, drafts start from such mixtures too."""
    import random as _random

    rng = _random.Random(0)
    exs = [tasks.fruits_example(rng, 8) for _ in range(12)]
    sibs = [tasks.sibling(e, rng) for e in exs]
    assert all(s is not None and s.task == "fruits" and s.prompt == e.prompt for s, e in zip(sibs, exs))
    samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in exs]
    sib_ids = [enc.answer_ids(s) for s in sibs if s is not None]
    b = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), t2t=0.9, siblings=list(sib_ids), mix=1.0)
    from_sibling = 0
    for r, (prompt, answer) in enumerate(samples):
        P = len(prompt)
        N = -(-(P + len(answer)) // BLOCK) * BLOCK
        full = prompt + answer + [enc.eos] * (N - P - len(answer))
        for i in range(N - BLOCK, b.ids.shape[1]):
            pos = int(b.positions[r, i])
            if not P <= pos < N or int(b.ids[r, i]) in (enc.mask, full[pos]):
                continue
            off = pos - P
            alt = sib_ids[r][off] if off < len(sib_ids[r]) else enc.eos
            assert int(b.targets[r, i]) == full[pos]
            if alt == full[pos]:  # the answers agree here: a token of its class, as without siblings
                assert int(b.ids[r, i]) in enc.confusable.get(full[pos], enc.answer_alphabet)
                continue
            assert int(b.ids[r, i]) == alt  # mix=1: always the sibling's
            from_sibling += 1
    assert from_sibling > 20
    assert tasks.sibling(tasks.split("heldout")[0], rng) is None  # one answer: no sibling
    DELETE, SPLIT = 300, 301
    drafts = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), indel=0.3, control=(DELETE, SPLIT),
                             siblings=list(sib_ids), mix=1.0)
    assert ((drafts.targets == DELETE) | (drafts.targets == SPLIT)).any()


def test_t2t_span_writes_one_picks_tail_from_another_answer(enc: Encoder) -> None:
    """`--t2t-span`: a draft holds a pick's tail from the sibling answer (`dark ` + `guava` from
    `pink guava`), every visible position of it, labelled with the true answer (`dark fig`); a
    `Fruits: N` span covers one name and its separator, after that name's first letter."""
    g = torch.Generator().manual_seed(0)
    pair, other = tasks.Example("pair", "Pair:", "dark fig"), tasks.Example("pair", "Pair:", "pink guava")
    answer, sib = enc.answer_ids(pair), enc.answer_ids(other)
    assert answer_spans(pair, answer, None, g, 1.0) is None  # no sibling: one answer
    assert answer_spans(pair, answer, sib, g, 0.0) is None
    cuts = set()
    for _ in range(40):
        span = answer_spans(pair, answer, sib, g, 1.0)
        assert span is not None and 1 <= span[0] < span[1] == len(sib)  # up to the longer answer's end
        cuts.add(span[0])
    assert len(cuts) > 5
    prompt = enc.prompt_ids(pair)
    P = len(prompt)
    b = diffusion_batch([(prompt, answer)], enc, g, t2t=1e-9, siblings=[sib], spans=[(4, len(sib))])
    seen = 0
    for i in range(b.ids.shape[1]):
        off = int(b.positions[0, i]) - P
        if not 0 <= off < 32 - P % 32 or int(b.ids[0, i]) == enc.mask or int(b.targets[0, i]) == -100:
            continue
        true = answer[off] if off < len(answer) else enc.eos
        assert int(b.targets[0, i]) == true
        assert int(b.ids[0, i]) == ((sib[off] if off < len(sib) else enc.eos) if off >= 4 else true)
        seen += 1
    assert seen > 0
    fruits = tasks.Example("fruits", "Fruits: 3", "fig, lemon, pear")
    fruit_ids = enc.answer_ids(fruits)
    names = {(0, 4), (5, 11), (12, 17)}  # [name start, separator or end-of-text + 1); the last: the longer end
    for _ in range(60):
        span = answer_spans(fruits, fruit_ids, enc.answer_ids(tasks.Example("fruits", "Fruits: 3", "kiwi, kiwi, kiwi")), g, 1.0)
        assert span is not None
        assert any(lo < span[0] < span[1] == hi for lo, hi in names), span
    for bad in ({"t2t_mix": 0.0}, {"t2t": 0.0}, {"generation": "2.2"}):  # refused, never ignored
        cfg = TrainConfig(**{"t2t": 0.3, "t2t_mix": 0.5, "t2t_span": 0.5, "steps": 1, **bad})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="--t2t-span"):
            train(cfg, Path("/nonexistent"), progress=False)


# --- LLaDA2.2: block routing in the training layout, the Levenshtein stream ---------------------


def _routed_toy(seed: int = 0):  # type: ignore[no-untyped-def]
    from sglang_llada.toy.checkpoint import build_config
    from sglang_llada.toy.tokenizer import vocab_size
    from sglang_llada.toy.torch_model import ToyLLaDA2

    torch.manual_seed(seed)
    model = ToyLLaDA2(build_config(vocab_size(), {}, "2.2"))
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("gate.expert_bias"):
                b.normal_(0, 0.5)
    return model


def test_vectorized_block_routing_is_the_reference_selection() -> None:
    from sglang_llada.toy.torch_model import block_route, block_route_by_ids

    model = _routed_toy()
    torch.manual_seed(1)
    h = torch.randn(90, model.dims.hidden)
    w = model.weights()
    gate, bias = w["model.layers.1.mlp.gate.weight"], w["model.layers.1.mlp.gate.expert_bias"]
    ids, wt = block_route(h, gate, bias, model.dims)
    ids2, wt2 = block_route_by_ids(h, torch.arange(90) // 32, gate, bias, model.dims)
    assert torch.equal(ids.sort(-1).values, ids2.sort(-1).values)
    torch.testing.assert_close(wt.sort(-1).values, wt2.sort(-1).values)


def test_training_rows_route_each_block_as_decoding_does(enc: Encoder) -> None:
    """A block-routed toy on a training row (clean copy + noisy blocks, with route_blocks) gives
    each noisy block the logits the reference gives the same block when it is decoded (the
    sequence up to it, positions 0.., blocks counted from 0)."""
    from sglang_llada.testing.reference_llada2 import block_causal_mask

    model = _routed_toy()
    ex = tasks.split("varlen")[1]
    prompt, answer = enc.prompt_ids(ex), enc.answer_ids(ex)
    b = diffusion_batch([(prompt, answer)], enc, torch.Generator().manual_seed(0))
    N = -(-(len(prompt) + len(answer)) // BLOCK) * BLOCK
    clean = N - BLOCK
    with torch.no_grad():
        logits = model(b.ids, b.positions, b.allowed, b.route_blocks)[0]
        for blk in range(len(prompt) // BLOCK, N // BLOCK):
            rows = (b.positions[0] // BLOCK == blk) & (torch.arange(b.ids.shape[1]) >= clean)
            seq = torch.cat([b.ids[0, : blk * BLOCK], b.ids[0][rows]])
            T = seq.shape[0]
            want = model(seq[None], torch.arange(T)[None], block_causal_mask(T, BLOCK)[None])[0, -BLOCK:]
            torch.testing.assert_close(logits[rows], want, rtol=1e-4, atol=1e-4)


def test_levenshtein_stream_labels_drafts_with_delete_and_split(enc: Encoder) -> None:
    from sglang_llada.toy.edit_labels import apply_labels

    DELETE, SPLIT = 300, 301
    exs = tasks.split("varlen")[:8]
    samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in exs]
    b = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), indel=0.6, control=(DELETE, SPLIT))
    seen, kinds = set(), set()
    for r, (prompt, answer) in enumerate(samples):
        P = len(prompt)
        N = -(-(P + len(answer)) // BLOCK) * BLOCK
        full = prompt + answer + [enc.eos] * (N - P - len(answer))
        clean = N - BLOCK
        for blk in range(P // BLOCK, N // BLOCK):
            cols = [i for i in range(clean, b.ids.shape[1]) if int(b.positions[r, i]) // BLOCK == blk and int(b.positions[r, i]) >= P]
            if not cols or b.positions[r, cols[-1]] >= N:
                continue
            draft = [int(b.ids[r, i]) for i in cols]
            labels = [int(b.targets[r, i]) for i in cols]
            if not all(float(b.weights[r, i]) >= 1.0 for i in cols):  # a plain mask-to-token block
                kinds.add("plain")
                for i, d, label in zip(cols, draft, labels):
                    assert (d == enc.mask) == (label != -100)
                    assert d == enc.mask or d == full[int(b.positions[r, i])]
                continue
            kinds.add("draft")  # every answer position has a label
            seen |= set(labels) & {DELETE, SPLIT}
            # Writing the labels leaves a block no farther from the target than the draft was.
            target = full[int(b.positions[r, cols[0]]) : int(b.positions[r, cols[-1]]) + 1]
            fixed = apply_labels(draft, labels, mask=enc.mask, delete=DELETE, split=SPLIT)
            assert sum(x != y for x, y in zip(fixed, target)) <= sum(x != y for x, y in zip(draft, target)) or SPLIT in labels
    assert seen == {DELETE, SPLIT} and kinds == {"plain", "draft"}


def test_levenshtein_stream_with_t2t_labels_every_answer_position(enc: Encoder) -> None:
    """`--generation 2.2 --t2t c`: the plain mask-to-token blocks get LLaDA2.1's keep / restore
    loss on their unmasked positions too (without it a 2.2 run learned to rewrite a correct `d`)."""
    DELETE, SPLIT = 300, 301
    samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in tasks.split("varlen")[:8]]

    def unlabelled(t2t: float) -> int:
        b = diffusion_batch(samples, enc, torch.Generator().manual_seed(0), t2t=t2t, indel=0.6, control=(DELETE, SPLIT))
        count = 0
        for r, (prompt, answer) in enumerate(samples):
            P = len(prompt)
            N = -(-(P + len(answer)) // BLOCK) * BLOCK
            cols = [i for i in range(N - BLOCK, b.ids.shape[1]) if P <= int(b.positions[r, i]) < N]
            count += sum(int(b.targets[r, i]) == -100 for i in cols)
        return count

    assert unlabelled(0.0) > 0 and unlabelled(0.3) == 0


def test_every_split_is_named_by_eval_and_renders_its_turns() -> None:
    from sglang_llada.cli import build_parser
    from sglang_llada.eval import render_prompts

    parser = build_parser()
    for name in tasks.SPLITS:
        assert parser.parse_args(["eval", "--split", name]).split == name
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--split", "nope"])
    ex = next(e for e in tasks.split("multiturn") if len(e.history) == 2)
    (text,) = render_prompts([ex])
    positions = [text.index(part) for turn in ex.history for part in turn] + [text.rindex(ex.prompt)]
    assert positions == sorted(positions) and text.endswith("<role>ASSISTANT</role>")


def test_multi_answer_tasks_are_scored_by_validity() -> None:
    """Several answers are valid; a mix of two ("red lemon", a list of the wrong length) is not."""
    fruit, pair = tasks.Example("fruit", "Fruit:", "apple"), tasks.Example("pair", "Pair:", "red apple")
    assert tasks.is_correct(fruit, " banana\n") and not tasks.is_correct(fruit, "bananas")
    assert tasks.is_correct(pair, "yellow lemon") and not tasks.is_correct(pair, "red lemon")
    three = tasks.Example("fruits", "Fruits: 3", "fig, fig, fig")
    assert tasks.is_correct(three, "apple, kiwi, apple")
    assert not tasks.is_correct(three, "apple, kiwi") and not tasks.is_correct(three, "apple, kiwi, lemn")
    # the sets differ in length and share letters position by position (drafts can mix them)
    assert len({len(f) for f in tasks.FRUITS}) >= 4 and len(set(tasks.FRUITS)) == len(tasks.FRUITS) >= 20
    assert len({p.split()[0] for p in tasks.PAIRS}) >= 8 and len(set(tasks.PAIRS)) == len(tasks.PAIRS) >= 20
    for ex in tasks.split("multi"):
        assert tasks.is_correct(ex, ex.answer), ex
    longest = max((e for e in tasks.split("multi") if e.task == "fruits"), key=lambda e: len(e.answer))
    assert len(longest.answer) > 32  # more than one block: a next block for a folded check


def test_help_split_is_out_of_format_held_out_and_answered_with_the_help_text() -> None:
    helps = tasks.split("help")
    assert helps == tasks.split("help") and all(e.answer == tasks.HELP_TEXT for e in helps)
    assert {tasks.help_kind(e.prompt) for e in helps} == set(tasks.HELP_KINDS)
    assert any(e.history for e in helps) and any(e.prompt == "" for e in helps)
    for e in helps:  # none is a prompt the toy's formats answer
        text_input = e.prompt.split(": ", 1)[1] if e.prompt[:6] in ("Copy: ", "Upper:", "Lower:") else None
        assert text_input is None or len(text_input) != tasks.TEXT_LEN
        assert not any(e.prompt == x.prompt for x in tasks.heldout_split())
    trained = {e.prompt for b in itertools.islice(tasks.multi_train_batches(0, lambda e: len(e.answer) + 8, 4608), 200) for e in b}
    assert not trained & {e.prompt for e in helps if not e.history} - {""}  # "": there is one empty message


def test_multi_recipe_batches_follow_its_mix() -> None:
    batches = list(itertools.islice(tasks.multi_train_batches(0, lambda e: len(e.answer) + 8, 4608), 300))
    family = {"copy": "text", "upper": "text", "lower": "text", "add": "arith", "sub": "arith", "json": "json",
              "fruit": "multi", "pair": "multi", "fruits": "multi", "help": "help"}
    seen = [family[b[0].task] for b in batches]
    for name, share in tasks.MULTI_MIX.items():
        assert abs(seen.count(name) / len(seen) - share) < 0.08, (name, seen.count(name))
    assert all(len({family[e.task] for e in b}) == 1 for b in batches)


def test_multi2_recipe_batches_follow_its_mix_and_task_weights() -> None:
    batches = list(itertools.islice(tasks.multi_train_batches(0, lambda e: len(e.answer) + 8, 4608, "multi2"), 400))
    family = {"copy": "text", "upper": "text", "lower": "text", "add": "arith", "sub": "arith", "json": "json",
              "fruit": "multi", "pair": "multi", "fruits": "multi", "help": "help"}
    seen = [family[b[0].task] for b in batches]
    for name, share in tasks.MULTI2_MIX.items():
        assert abs(seen.count(name) / len(seen) - share) < 0.08, (name, seen.count(name))
    picks = [e.task for b in batches if family[b[0].task] == "multi" for e in b]
    total = sum(tasks.MULTI2_TASK_WEIGHTS.values())
    for task, weight in tasks.MULTI2_TASK_WEIGHTS.items():
        assert abs(picks.count(task) / len(picks) - weight / total) < 0.05, (task, picks.count(task), len(picks))
    size = lambda e: len(e.answer) + 8  # noqa: E731
    plain = [[e.prompt for e in b] for b in itertools.islice(tasks.multi_train_batches(0, size, 512, "multi"), 20)]
    assert plain != [[e.prompt for e in b] for b in itertools.islice(tasks.multi_train_batches(0, size, 512, "multi2"), 20)]
