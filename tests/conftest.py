import json
import warnings
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


# ---------------------------------------------------------------------------------------------------------------
# The fast tier (`make test-fast`, `-m "not slow"`) never loads the real offline encoder: a test that does so
# without @pytest.mark.slow fails, saying which test it is, instead of quietly making the fast tier slow.

_real_encoder_allowed = True


def _is_real_encoder(path) -> bool:
    """Whether a model directory is multilingual-e5-small (the cached build or a bundle saved in a pipeline)."""
    from spacy_concept_align.encoders.offline import CONFIG

    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("vocab_size") == CONFIG["vocab_size"]
    except (OSError, ValueError):
        return False


def pytest_configure(config):
    from spacy_concept_align.encoders import frozen

    load = getattr(frozen, "_load", None)
    if load is None:
        warnings.warn("tests/conftest.py: spacy_concept_align.encoders.frozen._load is gone; the guard that keeps "
                      "the real encoder out of tests not marked slow is off")
        return
    checked = {}

    def guarded(path, *args, **kwargs):
        if not _real_encoder_allowed:
            if path not in checked:
                checked[path] = _is_real_encoder(path)
            if checked[path]:
                raise RuntimeError(f"{path}: a test not marked @pytest.mark.slow loads the real offline encoder "
                                   "(the fast tier must not); mark it slow or use the tiny encoders")
        return load(path, *args, **kwargs)

    guarded.__wrapped__ = load
    frozen._load = guarded


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _real_encoder_allowed
    _real_encoder_allowed = item.get_closest_marker("slow") is not None
    if not _real_encoder_allowed and "offline_encoder_dir" in item.fixturenames:
        pytest.fail("a test that uses offline_encoder_dir (the real encoder) must be marked @pytest.mark.slow",
                    pytrace=False)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def offline_encoder_dir():
    """The real multilingual-e5-small rebuilt from the PyPI wheels (built once, then cached)."""
    from spacy_concept_align.encoders.offline import build_offline_encoder

    return build_offline_encoder()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT (3 layers, width 32) with a SentencePiece-style Metaspace tokenizer; built once."""
    from tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny random decoder-only GPT-2 (3 layers, width 32) with a byte-level BPE tokenizer; built once."""
    from tiny_models import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tiny_bert_dir, tmp_path_factory):
    """A saved blank-xx + concept_align pipeline on the tiny BERT, initialised on 20 real English sentences (the
    en_ewt dev sample's first 20, which are en_ewt dev's first 20).
    Tests copy it before changing anything in it."""
    import spacy
    from spacy.training import Example

    from spacy_concept_align.corpus import read_docs, unannotated

    nlp = spacy.blank("xx")
    nlp.add_pipe("concept_align", config={"min_count": 1, "model": {
        "encoder": {"name": str(tiny_bert_dir), "layer": 2}}})
    gold = read_docs(DATA / "en_ewt-dev-sample.conllu", nlp.vocab, limit=20)
    nlp.initialize(lambda: [Example(unannotated(d), d) for d in gold])
    path = tmp_path_factory.mktemp("tiny-pipeline") / "pipeline"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def sample_file():
    """Path of a small sample of a real UD treebank kept in tests/data (a few sentences; see tests/data/README.md),
    e.g. sample_file("en_ewt"). The file name keeps the treebank code, so the language is read from it as usual."""

    def get(treebank: str) -> Path:
        (path,) = DATA.glob(f"{treebank}-*-sample.conllu")
        return path

    return get


@pytest.fixture(scope="session")
def ud_file():
    """Path of one split of a real UD treebank from the shared data directory (MANIFEST.tsv), e.g. ud_file("en_ewt", "dev")."""
    from spacy_concept_align.corpus import find_treebank

    def get(code: str, split: str):
        return find_treebank(code, split).path

    return get


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread():
    """One torch thread for the whole suite: the tests' small models run many times faster that way on a 2-core
    machine, where two intra-op threads per process fight any other process for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh, empty cache directory for one test (features written there, not into the user's cache)."""
    monkeypatch.setenv("SPACY_CONCEPT_ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
