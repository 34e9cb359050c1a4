"""The Hugging Face Hub, never waited on: is a repository cached here, does the Hub answer.

A name that is not in the local cache is only fetched when a 2-second probe of the Hub
succeeds (:func:`hub_reachable`, once per process), so an offline machine fails at once with
a clear error instead of hanging on retries. :mod:`lab.models` (models, the embedder),
:mod:`lab.readers.sources` (Hub datasets) and :mod:`lab.eval.factual` (BERTScore, NLTK data)
ask here. :func:`cache_dir` is where the kit keeps what it converts or downloads itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

HUB_PROBE_TIMEOUT_S = 2.0


def cache_dir() -> Path:
    """Where the kit keeps converted models and data: ``$LAB_CACHE``, else ``~/.cache/lora-gan-lab``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lora-gan-lab"
    return Path(os.environ.get("LAB_CACHE", default)).expanduser()


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """True when the Hugging Face Hub answers within ``timeout`` seconds (cached per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    import requests
    from huggingface_hub import constants

    try:
        return requests.head(f"{constants.ENDPOINT}/api/models/gpt2", timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def in_hf_cache(repo_id: str) -> bool:
    """True when the model ``repo_id`` has a config in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "modules.json"):
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return True
    return False
