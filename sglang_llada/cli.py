"""The `sglang-llada` command line (also `python -m sglang_llada`).

Each subcommand is one entry in _SUBCOMMANDS: a function that adds its arguments to its parser
and a handler that receives the parsed namespace and returns the exit code. Heavy imports
(torch, safetensors, sglang) live inside the handlers so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NamedTuple

from sglang_llada.toy.tasks import SPLITS


class _Subcommand(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# --- tiny-checkpoint ------------------------------------------------------------------------


def _tiny_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="weights are a pure function of the seed")
    p.add_argument("--shards", type=int, default=1, help="number of safetensors shards")
    p.add_argument(
        "--fused-experts",
        action="store_true",
        help="store experts as 3-D [E, ...] tensors instead of one tensor per expert",
    )
    p.add_argument("--tie-word-embeddings", action="store_true", help="omit lm_head.weight")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="weight dtype")
    p.add_argument(
        "--generation",
        choices=("2.0", "2.1", "2.2"),
        default="2.0",
        help="LLaDA2.X generation: 2.1 adds LLaDA2.1's editing knobs to generation_config.json; "
        "2.2 adds MoE block routing (expert_capacity, block_size) and the DELETE / SPLIT tokens",
    )


def _tiny_checkpoint(args: argparse.Namespace) -> int:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    overrides: dict[str, object] = {}
    if args.tie_word_embeddings:
        overrides["tie_word_embeddings"] = True
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    path = write_tiny_checkpoint(
        args.dir,
        seed=args.seed,
        num_shards=args.shards,
        fused_experts=args.fused_experts,
        overrides=overrides or None,
        generation=args.generation,
    )
    print(path)
    return 0


# --- serve ---------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint to serve (default: the embedded toy LLaDA2)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)


def _default_model_dir() -> str:
    from sglang_llada.toy import TRAINED_TOY_DIR

    if not (TRAINED_TOY_DIR / "config.json").exists():
        raise SystemExit(
            f"sglang-llada: the embedded toy checkpoint is missing ({TRAINED_TOY_DIR}); reinstall "
            "the package, retrain it (python -m sglang_llada.toy.train --objective diffusion "
            f"--out {TRAINED_TOY_DIR}), or pass --model DIR"
        )
    return str(TRAINED_TOY_DIR)


def _serve(args: argparse.Namespace, passthrough: list[str]) -> int:
    import os

    model = args.model or _default_model_dir()
    cmd = [
        sys.executable, "-m", "sglang.launch_server",
        "--model-path", model, "--host", args.host, "--port", str(args.port), *passthrough,
    ]
    url = f"http://{args.host}:{args.port}"
    print(f"sglang-llada: serving {model} at {url}")
    print(
        "example (when the server says it is ready):\n  curl -s " + url + "/v1/chat/completions "
        "-H 'Content-Type: application/json' "
        """-d '{"messages": [{"role": "user", "content": "Upper: nsgocs kknewot lwzln m nv ei djyu m pj ow fx efes vkcd tnichj d hgys gwl"}], "max_tokens": 80}'"""
    )
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached


# --- eval ----------------------------------------------------------------------------------


def _eval_args(p: argparse.ArgumentParser) -> None:
    from sglang_llada.eval import DEFAULT_MAX_NEW_TOKENS

    p.add_argument("--url", default="http://127.0.0.1:30000", help="a running SGLang server")
    p.add_argument("--split", default="heldout", choices=SPLITS, help="toy task split (sglang_llada/toy/tasks.py)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--temperature", type=float, default=0.0, help="sample at this temperature (0: greedy)")
    p.add_argument("--seed", type=int, default=0, help="with --temperature: request i gets sampling_seed SEED + i")


def _eval(args: argparse.Namespace) -> int:
    from sglang_llada.eval import evaluate, print_report

    if args.temperature < 0:
        raise SystemExit(f"sglang-llada eval: --temperature must be >= 0 (0 is greedy), got {args.temperature}")

    summary, _ = evaluate(
        args.url, args.split, concurrency=args.concurrency,
        max_new_tokens=args.max_new_tokens, limit=args.limit, temperature=args.temperature, seed=args.seed,
    )
    print_report(args.url, args.split, args.concurrency, summary, args.json)
    return 0


# --- trace ---------------------------------------------------------------------------------


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the user message (sent in LLaDA2's chat template unless --raw)")
    p.add_argument("--url", default="http://127.0.0.1:30000", help="a running sglang-llada diffusion server")
    p.add_argument("--raw", action="store_true", help="send the prompt text as is, without the chat template")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--out", default="trace.html", help="the HTML page to write")
    p.add_argument("--json", default=None, help="also write the trajectory data to this JSON file")


def _trace(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sglang_llada.trace_view import fetch_trace, render_html, render_prompt

    data = fetch_trace(args.url, render_prompt(args.prompt, args.raw), args.max_new_tokens, args.temperature)
    Path(args.out).write_text(render_html(data), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    n, forwards = len(data["output_ids"]), data["forwards"]
    print(f"{n} tokens in {forwards} denoising forwards; trajectory written to {args.out}")
    return 0


# --- registry -------------------------------------------------------------------------------

_SUBCOMMANDS: dict[str, _Subcommand] = {
    "serve": _Subcommand(
        help="launch the SGLang server (default: the embedded model); other flags go to SGLang",
        add_arguments=_serve_args,
        handler=_serve,  # type: ignore[arg-type]  # takes the pass-through flags too
    ),
    "eval": _Subcommand(
        help="score a running server on the toy tasks (accuracy, TPF, tokens/s, latency)",
        add_arguments=_eval_args,
        handler=_eval,
    ),
    "trace": _Subcommand(
        help="draw one request's decoding trajectory (which forward committed each token) as an HTML page",
        add_arguments=_trace_args,
        handler=_trace,
    ),
    "tiny-checkpoint": _Subcommand(
        help="write a random-weight toy LLaDA2 checkpoint (HF layout) to DIR",
        add_arguments=_tiny_checkpoint_args,
        handler=_tiny_checkpoint,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sglang-llada", description="Tools for serving LLaDA2 diffusion LLMs with SGLang."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "serve":
        return int(args._handler(args, rest))
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args._handler(args))


if __name__ == "__main__":
    sys.exit(main())
