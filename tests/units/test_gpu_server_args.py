"""Start-up on CUDA, checked on this CPU machine (issue 34): server-argument resolution as SGLang
0.5.23 runs it on a CUDA host, with our resolution step `startup/model_limits.py` (prompt forwards
never captured in CUDA graphs; MoE runners and KV dtypes our model cannot serve refused), and the
running-request limit lowered until a denoising step's logits fit (`startup/dllm_config.py`).

The simulation (`as_on_cuda`) is the smallest set of patches found under which
`ServerArgs(...).resolve_once()` here resolves as on a CUDA machine; each one is named there. That it
is faithful is asserted, not assumed: without our step the prefill graph resolves to SGLang's CUDA
default (BREAKABLE), the decode graph to FULL and the attention backend to FlashInfer (SGLang's dLLM
rule for a captured decode graph), none of which a CPU resolution gives.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest

from sglang_llada.startup import dllm_config
from sglang_llada.startup.model_limits import apply_model_limits, kv_cache_dtype_error, refused_moe_runner_backends

LLADA2_VOCAB = 157_184  # the real LLaDA2 checkpoints' vocabulary
GIB = 1 << 30


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("gpu-args") / "ckpt", seed=0)


@pytest.fixture
def as_on_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Resolve as on a CUDA machine. The patches, each needed (dropping any one of 1-3 resolves the
    graphs or the attention backend as on CPU), undone after the test:

    1. `sglang.srt.platforms._current_platform` -> `CudaSRTPlatform()`: `handle_platform_defaults`
       looks the platform up when it runs, so CUDA's `apply_server_args_defaults` runs instead of our
       CPU platform's (which turns every graph off and picks torch_native attention).
    2. `sglang.srt.arg_groups.model_override_base.current_platform` -> the same object: that module
       bound the platform at import; an out-of-tree platform there names the default attention
       backend (ours: torch_native, where CUDA resolves triton, then FlashInfer for dLLM).
    3. `sglang.srt.utils.is_cuda` -> True: `cuda_graph_config.default_prefill_backend()` asks it
       (BREAKABLE on CUDA, DISABLED elsewhere).
    4. `sglang_llada.platform._has_accelerator` -> True: our platform entry point answers None, as
       on a GPU host (resolution does not ask it once the device is given, see 5).
    5. `device="cuda"` in `ServerArgs` (see `resolve`): what SGLang's `get_device()` derives on a
       CUDA host (it asks `torch.cuda.is_available()` itself).
    """
    import sglang.srt.arg_groups.model_override_base as model_override_base
    import sglang.srt.platforms as platforms
    import sglang.srt.utils as sglang_utils
    from sglang.srt.platforms.cuda import CudaSRTPlatform
    from sglang.srt.plugins import load_plugins

    import sglang_llada.platform as our_platform

    # Our resolution steps, as SGLang loads them; this also imports (to apply the hooks) the SGLang
    # modules that probe `is_cuda()` at import time (e.g. layers/quantization/fp8_utils.py asks the
    # device capability, sgl_kernel loads its CUDA library), which must happen before the patches.
    load_plugins()
    platforms.current_platform  # noqa: B018 - resolve the real one first, so the patch is what is undone
    cuda = CudaSRTPlatform()
    monkeypatch.setattr(platforms, "_current_platform", cuda)
    monkeypatch.setattr(model_override_base, "current_platform", cuda)
    monkeypatch.setattr(sglang_utils, "is_cuda", lambda: True)
    monkeypatch.setattr(our_platform, "_has_accelerator", lambda: True)
    yield


def resolve(checkpoint: Path, **server_args: Any) -> Any:
    """`ServerArgs(...).resolve_once()` on the device a CUDA host derives; the resolved view."""
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.server_args import ServerArgs

    args = ServerArgs(model_path=str(checkpoint), device="cuda", **server_args)
    args.resolve_once()
    return resolving_view(args)


def without_our_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLang's `handle_dllm_inference` as it is, our wrapper left out."""
    from sglang.srt.arg_groups import resolution_hooks

    steps = resolution_hooks._HOOKS.get("handle_dllm_inference", [])
    assert apply_model_limits in steps
    monkeypatch.setitem(resolution_hooks._HOOKS, "handle_dllm_inference", [s for s in steps if s is not apply_model_limits])


# -- prompt forwards and CUDA graphs ---------------------------------------------------------------


