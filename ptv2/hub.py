"""Is the Hugging Face hub reachable? Asked once, quickly, so offline users get one clear line instead of
half a minute of retries followed by a traceback."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    return host_reachable(host, timeout_s)


@functools.cache
def host_reachable(host: str, timeout_s: float = 3.0) -> bool:
    """Does a TCP connection to ``host``:443 open within ``timeout_s``? (hub, experiment trackers)"""
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False
