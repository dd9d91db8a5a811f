"""The command line: --help everywhere, and tag / adapt / convert on real UD files with a small saved pipeline."""
import json

import pytest
import spacy
from typer.testing import CliRunner

from spacy_concept_align.cli import app
from spacy_concept_align.corpus import find_treebank, read_conllu

runner = CliRunner()
COMMANDS = ["encoder build", "features", "convert", "tag", "train", "ship-default", "adapt", "specialise", "languages",
            "evaluate", "curve", "bench",
            "analyze", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, command.split() + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.fixture
def wolof_file(tmp_path, sample_file):
    """Six real Wolof sentences (from the wo_wtb sample in tests/data), under a UD file name."""
    blocks = sample_file("wo_wtb").read_text(encoding="utf-8").split("\n\n")[:6]
    path = tmp_path / "wo_wtb-ud-test.conllu"
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


def test_tag_conllu_keeps_tokenization(tiny_pipeline_dir, wolof_file, tmp_path):
    out = tmp_path / "pred.conllu"
    result = runner.invoke(app, ["tag", str(wolof_file), "-o", str(out), "--pipeline", str(tiny_pipeline_dir)])
    assert result.exit_code == 0, result.output
    gold, predicted = read_conllu(wolof_file), read_conllu(out)
    assert [s.words for s in predicted] == [s.words for s in gold]
    assert all(s.heads.count(0) == 1 for s in predicted)
    assert [line for s in predicted for line in s.lines if line.startswith("#")] == \
        [line for s in gold for line in s.lines if line.startswith("#")]


def test_tag_plain_text(tiny_pipeline_dir, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Dafa tàng lool .\n\nNdax dinga ñëw ?\n", encoding="utf-8")
    out = tmp_path / "pred.conllu"
    result = runner.invoke(app, ["tag", str(text), "-o", str(out), "--pipeline", str(tiny_pipeline_dir)])
    assert result.exit_code == 0, result.output
    assert [s.words for s in read_conllu(out)] == [["Dafa", "tàng", "lool", "."], ["Ndax", "dinga", "ñëw", "?"]]


def test_tag_reports_a_bad_file(tiny_pipeline_dir, tmp_path):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tword\t_\tNOUN\t_\t_\tx\tdep\t_\t_\n\n", encoding="utf-8")
    result = runner.invoke(app, ["tag", str(bad), "-o", str(tmp_path / "out.conllu"), "--pipeline", str(tiny_pipeline_dir)])
    assert result.exit_code != 0
    assert "bad.conllu:1" in str(result.exception) and not (tmp_path / "out.conllu").exists()


def test_adapt_and_convert(tiny_pipeline_dir, wolof_file, tmp_path):
    result = runner.invoke(app, ["adapt", str(tiny_pipeline_dir), str(wolof_file), "--lang", "wo", "-o", str(tmp_path / "wo")])
    assert result.exit_code == 0, result.output
    assert spacy.load(tmp_path / "wo").get_pipe("concept_align").languages == ["wo"]
    result = runner.invoke(app, ["convert", str(wolof_file), "-o", str(tmp_path / "corpus"), "--n-sents", "2"])
    assert result.exit_code == 0, result.output
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(tmp_path / "corpus" / "wo_wtb-ud-test.spacy").get_docs(spacy.blank("xx").vocab))
    assert len(docs) == 3 and docs[0].has_annotation("DEP") and docs[0][0].pos_


def test_adapt_from_raw_text_then_annotated_sentences(tiny_pipeline_dir, wolof_file, tmp_path):
    raw = tmp_path / "wolof.txt"
    raw.write_text("Dafa tàng lool .\nNdax dinga ñëw ?\nMaa ngi fi rekk .\n", encoding="utf-8")
    result = runner.invoke(app, ["adapt", str(tiny_pipeline_dir), "--unlabeled", str(raw), "--lang", "wo",
                                 "-o", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert "13 words of wolof.txt" in result.output
    pipe = spacy.load(tmp_path / "raw").get_pipe("concept_align")
    assert pipe.languages == ["wo"]  # (how far its prototypes moved: test_adapt; a tiny random model is never sure)
    both = runner.invoke(app, ["adapt", str(tiny_pipeline_dir), str(wolof_file), "--unlabeled", str(raw),
                               "--lang", "wo", "-o", str(tmp_path / "both")])
    assert both.exit_code == 0 and "annotated sentences" in both.output and "words of wolof.txt" in both.output
    assert runner.invoke(app, ["adapt", str(tiny_pipeline_dir), "--lang", "wo", "-o", str(tmp_path / "x")]).exit_code


def ud_dir(root, welsh_sentences: int = 50):
    """A UD folder (no MANIFEST) with Wolof train (120 sentences), dev (15) and test (20) splits and Welsh train and
    test (10) splits."""
    for repo, code, split, n in [("UD_Wolof-WTB", "wo_wtb", "train", 120), ("UD_Wolof-WTB", "wo_wtb", "dev", 15),
                                 ("UD_Wolof-WTB", "wo_wtb", "test", 20), ("UD_Welsh-CCG", "cy_ccg", "train", welsh_sentences),
                                 ("UD_Welsh-CCG", "cy_ccg", "test", 10)]:
        blocks = find_treebank(code, split).path.read_text(encoding="utf-8").split("\n\n")[:n]
        (root / repo).mkdir(parents=True, exist_ok=True)
        (root / repo / f"{code}-ud-{split}.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return root


@pytest.fixture
def small_ud_dir(tmp_path):
    return ud_dir(tmp_path / "ud")


def test_specialise_and_languages(tiny_pipeline_dir, small_ud_dir, tmp_path, isolated_cache):
    out = tmp_path / "specialised"
    result = runner.invoke(app, ["specialise", str(tiny_pipeline_dir), str(out), "--data-dir", str(small_ud_dir)])
    assert result.exit_code == 0, result.output
    pipe = spacy.load(out).get_pipe("concept_align")
    assert pipe.languages == ["wo"]  # Welsh has too few sentences: zero-shot
    entry = pipe.cfg["meta"]["in_language"]["wo"]
    assert (entry["split"], entry["sentences"]) == ("train+dev", 135)  # never the test split
    assert "test" not in entry  # training reads no test split: `evaluate --in-language` scores it
    result = runner.invoke(app, ["evaluate", str(out), "--in-language", "--data-dir", str(small_ud_dir), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "m" / "in_language.json").read_text())
    assert list(scored) == ["wo"] and scored["wo"]["split"] == "train+dev"
    # The scores are the saved pipeline's on the Wolof test split: with its adaptation, and through the zero-shot
    # path, which is still the unspecialised pipeline's.
    from spacy_concept_align.feature_cache import extract_features
    from spacy_concept_align.scoring import conll18_scores

    test_file = small_ud_dir / "UD_Wolof-WTB" / "wo_wtb-ud-test.conllu"
    gold = extract_features(test_file, pipe.encoder, use_cache=False, progress=False)
    forms = [w for s in read_conllu(test_file) for w in s.words]
    base = spacy.load(tiny_pipeline_dir).get_pipe("concept_align").decoder
    # (approx: JSON read back by srsly's ujson parses some decimals one unit in the last place off)
    rounded = lambda s: pytest.approx({"upos": round(s.upos, 2), "uas": round(s.uas, 2), "las": round(s.las, 2)})  # noqa: E731
    assert scored["wo"]["test"] == rounded(conll18_scores(gold, *pipe.decoder.predict(gold, "wo", forms)))
    assert scored["wo"]["test_zero_shot_path"] == rounded(conll18_scores(gold, *base.predict(gold)))
    assert "| wo (wo_wtb) | train+dev (135) |" in (tmp_path / "m" / "in_language.md").read_text()
    assert "wo" in pipe.decoder.priors and pipe.decoder.language_arcs["wo"].context is not None
    listing = runner.invoke(app, ["languages", str(out), "--scores", str(tmp_path / "m" / "in_language.json")])
    assert listing.exit_code == 0, listing.output
    assert "wo_wtb" in listing.output and "train+dev 135 sents" in listing.output and "cy" not in listing.output.split("\n")[1]
    assert f"{scored['wo']['test']['upos']:.1f} / " in listing.output.split("\n")[1]
    # ship-default records the scores with the languages it ships
    (tmp_path / "src").mkdir()
    shipped = runner.invoke(app, ["ship-default", str(out), "--to", str(tmp_path / "src" / "default"),
                                  "--scores", str(tmp_path / "m" / "in_language.json")])
    assert shipped.exit_code == 0, shipped.output
    meta = json.loads((tmp_path / "src" / "default" / "cfg.json").read_text())["meta"]
    assert meta["in_language"]["wo"] == dict(entry, test=scored["wo"]["test"],
                                             test_zero_shot_path=scored["wo"]["test_zero_shot_path"])


def test_specialise_in_parallel_is_the_same(tiny_pipeline_dir, tmp_path, isolated_cache):
    """Languages adapted (and scored) in worker processes give the very pipeline (and scores) one process gives:
    adaptation is seeded."""
    from spacy_concept_align.research.evaluation import in_language_scores
    from spacy_concept_align.training import specialise
    from spacy_concept_align.weights import decoder_state

    data = ud_dir(tmp_path / "ud", welsh_sentences=110)
    results = []
    for workers in (1, 2):
        nlp = spacy.load(tiny_pipeline_dir)
        report = specialise(nlp, data, workers=workers, progress=False)
        entries = {lang: {k: v for k, v in entry.items() if k != "seconds"} for lang, entry in report.items()}
        scores = {lang: (entry["test"], entry["test_zero_shot_path"])
                  for lang, entry in in_language_scores(nlp, data, workers=workers, progress=False).items()}
        results.append((entries, scores, decoder_state(nlp.get_pipe("concept_align").decoder)))
    assert list(results[0][0]) == ["cy", "wo"] and results[0][0]["wo"]["sentences"] == 135
    assert list(results[0][1]) == ["cy", "wo"]
    assert results[0] == results[1]
