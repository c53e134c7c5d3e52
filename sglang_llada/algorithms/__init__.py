"""Our dLLM decoding algorithms, selectable with `--dllm-algorithm NAME` once `register()` ran.

`CLASS_PATHS` (below) maps each name to its class. Each class's `SUMMARY`, `KNOBS`
(`--dllm-algorithm-config` YAML), `REQUEST_KNOBS` (`custom_params.dllm`) and, for the editing
decoders, `MODES` are the only copy of its names, defaults, ranges and presets: README.md's
algorithm and mode tables and docs/llada2-generations.md's per-request table are rendered from them
(`python -m sglang_llada.doc_tables --write`; tests/units/test_doc_tables.py fails when stale).

`llada2_exact` gives, token for token, the output of `llada2_static` with `tokens_per_step: 1`
(greedy, most confident position first) in fewer forwards: it drafts several commits from one
forward and verifies them in one batched forward (exact.py); it decodes greedily only and refuses
sampling and logit adjustments with a message.

`fold_store` (auto / on / off): accept a block in the step that commits its last mask and store its
KV in the request's next forward, instead of one more forward per block (unmask.py; `auto` = on
where denoising forwards run eagerly, our CPU platform). The editing decoders' block ends after a
check that changes nothing: with `fold_store` that check rides in the next block's first forward,
the block held back until it passes (folded_check.py).

`mode` presets (threshold / edit_threshold / max_edit_steps): `none` (llada2_edit's default, its
values before modes), `Q` and `S` (the LLaDA2.1 model card's Quality and Speedy modes;
llada2_levenshtein offers Q, its default, and S); their values are `MODES` of edit.py and
levenshtein.py. An explicit threshold / edit_threshold / max_edit_steps key overrides the mode's
value. llada2_levenshtein (LLaDA2.2 DELETE / SPLIT editing) also needs the checkpoint's
`delete_token_id` / `split_token_id`.

Per-request knobs: a request may set its algorithm's `REQUEST_KNOBS` for itself, with
`custom_params: {"dllm": {"threshold": 0.8}}` (in `sampling_params` of `/generate`; in the body of
`/v1/chat/completions` and `/v1/completions`, e.g. the OpenAI client's `extra_body`): the same
`Knob` objects as `KNOBS`, the step budgets capped at `knobs.REQUEST_STEP_CAP`. A request's `mode` applies its preset to the keys the request does
not set: request keys > the request's mode preset > the server's resolved values. Requests with
different knobs share a batch; each row decodes by its own. A bad knob (unknown key, `sampling`,
wrong type, out of range), or knobs sent to a server decoding with one of SGLang's in-tree
algorithms, is an HTTP 400 (sglang_llada/tokenizer/request_checks.py) naming the knob, its allowed values and
the server algorithm.

On a LLaDA2.2 checkpoint (DllmConfig `delete_token_id` / `split_token_id` set), every algorithm
but `llada2_levenshtein` excludes the DELETE / SPLIT logits, so it never writes those ids.

Every algorithm also takes `sampling: request` (default: honour each request's temperature /
top-k / top-p / seed, greedy at temperature 0; see sampling.py) or `sampling: greedy` (ignore them), and ignores SGLang's own keys
(`block_size`, `capture_input_preparation`). Unknown keys and out-of-range values raise ValueError
when the algorithm is built.

Why `register()` imports lazily: SGLang looks algorithms up by name in
`sglang.srt.dllm.algorithm.algo_name_to_cls` (filled at import from its own package, keyed by
class name). Adding ours means importing that package, which imports SGLang's model runner (tens
of seconds of imports on a slow CPU); so this module stays import-light and the import happens only
when `register()` is called. `CLASS_PATHS` lets a caller resolve a name without registering.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class ForwardRecord:
    """The one result of a `DllmAlgorithm.run` for the scheduler's result step, pinned on its logits
    output (`sglang_llada.state`). Built once, when the run ends, by the shared run loop of our
    decoders (base.py `LladaAlgorithm.run`, from what its steps reported) or, for SGLang's in-tree
    algorithms, by output/forward_stats.py's hook around their run; read-only after that. Readers:
    output/forward_stats.py (`forwards`, `row_positions`), output/logprobs.py (`logprobs`),
    output/trace.py (`trace`), output/held_blocks.py (the fold_store fields)."""

    # [B, S] fp32: each row's committed tokens' log-probabilities (base.py `Rows.logprobs`)
    logprobs: Optional[Any] = None
    # (first_at, last_at) [B, S] int32: the forward (from 1, within the block) that chose each
    # position's first / last write (base.py `Rows`; output/trace.py reads it)
    trace: Optional[tuple[Any, Any]] = None
    # model forwards the run made: the runner's `forward`s and llada2_exact's verification forwards
    forwards: int = 0
    # positions each row occupied in all of the run's forwards [B] (host ints): its block in each
    # forward, plus llada2_exact's verification copies and the blocks fold_store re-encoded
    row_positions: Optional[list[int]] = None
    # fold_store (scheduler/folded_store.py): rows accepted before a forward saw their block final
    # [B] (host bools), and the rows whose stale previous block this run re-encoded
    stale: Optional[list[bool]] = None
    folded_rows: Optional[list[int]] = None
    # fold_store with the editing decoders (algorithms/folded_check.py; scheduler/folded_store.py):
    # rows whose block the run accepted before its final check ({row: HeldBlock}), rows whose held
    # previous block is still unchecked after the run (FDFO: {row: HeldBlock}), and rows whose held
    # previous block the run settled ({row: Settled})
    held: Optional[dict[int, "HeldBlock"]] = None
    still_held: Optional[dict[int, "HeldBlock"]] = None
    settled: Optional[dict[int, "Settled"]] = None


@dataclass
class HeldBlock:
    """An editing decoder's block accepted before the forward that would check it final
    (algorithms/folded_check.py): its step state and current tokens, on the device, checked by the
    request's next forwards (folded beside its next block). The scheduler keeps it on the request
    (output/held_blocks.py `PendingBlock`)."""

    state: Any  # base.RowState of a one-row `Rows`: the block's step state (budgets, logprobs, trajectory)
    tokens: Any  # [S] int64 device: the block as it stands now
    start: int  # the block's first absolute position
    accepted: list[int]  # [S] host: the block as the scheduler accepted it


@dataclass
class Settled:
    """A held block whose check passed in this run: its final tokens [S] (host), and, on the
    device, its [S] logprobs and trajectory (first_at, last_at), block-local as in `Rows`;
    `finishes`: those tokens end the request (the scheduler finishes it with this block)."""

    tokens: list[int]
    logprobs: Any
    first_at: Any
    last_at: Any
    finishes: bool


@dataclass
class FoldPlan:
    """What the scheduler attaches to a denoising `ForwardBatch` (scheduler/folded_store.py): the
    batch rows whose stale previous block the run's first forward re-encodes (fold_store), that
    block's final tokens [F][S] (host ints), and for the editing decoders (algorithms/folded_check.py)
    the row's `HeldBlock` when that block still awaits its check (None: a plain stale block).

    `may_hold(row, blocks)`: whether the run may accept batch row `row`'s block before its final
    check when the request's output would then hold `blocks` ([(absolute start, [S] tokens)], in
    order; the last is the row's current block): False when the request would finish with them (a
    finished request has no next block to fold the check into) or cannot hold a block back. None:
    hold nothing back."""

    rows: list[int]
    token_ids: list[list[int]]
    held: Optional[list[Optional[HeldBlock]]] = None
    may_hold: Optional[Callable[[int, list[tuple[int, list[int]]]], bool]] = None
    finishes: Optional[Callable[[int, list[tuple[int, list[int]]]], bool]] = None


# name -> "module:Class", resolved on demand
CLASS_PATHS: dict[str, str] = {
    "llada2_threshold": "sglang_llada.algorithms.unmask:ThresholdAlgorithm",
    "llada2_static": "sglang_llada.algorithms.unmask:StaticAlgorithm",
    "llada2_factor": "sglang_llada.algorithms.unmask:FactorAlgorithm",
    "llada2_edit": "sglang_llada.algorithms.edit:EditAlgorithm",
    "llada2_levenshtein": "sglang_llada.algorithms.levenshtein:LevenshteinAlgorithm",
    "llada2_exact": "sglang_llada.algorithms.exact:ExactAlgorithm",
}


# Decoders of other installed packages: an entry point in this group, `name = "module:Class"`, the
# class a `LladaAlgorithm` subclass whose NAME is `name` (docs/examples/one_file_decoder/). They are
# served, checked and refused exactly as ours are; README's tables list ours only.
DECODER_GROUP = "sglang_llada.decoders"


@functools.cache
def decoder_paths() -> dict[str, str]:
    """Every decoder name this install serves -> "module:Class": ours (CLASS_PATHS), then the entry
    points of DECODER_GROUP (a name of ours cannot be taken: RuntimeError naming the package)."""
    from importlib.metadata import entry_points

    paths = dict(CLASS_PATHS)
    for ep in entry_points(group=DECODER_GROUP):
        owner = ep.dist.name if ep.dist is not None else "an installed package"
        if ep.name in paths:
            raise RuntimeError(
                f"{owner} declares the decoder {ep.name!r} ({DECODER_GROUP} entry point), a name sglang-llada "
                f"already serves: rename it"
            )
        paths[ep.name] = ep.value
    return paths


def algorithm_class(name: str) -> Any:
    """The class served under `name` (imports its module); a RuntimeError when a package's entry
    point names something that is not a decoder called `name`."""
    module, attr = decoder_paths()[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    if name not in CLASS_PATHS:
        from sglang_llada.algorithms.base import LladaAlgorithm

        if not (isinstance(cls, type) and issubclass(cls, LladaAlgorithm)) or cls.NAME != name:
            raise RuntimeError(
                f"the {DECODER_GROUP} entry point {name!r} = {decoder_paths()[name]!r} must name a "
                f"sglang_llada LladaAlgorithm subclass with NAME = {name!r}"
            )
    return cls


def register() -> None:
    """Adds every decoder (ours and the entry points') to SGLang's `algo_name_to_cls` (idempotent;
    call it in every process)."""
    from sglang.srt.dllm.algorithm import algo_name_to_cls

    for name in decoder_paths():
        algo_name_to_cls[name] = algorithm_class(name)
