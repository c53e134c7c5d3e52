"""Structured output under diffusion decoding (regex / JSON schema constraints on whole blocks).

`request.py`: what `regex` / `json_schema` (and SGLang's tool-call `structural_tag`) become on a
diffusion server: one regex in `custom_params`, checked in the tokenizer process.

`grammar.py`: that regex compiled into a token automaton by outlines (SGLang's own grammar backend
for regular constraints), cached per pattern and tokenizer.

`automaton.py`: the pure part -- a deterministic automaton over token ids and the block dynamic
program that says which tokens each masked position of a block may take so that the whole output
can still become a word of the language within the token budget, whatever order the positions are
committed in.

`block.py`: one denoising step under constraints: a constrained row's masked logits limited to the
tokens that keep its output completable (`constrain_logits`), and the step's commits admitted only
while they do (`admit_commits`).
"""
