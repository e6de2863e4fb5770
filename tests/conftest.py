"""Fixtures every test folder may use."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_admission_reviews() -> Path:
    """The real AdmissionReviews in ../shared/fixtures (read in place, never copied)."""
    folder = SHARED / "fixtures" / "admission-reviews"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the shared fixtures live beside the checkout")
    return folder
