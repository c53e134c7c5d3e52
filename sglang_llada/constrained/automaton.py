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

Cost per call: O(S x |reachable states| x out-degree) set operations on the host, S = block length;
`TokenAutomaton` keeps per-state transitions in dicts, which is what the regex index of outlines
gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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

    def __post_init__(self) -> None:
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
            nxt = {s2 for s in cur for _, s2 in fsm.successors(s)}
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
            sets[p] = {s for s in reachable[p] if any(s2 in after for _, s2 in fsm.successors(s))}
        else:
            sets[p] = {s for s in reachable[p] if fsm.step(s, tok) in after}
    return sets


def feasible(fsm: TokenAutomaton, start: int, block: Block, budget_after: int) -> bool:
    """Can the masks of `block` be filled so that the output so far (ending in state `start`
    before the block), the block, and at most `budget_after` more tokens form a word?"""
    fw = _forward(fsm, start, block)
    return start in _backward(fsm, block, fw, budget_after)[0]


def allowed_tokens(fsm: TokenAutomaton, start: int, block: Block, budget_after: int) -> list[set[int] | None]:
    """For each position: the tokens a masked position may take (each alone, the others still
    masks); None at committed positions. Every set is empty when the block is infeasible."""
    fw = _forward(fsm, start, block)
    bw = _backward(fsm, block, fw, budget_after)
    out: list[set[int] | None] = []
    for p, tok in enumerate(block):
        if tok is not None:
            out.append(None)
            continue
        live = fw[p] & bw[p]
        out.append({t for s in live for t, s2 in fsm.successors(s) if s2 in bw[p + 1]})
    return out


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
