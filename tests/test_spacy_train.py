"""`spacy train` trains concept_align through update(): the registered reader, scorer and factory in a config."""
import pytest
import srsly
from spacy.cli.train import train
from spacy.util import registry


def test_spacy_train_runs_and_saves_a_loadable_pipeline(tiny_bert_dir, sample_file, tmp_path):
    import spacy

    overrides = {
        "paths.train": str(sample_file("en_ewt")),
        "paths.dev": str(sample_file("wo_wtb")),
        "components.concept_align.model.encoder.name": str(tiny_bert_dir),
        "components.concept_align.model.encoder.layer": 2,
        "components.concept_align.min_count": 1,
        "training.max_steps": 30,
        "training.eval_frequency": 15,
        "corpora.train.limit": 40,
        "corpora.dev.limit": 20,
    }
    train("configs/spacy_train.cfg", tmp_path / "out", overrides=overrides)
    meta = srsly.read_json(tmp_path / "out" / "model-best" / "meta.json")
    # The scores spaCy recorded for model-best are that saved pipeline's scores on the dev corpus (scored by the
    # registered scorer through the registered reader), not just present.
    best = spacy.load(tmp_path / "out" / "model-best")
    reader = registry.readers.get("spacy-concept-align.UDCorpus.v1")(path=sample_file("wo_wtb"), n_sents=10, limit=20)
    scores = best.evaluate(list(reader(best)))
    for key in ("pos_acc", "dep_uas", "dep_las"):
        assert meta["performance"][key] == pytest.approx(scores[key], abs=1e-4), key
    nlp = spacy.load(tmp_path / "out" / "model-last")
    doc = nlp("Dafa tàng lool .")
    assert all(t.pos_ for t in doc) and sum(t.dep_ == "ROOT" for t in doc) == 1
