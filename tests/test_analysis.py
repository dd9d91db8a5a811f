"""Alignability analysis: RSA and Procrustes against hand-computed cases, prototypes, and the study end to end."""
import json
import math

import numpy as np
import pytest
import torch

from spacy_concept_align.corpus import choose_file
from spacy_concept_align.research.analysis import (
    alignability_study, compare, language_prototypes, pairwise, pooled_prototypes, procrustes_disparity,
    rsa, shared_concepts,
)
from spacy_concept_align.features import FeatureSet
from spacy_concept_align.labels import DEPREL_ID, DEPRELS, UPOS, UPOS_ID


def line(*xs):
    """Points on the x axis of a 2-d space."""
    return np.array([[x, 0.0] for x in xs])


def random_rotation(d, seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------------------------------------------
# RSA and Procrustes


def test_identical_matrices():
    a = np.random.default_rng(0).normal(size=(6, 4))
    assert rsa(a, a) == pytest.approx(1.0)
    assert rsa(a, a, method="pearson") == pytest.approx(1.0)
    assert procrustes_disparity(a, a) == pytest.approx(0.0, abs=1e-12)


def test_rotated_scaled_translated_copy_is_perfectly_alignable():
    a = np.random.default_rng(1).normal(size=(7, 5))
    b = 2.5 * a @ random_rotation(5) + np.arange(5)
    assert procrustes_disparity(a, b) == pytest.approx(0.0, abs=1e-10)
    assert rsa(a, b) == pytest.approx(1.0)
    assert rsa(a, b, method="pearson") == pytest.approx(1.0)


def test_rsa_hand_computed():
    # a: points 0, 1, 4 on a line -> pdist order (0,1), (0,2), (1,2) -> distances x = [1, 4, 3]
    # b: points 0, 2, 3           ->                                   distances y = [2, 3, 1]
    # Spearman: ranks [1, 3, 2] vs [2, 3, 1], d = [-1, 0, 1], sum d^2 = 2 -> 1 - 6 * 2 / (3 * (9 - 1)) = 0.5
    # Pearson: mean x = 8/3, dx = [-5/3, 4/3, 1/3]; mean y = 2, dy = [0, 1, -1]
    #          cov = 0 + 4/3 - 1/3 = 1; Sxx = (25 + 16 + 1) / 9 = 14/3; Syy = 2 -> r = 1 / sqrt(28/3) = 0.327327
    a, b = line(0, 1, 4), line(0, 2, 3)
    assert rsa(a, b) == pytest.approx(0.5)
    assert rsa(a, b, method="pearson") == pytest.approx(math.sqrt(3 / 28))
    assert math.sqrt(3 / 28) == pytest.approx(0.327327, abs=1e-6)


def test_rsa_reversed_distances_is_negative():
    # a: points 0, 1, 4 -> distances [1, 4, 3] (ranks 1, 3, 2); b: points 0, 4, 1 -> distances [4, 1, 3] (ranks 3, 1, 2)
    # Spearman: d = [-2, 2, 0], sum d^2 = 8 -> 1 - 6 * 8 / 24 = -1
    a, b = line(0, 1, 4), line(0, 4, 1)
    assert rsa(a, b) == pytest.approx(-1.0)
    assert rsa(a, b, method="pearson") < -0.9


def test_rsa_cosine_ignores_row_scale():
    a = np.random.default_rng(2).normal(size=(5, 3))
    b = a * np.array([[1.0], [3.0], [0.5], [2.0], [7.0]])  # every concept's vector stretched differently
    assert rsa(a, b, metric="cosine") == pytest.approx(1.0)
    assert rsa(a, b, metric="euclidean") < 0.99


def test_rsa_degenerate_inputs():
    assert math.isnan(rsa(line(0, 1), line(0, 2)))  # 2 concepts: one distance, nothing to correlate
    assert math.isnan(rsa(line(0, 1, 2), np.zeros((3, 2))))  # all distances equal
    with pytest.raises(ValueError):
        rsa(line(0, 1, 2), line(0, 1))
    with pytest.raises(ValueError):
        rsa(line(0, 1, 2), line(0, 1, 2), method="kendall")


def test_procrustes_matches_svd_formula():
    # Orthogonal Procrustes with scaling: after centring and unit Frobenius norm, the disparity is
    # 1 - (sum of singular values of A^T B)^2.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    norm = lambda m: (m - m.mean(0)) / np.linalg.norm(m - m.mean(0))  # noqa: E731
    expected = 1 - np.linalg.svd(norm(a).T @ norm(b), compute_uv=False).sum() ** 2
    assert procrustes_disparity(a, b) == pytest.approx(expected)
    assert 0 < procrustes_disparity(a, b) < 1


def test_procrustes_hand_computed():
    # Three points on a line, each centred and normalised: a = (0, 1, 4) -> (-5/3, -2/3, 7/3) / sqrt(78/9),
    # b = (0, 2, 3) -> (-5/3, 1/3, 4/3) / sqrt(42/9). In 1-d the best rotation is +-1, so the disparity is
    # 1 - (a.b)^2 = 1 - ((25 - 2 + 28) / 9)^2 / ((78/9) (42/9)) = 1 - 51^2 / (78 * 42) = 1 - 2601 / 3276 = 0.206044
    assert procrustes_disparity(line(0, 1, 4), line(0, 2, 3)) == pytest.approx(1 - 2601 / 3276)


def test_procrustes_pads_the_narrower_matrix():
    a = np.random.default_rng(4).normal(size=(5, 2))
    b = np.pad(a, ((0, 0), (0, 3))) @ random_rotation(5, seed=5) * 3.0  # the same shape, rotated in 5-d
    assert procrustes_disparity(a, b) == pytest.approx(0.0, abs=1e-10)
    assert procrustes_disparity(b, a) == pytest.approx(0.0, abs=1e-10)
    assert rsa(a, b) == pytest.approx(1.0)


def test_procrustes_degenerate_inputs():
    assert math.isnan(procrustes_disparity(np.zeros((3, 2)), line(0, 1, 2)))  # no spread
    assert math.isnan(procrustes_disparity(line(0), line(1)))


def test_shared_concepts_and_too_few():
    counts_a = np.array([5, 0, 12, 3, 20])
    counts_b = np.array([9, 9, 1, 10, 10])
    assert shared_concepts(counts_a, counts_b, 3).tolist() == [0, 3, 4]
    assert shared_concepts(counts_a, counts_b, 5).tolist() == [0, 4]
    means = np.random.default_rng(6).normal(size=(5, 4))
    ok = compare((means, counts_a), (means + 1.0, counts_b), min_count=3)
    assert ok["n_concepts"] == 3 and ok["rsa"] == pytest.approx(1.0) and ok["procrustes"] == pytest.approx(0, abs=1e-12)
    few = compare((means, counts_a), (means, counts_b), min_count=5)
    assert few["n_concepts"] == 2 and math.isnan(few["rsa"]) and math.isnan(few["procrustes"])


def test_pairwise_matrices():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 4))
    protos = {
        "aa": (base, np.full(6, 10)),
        "bb": (2 * base @ random_rotation(4), np.full(6, 10)),  # a copy: perfectly alignable with aa
        "cc": (rng.normal(size=(6, 4)), np.full(6, 10)),
        "dd": (base, np.array([10, 10, 0, 0, 0, 0])),  # only 2 concepts: NaN with everyone, itself included
    }
    result = pairwise(protos, min_count=5)
    assert result["langs"] == ["aa", "bb", "cc", "dd"]
    r, p = result["rsa"], result["procrustes"]
    np.testing.assert_array_equal(np.isnan(r), np.isnan(r.T))
    np.testing.assert_allclose(np.nan_to_num(r), np.nan_to_num(r.T))
    np.testing.assert_allclose(np.diag(r)[:3], 1.0)
    np.testing.assert_allclose(np.diag(p)[:3], 0.0, atol=1e-12)
    assert r[0, 1] == pytest.approx(1.0) and p[0, 1] == pytest.approx(0.0, abs=1e-10)
    assert p[0, 2] > 0.05
    assert np.isnan(r[3]).all() and np.isnan(p[:, 3]).all()
    assert result["n_shared"][0, 3] == 2 and result["n_shared"][0, 1] == 6


