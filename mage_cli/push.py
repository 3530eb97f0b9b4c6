"""Publish a MAGE checkpoint to the Hugging Face Hub — only after it loads exactly as a Hub user would load it.

    mage push --model mage-demo/final --repo-id USER/mage-tiny [--private] [--revision main] [--dry-run]

The pre-flight loads the folder in a fresh process through the Auto classes with remote code and answers a question
about a generated image; a folder that does not load is refused. A model card (README.md) is generated with
`huggingface_hub.ModelCard` unless the folder already has one (`--regenerate-card` replaces it). `--dry-run` prints
the file plan (sizes, SHA-256) and uploads nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError, safe_open

from mage_cli.model_card import build_model_card
from mage_cli.reload_check import draw_check_image, reload_and_answer

REQUIRED_FILES = ("config.json", "configuration_mage.py", "modeling_mage.py", "ian.py", "processing_mage.py")


class PushError(ValueError):
    """A folder or repo id that must not be published; the message names the file or the argument."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the example's line
    parser.add_argument("--model", type=Path, required=True, help="a saved MAGE folder")
    parser.add_argument("--repo-id", required=True, help="USER/NAME on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to upload to (default: the repo's main)")
    parser.add_argument("--dry-run", action="store_true", help="check and print the file plan; upload nothing")
    parser.add_argument("--regenerate-card", action="store_true", help="replace an existing README.md")
    parser.add_argument("--eval-results", type=Path, default=None, help="results.json of `mage eval` for the card")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--skip-preflight", action="store_true", help=argparse.SUPPRESS)


def file_plan(folder: Path) -> list[dict]:
    """Every file to upload with its size and SHA-256, sorted by path."""
    plan = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        plan.append({"path": str(path.relative_to(folder)), "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    return plan


def check_repo_id(repo_id: str) -> None:
    """`USER/NAME` as the Hub accepts it (huggingface_hub's own validation, plus the namespace it requires here)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(f"--repo-id {repo_id!r} is not a Hub repo id: {str(error).splitlines()[0]}") from error
    if repo_id.count("/") != 1:
        raise PushError(f"--repo-id {repo_id!r} is not a Hub repo id: expected USER/NAME")


def check_folder(folder: Path) -> None:
    """Refuse folders that are not complete MAGE checkpoints (named reason): missing files, pickle weights, another
    model type, unreadable safetensors."""
    if not folder.is_dir():
        raise PushError(f"--model {folder} is not a folder.")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise PushError(f"{folder} is not a complete MAGE checkpoint: missing {', '.join(missing)}.")
    unsafe = [p.name for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    if unsafe:
        raise PushError(f"{folder} holds pickle-based weight files {unsafe}; only safetensors are published.")
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise PushError(f"{folder / 'config.json'}: not a JSON object ({error})") from error
    if model_type != "mage":
        raise PushError(f"{folder / 'config.json'} has model_type={model_type!r}; expected 'mage'.")
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as error:
            raise PushError(f"{weights}: not a readable safetensors file ({error}).") from error


def preflight(folder: Path) -> dict:
    """Load the folder in a fresh process (Auto classes, remote code) and answer one question."""
    with tempfile.TemporaryDirectory() as tmp:
        image = draw_check_image(Path(tmp) / "preflight.png")
        return reload_and_answer(folder, [image], ["What is in the image?"], max_new_tokens=4)


def push(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    regenerate_card: bool = False,
    eval_results: Path | None = None,
    license: str = "apache-2.0",
    token: str | None = None,
    skip_preflight: bool = False,
    api=None,
) -> list[dict]:
    """Check, write the card, then (unless `dry_run`) create the repo and upload the folder. Returns the file plan."""
    check_repo_id(repo_id)
    check_folder(folder)
    if not skip_preflight:
        try:
            report = preflight(folder)
        except RuntimeError as error:  # the fresh process failed: its first line and its exception's line
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise PushError(" ".join(dict.fromkeys([lines[0], lines[-1]]))) from error
        print(
            f"pre-flight: loads with {report['auto_class']} on transformers {report['transformers']} "
            f"and answers {report['answers'][0]!r}"
        )
    card_path = folder / "README.md"
    if regenerate_card or not card_path.exists():
        results = json.loads(eval_results.read_text()) if eval_results else None
        build_model_card(folder, results=results, license=license, repo_id=repo_id).save(card_path)
    plan = file_plan(folder)
    total = sum(item["bytes"] for item in plan)
    print(f"{'file':<40} {'bytes':>12}  sha256")
    for item in plan:
        print(f"{item['path']:<40} {item['bytes']:>12}  {item['sha256'][:16]}…")
    print(f"{len(plan)} files, {total / 1e6:.2f} MB → {repo_id}" + (" (dry run: nothing uploaded)" if dry_run else ""))
    if dry_run:
        return plan
    if api is None:
        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        commit_message="Upload MAGE checkpoint",
        repo_type="model",
    )
    print(f"uploaded: https://huggingface.co/{repo_id}")
    return plan


def run(args: argparse.Namespace) -> int:
    try:
        _push_from_args(args)
    except PushError as error:
        print(f"mage push: error: {error}", file=sys.stderr)
        return 2
    return 0


def _push_from_args(args: argparse.Namespace) -> None:
    push(
        args.model,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        regenerate_card=args.regenerate_card,
        eval_results=args.eval_results,
        license=args.license,
        token=args.token,
        skip_preflight=args.skip_preflight,
    )


__all__ = ["PushError", "check_folder", "check_repo_id", "file_plan", "preflight", "push"]
