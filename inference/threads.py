"""The `--threads` option every `mage` command shares, and the block that applies it.

One torch thread per process is the default everywhere: on a shared CPU, idle OpenMP threads spinning for a busy core
slow a run down several times (`benchmarks/threads_under_load.py`, the README's `--threads` note).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator


def thread_count(text: str) -> int:
    """argparse `type` for `--threads`: an integer ≥ 1 (argparse turns the `ArgumentTypeError` into one line, exit 2)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {count}")
    return count


def add_threads_argument(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """Adds `--threads N` (torch CPU threads, ≥ 1)."""
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=default,
        metavar="N",
        help="torch CPU threads (default %(default)s; see the README's --threads note)",
    )


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Use `count` torch threads inside the block, restoring the previous count (None: leave as is)."""
    import torch  # heavy

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["add_threads_argument", "thread_count", "torch_threads"]
