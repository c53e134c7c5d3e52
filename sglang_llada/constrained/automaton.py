"""Constraints on a diffusion block: which tokens keep the output completable, position by position.

Autoregressive constrained decoding (SGLang's grammar backends, outlines, xgrammar) walks an
automaton left to right: the next token must leave a state from which the language is still
reachable. A diffusion block is filled in any order: position 7 may be committed before position 2.
So the question per step is: given the block's committed tokens and its masks, which token may a
masked position take so that *some* fill of the other masks (and of the blocks after it, within
`max_new_tokens`) is a word of the language? That is additive infilling over a regular language
(arXiv 2508.10111 reduces constrained diffusion decoding to it), decided here exactly by a forward
and a backward pass over the block's positions on the token automaton:

    F[p]  states the automaton can be in before position p (from the block's start state),
    B[p]  states at position p from which the rest of the block and then some completion within
          the budget reach acceptance,

with a committed token moving the sets through its own transitions and a mask through every
transition. A masked position p may take token t iff some state s in F[p] has s -t-> s' with s' in
B[p + 1]. Committing several positions at once can be infeasible even when each alone is allowed
(two masks that each could close a string), so a step's proposals are admitted one at a time, most
confident first, each checked against the block as it stands (`admit`).

End of output: an end token (EOS) is one more transition, from an accepting state to DONE, and
DONE loops on EOS (a finished output is padded with EOS to the end of its block, as the decoders
do). So EOS is allowed exactly where the language accepts.

Cost per call: the sets are over automaton states, not tokens: each state's transitions are grouped
by next state once (`TokenAutomaton.groups`: state -> next state -> the token ids that lead there, a
numpy array), so the dynamic program walks the small graph of states, O(S x |reachable states| x
|distinct next states|), and only `allowed_masks` touches token ids, setting the groups that lead
into a finishing set in a [V] bool array, once per distinct (state set, finishing set) pair of the
step (positions and rows that share the pair share the array).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DONE = -1  # the state after the end token


@dataclass
class TokenAutomaton:
    """A deterministic automaton over token ids.

    transitions: state -> {token id -> next state} (no entry: the token is not allowed there);
    initial: the start state; finals: accepting states; eos: the end-of-output token ids.
    """

    transitions: Mapping[int, Mapping[int, int]]
    initial: int
    finals: frozenset[int]
    eos: frozenset[int]
    _dist: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    # state -> next state -> [k] int64 token ids leading there (end tokens not included)
    groups: dict[int, dict[int, np.ndarray]] = field(default_factory=dict, init=False, repr=False)
    # state -> the distinct next states, DONE included for accepting states and DONE itself
    next_states: dict[int, frozenset[int]] = field(default_factory=dict, init=False, repr=False)
    eos_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), init=False, repr=False)
    vocab_bound: int = field(default=0, init=False, repr=False)  # 1 + the largest token id it names

    def __post_init__(self) -> None:
        for s, row in self.transitions.items():
            by_next: dict[int, list[int]] = {}
            for tok, nxt in row.items():
                by_next.setdefault(nxt, []).append(tok)
            self.groups[s] = {n: np.asarray(sorted(ts), dtype=np.int64) for n, ts in by_next.items()}
        self.eos_ids = np.asarray(sorted(self.eos), dtype=np.int64)
        self.vocab_bound = 1 + max([int(a[-1]) for row in self.groups.values() for a in row.values()] + list(self.eos) + [-1])
        states = set(self.transitions) | {n for row in self.groups.values() for n in row} | set(self.finals)
        for s in states:
            targets = set(self.groups.get(s, {}))
            if s in self.finals:
                targets.add(DONE)
            self.next_states[s] = frozenset(targets)
        self.next_states[DONE] = frozenset({DONE})
        # Shortest number of tokens from each state to acceptance (BFS on reversed edges); states
        # that cannot accept are absent.
        back: dict[int, set[int]] = {}
        for s, row in self.transitions.items():
            for nxt in row.values():
                back.setdefault(nxt, set()).add(s)
        dist = {s: 0 for s in self.finals}
        dist[DONE] = 0
        queue = deque(self.finals)
        while queue:
            s = queue.popleft()
            for prev in back.get(s, ()):
                if prev not in dist:
                    dist[prev] = dist[s] + 1
                    queue.append(prev)
        self._dist = dist

    def step(self, state: int, token: int) -> int | None:
        """The state after `token`, or None when the token is not allowed in `state`."""
        if token in self.eos:
            return DONE if state == DONE or state in self.finals else None
        if state == DONE:
            return None
        return self.transitions.get(state, {}).get(token)

    def successors(self, state: int) -> Iterable[tuple[int, int]]:
        """(token, next state) pairs leaving `state`, end tokens included."""
        if state == DONE:
            return [(t, DONE) for t in self.eos]
        out = list(self.transitions.get(state, {}).items())
        if state in self.finals:
            out += [(t, DONE) for t in self.eos]
        return out

    def distance(self, state: int) -> int | None:
        """Fewest tokens from `state` to acceptance (None: it never accepts)."""
        return self._dist.get(state)

    def accepts(self, state: int) -> bool:
        return state == DONE or state in self.finals

    def walk(self, state: int, tokens: Sequence[int]) -> int | None:
        """The state after a whole committed sequence (None when it leaves the language)."""
        cur: int | None = state
        for t in tokens:
            if cur is None:
                return None
            cur = self.step(cur, t)
        return cur


Block = Sequence[int | None]  # committed token ids, None where still masked


def _forward(fsm: TokenAutomaton, start: int, block: Block) -> list[set[int]]:
    sets = [{start}]
    for tok in block:
        cur = sets[-1]
        if tok is None:
            nxt = set().union(*(fsm.next_states.get(s, ()) for s in cur)) if cur else set()
        else:
            nxt = {s2 for s in cur if (s2 := fsm.step(s, tok)) is not None}
        sets.append(nxt)
    return sets


def _backward(fsm: TokenAutomaton, block: Block, reachable: list[set[int]], budget_after: int) -> list[set[int]]:
    """B[p] restricted to the forward-reachable states (all a position's allowed set needs)."""
    S = len(block)

    def can_finish(s: int) -> bool:
        d = fsm.distance(s)  # 0 for accepting states
        return d is not None and d <= max(0, budget_after)

    sets: list[set[int]] = [set() for _ in range(S + 1)]
    sets[S] = {s for s in reachable[S] if can_finish(s)}
    for p in range(S - 1, -1, -1):
        tok, after = block[p], sets[p + 1]
        if tok is None:
            sets[p] = {s for s in reachable[p] if not after.isdisjoint(fsm.next_states.get(s, ()))}
        else:
            sets[p] = {s for s in reachable[p] if fsm.step(s, tok) in after}
    return sets


def feasible(fsm: TokenAutomaton, start: int, block: Block, budget_after: int) -> bool:
    """Can the masks of `block` be filled so that the output so far (ending in state `start`
    before the block), the block, and at most `budget_after` more tokens form a word?"""
    fw = _forward(fsm, start, block)
    return start in _backward(fsm, block, fw, budget_after)[0]


MaskCache = dict[tuple[int, int, frozenset[int], frozenset[int]], np.ndarray]


def allowed_masks(
    fsm: TokenAutomaton, start: int, block: Block, budget_after: int, vocab: int, cache: MaskCache | None = None,
) -> list[np.ndarray | None]:
    """For each position: a [vocab] bool array of the tokens a masked position may take, each alone,
    the others still masks; None at committed positions. All False when the block is infeasible.

    A position's set depends only on (its reachable-and-finishing states, the finishing states after
    it), and those repeat: along a run of masks the state sets settle, and rows of one schema meet
    the same pairs. So each distinct pair is built once per `cache` (pass one dict for a whole step)
    and positions with the same pair share one array (do not write to it)."""
    fw = _forward(fsm, start, block)
    bw = _backward(fsm, block, fw, budget_after)
    cache = {} if cache is None else cache
    out: list[np.ndarray | None] = []
    for p, tok in enumerate(block):
        if tok is not None:
            out.append(None)
            continue
        states, after = frozenset(fw[p] & bw[p]), frozenset(bw[p + 1])
        key = (id(fsm), vocab, states, after)
        mask = cache.get(key)
        if mask is None:
            mask = np.zeros(vocab, dtype=bool)
            eos = fsm.eos_ids[: np.searchsorted(fsm.eos_ids, vocab)]
            for s in states:
                if s == DONE:  # DONE -EOS-> DONE, and DONE is in `after` (s is in bw[p])
                    mask[eos] = True
                    continue
                for nxt, toks in fsm.groups.get(s, {}).items():
                    if nxt in after:
                        mask[toks[: np.searchsorted(toks, vocab)]] = True  # toks sorted
                if s in fsm.finals and DONE in after:
                    mask[eos] = True
            cache[key] = mask
        out.append(mask)
    return out


def allowed_arrays(fsm: TokenAutomaton, start: int, block: Block, budget_after: int) -> list[np.ndarray | None]:
    """`allowed_masks` as sorted token-id arrays ([k] int64); None at committed positions."""
    return [None if m is None else np.flatnonzero(m) for m in allowed_masks(fsm, start, block, budget_after, fsm.vocab_bound)]


def allowed_tokens(fsm: TokenAutomaton, start: int, block: Block, budget_after: int) -> list[set[int] | None]:
    """`allowed_arrays` as python sets (for tests and small vocabularies)."""
    return [None if a is None else set(a.tolist()) for a in allowed_arrays(fsm, start, block, budget_after)]


def admit(
    fsm: TokenAutomaton, start: int, block: Block, proposals: Sequence[tuple[int, int]], budget_after: int,
) -> list[tuple[int, int]]:
    """The proposals (position, token), in the given order (most confident first), that can be
    committed together: each is kept when the block with it and the ones kept before stays
    feasible. The first proposal is always kept when it was drawn from `allowed_tokens`."""
    cur = list(block)
    kept = []
    for p, t in proposals:
        cur[p] = t
        if feasible(fsm, start, cur, budget_after):
            kept.append((p, t))
        else:
            cur[p] = None
    return kept
