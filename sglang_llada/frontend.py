"""LLaDA2's chat format for SGLang's frontend language (`sgl.function`, `sgl.user`, `sgl.assistant`).

Why this exists: a frontend program talking to a server through `sgl.RuntimeEndpoint(url)` builds
its prompt text on the client, with the chat template that `sglang.lang.chat_template` matches to
the server's model path; nothing there knows LLaDA2, so its prompts used SGLang's "default"
template (`USER:` / `ASSISTANT:`), a format the model was never trained on.

SGLang's frontend offers two registrations, `register_chat_template` and
`register_chat_template_matching_function`; they must run in the client's process, and SGLang's
frontend loads no plugin there (no entry point is read by `import sglang`). So they run when this
module is imported: `import sglang_llada.frontend`, one line in the frontend program. The
template reproduces the checkpoint's Jinja chat template for
system / user / assistant turns:

    <role>SYSTEM</role>[system text + "\\n"]detailed thinking off<|role_end|>
    <role>HUMAN</role>...<|role_end|>  <role>ASSISTANT</role>...<|role_end|>  ...

(tool calls and reasoning content are not part of the frontend language's roles). The matching
function picks it for a model path whose config.json says `LLaDA2MoeModelLM` (a local checkpoint
directory, as served by `sglang-llada serve`) or whose name contains "llada2".
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

TEMPLATE_NAME = "llada2"
_SYSTEM = "<role>SYSTEM</role>"
_END = "<|role_end|>"
_THINKING = "detailed thinking off"

_registered = False


def _make_template() -> Any:
    from sglang.lang.chat_template import ChatTemplate

    class LLaDA2ChatTemplate(ChatTemplate):
        """The first system turn carries LLaDA2's thinking switch; with no system turn, the first
        user turn starts with the system header the Jinja template always writes."""

        def get_prefix_and_suffix(self, role: str, hist_messages: list[dict]) -> tuple[str, str]:
            prefix, suffix = self.role_prefix_and_suffix.get(role, ("", ""))
            first = not hist_messages
            if role == "system" and first:
                return _SYSTEM, "\n" + _THINKING + _END
            if role != "system" and first:
                return _SYSTEM + _THINKING + _END + prefix, suffix
            return prefix, suffix

    return LLaDA2ChatTemplate(
        name=TEMPLATE_NAME,
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": (_SYSTEM, _END),
            "user": ("<role>HUMAN</role>", _END),
            "assistant": ("<role>ASSISTANT</role>", _END),
        },
        stop_str=[_END],
    )


def match_llada2(model_path: str) -> Optional[str]:
    """`TEMPLATE_NAME` for a LLaDA2 model path (checkpoint directory or hub id), else None."""
    config = os.path.join(model_path, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                archs = json.load(f).get("architectures") or []
        except (OSError, ValueError):
            archs = []
        if "LLaDA2MoeModelLM" in archs:
            return TEMPLATE_NAME
    return TEMPLATE_NAME if "llada2" in model_path.lower() else None


def register() -> None:
    """Register the template and its matching function with SGLang's frontend (idempotent)."""
    global _registered
    if _registered:
        return
    from sglang.lang.chat_template import matching_function_registry, register_chat_template

    register_chat_template(_make_template())
    if match_llada2 not in matching_function_registry:
        # First in line (SGLang's `register_chat_template_matching_function` appends): its own
        # matchers test names only and would otherwise claim some LLaDA2 paths first.
        matching_function_registry.insert(0, match_llada2)
    _registered = True


register()
