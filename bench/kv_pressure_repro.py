"""KV-pressure repro: many long prompts against a small KV pool.

    python -m sglang.launch_server --model sglang_llada/toy/checkpoints/llada2-toy \\
        --max-total-tokens 1536 --dtype float32 --port 30007 [--dllm-algorithm LowConfidence]
    python bench/kv_pressure_repro.py http://127.0.0.1:30007

Sends 3 prompts of 300-600 random tokens alone, then 8 at once (max_new_tokens 96, ignore_eos),
and prints whether the batched answers equal the alone ones. Without the plugin's admission
hooks (sglang_llada/scheduler/admission.py) SGLang 0.5.23's scheduler dies here with "Prefill out of
memory" and the requests fail with a connection error.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests


def generate(url: str, ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    payload = {"input_ids": ids, "sampling_params": {"max_new_tokens": max_new_tokens, "ignore_eos": True}}
    r = requests.post(url + "/generate", json=payload, timeout=600)
    r.raise_for_status()
    return r.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--max-new-tokens", type=int, default=96)
    a = p.parse_args()
    rng = random.Random(0)
    prompts = [[rng.randrange(0, 256) for _ in range(rng.randrange(300, 600))] for _ in range(8)]
    alone = [generate(a.url, ids, a.max_new_tokens)["output_ids"] for ids in prompts[:3]]
    t0 = time.time()
    with ThreadPoolExecutor(len(prompts)) as pool:
        outs = list(pool.map(lambda ids: generate(a.url, ids, a.max_new_tokens), prompts))
    print(f"8 concurrent requests took {time.time() - t0:.1f} s")
    print("equal to alone:", [outs[i]["output_ids"] == alone[i] for i in range(3)])
    print("output lengths:", [len(o["output_ids"]) for o in outs])


if __name__ == "__main__":
    main()
