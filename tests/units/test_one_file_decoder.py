"""A decoder in one file (docs/examples/one_file_decoder/llada2_fraction.py), installed the way a
package installs one (an entry point in the `sglang_llada.decoders` group): found, registered with
SGLang, checked and refused as ours are, and decoding by its pure commit rule. The e2e twin serves it
(tests/e2e/test_one_file_decoder_e2e.py)."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada import algorithms
from sglang_llada.algorithms import CLASS_PATHS, algorithm_class, decoder_paths, register
from sglang_llada.testing.batch_knobs import with_request_knobs
from sglang_llada.testing.decoder_package import install_decoder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "one_file_decoder" / "llada2_fraction.py"
M, V, S = 15, 16, 8


ENTRY = "llada2_fraction = llada2_fraction:FractionAlgorithm"


def install(site: Path, entry: str = ENTRY, source: Optional[str] = None) -> None:
    install_decoder(site, "llada2_fraction", EXAMPLE.read_text() if source is None else source, entry)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    decoder_paths.cache_clear()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("llada2_fraction", None)
        decoder_paths.cache_clear()
        from sglang.srt.dllm.algorithm import algo_name_to_cls

        algo_name_to_cls.pop("llada2_fraction", None)


def batch(ids: list[list[int]], custom: Optional[list[Any]] = None) -> SimpleNamespace:
    t = torch.tensor(ids, dtype=torch.int64)
    b, s = t.shape
    info = None if custom is None else with_request_knobs(SimpleNamespace(is_all_greedy=True), custom)
    return SimpleNamespace(input_ids=t.reshape(-1).clone(), batch_size=b, dllm_prompt_mask=None,
                           positions=torch.arange(b * s, dtype=torch.int32), sampling_info=info,
                           rids=[f"r{i}" for i in range(b)])


def test_found_registered_and_decoding_by_its_rule(site: Path) -> None:
    install(site)
    assert decoder_paths()["llada2_fraction"] == "llada2_fraction:FractionAlgorithm"
    assert list(decoder_paths())[: len(CLASS_PATHS)] == list(CLASS_PATHS)  # ours first, unchanged
    cls = algorithm_class("llada2_fraction")
    register()
    from sglang.srt.dllm.algorithm import algo_name_to_cls, get_algorithm_cls

    assert algo_name_to_cls["llada2_fraction"] is cls and get_algorithm_cls("llada2_fraction") is cls
    algo = cls(DllmConfig(algorithm=cls.NAME, algorithm_config={"fold_store": "off"}, block_size=S,
                          mask_id=M, max_running_requests=4))
    # two rows: the server's fraction 0.25, and a request's 1.0 (the whole block in one step)
    fb = batch([[M] * S, [M] * S], custom=[None, {"dllm": {"fraction": 1.0}}])
    states = algo.init_step_state(fb)
    logits = torch.zeros(2 * S, V)
    for p in range(S):  # position p: token p, confidence rising with p
        logits[[p, S + p], p] = 1.0 + p
    left = [S, S]
    for step in range(8):
        done = algo.step(fb, logits.clone(), states)
        ids = fb.input_ids.view(2, S).tolist()
        masked = [row.count(M) for row in ids]
        if step == 0:
            assert masked == [S - math.ceil(0.25 * S), 0]
            # the most confident positions first: the last ones
            assert ids[0][-2:] == [S - 2, S - 1] and ids[0][: S - 2] == [M] * (S - 2)
        assert masked[0] == max(left[0] - max(1, math.ceil(0.25 * left[0])), 0) or left[0] == 0
        left = masked
        if all(done):
            break
    assert fb.input_ids.view(2, S).tolist() == [list(range(S))] * 2 and all(done)


def test_its_knobs_are_checked_and_constraints_honoured(site: Path) -> None:
    install(site)
    cls = algorithm_class("llada2_fraction")
    assert cls.CONSTRAINS  # a mask-to-token decoder: regex / json_schema come with the base step
    with pytest.raises(ValueError, match=r"custom_params.dllm.fraction must be a number in \(0, 1\], got 0 .*llada2_fraction"):
        cls.check_request_knobs({"fraction": 0})
    with pytest.raises(ValueError, match="`threshold` is not a per-request knob"):
        cls.check_request_knobs({"threshold": 0.5})
    with pytest.raises(ValueError, match="`fraction` must be a number in"):
        cls(DllmConfig(algorithm=cls.NAME, algorithm_config={"fraction": 2}, block_size=S, mask_id=M, max_running_requests=4))


def test_a_bad_entry_point_fails_at_start_up(site: Path) -> None:
    install(site, entry="llada2_threshold = llada2_fraction:FractionAlgorithm")
    with pytest.raises(RuntimeError, match="llada2-fraction-decoder declares the decoder 'llada2_threshold'.*rename it"):
        decoder_paths()
    decoder_paths.cache_clear()
    shutil.rmtree(next(site.glob("*.dist-info")))
    install(site, entry="llada2_fraction = llada2_fraction:NotADecoder", source="NotADecoder = object\n")
    with pytest.raises(RuntimeError, match="must name a sglang_llada LladaAlgorithm subclass with NAME = 'llada2_fraction'"):
        algorithm_class("llada2_fraction")


def test_without_the_package_nothing_changes() -> None:
    decoder_paths.cache_clear()
    assert decoder_paths() == CLASS_PATHS and algorithms.DECODER_GROUP == "sglang_llada.decoders"
