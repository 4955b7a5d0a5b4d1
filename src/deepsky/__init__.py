"""deepsky: from a night of raw deep-sky sub-exposures to a finished astrophoto."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepsky")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
