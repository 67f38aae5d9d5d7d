"""The JSONL batch format: one job a line, the spec exactly as `AsyncClient.submit` takes it.

    {"key": "fox-1", "spec": {"tool": "ai-image-generator", "image_count": 1, ...}}
    {"spec": {"process": "convert_file", "file": "part.step"}}

``key`` is optional (default: a hash of the spec); it names the job in the journal, so a rerun
of the same file resumes instead of submitting again. Magic Hour also takes a short form, the
create endpoint and its body apart::

    {"key": "fox-1", "endpoint": "ai-image-generator", "body": {"image_count": 1, ...}}

A body field that the spec form uses for routing (``tool``) would be lost or change the
endpoint, so it is an error, never dropped. Every line is checked by the provider (which sends
nothing) before the batch starts, and every bad line is reported with its number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pollkit.batch._scheduler import BatchItem
from pollkit.errors import ConfigurationError
from pollkit.providers.base import Provider
from pollkit.providers.magichour import MagicHour

__all__ = ["parse_record", "read_batch"]

_SPEC_FORM = frozenset({"key", "spec"})
_SHORT_FORM = frozenset({"key", "endpoint", "body"})
# The most bad lines one error lists (the count says how many there were).
_SHOWN = 20


def parse_record(record: Any, provider: Provider) -> BatchItem:
    """One decoded line as a batch item: the spec, or ``(key, spec)`` when a key is given.

    Raises:
        ConfigurationError: The record is not of either form, or the provider refuses the spec;
            the message names the field.
    """
    if not isinstance(record, Mapping):
        raise ConfigurationError("a line must be a JSON object")
    key = record.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigurationError("'key' must be a non-empty string")
    if "spec" in record:
        unknown = sorted(set(record) - _SPEC_FORM)
        if unknown:
            raise ConfigurationError(f"unknown field {unknown[0]!r} beside 'spec'")
        spec = record["spec"]
        if not isinstance(spec, Mapping):
            raise ConfigurationError("'spec' must be a JSON object")
    elif "endpoint" in record:
        spec = _short_form(record, provider)
    else:
        raise ConfigurationError(
            "a line needs 'spec' (what submit() takes)"
            + (", or Magic Hour's 'endpoint' and 'body'" if isinstance(provider, MagicHour) else "")
        )
    provider.submit_request(spec)  # checks the spec; sends nothing
    return (key, dict(spec)) if key else dict(spec)


def _short_form(record: Mapping[str, Any], provider: Provider) -> dict[str, Any]:
    if not isinstance(provider, MagicHour):
        raise ConfigurationError(
            f"'endpoint' and 'body' are Magic Hour's short form; for {provider.name} write 'spec'"
        )
    unknown = sorted(set(record) - _SHORT_FORM)
    if unknown:
        raise ConfigurationError(f"unknown field {unknown[0]!r} beside 'endpoint'")
    endpoint, body = record["endpoint"], record.get("body", {})
    if not isinstance(endpoint, str) or not endpoint:
        raise ConfigurationError("'endpoint' must name a create endpoint")
    if not isinstance(body, Mapping):
        raise ConfigurationError("'body' must be a JSON object")
    if "tool" in body:
        raise ConfigurationError("'body' has a field 'tool', which would replace the endpoint")
    return {"tool": endpoint, **body}


def read_batch(text: str, provider: Provider) -> list[BatchItem]:
    """Parse and check every line of a JSONL batch (blank lines and ``#`` comments skipped).

    Raises:
        ConfigurationError: Naming every bad line (up to 20) with its number, or an empty batch.
    """
    items: list[BatchItem] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            items.append(parse_record(json.loads(line), provider))
        except (ValueError, ConfigurationError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:_SHOWN])
        more = f"\n  … and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise ConfigurationError(f"{len(problems)} bad lines:\n  {shown}{more}")
    if not items:
        raise ConfigurationError("the batch has no job")
    return items
