"""The autocast dtype `auto` picks on CUDA: bf16 only where the GPU has it natively."""

from __future__ import annotations

import pytest
import torch

from burrow.device import autocast_dtype


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_takes_bf16_only_where_it_is_native(monkeypatch, native: bool, expected) -> None:
    """torch.cuda.is_bf16_supported() counts emulation by default, so a V100 or T4 got bf16 (slow, emulated) where
    fp16 runs on its tensor cores (training scales the fp16 loss)."""

    def supported(including_emulation: bool = True) -> bool:
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert autocast_dtype(torch.device("cuda"), "auto") == expected
    assert autocast_dtype(torch.device("cuda"), "bf16") == torch.bfloat16  # asked for: given
    assert autocast_dtype(torch.device("cuda"), "fp32") is None
