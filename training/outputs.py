"""Writing a model folder without losing one: refuse a non-empty output folder unless asked, and write into a hidden
folder beside it that is renamed into place only once complete (a crash never leaves half a model, and the model
that was there survives until the new one is whole). Used by `mage convert` and `mage merge-lora`; `mage train`
follows the same rule with checkpoints of its own (`training.api`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


class OutputDirError(FileExistsError):
    """An output folder that must not be written; the message names it and says what to do."""


def check_output_dir(out: Path, overwrite: bool, flag: str = "--output-dir") -> None:
    """Refuse an `out` that is a file, or a folder that holds anything, unless `overwrite`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{flag} {out} is a file, not a folder.")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:4]) + (", …" if len(existing) > 4 else "")
        raise OutputDirError(
            f"{flag} {out} is not empty ({shown}); pass --overwrite to replace it or choose another folder "
            "(nothing was written)."
        )


def write_folder(out: Path, write: Callable[[Path], None], overwrite: bool, flag: str = "--output-dir") -> Path:
    """Call `write(folder)` on a hidden folder beside `out`, then rename it to `out`. An existing `out` (allowed only
    with `overwrite`) is moved aside first and deleted once the new folder is in place."""
    out = Path(out)
    check_output_dir(out, overwrite, flag)  # again: the folder may have been filled since the caller checked
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not out.exists():
        os.replace(partial, out)
        return out
    replaced = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
    os.replace(out, replaced / out.name)
    os.replace(partial, out)
    shutil.rmtree(replaced)
    return out


__all__ = ["OutputDirError", "check_output_dir", "write_folder"]
