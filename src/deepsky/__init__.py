"""deepsky: from a night of raw deep-sky sub-exposures to a finished astrophoto."""

# The one place the version is written: pyproject.toml reads it from here (setuptools'
# ``attr:``), so that every command gets it without importlib.metadata (~0.1 s of start-up).
__version__ = "0.1.0"

__all__ = ["__version__"]
