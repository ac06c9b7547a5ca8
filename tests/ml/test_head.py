from __future__ import annotations

from pathlib import Path

import pytest
import torch

from catdog.ml.head import Head, HeadConfig, load_head, save_head


def test_default_head_is_the_spec_design() -> None:
    head = Head(512)
    assert [layer.out_features for layer in head.linears()] == [256, 128, 1]
    rates = [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.2, 0.5, 0.3]
    assert head(torch.zeros(4, 512)).shape == (4,)


def test_mismatched_config_is_refused() -> None:
    with pytest.raises(ValueError, match="dropout"):
        HeadConfig(hidden=(4,), dropout=(0.1, 0.2))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    head = Head(16, HeadConfig(hidden=(8,), dropout=(0.1,))).eval()
    save_head(head, tmp_path / "head.npz")
    loaded = load_head(tmp_path / "head.npz", 16, HeadConfig(hidden=(8,), dropout=(0.1,)))
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded(x), head(x))
    assert HeadConfig.from_dict(HeadConfig().to_dict()) == HeadConfig()
