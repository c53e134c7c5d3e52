"""A decoder package as `pip install` leaves it, without pip: a module file and its dist-info with an
entry point in sglang-llada's decoder group (tests of the one-file decoder, units and e2e)."""

from __future__ import annotations

from pathlib import Path

from sglang_llada.algorithms import DECODER_GROUP


def install_decoder(site: Path, module: str, source: str, entry: str, dist: str = "llada2-fraction-decoder") -> None:
    """Writes `site/<module>.py` = `source` and `<dist>-0.1.dist-info` declaring `entry` ("name =
    module:Class") under DECODER_GROUP; `site` on sys.path (or PYTHONPATH) makes it installed."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{DECODER_GROUP}]\n{entry}\n")
