"""The `sglang.srt.plugins` entry point: what makes stock SGLang serve LLaDA2 as a diffusion model.

SGLang calls `register()` once in every process it starts (launcher, scheduler ranks,
detokenizer), all spawned, so it must be idempotent and import-light: it installs the seam table
(`seams.py`: every hook, resolution step and registration the plugin uses, with the function of
ours behind each and why), and SGLang applies the hooks (importing their targets) right after all
plugins ran. What each stage does: docs/structures.md.
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Entry point (`sglang.srt.plugins`). Safe to call any number of times."""
    global _registered
    if _registered:
        return
    _registered = True
    from sglang_llada.seams import install

    install()
