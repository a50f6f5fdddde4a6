"""The crop predictor shared by the API and eval: chunks, mirror TTA, temperature."""

from __future__ import annotations

import torch

from keyfer.crop_predictor import CropPredictor


def _network(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A network whose logits see left and right apart: (B, 2) column sums of halves."""
    half = crops.shape[-1] // 2
    logits = torch.stack([crops[..., :half].sum((1, 2, 3)), crops[..., half:].sum((1, 2, 3))], 1)
    return logits, crops.mean((1, 2))[:, :3]


def _crops(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_temperature_divides_the_logits():
    crops = _crops(3)
    logits, importance = CropPredictor(_network, 2.0, 2)(crops)
    assert torch.equal(logits, _network(crops)[0] / 2.0)
    assert importance is not None and importance.shape == (3, 3)


def test_mirror_tta_averages_crop_and_mirror_and_keeps_the_crop_importance():
    crops = _crops(2)
    logits, importance = CropPredictor(_network, 1.0, 2, tta_flip=True)(crops)
    expected = (_network(crops)[0] + _network(crops.flip(-1))[0]) / 2
    assert torch.equal(logits, expected)
    assert torch.allclose(logits[:, 0], logits[:, 1])  # a mirrored pair sees both halves alike
    assert torch.equal(importance, _network(crops)[1])


def test_chunks_and_prepare_change_nothing_but_the_calls():
    crops, calls = _crops(5), []

    def prepare(chunk: torch.Tensor) -> torch.Tensor:
        calls.append(len(chunk))
        return chunk.double()

    chunked = CropPredictor(_network, 1.5, 2, batch_size=2, prepare=prepare)(crops)
    whole = CropPredictor(_network, 1.5, 2, batch_size=8)(crops.double())
    assert calls == [2, 2, 1]
    assert chunked.logits.dtype == torch.float32
    assert torch.equal(chunked.logits, whole.logits)


def test_no_crops():
    logits, importance = CropPredictor(_network, 1.0, 7)(torch.zeros(0, 3, 8, 8))
    assert logits.shape == (0, 7) and importance is None
