"""Ray's rows pass the same guard as the sinks' (``models.check_row``): a row that says ``ok``
without a prediction fails the block loudly instead of reaching the dataset as an answer."""

from __future__ import annotations

from typing import Any

import pytest

from batchclassify.config import HttpConfig
from batchclassify.models import ContradictoryRowError, Item
from batchclassify.ray_data import Classifier

from .conftest import sample_failed_row
from .test_ray_callable import images, rows_of


def test_a_contradictory_row_fails_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    async def ok_without_answer(self: Classifier, item: Item, data: bytes | None) -> Any:
        # a failure dressed as ok: what a buggy new path could produce
        return dict(sample_failed_row(item.id), status="ok", error_type=None, error=None)

    monkeypatch.setattr(Classifier, "_classify", ok_without_answer)
    classifier = Classifier(model="colors/1", http=HttpConfig(api_url="http://127.0.0.1:9"))
    with pytest.raises(ContradictoryRowError, match="'ok' without a prediction"):
        rows_of(classifier, images(2))
