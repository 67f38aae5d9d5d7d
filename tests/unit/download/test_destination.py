"""Which download directories are URLs, what is shown of them, and what a URL that cannot be
used says (no store is touched here: see tests/e2e/download/test_destinations.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pollkit import ConfigurationError, DownloadPolicy
from pollkit.download._destination import Destination, is_url, redact_location, resolve_directory


@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("s3://bucket/run/", True),
        ("gs://b/x", True),
        ("memory://x", True),
        ("file:///tmp/out", True),
        ("simplecache::s3://bucket/run", True),
        ("out", False),
        ("/abs/out", False),
        ("./s3:/bucket", False),
        ("C://Users/me", False),  # a Windows drive, not a protocol
        ("s3:/bucket", False),
        (Path("s3://bucket"), False),  # a Path is always a path (and already mangled)
    ],
)
def test_only_scheme_colon_slash_slash_strings_are_urls(location: object, url: bool) -> None:
    assert is_url(location) is url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://bucket/run/x.png", "s3://bucket/run/x.png"),
        ("ftp://user:pa55@host/dir/x", "ftp://host/dir/x"),
        ("https://host/x?X-Amz-Signature=secret#frag", "https://host/x"),
        ("plain/path", "plain/path"),
    ],
)
def test_credentials_and_query_strings_are_never_shown(url: str, shown: str) -> None:
    assert redact_location(url) == shown


def test_a_plain_path_and_a_local_file_url_are_the_local_folder(tmp_path: Path) -> None:
    policy = DownloadPolicy()
    assert resolve_directory("out", policy) == Path("out")
    assert resolve_directory(tmp_path, policy) == tmp_path
    assert resolve_directory(tmp_path.as_uri(), policy) == tmp_path
    assert resolve_directory("file://localhost/srv/out", policy) == Path("/srv/out")
    with pytest.raises(ConfigurationError, match="not a local file URL"):
        resolve_directory("file://fileserver/srv/out", policy)


def test_without_fsspec_a_url_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # `import fsspec` now fails
    with pytest.raises(ConfigurationError, match=r"pip install 'pollkit\[fsspec\]'") as caught:
        resolve_directory("s3://bucket/run", DownloadPolicy())
    assert "s3://bucket/run" in str(caught.value)


def test_an_unknown_protocol_is_a_configuration_error() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(ConfigurationError, match="nosuchproto://b/x"):
        resolve_directory("nosuchproto://b/x", DownloadPolicy())


def test_storage_options_never_appear_in_a_repr(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    policy = DownloadPolicy(storage_options={"secret": "hunter2"}, spool_directory=tmp_path)
    assert "hunter2" not in repr(policy)
    where = resolve_directory("memory://user:hunter2@bucket/run/", policy)
    assert isinstance(where, Destination)
    assert "hunter2" not in repr(where)
    assert where.spool.parent == tmp_path
    # One spool folder per destination, the same on every run.
    again = resolve_directory("memory://user:hunter2@bucket/run", policy)
    assert isinstance(again, Destination)
    assert again.spool == where.spool
