"""The benchmark's plumbing on a few real sentences (its figures come from `bench` runs, never from tests)."""
import json

import pytest

from spacy_concept_align.research.benchmark import Case, bench_sentences, default_cases, markdown_table, run_benchmark, write_report


def test_bench_sentences_share_the_languages():
    sentences = bench_sentences(langs=("wo", "ja"), max_words=200)
    assert 200 <= sum(map(len, sentences)) < 400
    assert len(sentences) >= 4


def test_default_cases_cover_the_issue():
    cases = default_cases()
    assert {c.system for c in cases} == {"encoder", "concept_align", "spacy-trf"}
    assert {c.n_process for c in cases} == {1, 2} and {c.doc_words for c in cases} == {0, 2000}
    assert len({c.batch_size for c in cases}) >= 3


@pytest.mark.slow
def test_three_systems_measured_in_fresh_processes(offline_encoder_dir, tmp_path):
    sentences = bench_sentences(langs=("wo", "he"), max_words=120)
    cases = [Case("1. encoder", "encoder", threads=1), Case("2. pipeline", "concept_align", threads=1),
             Case("3. spacy", "spacy-trf", threads=1), Case("long docs", "concept_align", threads=1, doc_words=50)]
    result = run_benchmark(cases, sentences, langs=("wo", "he"))
    rows = {r["label"]: r for r in result["cases"]}
    assert all(r["words"] == result["n_words"] and r["words_per_s"] > 0 and 200 < r["peak_rss_mb"] < 4000
               for r in rows.values())
    assert 0.2 < rows["2. pipeline"]["pos_acc"] <= 1 and "pos_acc" not in rows["1. encoder"]
    assert set(result["ratios"]) == {"pipeline / bare encoder (2/1)", "pipeline / spaCy transformer pipeline (2/3)"}
    write_report(result, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text())["n_words"] == result["n_words"]
    assert "| 2. pipeline | 1 |" in markdown_table(result)
