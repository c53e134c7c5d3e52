"""Probe (issue 35): a toy trained on the "multi" recipe, scored through the stock server.

    .venv/bin/python docs/probes/toy_multi_probe/toy_multi_probe.py MODEL_DIR

Two stock servers (`--max-running-requests 16`): the checkpoint's default decoding on the splits
heldout / json / multi / help, then `llada2_threshold` at threshold 0.5 on multi (where parallel
commits of several valid answers should mix them). Greedy, concurrency 16; per split: accuracy
(validity for multi), per task, TPF and up to 4 wrong answers. Results: docs/probes/toy_multi_probe/toy_multi_probe.txt.
"""
import argparse
import json
import tempfile
from pathlib import Path

from sglang_llada.eval import evaluate
from sglang_llada.server_process import launch

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("model", type=Path, metavar="MODEL_DIR")
model = ap.parse_args().model
out = {}
for label, knobs, splits in (("default", None, ("heldout", "json", "multi", "help")), ("threshold 0.5", "threshold: 0.5", ("multi",))):
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        extra = ["--max-running-requests", "16"]
        if knobs:
            (work / "k.yaml").write_text(knobs)
            extra += ["--dllm-algorithm", "llada2_threshold", "--dllm-algorithm-config", str(work / "k.yaml")]
        server = launch(model, extra, work, work / "server.log")
        try:
            for split in splits:
                summary, outcomes = evaluate(server.url, split, concurrency=16, progress=False)
                wrong = [(o.example.task, o.example.prompt[:40], o.completion[:90]) for o in outcomes if not o.correct][:4]
                out[f"{label} / {split}"] = {"accuracy": round(summary["accuracy"], 3), "per_task": summary["accuracy_per_task"],
                                             "tpf": summary["tpf"] and round(summary["tpf"], 2), "n": summary["n"], "wrong": wrong}
                print(label, split, out[f"{label} / {split}"], flush=True)
        finally:
            server.stop()
print(json.dumps(out, indent=1))
