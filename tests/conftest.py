"""Test-wide settings: quiet TensorFlow, headless matplotlib, the repository on sys.path, and a suite
that leaves the temp folder as it found it.

Every temporary file of the session, from the tests, from the libraries they call and from the
processes they start (TMPDIR is inherited), goes under pytest's base temporary folder, which pytest
removes after a passing session (``tmp_path_retention_policy = failed`` in pytest.ini keeps the folders
of failed tests for inspection). Hypothesis keeps no example database and its caches in a temporary
folder removed at the end.
"""

import getpass
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

settings.register_profile("no_database", database=None)
settings.load_profile("no_database")

TEMP_VARIABLES = ("TMPDIR", "TEMP", "TMP")
_ROOT_KEY = pytest.StashKey[tuple]()
_HYPOTHESIS_KEY = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    # pytest creates <temp>/pytest-of-<user> on first use; remember whether it was there already
    temp = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
    root = Path(temp) / f"pytest-of-{_user()}"
    config.stash[_ROOT_KEY] = (root, root.exists())
    # Hypothesis caches what it learns from the code under .hypothesis/ in the working directory otherwise
    home = Path(tempfile.mkdtemp(prefix="hypothesis-"))
    set_hypothesis_home_dir(home)
    config.stash[_HYPOTHESIS_KEY] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    set_hypothesis_home_dir(None)
    shutil.rmtree(config.stash[_HYPOTHESIS_KEY], ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove pytest-of-<user> when this session created it and left it empty (a passing session)."""
    root, existed = session.config.stash[_ROOT_KEY]
    if not existed:
        try:
            root.rmdir()
        except OSError:  # absent, or holding the folders of failed tests
            pass


@pytest.fixture(scope="session", autouse=True)
def session_temp_folder(tmp_path_factory: pytest.TempPathFactory):
    """Point TMPDIR (and ``tempfile``) at a folder inside pytest's base temporary folder; remove it after."""
    folder = tmp_path_factory.mktemp("tempdir")
    saved = {name: os.environ.get(name) for name in TEMP_VARIABLES}
    saved_tempdir = tempfile.tempdir
    os.environ.update({name: str(folder) for name in TEMP_VARIABLES})
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_tempdir
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(folder, ignore_errors=True)


def _user() -> str:
    """The user name in pytest's folder name (pytest falls back to "unknown" the same way)."""
    try:
        return getpass.getuser()
    except (ImportError, OSError, KeyError):
        return "unknown"
