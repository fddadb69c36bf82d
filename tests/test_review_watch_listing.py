"""``run --watch`` over an object-store prefix lists it again every poll: each listing must
ask the store, not fsspec's listings cache (gcsfs keeps one per filesystem, never expiring,
and the filesystem is shared: a cached listing would hide every key added after the first).
Against the local GCS emulator of ``test_gcs_source.py``."""

from __future__ import annotations

from typing import Any

from batchclassify.inputs import objectstore
from batchclassify.inputs.objectstore import iter_objects
from batchclassify.inputs.objectwatch import ObjectPrefixes
from batchclassify.models import Item
from batchclassify.summary import InputReport

from .conftest import png
from .test_gcs_source import gcs  # noqa: F401  (the fixture)


def test_a_key_added_after_a_listing_is_seen_at_the_next(gcs: Any) -> None:  # noqa: F811
    prefix = "gs://photos/incoming/"
    gcs.pipe({"photos/incoming/first.png": png("red")})
    objects = ObjectPrefixes([prefix], extensions=frozenset({"png"}), keep=lambda _: True, every=30)
    seen: list[str] = []

    def arrived(item: Item) -> None:
        seen.append(item.id)

    assert objects.list_all(arrived) == []
    assert seen == [prefix + "first.png"]

    gcs.pipe({"photos/incoming/second.png": png("blue")})  # another client's upload
    seen.clear()
    assert objects.list_all(arrived) == []
    assert sorted(seen) == [prefix + "first.png", prefix + "second.png"]
    assert objects.look(prefix + "second.png") is not None

    gcs.rm("photos/incoming/first.png")  # deleted: gone from the next listing
    seen.clear()
    objects.list_all(arrived)
    assert seen == [prefix + "second.png"]
    assert objects.look(prefix + "first.png") is None


def test_a_walk_of_a_prefix_leaves_no_listing_cached(gcs: Any) -> None:  # noqa: F811
    """gcsfs keeps every page it listed for the life of its shared filesystem: a prefix of
    millions of objects held in memory for the whole job, read by nothing."""
    gcs.pipe({f"photos/many/{n:03d}.png": png("red") for n in range(30)})
    items = list(iter_objects("gs://photos/many/", frozenset({"png"}), InputReport()))
    assert len(items) == 30
    assert len(objectstore._filesystem("gs://photos/many/").dircache) == 0
