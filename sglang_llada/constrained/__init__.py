"""Structured output under diffusion decoding (regex / JSON schema constraints on whole blocks).

`automaton.py`: the pure part -- a deterministic automaton over token ids and the block dynamic
program that says which tokens each masked position of a block may take so that the whole output
can still become a word of the language within the token budget, whatever order the positions are
committed in.
"""
