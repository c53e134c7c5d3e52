"""Score a toy checkpoint on the held-out split with the pure-torch reference decoder (no server).

    .venv/bin/python bench/reference_decode_eval.py CKPT_DIR THRESHOLD [THREADS] [PER_TASK] [TASKS]

A quick look at a training run before serving it: greedy block diffusion (block 32) with the
given confidence threshold (1.0 = one token per forward), exact match per task, and TPF.
THRESHOLD `ar` decodes greedily token by token under a causal mask instead: the autoregressive
twin's weights, scored without SGLang (one forward per token, the end token's included).
TASKS is a comma-separated subset (e.g. `add,sub`), default all. For sums and differences it
also prints how many answers had each digit right, most significant first.
"""
import sys

import torch

from sglang_llada.testing.reference_llada2 import generate_reference_with_stats, load_reference  # noqa: E402
from sglang_llada.toy.tasks import FAMILIES, TASK_NAMES, heldout_split, is_correct  # noqa: E402
from sglang_llada.toy.train import Encoder  # noqa: E402

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
d, ar = sys.argv[1], sys.argv[2] == "ar"
thr = None if ar else float(sys.argv[2])
m, enc = load_reference(d), Encoder()
res: dict[str, list[bool]] = {}
digits: dict[str, list[int]] = {}  # arithmetic: answers with digit i right, msb first
fw = toks = 0
only = set(sys.argv[5].split(",")) if len(sys.argv) > 5 else None
if only is not None and not only <= set(TASK_NAMES):
    sys.exit(f"unknown task(s) {sorted(only - set(TASK_NAMES))}; TASKS is a comma-separated subset of {TASK_NAMES}")


def greedy_causal(prompt: list[int], max_new: int) -> tuple[list[int], int]:
    """Next-token greedy decode, recomputing the whole sequence per token (block size 1 = causal).
    Returns (tokens before the end token, forwards)."""
    ids: list[int] = list(prompt)
    forwards = 0
    for _ in range(max_new):
        nxt = int(m(torch.tensor(ids), block_size=1)[-1].argmax())
        forwards += 1
        if nxt == enc.eos:
            break
        ids.append(nxt)
    return ids[len(prompt) :], forwards


for ex in heldout_split(per_task=int(sys.argv[4]) if len(sys.argv) > 4 else 8):
    if only is not None and ex.task not in only:
        continue
    if ar:
        tokens, n_forwards = greedy_causal(enc.prompt_ids(ex), len(ex.answer) + 2)
    else:
        r = generate_reference_with_stats(m, enc.prompt_ids(ex), 140, mask_id=enc.mask, threshold=thr, eos_ids={enc.eos})
        tokens, n_forwards = r.tokens, r.num_forwards
    out = enc.tok.decode(tokens, skip_special_tokens=True)
    ok = is_correct(ex, out)
    res.setdefault(ex.task, []).append(ok)
    if ex.task in FAMILIES["arith"]:
        right = digits.setdefault(ex.task, [0] * len(ex.answer))
        for i, ch in enumerate(ex.answer):
            right[i] += out[i : i + 1] == ch
    fw += n_forwards
    toks += len(tokens)
    if not ok and len(res[ex.task]) <= 2:
        print(ex.task, repr(ex.answer), "->", repr(out))
total = sum(len(v) for v in res.values())
for task, right in digits.items():
    print(f"{task} digits right (msb first) of {len(res[task])}:", right)
print({k: sum(v) / len(v) for k, v in res.items()}, "all", sum(sum(v) for v in res.values()) / total, "tpf", toks / fw)
