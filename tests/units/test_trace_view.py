"""The trajectory page (sglang_llada/trace_view.py) from hand-made data: no server."""

from __future__ import annotations

import json
import re

from sglang_llada.trace_view import render_html


def test_page_places_tokens_by_block_and_counts_commits() -> None:
    data = {
        "prompt": "<p>", "text": "a b", "output_ids": [1, 2, 3, 4], "tokens": ["a", " ", "<b>", "\n"],
        "committed_at": [1, 1, 2, 3], "rewritten_at": [None, None, 3, None], "forwards": 3, "prompt_tokens": 30,
    }
    page = render_html(data)
    assert page.count('class="pad"') == 30  # the first output token sits at position 30 of its block
    assert len(re.findall(r'class="t( rw)?"', page)) == 4 and page.count('class="t rw"') == 1
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<h3>Prompt")[0]  # token text escaped
    assert 'max="3"' in page and "4 output tokens, 3 denoising forwards" in page
    bars = re.findall(r'title="forward (\d+): (\d+) tokens"', page)
    assert bars == [("1", "2"), ("2", "1"), ("3", "1")]
    blob = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert blob is not None and json.loads(blob.group(1)) == {"committed_at": [1, 1, 2, 3], "last": 3}
