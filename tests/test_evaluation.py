"""CoNLL 2018 scoring against hand-computed cases, and the evaluation / learning-curve commands end to end."""
import json

import numpy as np
import pytest

from spacy_concept_align.corpus import find_treebank, read_conllu
from spacy_concept_align.feature_cache import extract_features
from spacy_concept_align.scoring import conll18_scores
from spacy_concept_align.research.evaluation import relabel_root, evaluate, markdown_table, write_report
from spacy_concept_align.features import FeatureSet
from spacy_concept_align.labels import DEPREL_ID, ROOT_ID, UPOS_ID
from spacy_concept_align.research.learning_curve import curve_table, learning_curve


def gold_set():
    # "She sleeps ." : She <-nsubj- sleeps (root), . <-punct- sleeps
    upos = np.array([UPOS_ID["PRON"], UPOS_ID["VERB"], UPOS_ID["PUNCT"]])
    heads = np.array([2, 0, 2])
    deprels = np.array([DEPREL_ID["nsubj"], ROOT_ID, DEPREL_ID["punct"]])
    return FeatureSet(np.zeros((3, 4)), np.zeros((1, 4)), np.array([0, 3]), upos, heads, deprels)


def test_conll18_scores_hand_computed():
    gold = gold_set()
    upos = np.array([UPOS_ID["PRON"], UPOS_ID["NOUN"], UPOS_ID["PUNCT"]])  # 2 of 3 tags right
    heads = np.array([2, 0, 1])  # the punctuation's head is wrong: UAS 2/3 (punctuation counts)
    rels = np.array([DEPREL_ID["obj"], ROOT_ID, DEPREL_ID["punct"]])  # 2 of 3 labels right
    scores = conll18_scores(gold, upos, heads, rels)
    assert scores.upos == pytest.approx(200 / 3)
    assert scores.uas == pytest.approx(200 / 3)
    assert scores.las == pytest.approx(100 / 3)  # only "sleeps" has both head and label right
    assert scores.label_acc == pytest.approx(200 / 3) and scores.words == 3


def test_relabel_root_keeps_root_for_the_root_only():
    rels = np.array([ROOT_ID, DEPREL_ID["obj"], ROOT_ID])
    out = relabel_root(rels, np.array([2, 0, 2]))
    assert list(out) == [DEPREL_ID["dep"], ROOT_ID, DEPREL_ID["dep"]]


def test_report_files(tmp_path):
    row = {"treebank": "wo_wtb", "lang": "wo", "group": "B", "words": 3,
           "sys": {"upos": 50.0, "uas": 40.0, "las": 30.0, "label_acc": 35.0, "words": 3}}
    result = {"systems": ["sys"], "rows": [row, dict(row, treebank="cy_ccg", lang="cy")], "seconds": 1.0}
    write_report(result, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["sys"]["mean_upos"] == 50.0 and saved["summary"]["sys"]["spread_las"] == 0.0
    table = (tmp_path / "results.md").read_text()
    assert "UDify zero-shot" in table and "| wo_wtb | 3 | 50.0 / 40.0 / 30.0 |" in table
    assert (tmp_path / "per_language.png").stat().st_size > 1000
    assert markdown_table(result).count("\n") == 7  # header, rule, 2 rows, mean, spread, consistency


def test_calibration_error_and_the_language_estimate():
    from spacy_concept_align.research.evaluation import calibration, calibration_summary

    correct = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    sharp = calibration(correct[:4], np.array([0.95, 0.95, 0.05, 0.05]))
    assert sharp["ece"] == pytest.approx(5.0) and sharp["accuracy"] == 50.0 and sharp["confidence"] == 50.0
    honest = calibration(correct[4:], np.full(4, 0.5))
    assert honest["ece"] == pytest.approx(0.0)
    overconfident = calibration(correct[4:], np.full(4, 0.9))
    assert overconfident["ece"] == pytest.approx(40.0)
    rows = [{"treebank": name, "calibration": c} for name, c in (("a", sharp), ("b", honest), ("c", overconfident))]
    summary = calibration_summary({"rows": rows})
    assert summary["ece_per_language"] == pytest.approx(15.0)
    assert summary["language_estimate_error"] == pytest.approx(40.0 / 3)


@pytest.fixture
def mini_pipeline(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACY_CONCEPT_ALIGN_CACHE", str(tmp_path / "cache"))
    from test_training import mini_config

    from spacy_concept_align.training import meta_train

    return meta_train(mini_config(tiny_bert_dir), progress=False)[0]


def test_evaluate_and_learning_curve_end_to_end(mini_pipeline):
    result = evaluate(mini_pipeline, only=["wo_wtb", "tl_trg", "en"], progress=False)
    assert [r["treebank"] for r in result["rows"]] == ["tl_trg", "wo_wtb"]  # en was a training language
    assert set(result["systems"]) == {"concept_align (zero-shot)", "prototypes only", "linear probe (pooled sources)",
                                      "concept_align (zero-shot, language not named)"}
    pipe = mini_pipeline.get_pipe("concept_align")
    for row in result["rows"]:
        test_file = find_treebank(row["treebank"], "test").path
        assert row["words"] == sum(len(s) for s in read_conllu(test_file))  # every word of the test split
        for system in result["systems"]:
            scores = row[system]
            assert scores["las"] <= min(scores["uas"], scores["label_acc"])  # head and label right <= either alone
        # The zero-shot rows are the pipeline's own prediction on that file, scored: with the language named (its
        # word order from the meta-training languages most like it) and without.
        features = extract_features(test_file, pipe.encoder, use_cache=False, progress=False)
        for name, lang in (("concept_align (zero-shot)", row["lang"]), ("concept_align (zero-shot, language not named)", None)):
            expected = conll18_scores(features, *pipe.decoder.predict(features, lang)[:3])
            scores = row[name]
            assert [scores[k] for k in ("upos", "uas", "las")] == pytest.approx([expected.upos, expected.uas, expected.las])
        zero_shot = row["concept_align (zero-shot)"]
        # Tag and head both right (what the calibration counts) happens no more often than either alone, and at
        # least as often as the two must overlap.
        both = row["calibration"]["accuracy"]
        assert max(0.0, zero_shot["upos"] + zero_shot["uas"] - 100) - 1e-6 <= both <= min(zero_shot["upos"],
                                                                                          zero_shot["uas"]) + 1e-6
    curve = learning_curve(mini_pipeline, ks=(0, 5), seeds=(0,), only=["wo"], max_test=40)
    assert {(r["k"], r["treebank"]) for r in curve["rows"]} == {(0, "wo_wtb"), (5, "wo_wtb")}
    assert mini_pipeline.get_pipe("concept_align").languages == []  # the curve adapts a copy
    assert "K=5" in curve_table(curve)
