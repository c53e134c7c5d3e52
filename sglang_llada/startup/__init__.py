"""Stage 1, server start-up (launcher and every scheduler rank): how stock SGLang comes to serve a
LLaDA2 checkpoint as a diffusion model. Server-argument resolution (`server_args.py`), the dLLM
config and batch size (`dllm_config.py`), the model class and algorithm lookups (`registries.py`),
the checkpoint's LLaDA2.X generation and special tokens. (The CPU platform, an entry point of its
own that the model also asks, is `sglang_llada/platform.py`.)"""
