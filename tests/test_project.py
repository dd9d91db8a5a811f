"""The spaCy project, in miniature: features -> train -> evaluate -> analyze -> package, then the wheel loads.

Real UD files and the real offline encoder, but three languages, a few dozen sentences and a few episodes.
"""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MINI = {
    "vars.name": "mini",
    "vars.source_langs": "en",
    "vars.train_langs": "en,de,fr",
    "vars.validation_langs": "af",
    "vars.max_train_sentences": 40,
    "vars.max_validation_sentences": 20,
    "vars.epochs": 2,
    "vars.episodes_per_language": 4,
    "vars.n_support": 4,
    "vars.n_query": 8,
    "vars.evaluate_args": "--only tl_trg --only wo_wtb",
    "vars.analyze_langs": "en,de,tl",
    "vars.analyze_layers": "6",
    "vars.analyze_sentences": 30,
    "vars.specialise_args": "--only mr",
    "vars.package_name": "concept_align_mini",
}


@pytest.mark.slow
def test_project_workflow_in_miniature(tmp_path, offline_encoder_dir):
    from weasel.cli.run import project_run

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs")
    data_dir = os.environ.get("SPACY_CONCEPT_ALIGN_UD") or str(ROOT.parent / "shared" / "ud")
    overrides = dict(MINI, **{"vars.data_dir": data_dir})
    for step in ("features", "train", "evaluate", "evaluate-languages", "analyze", "package"):
        project_run(project, step, overrides=overrides, capture=True)

    report = json.loads((project / "training/mini/training_report.json").read_text())
    languages = json.loads((project / "training/mini_languages/concept_align/cfg.json").read_text())
    assert list(languages["meta"]["in_language"]) == ["mr"]
    in_language = json.loads((project / "metrics/mini_languages/in_language.json").read_text())
    assert list(in_language) == ["mr"] and 0 < in_language["mr"]["test"]["upos"] <= 100
    assert report["steps"] == 2 * 3 * 4
    results = json.loads((project / "metrics/mini/results.json").read_text())
    assert [row["treebank"] for row in results["rows"]] == ["tl_trg", "wo_wtb"]
    assert (project / "metrics/mini/per_language.png").exists()
    assert (project / "analysis/mini/alignability.json").exists()
    wheels = list((project / "packages").glob("xx_concept_align_mini-*/dist/*.whl"))
    assert len(wheels) == 1

    # The wheel installs into a new environment and loads with spacy.load (this plugin and its dependencies are
    # made visible through a .pth file, standing in for `pip install spacy-concept-align`).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                          text=True, check=True).stdout.strip()
    here = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "host.pth").write_text("\n".join(here + [str(ROOT)]) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheels[0])], check=True)
    code = ("import spacy, json; nlp = spacy.load('xx_concept_align_mini'); doc = nlp('Dem go come house .');"
            "assert 'mr' in nlp.get_pipe('concept_align').decoder.priors;"
            "print(json.dumps([(t.pos_, t.dep_) for t in doc]))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    tagged = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(tagged) == 5 and sum(dep == "ROOT" for _, dep in tagged) == 1

    # The wheel carries its encoder: it loads with no network, no cache and a read-only empty HOME, and spaCy's
    # own corpus command tags with it.
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("`unshare -n` is not permitted here (it needs root on Linux): the no-network load is not checked")
    home = tmp_path / "home"
    home.mkdir(mode=0o555)
    offline = {k: v for k, v in os.environ.items() if not k.startswith(("SPACY_CONCEPT_ALIGN", "HF_", "TRANSFORMERS"))}
    offline["HOME"] = str(home)
    out = subprocess.run(["unshare", "-n", python, "-c", code], capture_output=True, text=True, env=offline)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == tagged
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "Dem go come house ."}\n{"text": "Na im be dat ."}\n', encoding="utf-8")
    applied = subprocess.run(["unshare", "-n", python, "-m", "spacy", "apply", "xx_concept_align_mini", str(corpus),
                              str(tmp_path / "applied.spacy")], capture_output=True, text=True, env=offline)
    assert applied.returncode == 0, applied.stderr[-2000:]
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    docs = list(DocBin().from_disk(tmp_path / "applied.spacy").get_docs(Vocab()))
    assert [[t.pos_ for t in doc] for doc in docs][0] == [pos for pos, _ in tagged]
    assert list(home.iterdir()) == []