def test_prompt_graphs_off_on_cuda_decode_graphs_left_as_sglang_resolves(
    as_on_cuda: None, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sglang.srt.model_executor.cuda_graph_config import Backend

    with monkeypatch.context() as m:
        without_our_step(m)
        alone = resolve(checkpoint)
    # The simulation is faithful: SGLang alone would capture LLaDA2's prompt forwards.
    assert alone.cuda_graph_config.prefill.backend == Backend.BREAKABLE
    assert alone.cuda_graph_config.decode.backend == Backend.FULL
    assert alone.attention_backend == "flashinfer"

    with caplog.at_level(logging.INFO, logger="sglang_llada.plugin"):
        ours = resolve(checkpoint)
    assert ours.cuda_graph_config.prefill.backend == Backend.DISABLED
    assert ours.cuda_graph_config.decode == alone.cuda_graph_config.decode  # decode graphs untouched
    assert ours.attention_backend == alone.attention_backend
    lines = [r.getMessage() for r in caplog.records if "prefill CUDA graph" in r.getMessage()]
    assert len(lines) == 1
    assert "SGLang's default 'breakable'" in lines[0] and "turned off" in lines[0]
    assert "decode CUDA graphs (denoising forwards) stay 'full'" in lines[0]

    # Only LLaDA2 checkpoints: the same checkpoint declared not LLaDA2 keeps SGLang's prompt graph
    # (and nothing is refused).
    from sglang_llada.startup import server_args as our_server_args

    monkeypatch.setattr(our_server_args, "serves_llada2", lambda server_args: False)
    other = resolve(checkpoint, kv_cache_dtype="fp8_e4m3", moe_runner_backend="triton_kernel")
    assert other.cuda_graph_config.prefill.backend == Backend.BREAKABLE


@pytest.mark.parametrize(
    ("server_args", "flag"),
    [
        ({"cuda_graph_backend_prefill": "breakable"}, "--cuda-graph-backend-prefill breakable"),
        ({"cuda_graph_backend_prefill": "full"}, "--cuda-graph-backend-prefill full"),
        ({"cuda_graph_config": {"prefill": {"backend": "breakable"}}}, "the prefill backend of --cuda-graph-config"),
    ],
)
def test_explicit_prefill_graph_is_refused(as_on_cuda: None, checkpoint: Path, server_args: dict[str, Any], flag: str) -> None:
    from sglang.srt.model_executor.cuda_graph_config import Backend

    with pytest.raises(ValueError) as refused:
        resolve(checkpoint, **server_args)
    message = str(refused.value)
    assert message.startswith(f"sglang-llada: {flag} captures LLaDA2's prompt (EXTEND) forwards in CUDA graphs")
    assert "Drop that setting" in message and "--disable-prefill-cuda-graph" in message
    # A prefill graph the user turned off is what we want: accepted, decode graphs still on.
    for off in ({"disable_prefill_cuda_graph": True}, {"cuda_graph_backend_prefill": "disabled"}):
        cfg = resolve(checkpoint, **off)
        assert (cfg.cuda_graph_config.prefill.backend, cfg.cuda_graph_config.decode.backend) == (Backend.DISABLED, Backend.FULL), off


# -- MoE runner and KV cache dtype ----------------------------------------------------------------


def test_refused_moe_runners_come_from_sglangs_predicates() -> None:
    # TopK.bind_runner_backend gives triton_kernel a TRITON_KERNEL top-k and the TRT-LLM / MXFP4
    # runners a BYPASSED one (router logits only).
    assert set(refused_moe_runner_backends()) == {"triton_kernel", "flashinfer_trtllm", "experimental_sgl_trtllm", "flashinfer_mxfp4"}


@pytest.mark.parametrize("backend", ["triton_kernel", "flashinfer_trtllm", "experimental_sgl_trtllm", "flashinfer_mxfp4"])
def test_moe_runner_without_standard_topk_is_refused(as_on_cuda: None, checkpoint: Path, backend: str) -> None:
    with pytest.raises(ValueError) as refused:
        resolve(checkpoint, moe_runner_backend=backend)
    message = str(refused.value)
    assert message.startswith(f"sglang-llada: --moe-runner-backend {backend} is not supported by LLaDA2MoeModelLM")
    assert ("TRITON_KERNEL top-k" if backend == "triton_kernel" else "BYPASSED top-k") in message
    assert "Use --moe-runner-backend auto or triton" in message
    for allowed in ("auto", "triton"):  # the runners the message names start
        assert resolve(checkpoint, moe_runner_backend=allowed).moe_runner_backend == allowed


@pytest.mark.parametrize("dtype", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_kv_cache_is_refused(as_on_cuda: None, checkpoint: Path, dtype: str) -> None:
    with pytest.raises(ValueError) as refused:
        resolve(checkpoint, kv_cache_dtype=dtype)
    message = str(refused.value)
    assert message.startswith(f"sglang-llada: --kv-cache-dtype {dtype} is not supported by LLaDA2MoeModelLM yet")
    assert "kernels/block_causal_attention.py" in message and "--kv-cache-dtype bf16" in message
    for allowed in ("auto", "bf16"):  # the dtypes the message names start
        assert resolve(checkpoint, kv_cache_dtype=allowed).kv_cache_dtype == allowed


@pytest.mark.parametrize("dtype", ["mxfp8", "nvfp4", "fp4_mx_block16"])
def test_fp4_and_mxfp8_kv_refused_where_sglang_allows_them(dtype: str) -> None:
    """On the simulated (non-Blackwell) GPU SGLang refuses these itself, before our step; on SM100
    they would reach it."""
    message = kv_cache_dtype_error(SimpleNamespace(kv_cache_dtype=dtype))
    assert message is not None and message.startswith(f"sglang-llada: --kv-cache-dtype {dtype} is not supported")
    assert kv_cache_dtype_error(SimpleNamespace(kv_cache_dtype="auto")) is None


# -- running requests and the denoising step's memory ---------------------------------------------


def fake_scheduler(
    *, kv_sized: int = 1024, explicit: int | None = None, vocab: int = LLADA2_VOCAB, tp_size: int = 1,
    algorithm: str = "llada2_threshold", algorithm_config: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """The scheduler attributes `size_dllm_batch_from_memory` reads, as after `init_diffusion_llm`."""
    import torch

    limit = explicit if explicit is not None else dllm_config.UNSIZED_MAX_RUNNING
    config = SimpleNamespace(max_running_requests=limit, block_size=32, algorithm=algorithm, algorithm_config=algorithm_config or {})
    return SimpleNamespace(
        dllm_config=config,
        dllm_manager=SimpleNamespace(max_running_reqs=limit),
        max_running_requests=kv_sized,  # SGLang's KV-sized limit
        model_config=SimpleNamespace(vocab_size=vocab, dtype=torch.bfloat16, hf_config=SimpleNamespace(architectures=["LLaDA2MoeModelLM"])),
        tp_size=tp_size,
        tp_cpu_group="tp-cpu-group",
        tp_worker=SimpleNamespace(model_runner=SimpleNamespace(device="cuda", gpu_id=3)),
    )


@pytest.fixture
def free_gib(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], list[tuple[Any, ...]]]:
    """Makes SGLang's `get_available_gpu_memory` report `gib` GiB free; returns its calls."""
    import sglang.srt.utils as sglang_utils

    calls: list[tuple[Any, ...]] = []

    def set_free(gib: float) -> list[tuple[Any, ...]]:
        def fake(device: Any, gpu_id: Any, distributed: bool = False, empty_cache: bool = True, cpu_group: Any = None) -> float:
            calls.append((device, gpu_id, distributed, cpu_group))
            return gib

        monkeypatch.setattr(sglang_utils, "get_available_gpu_memory", fake)
        return calls

    return set_free


def test_step_bytes_of_a_real_llada2_request() -> None:
    step = dllm_config.step_logits_bytes(32, LLADA2_VOCAB, 2)
    assert step.fp32_logits == 32 * LLADA2_VOCAB * 4  # 20.1 MB: 16K positions (512 requests) = 10.3 GB
    assert step.total == 32 * LLADA2_VOCAB * (4 + 4 + 2) + LLADA2_VOCAB * 12
    assert dllm_config.step_logits_bytes(32, LLADA2_VOCAB, 2, tp_size=4).lm_head_shard == 32 * LLADA2_VOCAB // 4 * 2


def test_memory_sized_limit_lowered_until_the_step_fits(free_gib: Callable[[float], list[tuple[Any, ...]]], caplog: pytest.LogCaptureFixture) -> None:
    calls = free_gib(20.0)  # budget 10 GiB
    scheduler = fake_scheduler(kv_sized=1024)
    per_request = dllm_config.step_logits_bytes(32, LLADA2_VOCAB, 2).total
    with caplog.at_level(logging.INFO, logger="sglang_llada.plugin"):
        dllm_config.size_dllm_batch_from_memory(None, scheduler)
    want = 10 * GIB // per_request
    assert want == 205 < 1024
    assert scheduler.dllm_config.max_running_requests == scheduler.dllm_manager.max_running_reqs == want
    assert calls == [("cuda", 3, False, "tp-cpu-group")]
    [line] = [r for r in caplog.records if "diffusion batching on" in r.getMessage()]
    assert line.levelno == logging.INFO
    text = line.getMessage()
    assert f"up to {want} running requests (1024 sized from KV memory, lowered so that a denoising step's logits fit;" in text
    assert f"each running request adds {per_request / (1 << 20):.2f} MiB" in text
    assert "budget 10.00 GiB = 50% of 20.00 GiB free device memory" in text


def test_explicit_max_running_requests_too_large_is_lowered_with_a_warning(
    free_gib: Callable[[float], list[tuple[Any, ...]]], caplog: pytest.LogCaptureFixture
) -> None:
    free_gib(8.0)  # budget 4 GiB
    scheduler = fake_scheduler(explicit=512, tp_size=2)
    per_request = dllm_config.step_logits_bytes(32, LLADA2_VOCAB, 2, tp_size=2).total
    with caplog.at_level(logging.INFO, logger="sglang_llada.plugin"):
        dllm_config.size_dllm_batch_from_memory(None, scheduler)
    want = 4 * GIB // per_request
    assert scheduler.dllm_config.max_running_requests == scheduler.dllm_manager.max_running_reqs == want < 512
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"--max-running-requests 512 lowered to {want}" in warning.getMessage()
    assert "budget 4.00 GiB" in warning.getMessage()
    [info] = [r for r in caplog.records if "diffusion batching on" in r.getMessage()]
    assert f"up to {want} running requests (--max-running-requests 512, lowered" in info.getMessage()


def test_limit_that_fits_is_kept_and_logged(free_gib: Callable[[float], list[tuple[Any, ...]]], caplog: pytest.LogCaptureFixture) -> None:
    free_gib(40.0)
    scheduler = fake_scheduler(explicit=8)
    with caplog.at_level(logging.INFO, logger="sglang_llada.plugin"):
        dllm_config.size_dllm_batch_from_memory(None, scheduler)
    assert scheduler.dllm_config.max_running_requests == scheduler.dllm_manager.max_running_reqs == 8
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r for r in caplog.records if "up to 8 running requests (--max-running-requests 8;" in r.getMessage()]


def test_no_room_for_one_request_keeps_one_and_says_what_to_change(
    free_gib: Callable[[float], list[tuple[Any, ...]]], caplog: pytest.LogCaptureFixture
) -> None:
    free_gib(0.05)
    scheduler = fake_scheduler()
    with caplog.at_level(logging.INFO, logger="sglang_llada.plugin"):
        dllm_config.size_dllm_batch_from_memory(None, scheduler)
    assert scheduler.dllm_config.max_running_requests == 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "--mem-fraction-static" in warning.getMessage()


def test_exact_verification_forwards_count_their_draft_depth(free_gib: Callable[[float], list[tuple[Any, ...]]]) -> None:
    free_gib(20.0)
    # The server drafts 4 states, but a request may ask for up to 32 (custom_params): sized for 32.
    scheduler = fake_scheduler(algorithm="llada2_exact", algorithm_config={"draft_depth": 4})
    dllm_config.size_dllm_batch_from_memory(None, scheduler)
    assert scheduler.dllm_config.max_running_requests == 10 * GIB // dllm_config.step_logits_bytes(32 * 32, LLADA2_VOCAB, 2).total


def test_checkpoint_fp8_kv_cache_is_refused_at_start_up() -> None:
    """`--kv-cache-dtype auto` resolves to fp8 for a checkpoint whose quantization config says so;
    resolution cannot see that, the scheduler's start-up check does."""
    import torch

    scheduler = fake_scheduler()
    scheduler.tp_worker.model_runner.kv_cache_dtype = torch.float8_e4m3fn
    with pytest.raises(ValueError, match="--kv-cache-dtype bf16"):
        dllm_config.check_kv_cache_dtype(scheduler)  # type: ignore[arg-type]
    scheduler.tp_worker.model_runner.kv_cache_dtype = torch.bfloat16
    dllm_config.check_kv_cache_dtype(scheduler)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "sglang_value", "replacement"), [
    ("moe_runner_backend", "flashinfer_trtllm", "triton"), ("kv_cache_dtype", "fp8_e4m3", "auto"),
])
def test_what_sglang_chose_is_replaced_not_refused(
    as_on_cuda: None, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    field: str, sglang_value: str, replacement: str,
) -> None:
    """A value SGLang's own resolution picked for the machine (e.g. a TRT-LLM MoE runner on newer
    GPUs) is replaced by one the model runs, with a warning; only a user's explicit choice is refused."""
    from sglang.srt.arg_groups import resolution_hooks
    from sglang.srt.arg_groups.overrides import declare_resolution

    def sglang_picks(server_args: Any, previous: Callable[[Any], None]) -> None:
        previous(server_args)
        declare_resolution(server_args, "sglang_default", **{field: sglang_value})

    steps = resolution_hooks._HOOKS.get("handle_moe_kernel_config", [])
    monkeypatch.setitem(resolution_hooks._HOOKS, "handle_moe_kernel_config", [*steps, sglang_picks])
    with caplog.at_level(logging.WARNING, logger="sglang_llada.plugin"):
        cfg = resolve(checkpoint)
    assert getattr(cfg, field) == replacement
    assert [r for r in caplog.records if f"{field} {sglang_value} (SGLang's choice) replaced by {replacement}" in r.getMessage()]
