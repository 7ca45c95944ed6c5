"""Caption files of a clip: Cosmos-Transfer1's `metas/<stem>.txt` and Transfer2.5's `captions/<stem>.json`.

    metas/<stem>.txt         the caption as UTF-8 text (Transfer1, and our layout)
    captions/<stem>.json     {"caption": "..."} (Transfer2.5's post-training layout; other fields are ignored)

NVIDIA's Transfer2.5 reader (cosmos-transfer2.5 `transfer2/datasets/local_datasets/singleview_dataset.py`,
`SingleViewTransferDataset._load_caption`) reads `captions/` (or `metas/` when there is no `captions/` folder),
`<stem>.json` first, then `<stem>.txt`; it falls back to the `text` or `prompt` field and finally to the caption
"a video" when nothing is found. We read the same files but never invent a caption: a clip whose caption is
missing, empty, not valid JSON or without a `caption` string is a bad clip, named with the file and the reason.
"""

from __future__ import annotations

import json
import os

from cosmos_transfer.data.video import BadSampleError

# (folder, suffix) in the order they are looked for; the first file that exists is the clip's caption.
CAPTION_FILES = (("metas", ".txt"), ("captions", ".json"), ("captions", ".txt"), ("metas", ".json"))


def find_caption(root: str, stem: str) -> str | None:
    """The caption file of clip `stem` under `root`, or None."""
    for folder, suffix in CAPTION_FILES:
        path = os.path.join(root, folder, stem + suffix)
        if os.path.isfile(path):
            return path
    return None


def missing_caption_message(root: str, stem: str) -> str:
    return (f"missing or empty caption {os.path.join(root, 'metas', stem)}.txt (or Transfer2.5's "
            f"{os.path.join(root, 'captions', stem)}.json with a \"caption\" field)")


def read_caption(path: str) -> str:
    """The caption text of a .txt or .json caption file (stripped); BadSampleError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise BadSampleError(f"caption file {path} is not UTF-8 text: {error}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadSampleError(f"caption file {path} is not valid JSON ({error}); Transfer2.5's layout is "
                                 '{"caption": "..."}') from None
        except RecursionError:
            raise BadSampleError(f"caption file {path} is nested too deeply to read; Transfer2.5's layout is "
                                 '{"caption": "..."}') from None
        if not isinstance(data, dict) or "caption" not in data:
            found = f"an object with keys {sorted(data)[:6]}" if isinstance(data, dict) else type(data).__name__
            raise BadSampleError(f'caption file {path} has no "caption" field (found {found}); Transfer2.5\'s '
                                 'layout is {"caption": "..."}')
        if not isinstance(data["caption"], str):
            raise BadSampleError(f'caption file {path}: "caption" must be a string, got '
                                 f"{type(data['caption']).__name__}")
        text = data["caption"]
    caption = text.strip()
    if not caption:
        raise BadSampleError(f"missing or empty caption {path}")
    try:  # JSON's \ud800-style escapes can make a string no text encoding holds (tokenizers and files refuse it)
        caption.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadSampleError(f"caption file {path} holds a lone surrogate ({caption[error.start]!r} at character "
                             f"{error.start}), which is not text: write the character itself, or its full surrogate "
                             "pair") from None
    return caption
