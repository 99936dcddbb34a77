"""Whether a source can be reached before anything waits on it: the Hugging Face hub (or `HF_ENDPOINT`),
the authors' files. Standard library only, so that the light commands stay light."""
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout: float = 5.0) -> bool:
    """A `file://` folder exists, or the URL's host accepts a connection."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path).is_dir()
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