# ---------------------------------------------------------------------------------------------------------------
# Prototypes


def tiny_features():
    """Two sentences, [w1 w2] and [w3], with vectors chosen for easy means."""
    # sentence 1: w1 = (1, 0) NOUN root; w2 = (3, 0) NOUN, head w1, amod. sentence 2: w3 = (0, 2) VERB root.
    upos = np.array([UPOS_ID["NOUN"], UPOS_ID["NOUN"], UPOS_ID["VERB"]], np.int16)
    deprels = np.array([DEPREL_ID["root"], DEPREL_ID["amod"], DEPREL_ID["root"]], np.int16)
    return FeatureSet(words=np.array([[1, 0], [3, 0], [0, 2]], np.float32),
                      roots=np.array([[10, 10], [20, 20]], np.float32), offsets=np.array([0, 2, 3]),
                      upos=upos, heads=np.array([0, 1, 0], np.int32), deprels=deprels, lang="xx")


def test_language_prototypes_pos():
    means, counts = language_prototypes(tiny_features(), "pos", min_count=1)
    assert means.shape == (len(UPOS), 2) and counts.shape == (len(UPOS),)
    np.testing.assert_allclose(means[UPOS_ID["NOUN"]], [2, 0])  # ((1, 0) + (3, 0)) / 2
    np.testing.assert_allclose(means[UPOS_ID["VERB"]], [0, 2])
    assert counts[UPOS_ID["NOUN"]] == 2 and counts[UPOS_ID["VERB"]] == 1 and counts.sum() == 3
    assert np.isnan(means[UPOS_ID["ADJ"]]).all()  # absent classes are NaN, never a fake zero point
    means, counts = language_prototypes(tiny_features(), "pos", min_count=2)
    assert np.isnan(means[UPOS_ID["VERB"]]).all() and counts[UPOS_ID["VERB"]] == 1


