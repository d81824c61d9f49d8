"""Rows from the Hugging Face hub, and a quick check that the hub can be reached at all.

``datasets.load_dataset`` retries a dead network for tens of seconds before giving up; one HEAD request
to the hub's endpoint answers the same question in well under a second (no DNS, a refused connection)
or within :data:`PROBE_TIMEOUT_S`, once per process. With ``HF_HUB_OFFLINE=1`` or
``HF_DATASETS_OFFLINE=1`` the probe is skipped and ``datasets`` reads its local cache.
"""
from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from typing import Any

from cotbench.tasks.base import HubSource, HubUnavailable

PROBE_TIMEOUT_S = 3.0
HINT = "pass --data-dir DIR (a local mirror in the hub schema) or set COTBENCH_DATA_DIR"


def _offline_mode() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=None)
def hub_unreachable(endpoint: str) -> str | None:
    """None when ``endpoint`` answers HTTP at all (any status); otherwise why not. Honours proxy variables."""
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: reachable
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


def load_hub_rows(task_name: str, hub: HubSource) -> list[dict[str, Any]]:
    what = f"{task_name}: cannot load {hub.path} ({hub.config or 'default'}, {hub.split}) from the Hugging Face hub"
    if not _offline_mode():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        why = hub_unreachable(endpoint)
        if why is not None:
            raise HubUnavailable(f"{what}: {endpoint} is unreachable ({why}); {HINT}")
    import datasets  # heavy import kept at the edge

    try:
        ds = datasets.load_dataset(hub.path, hub.config, split=hub.split, revision=hub.revision)
    except Exception as e:  # network, auth or missing-dataset errors all mean "not from the hub"
        raise HubUnavailable(f"{what}: {e.__class__.__name__}: {str(e)[:200]}; {HINT}") from None
    return [dict(r) for r in ds]
