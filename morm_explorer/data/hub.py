"""Public preference datasets by hub name (``hf:NAME``), fetched with `datasets.load_dataset`.

What belongs here: reading a ``hf:NAME`` source, the one call into ``datasets.load_dataset``
(a subset is a ``data_dir`` of the hub repository, as HH-RLHF's ``harmless-base``; a split; a
revision; a cache folder inside the workspace for the prepared Arrow tables, while `datasets`
keeps the downloaded files in the hub cache; never remote code), telling an unreachable hub
from other failures, a quick reachability probe for callers that must not wait on the hub's
retries, and the seeded subsample that ``--limit`` takes. Mapping rows onto records is
`presets`; reading files and folders is `readers`.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from morm_explorer.errors import MormError

HUB_PREFIX = "hf:"
DEFAULT_ENDPOINT = "https://huggingface.co"
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_TRUE = frozenset({"1", "true", "yes", "on"})
# Exception types (by name, so that no HTTP library need be imported) that mean the hub did not
# answer, as opposed to answering "no such dataset".
_UNREACHABLE = frozenset({"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError",
                          "ConnectTimeout", "ReadTimeout", "Timeout", "ProxyError",
                          "ConnectionError"})


def hub_name(source: str | Path) -> str | None:
    """The dataset name of a ``hf:NAME`` source; None when `source` has no ``hf:`` prefix."""
    text = str(source)
    if not text.startswith(HUB_PREFIX):
        return None
    name = text[len(HUB_PREFIX):].strip()
    if not _NAME.fullmatch(name):
        raise MormError(f"expected hf:OWNER/NAME (e.g. hf:Anthropic/hh-rlhf), got {text!r}")
    return name


def hub_cache_dir(root: str | Path) -> Path:
    """Where datasets fetched from the hub are cached: inside the workspace ``root``."""
    return Path(root) / "cache" / "hf-datasets"


def hub_offline() -> bool:
    """Whether the environment switches the hub off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub answers an HTTP request within about `timeout` seconds (any status).

    The probe runs in a daemon thread so that even a name lookup that hangs costs no more than
    `timeout`; `datasets` itself retries an unreachable hub for about 25 s.
    """
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                                   timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # an HTTP error status is still an answer
        except (OSError, ValueError):
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(answered and answered[0])


def load_from_hub(name: str, *, data_dir: str | None, split: str, revision: str | None,
                  cache_dir: str | None) -> Any:
    """The one call into `datasets.load_dataset` (tests replace it to read local folders)."""
    import datasets  # heavy import, only when needed

    return datasets.load_dataset(name, data_dir=data_dir, split=split, revision=revision,
                                 cache_dir=cache_dir)


def is_unreachable(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) says the hub did not answer."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in _UNREACHABLE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_hub_dataset(name: str, *, subset: str | None = None, split: str | None = None,
                     revision: str | None = None, cache_dir: str | Path | None = None) -> Any:
    """One split (default ``train``) of hub dataset `name` as a `datasets.Dataset`.

    A `MormError` names the dataset; when the hub could not be reached it says so and points to
    a local file or ``save_to_disk`` folder instead.
    """
    source = HUB_PREFIX + name
    try:
        return load_from_hub(name, data_dir=subset, split=split or "train", revision=revision,
                             cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as e:  # datasets raises many types; what matters is unreachable or not
        if is_unreachable(e):
            raise MormError(
                f"the Hugging Face hub could not be reached ({_first_line(e)}); pass a local "
                "file or a folder written by `Dataset.save_to_disk` instead", file=source) from e
        raise MormError(f"cannot load the dataset from the Hugging Face hub: {_first_line(e)}",
                        file=source) from e


def subsample(n: int, limit: int | None, seed: int = 0) -> list[int] | None:
    """Sorted indices of a seeded random sample of `limit` of `n` rows; None for all rows."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise MormError(f"limit must be a positive number of rows, got {limit!r}", field="limit")
    if limit >= n:
        return None
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


def describe_source(source: str, *, n_rows: int, subset: str | None = None,
                    split: str | None = None, revision: str | None = None,
                    limit: int | None = None, seed: int = 0) -> str:
    """Where rows came from, exactly: ``hf:NAME (subset ..., split ..., revision ..., 1,500 of
    42,537 rows sampled with seed 0)``; the bare `source` for a whole local file."""
    parts = [f"{k} {v}" for k, v in (("subset", subset), ("split", split),
                                     ("revision", revision)) if v]
    if limit is not None and limit < n_rows:
        parts.append(f"{limit:,} of {n_rows:,} rows sampled with seed {seed}")
    elif hub_name(source) is not None:
        parts.append(f"{n_rows:,} rows")
    return f"{source} ({', '.join(parts)})" if parts else source
