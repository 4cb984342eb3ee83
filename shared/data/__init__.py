"""Task data: loaders that turn every supported source into normalized examples (loaders.py), the
generators of the bundled SQL (sqlgen.py) and Python (codegen.py) task sets, and the synthesizer of
populated test databases for schema-only SQL data (synth.py)."""

from shared.data.loaders import DataError, load_file, load_splits

__all__ = ["DataError", "load_file", "load_splits"]
