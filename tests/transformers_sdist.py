"""transformers' own common model tests, taken at test time from the transformers sdist (issue 24).

The transformers wheel ships no tests and this repository carries no copies of transformers' code, so
`tests/test_modeling_common.py` and `tests/test_configuration_common.py` come from the source distribution that pip
downloads (`pip download --no-binary :all: --no-deps transformers==SDIST_VERSION`), checked against `SDIST_SHA256`
and cached under `~/.cache/mage-hf/` (or `$MAGE_HF_CACHE`). They are unpacked into a temporary package,
`hf_sdist_tests`, put on `sys.path`.

The sdist holds only the top-level `tests/test_*.py` files, not the subfolders these two import from:
`exporters/test_export.py` (`ExportTesterMixin`, the `torch.export` tests), `generation/test_utils.py`
(`GenerationTesterMixin`) and `utils/test_configuration_utils.py` (`config_common_kwargs`). They are replaced by the
stand-ins written below (see `_STANDINS`): an empty export mixin, a marker generation mixin (MAGE's generation
contract is `tests/test_generation_contract.py`) and a dict of common config kwargs (only read for configs without
sub-configs, which MAGE's is not). When the `parameterized` package is missing, a small stand-in with its `expand`
takes its place.

Moving the pin when transformers moves: docs/DECISIONS.md ("transformers' common model tests").
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import transformers

SDIST_VERSION = "5.25.0"
SDIST_SHA256 = "9120226c6bf170d69abc3029036799bb5d48e552f7127646a529a5c9309812e2"
PACKAGE = "hf_sdist_tests"
# Files taken from the sdist's `tests/` folder.
SDIST_FILES = ("test_modeling_common.py", "test_configuration_common.py")

_STANDINS = {
    "exporters/__init__.py": "",
    "exporters/test_export.py": '''
        """Stand-in: the sdist lacks tests/exporters/; the torch.export tests are not run."""


        class ExportTesterMixin:
            """Empty: `ModelTesterMixin` inherits it for its `torch.export` tests, which are not in the sdist."""
        ''',
    "generation/__init__.py": "",
    "generation/test_utils.py": '''
        """Stand-in: the sdist lacks tests/generation/test_utils.py."""


        class GenerationTesterMixin:
            """Marker only (`test_generation_tester_mixin_inheritance` checks a generative model's tester inherits
            it). MAGE's generation contract is tests/test_generation_contract.py."""
        ''',
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": '''
        """Stand-in: the sdist lacks tests/utils/. `ConfigTester.check_config_arguments_init` sets these common
        `PreTrainedConfig` kwargs to non-default values and reads them back (composite configs skip it)."""

        config_common_kwargs = {
            "return_dict": False,
            "output_hidden_states": True,
            "dtype": "float16",
            "is_encoder_decoder": True,
            "tie_word_embeddings": False,
            "chunk_size_feed_forward": 5,
            "architectures": ["BertModel"],
            "id2label": {0: "label"},
            "label2id": {"label": "0"},
            "problem_type": "regression",
        }
        ''',
}

_PARAMETERIZED_STANDIN = '''
    """Stand-in for the `parameterized` package (not a dependency of this project): only `parameterized.expand`,
    with its default test names (`<name>_<index>[_<first argument, if a string>]`)."""

    import functools
    import inspect
    import re


    class parameterized:  # noqa: N801  (the package's spelling)
        @staticmethod
        def to_safe_name(text):
            return str(re.sub("[^a-zA-Z0-9_]+", "_", text))

        @classmethod
        def expand(cls, params):
            params = list(params)
            digits = len(str(len(params) - 1))

            def decorator(func):
                namespace = inspect.currentframe().f_back.f_locals
                for index, param in enumerate(params):
                    args = param if isinstance(param, tuple) else (param,)
                    name = f"{func.__name__}_{index:0{digits}d}"
                    if args and isinstance(args[0], str):
                        name += "_" + cls.to_safe_name(args[0])

                    @functools.wraps(func)
                    def case(self, *more, _args=args, **kwargs):
                        return func(self, *_args, *more, **kwargs)

                    case.__name__ = case.__qualname__ = name
                    namespace[name] = case
                return None  # the unexpanded name is not a test

            return decorator
    '''


class SdistUnavailable(RuntimeError):
    """The pinned sdist cannot be had (other transformers installed, no network, wrong checksum)."""


def cache_dir() -> Path:
    """`$MAGE_HF_CACHE`, else `~/.cache/mage-hf`."""
    return Path(os.environ.get("MAGE_HF_CACHE", Path.home() / ".cache" / "mage-hf"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_path() -> Path:
    """The pinned transformers sdist, downloaded with pip into the cache once; raises `SdistUnavailable`."""
    if transformers.__version__ != SDIST_VERSION:
        raise SdistUnavailable(
            f"transformers {transformers.__version__} is installed but the common tests are pinned to the "
            f"{SDIST_VERSION} sdist; move the pin (tests/transformers_sdist.py, docs/DECISIONS.md)."
        )
    target = cache_dir() / f"transformers-{SDIST_VERSION}.tar.gz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as download:
            command = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
            command += ["-d", download, f"transformers=={SDIST_VERSION}"]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise SdistUnavailable(
                    f"pip download of the transformers {SDIST_VERSION} sdist failed: {error}"
                ) from error
            downloaded = Path(download) / target.name
            if result.returncode or not downloaded.exists():
                tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
                raise SdistUnavailable(f"pip download of the transformers {SDIST_VERSION} sdist failed: {tail[0]}")
            os.replace(downloaded, target)
    digest = _sha256(target)
    if digest != SDIST_SHA256:
        raise SdistUnavailable(f"{target} has sha256 {digest}, expected {SDIST_SHA256}; delete it to download again.")
    return target


def install_common_tests() -> str:
    """Unpack the sdist's common test files and the stand-ins into a temporary `hf_sdist_tests` package on
    `sys.path`; return the package name. Idempotent within a process; raises `SdistUnavailable`."""
    if PACKAGE in sys.modules:
        return PACKAGE
    archive = sdist_path()
    root = Path(tempfile.mkdtemp(prefix="mage-hf-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text('"""transformers tests from the sdist (tests/transformers_sdist.py)."""\n')
    with tarfile.open(archive) as tar:
        for name in SDIST_FILES:
            member = tar.getmember(f"transformers-{SDIST_VERSION}/tests/{name}")
            (package / name).write_bytes(tar.extractfile(member).read())
    for relative, text in _STANDINS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    try:
        import parameterized  # noqa: F401
    except ImportError:
        (root / "parameterized.py").write_text(textwrap.dedent(_PARAMETERIZED_STANDIN).lstrip())
    sys.path.insert(0, str(root))
    return PACKAGE


__all__ = ["SDIST_SHA256", "SDIST_VERSION", "SdistUnavailable", "install_common_tests", "sdist_path"]
