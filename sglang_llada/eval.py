"""`sglang-llada eval`: run a toy task split against any running SGLang server and score it.

Works with our diffusion server, SGLang's in-tree dLLM and the autoregressive twin alike: every
request goes to the stock `/generate` endpoint with the LLaDA2 chat template rendered on this
side (all three serve the same tokenizer), greedy, and the completion is scored by exact match.
Tokens per forward (TPF) is reported when the server puts `dllm_forwards` in `meta_info`.

`--temperature T` samples instead (every request at temperature T, request i seeded with
`sampling_seed` = `--seed` + i, so a run is repeatable on the same server): a sampled draft holds
wrong tokens that greedy decoding of a toy never writes, which is what editing decoders repair
(bench/edit_toys.py's sampled rows).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from sglang_llada.toy.tasks import Example, is_correct, split

DEFAULT_MAX_NEW_TOKENS = 128  # the longest answer (the 101-character help text + end token) fits with room


@dataclass
class Outcome:
    example: Example
    completion: str
    correct: bool
    completion_tokens: int
    latency_s: float
    forwards: int | None  # None when the server does not report dllm_forwards


def render_prompts(examples: list[Example]) -> list[str]:
    """The chat-templated prompt text of each example (the toy tokenizer's LLaDA2 template)."""
    from sglang_llada.toy.tokenizer import load_tokenizer

    tok = load_tokenizer()
    return [
        tok.apply_chat_template(ex.messages(), tokenize=False, add_generation_prompt=True)
        for ex in examples
    ]


def _post(url: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    import requests

    r = requests.post(url.rstrip("/") + "/generate", json=payload, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"{url}/generate answered {r.status_code}: {r.text[:500]}")
    return r.json()


def run_one(
    url: str, example: Example, prompt: str, max_new_tokens: int, timeout: float, params: dict[str, Any] | None = None,
) -> Outcome:
    """One greedy request; `params`: more sampling params (e.g. a `json_schema`)."""
    payload = {
        "text": prompt,
        "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0, **(params or {})},
    }
    t0 = time.perf_counter()
    out = _post(url, payload, timeout)
    latency = time.perf_counter() - t0
    meta = out.get("meta_info", {})
    forwards = meta.get("dllm_forwards")
    return Outcome(
        example=example,
        completion=out["text"],
        correct=is_correct(example, out["text"]),
        completion_tokens=int(meta.get("completion_tokens", 0)),
        latency_s=latency,
        forwards=int(forwards) if isinstance(forwards, int) else None,
    )


def _sampled(params: dict[str, Any] | None, temperature: float, seed: int) -> dict[str, Any] | None:
    """`params` with a temperature and a per-request seed, or as given when greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return params
    return {**(params or {}), "temperature": temperature, "sampling_seed": seed}


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    n = len(outcomes)
    tokens = sum(o.completion_tokens for o in outcomes)
    forwards = [o.forwards for o in outcomes]
    has_forwards = n > 0 and all(f is not None for f in forwards)
    total_forwards = sum(f for f in forwards if f is not None)
    per_task: dict[str, list[bool]] = {}
    for o in outcomes:
        per_task.setdefault(o.example.task, []).append(o.correct)
    lat = [o.latency_s for o in outcomes]
    return {
        "n": n,
        "accuracy": sum(o.correct for o in outcomes) / n if n else float("nan"),
        "accuracy_per_task": {t: sum(v) / len(v) for t, v in per_task.items()},
        "tpf": tokens / total_forwards if has_forwards and total_forwards else None,
        "forwards": total_forwards if has_forwards else None,
        "completion_tokens": tokens,
        "output_tokens_per_s": tokens / wall_s if wall_s > 0 else float("nan"),
        "wall_s": wall_s,
        "latency_s": {
            "mean": statistics.fmean(lat) if lat else float("nan"),
            "p50": _percentile(lat, 0.5),
            "p90": _percentile(lat, 0.9),
            "p99": _percentile(lat, 0.99),
        },
    }


def evaluate(
    url: str,
    split_name: str = "heldout",
    *,
    concurrency: int = 1,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limit: int | None = None,
    timeout: float = 600.0,
    progress: bool = True,
    params: dict[str, Any] | None = None,
    examples: list[Example] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Greedy requests for a split's examples (or `examples`, a subset), `concurrency` at a time;
    `params`: more sampling params for every request; `temperature` > 0 samples, request i with
    `sampling_seed` seed + i. -> (summary, outcomes in split order)."""
    from tqdm import tqdm

    examples = (split(split_name) if examples is None else examples)[:limit]
    prompts = render_prompts(examples)
    outcomes: list[Outcome | None] = [None] * len(examples)
    bar = tqdm(total=len(examples), desc=f"eval {split_name}", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {
            pool.submit(run_one, url, ex, p, max_new_tokens, timeout, _sampled(params, temperature, seed + i)): i
            for i, (ex, p) in enumerate(zip(examples, prompts))
        }
        correct = finished = 0
        for fut in as_completed(futures):
            i = futures[fut]
            outcomes[i] = fut.result()
            correct += outcomes[i].correct  # type: ignore[union-attr]
            finished += 1
            bar.update(1)
            bar.set_postfix(acc=f"{correct / finished:.3f}")
    wall = time.perf_counter() - t0
    bar.close()
    done = [o for o in outcomes if o is not None]
    return {**summarize(done, wall), "temperature": temperature, "seed": seed if temperature > 0 else None}, done


def format_report(url: str, split_name: str, concurrency: int, s: dict[str, Any]) -> str:
    tpf = "n/a (server does not report dllm_forwards)" if s["tpf"] is None else f"{s['tpf']:.2f}"
    lines = [
        f"server       {url}",
        f"split        {split_name} (n={s['n']}), concurrency {concurrency}, "
        + (f"temperature {s['temperature']} (seeds {s['seed']}..)" if s.get("temperature") else "greedy"),
        f"accuracy     {s['accuracy']:.3f}  "
        + "  ".join(f"{t} {a:.2f}" for t, a in s["accuracy_per_task"].items()),
        f"TPF          {tpf}",
        f"output tok/s {s['output_tokens_per_s']:.1f}  ({s['completion_tokens']} tokens in {s['wall_s']:.1f} s)",
        "latency s    "
        + "  ".join(f"{k} {v:.3f}" for k, v in s["latency_s"].items()),
    ]
    return "\n".join(lines)


def print_report(url: str, split_name: str, concurrency: int, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"url": url, "split": split_name, "concurrency": concurrency, **summary}))
    else:
        print(format_report(url, split_name, concurrency, summary))
