"""Tagging files: formats in and out, a folder of shards (resumable, per-shard errors), one-line input errors, Ray."""
import json
import subprocess
import sys

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_concept_align.corpus import read_conllu
from spacy_concept_align.tagging import input_format, shard_targets, tag_shards
from spacy_concept_align.validate import validate_conllu

STRANGE = "Dafa tàng\tlool .\nNdax\u00a0dinga  ñëw ?\n\u200b\n😀 ok\u3000yes\n"


@pytest.fixture
def shards(tmp_path, sample_file):
    """Four inputs: plain text with strange spaces, JSONL, a CoNLL-U piece of a real treebank, text with a tab."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text(STRANGE, encoding="utf-8")
    (folder / "b.jsonl").write_text('{"text": "Jërëjëf waay ."}\n\n{"text": "Naka nga def ?", "lang": "wo"}\n',
                                    encoding="utf-8")
    blocks = sample_file("wo_wtb").read_text(encoding="utf-8").split("\n\n")[:5]
    (folder / "c.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    (folder / "d").write_text("first\tline has a tab\nsecond line\n", encoding="utf-8")
    return sorted(folder.iterdir())


def test_formats_are_detected_only_when_unambiguous(shards):
    assert [input_format(p) for p in shards] == ["text", "jsonl", "conllu", "text"]
    assert input_format(shards[3], "conllu") == "conllu"


def test_every_output_is_valid_conllu_with_no_blank_words(tiny_pipeline_dir, shards, tmp_path):
    reports = tag_shards(shard_targets(shards, tmp_path / "out", ".conllu"), str(tiny_pipeline_dir), progress=False)
    assert [r.status for r in reports] == ["done"] * 4
    for report in reports:
        text = open(report.target, encoding="utf-8", newline="").read()
        assert validate_conllu(text, report.target) == []
        assert all(w.strip() for s in read_conllu(report.target) for w in s.words)
    a = read_conllu(tmp_path / "out" / "a.conllu")
    assert [s.words for s in a] == [["Dafa", "tàng", "lool", "."], ["Ndax", "dinga", "ñëw", "?"], ["😀", "ok", "yes"]]
    assert "SpacesAfter=\\t" in a[0].lines[3] and "SpacesAfter=\\u00A0" in a[1].lines[2]
    assert a[2].upos[0] == "SYM"


def test_a_rerun_skips_done_shards_and_reports_a_bad_one(tiny_pipeline_dir, shards, tmp_path):
    pairs = shard_targets(shards, tmp_path / "out", ".jsonl")
    first = tag_shards(pairs[:2], str(tiny_pipeline_dir), progress=False)
    (shards[1]).write_text('{"text": "fine"}\n{"txt": "no text key"}\n', encoding="utf-8")
    second = tag_shards(pairs + [(tmp_path / "missing.txt", tmp_path / "out" / "missing.jsonl")],
                        str(tiny_pipeline_dir), progress=False)
    assert [r.status for r in first] == ["done", "done"]
    assert [r.status for r in second] == ["skipped", "skipped", "done", "done", "failed"]
    assert "missing.txt" in second[-1].error and not (tmp_path / "out" / "missing.jsonl").exists()
    records = [json.loads(line) for line in (tmp_path / "out" / "b.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == ["Jërëjëf waay .", "Naka nga def ?"]
    # The JSONL holds the pipeline's own annotation of each text (what nlp(text) gives).
    nlp = spacy.load(tiny_pipeline_dir)
    for record in records:
        expected = [(t.text, t.pos_, t.head.i, t.dep_) for t in nlp(record["text"])]
        got = [(record["text"][t["start"]:t["end"]], t["pos"], t["head"], t["dep"]) for t in record["tokens"]]
        assert got == expected


def test_spacy_output_loads_as_docs(tiny_pipeline_dir, shards, tmp_path):
    tag_shards(shard_targets(shards[:1], tmp_path, ".spacy"), str(tiny_pipeline_dir), progress=False)
    docs = list(DocBin().from_disk(tmp_path / "a.spacy").get_docs(spacy.blank("xx").vocab))
    assert [d.text for d in docs] == [line for line in STRANGE.split("\n") if line.strip()]
    assert all(d.has_annotation("DEP") for d in docs)


def test_one_shared_stem_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="both be written"):
        shard_targets([tmp_path / "x" / "a.txt", tmp_path / "y" / "a.jsonl"], tmp_path / "out", ".conllu")


def _tag_command(args, how, monkeypatch, capsys):
    """(exit status, stderr) of `python -m spacy_concept_align ARGS`: in a new process, or its entry point in this
    one (the same main(), without a second interpreter's start-up)."""
    if how == "process":
        run = subprocess.run([sys.executable, "-m", "spacy_concept_align"] + args, capture_output=True, text=True)
        return run.returncode, run.stderr
    from spacy_concept_align.cli import main

    monkeypatch.setattr(sys, "argv", ["python -m spacy_concept_align"] + args)
    with pytest.raises(SystemExit) as exit:
        main(prog_name="python -m spacy_concept_align")
    return exit.value.code, capsys.readouterr().err


INPUT_ERRORS = [
    ("jsonl", b'{"text": "ok"}\n[1, 2]\n', "jsonl", 'b.jsonl:2: expected a JSON object with a "text" string'),
    ("text", b"fine\n\xff\xfe broken\n", "text", "b.jsonl:2: not UTF-8 text"),
    ("conllu", b"1\tw\t_\tNOUN\t_\t_\tx\tdep\t_\t_\n\n", "conllu", "b.jsonl:1: HEAD must be a non-negative integer"),
]


@pytest.mark.parametrize("content,fmt,message,how", [
    pytest.param(content, fmt, message, how, id=f"{name}-{how}",
                 # a new interpreter with torch costs seconds: the fast tier runs main() in this process
                 marks=pytest.mark.slow if how == "process" else ())
    for how in ("in-process", "process") for name, content, fmt, message in INPUT_ERRORS])
def test_input_errors_are_one_line_with_file_and_line(tiny_pipeline_dir, tmp_path, monkeypatch, capsys, content, fmt,
                                                      message, how):
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(content)
    out = tmp_path / "out.conllu"
    status, stderr = _tag_command(["tag", str(bad), "-o", str(out), "--format", fmt, "--pipeline",
                                   str(tiny_pipeline_dir)], how, monkeypatch, capsys)
    assert status == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}/{message}"), stderr
    assert not out.exists()


@pytest.mark.slow  # starts a local Ray (about 20 s)
def test_ray_equals_serial(tiny_pipeline_dir, shards, tmp_path):
    pytest.importorskip("ray.data", reason="the ray extra is not installed")
    import ray

    serial = tag_shards(shard_targets(shards, tmp_path / "serial", ".conllu"), str(tiny_pipeline_dir), progress=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        parallel = tag_shards(shard_targets(shards, tmp_path / "ray", ".conllu"), str(tiny_pipeline_dir),
                              engine="ray", num_workers=2)
    finally:
        ray.shutdown()
    assert sorted(r.status for r in parallel) == ["done"] * 4
    for report in serial:
        name = report.target.rsplit("/", 1)[-1]
        assert (tmp_path / "ray" / name).read_text(encoding="utf-8") == (tmp_path / "serial" / name).read_text(
            encoding="utf-8")
