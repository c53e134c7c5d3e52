"""sglang-llada: serve LLaDA2 discrete-diffusion LLMs through SGLang's own runtime.

Kept import-light on purpose: SGLang imports this package in every process it spawns
(entry points), so nothing heavy (torch, sglang internals) is imported here.
"""

__version__ = "0.1.0"
