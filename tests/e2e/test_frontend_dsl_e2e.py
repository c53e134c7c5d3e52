"""SGLang's frontend language speaks LLaDA2's chat format to a LLaDA2 server.

A multi-turn `sgl.function` through `sgl.RuntimeEndpoint`: the prompt it sends is the checkpoint's
own chat template (its Jinja, through transformers) applied to the same messages, and the server's
`prompt_tokens` equals that prompt's token count. Without `sglang_llada.frontend`, SGLang's
"default" template (`USER:` ...) would have been used.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("with_system", [False, True])
def test_multi_turn_dsl_prompt_is_the_checkpoint_chat_template(
    default_server, tiny_checkpoint: Path, with_system: bool
) -> None:
    import sglang as sgl
    from transformers import AutoTokenizer

    import sglang_llada.frontend  # noqa: F401  (registers the LLaDA2 template with the frontend)

    turns = [("user", "Upper: abc"), ("assistant", "ABC"), ("user", "Lower: XYZ")]
    if with_system:
        turns.insert(0, ("system", "Answer briefly."))

    @sgl.function
    def chat(s):  # type: ignore[no-untyped-def]
        for role, text in turns:
            s += getattr(sgl, role)(text)
        s += sgl.assistant(sgl.gen("answer", max_tokens=8, temperature=0))

    backend = sgl.RuntimeEndpoint(default_server.url)
    assert backend.get_chat_template().name == "llada2"
    state = chat.run(backend=backend)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    messages = [{"role": r, "content": t} for r, t in turns]
    want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The program's text: the prompt it sent, the answer, then the assistant turn's end.
    assert state.text() == want + state["answer"] + "<|role_end|>"
    assert state.get_meta_info("answer")["prompt_tokens"] == len(tok.encode(want))
