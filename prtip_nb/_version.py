"""The version of prtip_nb, in one place (Parquet metadata and the CLI read it)."""

__version__ = "0.1.0"
