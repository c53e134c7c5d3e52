"""Stage 3, the scheduler (one process per rank): which diffusion requests share a round and how
their prompts are encoded (`rounds.py` over `prefill.py` and `admission.py`), what each batch row
carries for the algorithms (`batch_policy.py`), the folded store's scheduler side: stale and
held-back blocks kept out of the radix tree until their KV is final (`folded_store.py`), and a
failed forward costing only its batch (`fault_isolation.py`). The forward itself is the algorithm's
(`sglang_llada.algorithms`)."""
