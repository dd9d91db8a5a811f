"""`spacy train` trains concept_align through update(): the registered reader, scorer and factory in a config."""
import srsly
from spacy.cli.train import train

from spacy_concept_align.corpus import find_treebank


def test_spacy_train_runs_and_saves_a_loadable_pipeline(tiny_bert_dir, tmp_path):
    import spacy

    overrides = {
        "paths.train": str(find_treebank("en_ewt", "dev").path),
        "paths.dev": str(find_treebank("wo_wtb", "dev").path),
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
    assert {"pos_acc", "dep_uas", "dep_las"} <= set(meta["performance"])
    nlp = spacy.load(tmp_path / "out" / "model-last")
    doc = nlp("Dafa tàng lool .")
    assert all(t.pos_ for t in doc) and sum(t.dep_ == "ROOT" for t in doc) == 1
