"""Serve a checkpoint with the stock server and score one toy split (a quick look at a training run).

    .venv/bin/python bench/serve_eval.py MODEL_DIR SPLIT LIMIT [ALGORITHM ["knob: value;knob: value"]] [--temperature T]

One `python -m sglang.launch_server --model MODEL_DIR --max-running-requests 16` (plus
`--dllm-algorithm` / `--dllm-algorithm-config` when given), `sglang-llada eval` on the first LIMIT
examples of SPLIT at concurrency 16 (greedy, or sampled at T with seeds 0..); prints accuracy per task, TPF, the first SHOW_WRONG (8) wrong
answers in full and the plugin's start-up line.
"""

import sys
import tempfile
from pathlib import Path

from sglang_llada.eval import evaluate
from sglang_llada.server_process import launch

SHOW_WRONG = 8
argv = sys.argv[1:]
temperature = 0.0
if "--temperature" in argv:
    k = argv.index("--temperature")
    temperature = float(argv[k + 1])
    del argv[k : k + 2]
model, split, limit, rest = Path(argv[0]), argv[1], int(argv[2]), argv[3:]
with tempfile.TemporaryDirectory() as d:
    work = Path(d)
    extra = ["--max-running-requests", "16"]
    if rest:
        extra += ["--dllm-algorithm", rest[0]]
        if len(rest) > 1:
            (work / "knobs.yaml").write_text(rest[1].replace(";", "\n"))
            extra += ["--dllm-algorithm-config", str(work / "knobs.yaml")]
    server = launch(model, extra, work, work / "server.log")
    try:
        summary, outcomes = evaluate(server.url, split, concurrency=16, limit=limit, progress=False, temperature=temperature)
        tpf = summary["tpf"] and round(summary["tpf"], 2)
        print(split, rest, f"T={temperature}", "accuracy", round(summary["accuracy"], 3), summary["accuracy_per_task"], "tpf", tpf)
        for wrong in [o for o in outcomes if not o.correct][:SHOW_WRONG]:
            print(f"  wrong ({wrong.example.task}):", repr(wrong.example.answer), "->", repr(wrong.completion))
        print(next(ln for ln in server.log().splitlines() if "plugin active" in ln)[-200:])
    finally:
        server.stop()
