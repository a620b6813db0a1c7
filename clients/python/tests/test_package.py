"""test_package.py -- which rrpc is tested, and its version against the
repository's VERSION file (a wheel carries no VERSION file)."""

import pathlib

import pytest

import rrpc
from conftest import INSTALLED, SRC

VERSION_FILE = pathlib.Path(__file__).resolve().parents[3] / 'VERSION'


def test_the_right_rrpc_is_imported():
    where = pathlib.Path(rrpc.__file__).resolve()
    if INSTALLED:
        assert SRC not in where.parents, f'testing the tree ({where}), not the installed package'
    else:
        assert SRC in where.parents, where


def test_version_matches_the_repository():
    if not VERSION_FILE.exists():
        pytest.skip('not in a checkout of rrpc')
    assert rrpc.VERSION == VERSION_FILE.read_text().strip() == rrpc.__version__


@pytest.mark.skipif(not INSTALLED, reason='metadata exists only once installed')
def test_installed_metadata():
    from importlib import metadata
    assert metadata.version('rrpc') == rrpc.VERSION
    assert any(req.startswith('redis') for req in metadata.requires('rrpc'))


def test_public_api():
    for name in rrpc.__all__:
        assert hasattr(rrpc, name), name
    assert {'Client', 'Proxy', 'Server', 'Error'} <= set(rrpc.__all__)
