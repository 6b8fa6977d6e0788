"""Where the benchmarks read their training settings and write their results."""

from __future__ import annotations

import pytest

from benchmarks.paths import CONFIGS, RESULTS, bench_config, results_path


def test_every_bench_config_loads_and_overrides_win() -> None:
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == ["p12", "synth"]
    synth = bench_config("synth", epochs=2, seed=5, patience=None)
    assert (synth.epochs, synth.seed, synth.patience) == (2, 5, 3)
    assert synth.encoders["image"] == {"backbone": "test_resnet", "image_size": 64}
    p12 = bench_config("p12")
    assert (p12.token_dim, p12.lr, p12.fusion) == (48, 0.001, {"hidden_dim": 64, "n_heads": 4})


def test_an_unknown_config_or_key_is_refused_with_what_is_known() -> None:
    with pytest.raises(ValueError, match="known: p12, synth"):
        bench_config("demo")
    with pytest.raises(ValueError, match="epoch"):
        bench_config("p12", epoch=3)


def test_results_live_per_mode_and_part() -> None:
    assert results_path("invase", quick=True) == RESULTS / "quick" / "invase" / "results.json"
    assert (
        results_path("quality_p12", quick=False, name="ablations.json").parent
        == RESULTS / "full" / "quality_p12"
    )
