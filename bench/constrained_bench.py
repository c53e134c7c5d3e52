"""Structured output under diffusion decoding: constrained vs unconstrained, side by side in one run.

    .venv/bin/python bench/constrained_bench.py            # writes bench/results/constrained_bench.*

Part 1, through the server: one stock server of the JSON toy (the 2.0 toy trained further on the
JSON task, `sglang_llada/toy/checkpoints/llada2-toy-json`; `python -m sglang.launch_server --model
<toy> --max-running-requests 16`, greedy, concurrency 16); each split decoded without a
constraint, then with one (twice: the first run compiles the pattern's automaton, the second finds it
cached), then without again (the two free runs bracket the constrained ones, so a drift of the
machine shows), in the same server:

* the `json` split (`JSON: 482+937` -> `{"op": "add", "result": "1419"}`) with `json_schema` =
  tasks.JSON_SCHEMA: schema-valid rate (parses and validates), exact match, TPF, tok/s;
* the held-out sums and differences with `regex` `[0-9]+`.

Part 2, in-process: what the constraint costs per denoising step at the real vocabulary size,
V = 157,184 (LLaDA2.0-mini's). The real tokenizer is not on this machine (no model hub), so a
synthetic one of that size stands in: the 95 printable ASCII characters, then random strings of 2-8
characters over letters, digits, JSON punctuation and space (BPE-like pieces). Timed: compiling the
schema's automaton (outlines' index, once per schema), and one step's `constrain_logits` +
`admit_commits` for B rows of one 32-token block at several fill levels, against the step's
unconstrained scoring (`confidence` over the same [B * 32, V] logits) for scale.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
V_REAL = 157_184
BLOCK = 32


# --- part 1: the toy through the server ---------------------------------------------------------


def _valid(text: str, schema: dict[str, Any]) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def serve_rows(model: Path, concurrency: int) -> list[dict[str, Any]]:
    import re

    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch
    from sglang_llada.toy.tasks import JSON_SCHEMA, split

    schema = json.dumps(JSON_SCHEMA)
    arith = [e for e in split("heldout") if e.task in ("add", "sub")]
    plan = [
        ("json", "free", None, lambda t: _valid(t, JSON_SCHEMA)),
        ("json", "json_schema", {"json_schema": schema}, lambda t: _valid(t, JSON_SCHEMA)),
        ("json", "json_schema (compiled)", {"json_schema": schema}, lambda t: _valid(t, JSON_SCHEMA)),
        ("json", "free (again)", None, lambda t: _valid(t, JSON_SCHEMA)),
        ("heldout-arith", "free", None, lambda t: re.fullmatch("[0-9]+", t) is not None),
        ("heldout-arith", "regex [0-9]+", {"regex": "[0-9]+"}, lambda t: re.fullmatch("[0-9]+", t) is not None),
        ("heldout-arith", "regex (compiled)", {"regex": "[0-9]+"}, lambda t: re.fullmatch("[0-9]+", t) is not None),
        ("heldout-arith", "free (again)", None, lambda t: re.fullmatch("[0-9]+", t) is not None),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        server = launch(model, ["--max-running-requests", "16"], work, work / "server.log")
        try:
            for split_name, label, params, valid in plan:
                examples = arith if split_name == "heldout-arith" else None
                summary, outcomes = evaluate(
                    server.url, split_name, concurrency=concurrency, params=params, progress=False, examples=examples,
                )
                row = {
                    "split": split_name, "mode": label, "n": len(outcomes),
                    "valid": sum(valid(o.completion.strip()) for o in outcomes) / len(outcomes),
                    "exact": summary["accuracy"], "tpf": summary["tpf"],
                    "tok_s": summary["output_tokens_per_s"], "wall_s": summary["wall_s"],
                    "example": outcomes[0].completion,
                }
                print(json.dumps({k: v for k, v in row.items() if k != "example"}), file=sys.stderr)
                rows.append(row)
        finally:
            server.stop()
    return rows


# --- part 2: cost per step at V = 157,184 ------------------------------------------------------


def synthetic_tokenizer(vocab_size: int, seed: int = 0) -> Any:
    """A Hugging Face fast tokenizer with `vocab_size` tokens (see the module docstring)."""
    import string

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    pieces = string.ascii_letters + string.digits + '{}[]":,. -_'
    vocab: dict[str, int] = {"<|endoftext|>": 0, "<|mask|>": 1}
    for c in string.printable[:95]:
        vocab.setdefault(c, len(vocab))
    while len(vocab) < vocab_size:
        vocab.setdefault("".join(rng.choice(pieces) for _ in range(rng.randint(2, 8))), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", mask_token="<|mask|>")


def _ms(fn: Any, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def step_costs(repeat: int) -> dict[str, Any]:
    import torch

    from sglang_llada.constrained.automaton import DONE
    from sglang_llada.constrained.block import RowConstraint, admit_commits, constrain_logits
    from sglang_llada.constrained.grammar import automaton_from_json_schema
    from sglang_llada.kernels.confidence import confidence
    from sglang_llada.toy.tasks import JSON_SCHEMA

    torch.set_num_threads(2)
    tok = synthetic_tokenizer(V_REAL)
    mask = int(tok.convert_tokens_to_ids("<|mask|>"))
    tool_schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "arguments": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}},
        "required": ["name", "arguments"],
    }
    out: dict[str, Any] = {"vocab": len(tok), "schemas": []}
    for name, schema in (("toy JSON task", JSON_SCHEMA), ("tool call (strings, nested object)", tool_schema)):
        t0 = time.perf_counter()
        fsm = automaton_from_json_schema(schema, tok)
        compile_s = time.perf_counter() - t0
        n_states = len(fsm.next_states)
        n_edges = sum(len(r) for r in fsm.transitions.values())
        # a reference output of the schema, token by token along the automaton (a random walk that
        # prefers moves towards acceptance), to fill blocks with
        rng = random.Random(0)
        state, walk = fsm.initial, []
        while state != DONE and len(walk) < 4 * BLOCK:
            options = [(t, s2) for t, s2 in fsm.successors(state)]
            closer = [o for o in options if (fsm.distance(o[1]) or 0) < (fsm.distance(state) or 0)]
            t, state = rng.choice(closer if closer and rng.random() < 0.3 else options)
            walk.append(t)
        rows_out = []
        for b in (1, 8):
            for filled in (0.0, 0.5, 0.9):
                ids = []
                for _ in range(b):
                    block = list(walk[:BLOCK]) + [0] * max(0, BLOCK - len(walk))
                    for p in rng.sample(range(BLOCK), int(BLOCK * (1 - filled))):
                        block[p] = mask
                    ids.append(block)
                cons = [RowConstraint(fsm, fsm.initial, 0, BLOCK, 4 * BLOCK) for _ in range(b)]
                logits = torch.randn(b * BLOCK, len(tok))
                flat = torch.tensor(ids).view(-1)
                masked = flat == mask

                def scoring() -> None:
                    confidence(logits, masked)

                def constrained() -> None:
                    lg = constrain_logits(logits.clone(), ids, cons, mask)
                    token, prob = confidence(lg, masked)
                    work = flat.clone()
                    committed = masked.clone()
                    work[masked] = token[masked]
                    admit_commits(work, committed, prob, ids, cons, mask)

                base = _ms(scoring, repeat)
                full = _ms(constrained, repeat)
                clone = _ms(lambda: logits.clone(), repeat)
                rows_out.append({
                    "B": b, "filled": filled, "masked": int(masked.sum()),
                    "scoring_ms": round(base, 2), "constrained_step_ms": round(full, 2),
                    "constraint_cost_ms": round(full - base - clone, 2),
                })
                print(json.dumps({"schema": name, **rows_out[-1]}), file=sys.stderr)
        out["schemas"].append({
            "schema": name, "compile_s": round(compile_s, 2), "states": n_states, "edges": n_edges, "steps": rows_out,
        })
    return out


# --- report ----------------------------------------------------------------------------------


def write(serve: list[dict[str, Any]], costs: dict[str, Any], command: str, wall: float, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps({"command": command, "wall_s": wall, "serve": serve, "costs": costs}, indent=2))
    lines = [
        "# Structured output under diffusion decoding: constrained vs unconstrained",
        "",
        f"Command: `{command}` ({wall:.0f} s on this machine's 2 CPU cores). Greedy; one server of the",
        "JSON toy (llada2-toy-json), concurrency 16. `valid`: the output parses and validates against the schema",
        "(json) or fully matches the regex (arithmetic). The free runs before and after bracket the",
        "constrained ones.",
        "",
        "| split | mode | n | valid | exact | TPF | tok/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in serve:
        tpf = "n/a" if r["tpf"] is None else f"{r['tpf']:.2f}"
        lines.append(f"| {r['split']} | {r['mode']} | {r['n']} | {r['valid']:.3f} | {r['exact']:.3f} | {tpf} | {r['tok_s']:.0f} |")
    for split_name in dict.fromkeys(r["split"] for r in serve):
        rs = [r for r in serve if r["split"] == split_name]
        free = [r for r in rs if r["mode"].startswith("free")]
        if not all(r["tpf"] for r in rs):
            continue
        lines.append("")
        for con in (r for r in rs if not r["mode"].startswith("free")):
            ratio = con["tpf"] / statistics.fmean(r["tpf"] for r in free)
            speed = con["tok_s"] / statistics.fmean(r["tok_s"] for r in free)
            lines.append(f"{split_name}, {con['mode']} / free (mean of both): TPF {ratio:.2f}x, tok/s {speed:.2f}x.  ")
    lines += [
        "",
        "The first constrained run of a pattern includes compiling its token automaton (in the",
        "scheduler, once per pattern; cached after); the `(compiled)` run repeats it with the automaton",
        "cached.",
    ]
    lines += [
        "",
        f"## Cost per step at V = {costs['vocab']:,} (synthetic vocabulary, in-process, median of runs)",
        "",
        "`scoring_ms`: the step's unconstrained `confidence` over [B x 32, V]; `constrained_step_ms`:",
        "logits copy + `constrain_logits` + `confidence` + `admit_commits`; `constraint_cost_ms`: the",
        "difference, without the copy (the server writes the mask in place).",
        "",
    ]
    for sc in costs["schemas"]:
        lines += [
            f"**{sc['schema']}**: automaton {sc['states']} states, {sc['edges']:,} token edges, compiled in {sc['compile_s']} s.",
            "",
            "| B | block filled | masked | scoring ms | constrained step ms | constraint cost ms |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sc["steps"]:
            lines.append(f"| {r['B']} | {r['filled']:.0%} | {r['masked']} | {r['scoring_ms']} | {r['constrained_step_ms']} | {r['constraint_cost_ms']} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the JSON toy, llada2-toy-json)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5, help="part 2: timed runs per cell")
    p.add_argument("--skip-serve", action="store_true", help="part 2 only")
    p.add_argument("--out", default=str(RESULTS / "constrained_bench"))
    a = p.parse_args()
    from sglang_llada.toy import JSON_TOY_DIR

    t0 = time.perf_counter()
    serve = [] if a.skip_serve else serve_rows(Path(a.model) if a.model else JSON_TOY_DIR, a.concurrency)
    costs = step_costs(a.repeat)
    command = "python bench/constrained_bench.py " + " ".join(sys.argv[1:])
    write(serve, costs, command.strip(), time.perf_counter() - t0, Path(a.out))
    print(Path(a.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
