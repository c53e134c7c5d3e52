"""LLaDA2.2-style Levenshtein edit labels for a draft block, and the drafts to train them on.

A LLaDA2.2 model revises a draft block by predicting, at each position, either a token (keep it,
or substitute it), DELETE (remove the position), or SPLIT (a token is missing before this
position: insert a mask there). `llada2_levenshtein` (sglang_llada/algorithms/levenshtein.py)
applies exactly these three kinds of writes, so the labels here are what that decoder needs.

The labels come from an alignment of the draft with the target (the LLaDA2.2 report, section
3.1, aligns drafts with targets by their longest common subsequence and labels keep /
substitute / delete / insert): a minimum-cost alignment where a substitution costs as much as a
delete plus an insert, so the alignment keeps the most draft tokens (the LCS), and masks fill
for free:

    draft token == target token    keep        cost 0, label: the token
    draft MASK  ~  target token    fill        cost 0, label: the target token
    draft token != target token    substitute  cost 2, label: the target token
    draft token, no target token   delete      cost 1, label: DELETE
    target token, no draft token   insert      cost 1, label: SPLIT at the next draft position

Blocks have a fixed length (32): target tokens left over after the last draft position cost
nothing (the decoder's DELETE pads the tail with masks, which fill them later), so the alignment
is global on the draft and free at the target's end. Ties prefer keep/fill, then substitute,
then delete, then insert (a deterministic labelling).
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def edit_labels(draft: Sequence[int], target: Sequence[int], *, mask: int, delete: int, split: int) -> list[int]:
    """One label per draft position (see the module docstring). draft and target are token ids."""
    n, m = len(draft), len(target)
    INF = 1 << 30
    # cost[i][j]: best cost of aligning draft[:i] with target[:j]
    cost = [[INF] * (m + 1) for _ in range(n + 1)]
    move = [[""] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            best, how = INF, ""
            if i and j:
                d, t = draft[i - 1], target[j - 1]
                c = cost[i - 1][j - 1] + (0 if d == t else 1 if d == mask else 4)
                if c < best:
                    best, how = c, "diag"
            if i and cost[i - 1][j] + 2 < best:
                best, how = cost[i - 1][j] + 2, "del"
            if j and cost[i][j - 1] + 2 < best:
                best, how = cost[i][j - 1] + 2, "ins"
            cost[i][j], move[i][j] = best, how
    j_end = min(range(m + 1), key=lambda j: (cost[n][j], -j))  # free target suffix, longest match
    labels = [0] * n
    split_before = [False] * (n + 1)
    i, j = n, j_end
    while i or j:
        how = move[i][j]
        if how == "diag":
            labels[i - 1] = target[j - 1]
            i, j = i - 1, j - 1
        elif how == "del":
            labels[i - 1] = delete
            i -= 1
        else:  # a target token the draft lacks, before draft position i
            split_before[i] = True
            j -= 1
    for p in range(n):
        if split_before[p]:
            labels[p] = split
    return labels


def indel_draft(
    target: Sequence[int], rng: random.Random, *, mask: int, alphabet: Sequence[int], rate: float,
    mask_ratio: float,
) -> list[int]:
    """A draft of `target` (same length): each position independently, with probability `rate`,
    is dropped, gets a random `alphabet` token inserted before it, or is substituted (a third
    each); the result is cut or padded with masks to the target's length, then `mask_ratio` of
    its positions are masked."""
    out: list[int] = []
    for t in target:
        r = rng.random()
        if r < rate / 3:
            continue  # dropped: the draft lacks it
        if r < 2 * rate / 3:
            out += [rng.choice(alphabet), t]  # an extra token before it
        elif r < rate:
            out.append(rng.choice(alphabet))  # substituted
        else:
            out.append(t)
    out = (out + [mask] * len(target))[: len(target)]
    for p in rng.sample(range(len(out)), round(mask_ratio * len(out))):
        out[p] = mask
    return out


def apply_labels(draft: Sequence[int], labels: Sequence[int], *, mask: int, delete: int, split: int) -> list[int]:
    """What one `llada2_levenshtein` step makes of the draft if it writes every label: DELETE
    removes the position, SPLIT inserts a mask before the position's token, other labels
    overwrite; the block keeps its length (mask padding at the tail, overflow dropped). Used by
    the tests to check that labels repair drafts."""
    out: list[int] = []
    for d, label in zip(draft, labels):
        if label == delete:
            continue
        out += [mask, d] if label == split else [label]
    return (out + [mask] * len(draft))[: len(draft)]