def test_language_prototypes_rel():
    # relation vector = h(head) - h(dependent); a root's head is its sentence's root vector
    # w1: (10, 10) - (1, 0) = (9, 10); w2: (1, 0) - (3, 0) = (-2, 0); w3: (20, 20) - (0, 2) = (20, 18)
    means, counts = language_prototypes(tiny_features(), "rel", min_count=1)
    assert means.shape == (len(DEPRELS), 2)
    np.testing.assert_allclose(means[DEPREL_ID["root"]], [14.5, 14])
    np.testing.assert_allclose(means[DEPREL_ID["amod"]], [-2, 0])
    assert counts[DEPREL_ID["root"]] == 2 and counts.sum() == 3


def test_language_prototypes_transform():
    means, _ = language_prototypes(tiny_features(), "pos", transform=lambda x: 2 * x + 1)  # numpy callable
    np.testing.assert_allclose(means[UPOS_ID["NOUN"]], [5, 1])
    linear = torch.nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    linear.train()
    means, _ = language_prototypes(tiny_features(), "rel", transform=linear)  # a torch module, like decoder.rel.phi
    np.testing.assert_allclose(means[DEPREL_ID["root"]], [14.5, 14, 29.5])
    assert linear.training  # the module's mode is restored
    # pooling two sets = prototypes of their union (every example weighs the same)
    pooled, counts = pooled_prototypes([tiny_features(), tiny_features().select([1])], "pos")
    np.testing.assert_allclose(pooled[UPOS_ID["VERB"]], [0, 2])
    assert counts[UPOS_ID["VERB"]] == 2 and counts[UPOS_ID["NOUN"]] == 2


# ---------------------------------------------------------------------------------------------------------------
# The study, end to end on real UD data

LANGS = ["wo", "cy", "ar_pud"]


def test_choose_file():
    assert choose_file("ar_pud", ("test", "dev", "train")).treebank == "ar_pud"
    wo = choose_file("wo", ("test", "dev", "train"))
    assert (wo.treebank, wo.split) == ("wo_wtb", "test")
    assert choose_file("wo", ("train", "dev", "test")).split == "train"
    with pytest.raises(KeyError):
        choose_file("not-a-language", ("test",))


