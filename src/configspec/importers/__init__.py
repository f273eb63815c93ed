"""Importers: turn measurements published by other tools into ConfigSpec profiles."""

from configspec.importers.paper import (
    PAPER_PRICES_USD_PER_M,
    PAPER_VERIFY_LATENCY_MS,
    SHIPPED_PAPER_FILES,
    ImportResult,
    import_paper_data,
    paper_verification_profiles,
    shipped_paper_data,
    write_import,
)
from configspec.importers.tables import DataImportError

__all__ = [
    "PAPER_PRICES_USD_PER_M",
    "PAPER_VERIFY_LATENCY_MS",
    "SHIPPED_PAPER_FILES",
    "DataImportError",
    "ImportResult",
    "import_paper_data",
    "paper_verification_profiles",
    "shipped_paper_data",
    "write_import",
]
