"""`sglang-llada trace`: one request's decoding trajectory as a self-contained HTML page.

The page shows the answer block by block (32 tokens a row), each token coloured by the forward
that committed it, and a slider (with a play button) that replays the decoding: at forward k the
tokens committed later are still masks. Tokens an editing decoder rewrote are outlined and say
when. A bar chart under it counts the tokens committed by each forward, which is where the
decoding schedules differ (threshold: many per forward; `llada2_static` 1/step: one; `llada2_exact`:
one-per-step output in few forwards). Everything (data, CSS, script) is inline: one file, no
network.

Data: a `/generate` request with `custom_params: {"dllm_trace": true}` (output/trace.py:
`dllm_committed_at` / `dllm_rewritten_at` per output token) and `return_logprob` with
`return_text_in_logprobs` (each token's text and logprob), greedy unless told otherwise.
"""

from __future__ import annotations

import html
import json
from typing import Any

import requests

from sglang_llada.output.trace import COMMITTED, REWRITTEN, TRACE_KEY

BLOCK = 32


def render_prompt(prompt: str, raw: bool) -> str:
    """The prompt as sent: LLaDA2's chat template around it (the embedded tokenizer's), or as is."""
    if raw:
        return prompt
    from sglang_llada.toy.tokenizer import load_tokenizer

    tok = load_tokenizer()
    return str(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True))


def fetch_trace(url: str, text: str, max_new_tokens: int, temperature: float = 0.0, timeout: float = 600.0) -> dict[str, Any]:
    """One traced request to a running diffusion server -> the page's data."""
    payload: dict[str, Any] = {
        "text": text,
        "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": temperature, "custom_params": {TRACE_KEY: True}},
        "return_logprob": True,
        "return_text_in_logprobs": True,
    }
    r = requests.post(url.rstrip("/") + "/generate", json=payload, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"{url}/generate answered {r.status_code}: {r.text[:500]}")
    out = r.json()
    meta = out["meta_info"]
    if COMMITTED not in meta:
        raise RuntimeError(f"{url} returned no {COMMITTED}: is it an sglang-llada diffusion server?")
    logprobs = meta.get("output_token_logprobs") or []
    return {
        "prompt": text,
        "output_ids": out["output_ids"],
        "tokens": [t[2] if len(t) > 2 and t[2] is not None else str(t[1]) for t in logprobs],
        "logprobs": [t[0] for t in logprobs],
        "committed_at": meta[COMMITTED],
        "rewritten_at": meta.get(REWRITTEN) or [None] * len(out["output_ids"]),
        "forwards": meta.get("dllm_forwards"),
        "prompt_tokens": meta.get("prompt_tokens"),
        "text": out["text"],
    }


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
.grid{display:grid;grid-template-columns:repeat(32,minmax(22px,1fr));gap:2px;margin:8px 0 14px}
.t{font:12px ui-monospace,monospace;padding:3px 1px;text-align:center;border-radius:3px;white-space:pre;overflow:hidden}
.m{background:#e6e6e6!important;color:#999}
.rw{outline:2px solid #d62728}
.bars{display:flex;align-items:flex-end;gap:1px;height:90px;border-bottom:1px solid #999}
.bar{background:#4c72b0;flex:1;min-width:2px}
.bar.on{background:#dd8452}
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}
"""

_SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const cells = [...document.querySelectorAll('.t')];
const bars = [...document.querySelectorAll('.bar')];
const slider = document.getElementById('k'), label = document.getElementById('klabel');
function show(k) {
  cells.forEach((c, i) => {
    const at = D.committed_at[i];
    const hidden = at === null ? false : at > k;
    c.classList.toggle('m', hidden);
    c.textContent = hidden ? '\\u2591' : c.dataset.tok;
  });
  bars.forEach((b, i) => b.classList.toggle('on', i + 1 === k));
  label.textContent = 'forward ' + k + ' of ' + D.last;
}
slider.addEventListener('input', () => show(+slider.value));
let timer = null;
document.getElementById('play').addEventListener('click', () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  if (+slider.value >= D.last) slider.value = 0;
  timer = setInterval(() => {
    if (+slider.value >= D.last) { clearInterval(timer); timer = null; return; }
    slider.value = +slider.value + 1; show(+slider.value);
  }, 250);
});
show(D.last);
"""


def _visible(token: str) -> str:
    return token.replace("\n", "\u23ce").replace(" ", "\u2423") or "\u2205"


def _colour(at: int | None, last: int) -> str:
    if at is None:
        return "#ffffff"
    hue = 220 - 200 * (at - 1) / max(1, last - 1)  # blue (early) -> orange (late)
    return f"hsl({hue:.0f},70%,82%)"


def render_html(trace: dict[str, Any], title: str = "sglang-llada decoding trajectory") -> str:
    """The page for `fetch_trace`'s data."""
    committed = trace["committed_at"]
    rewritten = trace["rewritten_at"]
    tokens = trace["tokens"] or [str(i) for i in trace["output_ids"]]
    n = len(tokens)
    last = max([a for a in committed if a is not None] + [r for r in rewritten if r is not None] + [1])
    per_forward = [0] * last
    for a in committed:
        if a is not None:
            per_forward[a - 1] += 1
    # the first output token sits where the prompt's last (partial) block leaves off
    offset = (trace.get("prompt_tokens") or 0) % BLOCK
    cells = ['<div class="pad"></div>'] * offset  # not a token: the script indexes `.t` cells
    for i, tok in enumerate(tokens[:n]):
        at = committed[i] if i < len(committed) else None
        rw = rewritten[i] if i < len(rewritten) else None
        tip = f"token {i}: {tok!r}, committed by forward {at}" + (f", rewritten by forward {rw}" if rw else "")
        cls = "t rw" if rw else "t"
        cells.append(
            f'<div class="{cls}" title="{html.escape(tip)}" data-tok="{html.escape(_visible(tok))}" '
            f'style="background:{_colour(at, last)}">{html.escape(_visible(tok))}</div>'
        )
    peak = max(per_forward) or 1
    bars = "".join(
        f'<div class="bar" title="forward {k + 1}: {c} tokens" style="height:{100 * c / peak:.0f}%"></div>'
        for k, c in enumerate(per_forward)
    )
    forwards = trace.get("forwards")
    tpf = f"{n / forwards:.2f}" if forwards else "-"
    data = json.dumps({"committed_at": committed[:n], "last": last}).replace("</", "<\\/")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h2>{html.escape(title)}</h2>
<p>{n} output tokens, {forwards if forwards is not None else '-'} denoising forwards (tokens per forward {tpf}).
Each row is a 32-token block; colour: the forward that committed the token (blue early, orange late);
red outline: rewritten by an editing step; grey: still a mask at the selected forward.</p>
<p><button id="play">play / pause</button>
<input id="k" type="range" min="0" max="{last}" value="{last}" style="width:60%"> <span id="klabel"></span></p>
<div class="grid">{''.join(cells)}</div>
<p>Tokens committed by each forward:</p>
<div class="bars">{bars}</div>
<h3>Prompt</h3><pre>{html.escape(trace.get('prompt', ''))}</pre>
<h3>Answer</h3><pre>{html.escape(trace.get('text', ''))}</pre>
<script type="application/json" id="data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
