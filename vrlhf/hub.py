"""Local paths vs Hugging Face Hub ids, and the one line a user reads when a hub id cannot be reached.

`vrlhf` does not force offline mode: a user with a network passes `--policy Salesforce/blip-image-captioning-base`
or `--data user/dataset` and it downloads. The Makefile, the tests and the demo set `HF_HUB_OFFLINE=1`; there a hub
id that is not in the local cache fails with `unreachable(...)`, one line, instead of a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name or a bare name, as the Hub spells them; a dataset may add ":split" (e.g. "user/coco:test[:100]")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(text: str | os.PathLike) -> bool:
    """True when `text` names no local file or folder and is shaped like a hub id (`owner/name` or `name`)."""
    text = str(text)
    return bool(text) and not Path(text).exists() and bool(HUB_ID.match(text.split(":", 1)[0]))


def offline() -> bool:
    """Whether downloads are off: huggingface_hub's own flag, read from HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE when it
    was imported (what governs downloads; setting the variable later changes nothing, so it is not read here)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def unreachable(kind: str, name: str, error: BaseException | None = None) -> str:
    """The message for a hub id that could not be loaded: offline mode, or what the Hub said."""
    if offline():
        return (f"{name}: no such local {kind}, and as a hub id it cannot be downloaded while HF_HUB_OFFLINE=1 is set "
                f"(unset HF_HUB_OFFLINE to download it, or pass a local {kind})")
    why = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else "not found"
    return f"{name}: no such local {kind}, and the Hub could not provide it ({why})"