def _check_outputs(result, out, layers, pipeline=False):
    files = {p.name for p in out.iterdir()}
    expected = {"alignability.json", "alignability.md", "layer_curve.png"}
    expected |= {f"heatmap_{m}_L{layer}.png" for m in ("rsa", "procrustes") for layer in layers}
    assert expected <= files
    saved = json.loads((out / "alignability.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("encoder", "settings", "langs", "source", "layers", "default_layer", "files", "source_files",
                "layer_curve", "per_layer", "per_language"):
        assert key in saved
    assert saved["layers"] == layers and saved["langs"] == LANGS
    for layer in layers:
        for task in ("pos", "rel"):
            block = saved["per_layer"][str(layer)][task]
            for measure in ("rsa", "procrustes"):
                m = np.array(block["pairwise"][measure], dtype=float)
                assert m.shape == (3, 3)
                np.testing.assert_allclose(m, m.T, equal_nan=True)
                assert np.isfinite(np.diag(m)).all()
            np.testing.assert_allclose(np.diag(np.array(block["pairwise"]["rsa"], float)), 1.0)
            np.testing.assert_allclose(np.diag(np.array(block["pairwise"]["procrustes"], float)), 0.0, atol=1e-9)
            assert set(block["with_source"]) == set(LANGS)
    assert saved["targets_in_means"] == LANGS  # (the source, en, is not studied)
    for task in ("pos", "rel"):
        for measure in ("rsa", "procrustes"):
            # The layer curve is each layer's mean alignability with the source over the studied languages.
            curve = saved["layer_curve"][task][measure]
            expected = [np.mean([saved["per_layer"][str(layer)][task]["with_source"][lang][measure] for lang in LANGS])
                        for layer in layers]
            assert curve == pytest.approx(expected)
    for lang in LANGS:
        for task in ("pos", "rel"):
            stages = saved["per_language"][lang][task]
            assert stages["before"] == saved["per_layer"][str(saved["default_layer"])][task]["with_source"][lang]
            assert stages["before"]["n_concepts"] >= 3
            if pipeline:
                # The aligner moves the vectors, never which words count: the same concepts are compared.
                assert stages["after"]["n_concepts"] == stages["before"]["n_concepts"]
                assert stages["after"]["rsa"] is not None and stages["after"]["rsa"] != stages["before"]["rsa"]
                assert "after_vs_learned_prototypes" in stages
    assert saved["files"]["ar_pud"]["treebank"] == "ar_pud" and saved["files"]["wo"]["split"] == "test"
    assert "| wo |" in (out / "alignability.md").read_text()
    return saved


def test_study_tiny_bert(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACY_CONCEPT_ALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    result = alignability_study(str(tiny_bert_dir), LANGS, ["en"], [1, 2], 2, out, max_sentences=20, min_count=3,
                                progress=False)
    _check_outputs(result, out, [1, 2])
    # a second run reads the cached features (stored as float16, hence approx: on the tiny random BERT the rank
    # correlations moved by up to 0.0011 in one fresh-clone run) and gives the same numbers
    again = alignability_study(str(tiny_bert_dir), LANGS, ["en"], [1, 2], 2, tmp_path / "again", max_sentences=20,
                               min_count=3, progress=False)
    for task in ("pos", "rel"):
        for measure in ("rsa", "procrustes"):
            np.testing.assert_allclose(again["layer_curve"][task][measure], result["layer_curve"][task][measure],
                                       atol=5e-3)


def test_study_tiny_gpt2_with_pipeline_and_eval(tiny_gpt2_dir, tmp_path, monkeypatch):
    """Decoder-only encoder; a (randomly initialised) pipeline adds "after"; an eval results.json adds correlations."""
    import spacy

    import spacy_concept_align.component  # noqa: F401  (registers the factory)
    from spacy_concept_align.feature_cache import extract_features

    monkeypatch.setenv("SPACY_CONCEPT_ALIGN_CACHE", str(tmp_path / "cache"))
    nlp = spacy.blank("xx")
    encoder_cfg = {"@architectures": "spacy-concept-align.FrozenEncoder.v1", "name": str(tiny_gpt2_dir), "layer": 2,
                   "pooling": "last"}
    pipe = nlp.add_pipe("concept_align", config={"model": {
        "@architectures": "spacy-concept-align.ConceptAligner.v1", "pos_hidden": 16, "pos_dim": 8, "rel_hidden": 16,
        "rel_dim": 8, "arc_hidden": 16, "encoder": encoder_cfg}})
    pipe.decoder.set_prototypes(extract_features(choose_file("en", ("train", "dev", "test")).path, pipe.encoder,
                                             max_sentences=20, progress=False), min_count=3)
    rows = [{"treebank": "wo_wtb", "lang": "wo", "concept_align (zero-shot)": {"upos": 40.0, "uas": 30.0, "las": 20.0}},
            {"treebank": "cy_ccg", "lang": "cy", "concept_align (zero-shot)": {"upos": 60.0, "uas": 50.0, "las": 30.0}},
            {"treebank": "ar_pud", "lang": "ar", "concept_align (zero-shot)": {"upos": 50.0, "uas": 40.0, "las": 25.0}}]
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps({"rows": rows}))
    out = tmp_path / "study"
    result = alignability_study(None, LANGS, ["en"], [1, 2], None, out, pipeline=nlp, max_sentences=20, min_count=3,
                                eval_results=results_path, progress=False)
    assert result["default_layer"] == 2 and result["encoder"] == {"name": str(tiny_gpt2_dir), "pooling": "last"}
    saved = _check_outputs(result, out, [1, 2], pipeline=True)
    assert (out / "alignability_vs_accuracy.png").exists()
    corr = saved["correlations"]
    assert set(corr["languages"]) == set(LANGS) and corr["languages"]["cy"]["las"] == 30.0
    pair = corr["pairs"]["pos_rsa_before_vs_upos"]
    assert pair["n"] == 3 and pair["y"] == [40.0, 60.0, 50.0]
    # x: each language's POS RSA with the source, before the aligner; the correlations are computed by hand here.
    assert pair["langs"] == LANGS and pair["x"] == [saved["per_language"][lang]["pos"]["before"]["rsa"] for lang in LANGS]
    x, y = np.array(pair["x"]), np.array(pair["y"])
    assert np.ptp(x) > 0
    assert pair["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties here)
    assert pair["spearman"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    las = corr["pairs"]["rel_procrustes_after_vs_las"]
    assert las["x"] == [saved["per_language"][lang]["rel"]["after"]["procrustes"] for lang in LANGS]
    assert las["y"] == [20.0, 30.0, 25.0]
    # "After" for one language, recomputed from the public pieces: the pipeline's phi applied to the language's
    # features and to the pooled source's (the same cached features the study read).
    from spacy_concept_align.corpus import find_treebank

    def features(info):
        return extract_features(find_treebank(info["treebank"], info["split"]).path, pipe.encoder, max_sentences=20,
                                progress=False)

    phi = pipe.decoder.pos.phi
    after = compare(language_prototypes(features(saved["files"]["cy"]), "pos", 3, phi),
                    pooled_prototypes([features(saved["source_files"]["en"])], "pos", 3, phi), 3)
    assert saved["per_language"]["cy"]["pos"]["after"]["rsa"] == pytest.approx(after["rsa"])
    assert saved["per_language"]["cy"]["pos"]["after"]["procrustes"] == pytest.approx(after["procrustes"])


def test_procrustes_equals_scipy():
    from scipy.spatial import procrustes

    rng = np.random.default_rng(8)
    for rows, width in ((3, 2), (5, 40), (17, 96), (37, 64)):
        a, b = rng.normal(size=(rows, width)), rng.normal(size=(rows, width))
        b[:, 0] += a[:, 0]  # some shared structure, not only noise
        assert procrustes_disparity(a, b) == pytest.approx(procrustes(a, b)[2], abs=1e-7)
    a = rng.normal(size=(6, 30))
    assert procrustes_disparity(a, b[:6]) == pytest.approx(procrustes(np.pad(a, ((0, 0), (0, 34))), b[:6])[2], abs=1e-7)


@pytest.mark.slow
def test_study_real_encoder_is_alignable(offline_encoder_dir, tmp_path, monkeypatch):
    """multilingual-e5-small, layer 6: POS concepts of Welsh and Wolof resemble the English ones far above chance."""
    monkeypatch.setenv("SPACY_CONCEPT_ALIGN_CACHE", str(tmp_path / "cache"))  # after the fixture built the encoder
    result = alignability_study(str(offline_encoder_dir), ["cy", "wo"], ["en"], [6], 6, tmp_path / "study",
                                max_sentences=30, min_count=5, progress=False)
    for lang in ("cy", "wo"):
        pos = result["per_language"][lang]["pos"]["before"]
        assert pos["n_concepts"] >= 8
        assert pos["rsa"] > 0.3 and pos["procrustes"] < 0.7
