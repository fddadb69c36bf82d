"""What an S3 failure is called: the store's error code, not a guess.

A real S3 API (moto's server on 127.0.0.1, port 0, checking IAM credentials where a test asks
it to) answers reads and listings; the messages say what the store said: no such bucket, no
such key, an access key id it does not know, a secret that does not match, access denied.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import pytest

# The test extra installs both; CI (CI set) fails rather than skips without them.
if not os.environ.get("CI"):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
import moto.server as moto_server

from batchclassify.errors import ItemError, UsageError
from batchclassify.inputs import objectstore

from .conftest import png

SECRET = "s3cret-m3ssages-9d2e1b"


class Store:
    """moto's S3 server, its backend, and the credentials the objectstore sees."""

    def __init__(self, endpoint: str) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
        from moto.s3.models import s3_backends

        self.endpoint = endpoint
        self.backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def reset_auth(self, count: str) -> None:
        """moto checks credentials for the next ``count`` requests ("0": from now on;
        "inf": never, its default)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as answer:
            answer.read()

    def user(self, policy: dict[str, Any]) -> tuple[str, str]:
        """A user allowed by ``policy``: its access key id and secret."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint)
        name = "messages-reader"  # IAM outlives the S3 backend's reset: not test_s3_source's
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextmanager
    def credentials(self, access_key: str, secret: str) -> Iterator[None]:
        """The objectstore reads with these credentials, checked by moto, in the block."""
        saved = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        os.environ.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret)
        objectstore.clear_cache()
        self.reset_auth("0")
        try:
            yield
        finally:
            self.reset_auth("inf")
            os.environ.update(AWS_ACCESS_KEY_ID=saved[0], AWS_SECRET_ACCESS_KEY=saved[1])
            objectstore.clear_cache()


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID="AKIDMESSAGES00000000",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    objectstore.clear_cache()
    running = Store(f"http://{host}:{port}")
    running.backend.reset()  # one backend per process: another module may have used it
    running.backend.create_bucket("msgs", "us-east-1")
    running.backend.put_object("msgs", "a.png", png("red"))
    running.backend.put_object("msgs", "private/b.png", png("blue"))
    try:
        yield running
    finally:
        objectstore.clear_cache()
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        running.backend.reset()


def read_error(url: str) -> ItemError:
    with pytest.raises(ItemError) as caught:
        anyio.run(partial(objectstore.read_object, url, limit=10_000))
    return caught.value


def listing_error(source: str) -> str:
    with pytest.raises(UsageError) as caught:
        objectstore.check_source(source)
    return str(caught.value)


def test_a_missing_bucket_or_key_is_named_as_such(store: Store) -> None:
    bucket = read_error("s3://no-such-bucket/a.png")
    assert bucket.kind == "missing_file"
    assert str(bucket).startswith("no such bucket (check its name, and the endpoint")
    key = read_error("s3://msgs/gone.png")
    assert (key.kind, str(key)) == ("missing_file", "object not found (no such key)")
    assert anyio.run(partial(objectstore.read_object, "s3://msgs/a.png", limit=10_000)) == png(
        "red"
    )


def test_wrong_credentials_say_which_part_is_wrong_and_never_show_the_secret(
    store: Store,
) -> None:
    everyone = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    private = {
        "Effect": "Deny",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::msgs/private/*",
    }
    access_key, secret = store.user({"Version": "2012-10-17", "Statement": [everyone, private]})
    wrong_secret = "not-the-s3cret-4b8e2a"

    with store.credentials(access_key, wrong_secret):
        mismatch = read_error("s3://msgs/a.png")
        mismatch_listing = listing_error("s3://msgs/")
    with store.credentials("AKIDUNKNOWN000000000", secret):
        unknown = read_error("s3://msgs/a.png")
        unknown_listing = listing_error("s3://msgs/")
    with store.credentials(access_key, secret):
        denied = read_error("s3://msgs/private/b.png")
        readable = anyio.run(partial(objectstore.read_object, "s3://msgs/a.png", limit=10_000))

    assert readable == png("red")
    assert mismatch.kind == "unreadable"
    assert "the secret key does not match the access key id (SignatureDoesNotMatch)" in str(
        mismatch
    )
    assert "s3://msgs/: the secret key does not match" in mismatch_listing
    assert unknown.kind == "unreadable"
    assert "does not know the access key id (InvalidAccessKeyId)" in str(unknown)
    assert "s3://msgs/: the store does not know the access key id" in unknown_listing
    assert denied.kind == "unreadable"
    assert str(denied).startswith("access denied reading the object: these credentials may not")
    messages = [str(mismatch), mismatch_listing, str(unknown), unknown_listing, str(denied)]
    assert not any(secret in text or wrong_secret in text for text in messages)
    assert not any("may list the bucket" in text for text in messages)
