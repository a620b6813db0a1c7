"""version.py -- the Python peer's version.

The repository's VERSION file is the one place a release changes; a wheel
carries no VERSION file, so the number is written here once, read by
pyproject.toml (setuptools' dynamic version) and checked against VERSION by
tests/unit/test_version.sh and clients/python/tests/test_package.py.
"""

VERSION = '0.2.0'
