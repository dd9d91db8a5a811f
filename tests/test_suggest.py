"""Choosing sentences to annotate: unsure words first, frequent types not yet covered, sensible lengths."""
import numpy as np
from typer.testing import CliRunner

from spacy_concept_align.cli import app
from spacy_concept_align.corpus import read_conllu
from spacy_concept_align.suggest import choose_sentences
from spacy_concept_align.validate import validate_conllu


def test_unsure_frequent_and_new_words_win():
    forms = [["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"], ["x", "y", "z", "w", "v"],
             ["a", "b", "c", "d", "f"], ["q"], ["a"] * 40]
    sure, unsure = np.full(5, 0.95), np.full(5, 0.4)
    confidence = [unsure, unsure, sure, unsure, np.array([0.1]), np.full(40, 0.1)]
    chosen = choose_sentences(confidence, forms, 2)
    assert chosen[0] in (0, 1, 3)  # unsure, and its words come back in other sentences
    assert set(chosen) != {0, 1}  # the second pick brings new words, not the same ones again
    assert 4 not in chosen and 5 not in chosen  # too short, too long
    assert len(choose_sentences(confidence, forms, 6)) == 6  # when the range runs out, the others come last
    assert choose_sentences(confidence, forms, 6)[-2:] in ([4, 5], [5, 4])


def test_suggest_writes_pre_annotated_valid_conllu(tiny_pipeline_dir, tmp_path):
    raw = tmp_path / "raw.txt"
    lines = ["Dafa tàng lool ci Ndakaaru tey .", "Ndax dinga ñëw ci suba si ?", "Waaw .",
             "Maa ngi fi rekk , jërëjëf waay .", "Xale yi dem nañu lekool ci suba ."]
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "to_correct.conllu"
    result = CliRunner().invoke(app, ["suggest", str(tiny_pipeline_dir), str(raw), "--n", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    sentences = read_conllu(out)
    assert len(sentences) == 2 and all(5 <= len(s) <= 25 for s in sentences)
    assert {" ".join(s.words) for s in sentences} <= set(lines)
    assert all(s.heads.count(0) == 1 and all(s.upos) for s in sentences)
    assert validate_conllu(out.read_text(encoding="utf-8")) == []
