import pytest


@pytest.fixture(scope="session")
def offline_encoder_dir():
    """The real multilingual-e5-small rebuilt from the PyPI wheels (built once, then cached)."""
    from spacy_concept_align.encoders.offline import build_offline_encoder

    return build_offline_encoder()
