"""Rendered images on disk: lossless PNGs under the store's media directory, named by their content."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from pathlib import Path

from PIL import Image


def save_png(store, image: Image.Image, kind: str) -> tuple[str, str]:
    """Write `image` losslessly under media/kind/, named by content; returns (relative path, sha256)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    rel = f"{kind}/{sha[:2]}/{sha}.png"
    path = store.media / rel
    if not path.exists():  # written beside and renamed: a reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return rel, sha


def media_path(store, rel: str) -> Path:
    """The file behind a media-relative path from the store (a view's `input`, a candidate's `image`)."""
    return store.media / rel
