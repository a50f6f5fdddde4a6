"""Every shipped model (after timm's tests over registered models): its record loads, its
weights match, and a forward pass gives finite outputs of the documented shapes."""

from __future__ import annotations

import pytest
import torch

from keyfer.data.labels import CLASSES
from keyfer.errors import KeyferError
from keyfer.models.registry import create_model, get_record, list_models


@pytest.mark.parametrize("name", list_models())
def test_shipped_model_runs_and_matches_its_record(name):
    record = get_record(name)
    assert record.classes == list(CLASSES) and record.temperature > 0
    model = create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0)))
    assert out.logits.shape == (2, len(record.classes)) and torch.isfinite(out.logits).all()
    assert out.mesh.shape == (2, 468, 3) and out.presence.shape == (2,)
    if out.importance is not None:
        assert out.importance.shape == (2, len(model.keypoint_index))
        assert ((out.importance > 0) & (out.importance < 1)).all()


def test_an_unknown_model_name_lists_the_shipped_ones():
    with pytest.raises(KeyferError, match="shipped models: "):
        get_record("keyfer-nope")
