import pytest


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
    """A saved blank-xx + concept_align pipeline on the tiny BERT, initialised on 20 real English sentences.
    Tests copy it before changing anything in it."""
    import spacy
    from spacy.training import Example

    from spacy_concept_align.corpus import find_treebank, read_docs, unannotated

    nlp = spacy.blank("xx")
    nlp.add_pipe("concept_align", config={"min_count": 1, "model": {
        "encoder": {"name": str(tiny_bert_dir), "layer": 2}}})
    gold = read_docs(find_treebank("en_ewt", "dev").path, nlp.vocab, limit=20)
    nlp.initialize(lambda: [Example(unannotated(d), d) for d in gold])
    path = tmp_path_factory.mktemp("tiny-pipeline") / "pipeline"
    nlp.to_disk(path)
    return path


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
