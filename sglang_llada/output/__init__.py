"""Stage 4, batch results and streaming (scheduler, then tokenizer process): what each response
carries beyond SGLang's dLLM path: forward counts (`forward_stats.py`), output-token logprobs
(`logprobs.py`) and, for requests that ask, the decoding trajectory per output token (`trace.py`),
all added before SGLang processes a batch's result (`batch_result.py`), and one stream chunk per
committed block (`streaming.py`)."""
