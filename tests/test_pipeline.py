"""The concept_align component with a tiny random BERT: overfitting, IO, initialize checks, trees, languages, registry."""
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy import displacy
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from spacy_concept_align.corpus import LANG_ATTR, read_docs, unannotated
from spacy_concept_align.labels import UPOS
from spacy_concept_align.scoring import make_concept_scorer


ROOT = Path(__file__).resolve().parents[1]


def _config(tiny_dir, **extra):
    cfg = {"min_count": 1, "model": {"encoder": {"name": str(tiny_dir), "layer": 2}, "dropout": 0.0}}
    cfg.update(extra)
    return cfg


def _blank(tiny_dir, before=(), nlp_lang="en", **extra):
    nlp = spacy.blank(nlp_lang)
    for name in before:
        nlp.add_pipe(name)
    nlp.add_pipe("concept_align", config=_config(tiny_dir, **extra))
    return nlp


def _predictions(docs):
    return [[(t.text, t.pos_, t.head.i, t.dep_) for t in doc] for doc in docs]


@pytest.fixture(scope="module")
def train_examples(sample_file):
    vocab = spacy.blank("en").vocab
    gold = read_docs(sample_file("en_ewt"), vocab, n_sents=2, limit=8)  # en_ewt dev's first 8 sentences
    return [Example(unannotated(doc), doc) for doc in gold]


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, train_examples):
    """An nlp whose component has overfit 8 real en_ewt sentences, and its scores on them."""
    spacy.util.fix_random_seed(0)
    torch.manual_seed(0)
    nlp = _blank(tiny_bert_dir)
    nlp.initialize(get_examples=lambda: train_examples)
    optimizer = nlp.create_optimizer()
    losses = []
    for _ in range(300):
        losses.append(nlp.update(train_examples, sgd=optimizer)["concept_align"])
    return nlp, nlp.evaluate(train_examples), losses


def _clone(trained_nlp, tiny_dir, before=(), **extra):
    """A new nlp with the trained component's weights (so tests can change it without touching the shared one)."""
    nlp = _blank(tiny_dir, before=before, **extra)
    nlp.get_pipe("concept_align").from_bytes(trained_nlp.get_pipe("concept_align").to_bytes())
    return nlp


TEXTS = ["The cat sat on the mat.", "Where is the nearest train station?", "Bonjour tout le monde.",
         "I said: no, thanks! Then I left."]


# ---------------------------------------------------------------------------------------------------------------
# Overfitting

def test_overfit_real_sentences(trained, train_examples):
    nlp, scores, losses = trained
    assert sum(len(list(eg.reference.sents)) for eg in train_examples) == 8
    assert losses[-1] < losses[0] / 20
    print("overfit scores:", {k: scores[k] for k in ("pos_acc", "dep_uas", "dep_las")})
    assert scores["pos_acc"] > 0.9 and scores["dep_las"] > 0.9 and scores["dep_uas"] >= scores["dep_las"]
    predicted = list(nlp.pipe(unannotated(eg.reference) for eg in train_examples))
    gold_pos = [t.pos_ for eg in train_examples for t in eg.reference]
    got_pos = [t.pos_ for doc in predicted for t in doc]
    assert np.mean([a == b for a, b in zip(gold_pos, got_pos)]) == pytest.approx(scores["pos_acc"])


# ---------------------------------------------------------------------------------------------------------------
# IO

def test_to_disk_and_spacy_load(trained, tmp_path):
    nlp = trained[0]
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert _predictions(loaded.pipe(TEXTS)) == _predictions(nlp.pipe(TEXTS))
    # Safetensors + JSON only: no pickle anywhere in the component's folder.
    component = tmp_path / "model" / "concept_align"
    assert sorted(p.name for p in component.iterdir()) == ["cfg.json", "model.safetensors"]
    json.loads((component / "cfg.json").read_text())
    for path in (tmp_path / "model").rglob("*"):
        if path.is_file():
            assert not path.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), path
            assert path.suffix not in (".pkl", ".pickle", ".pt")


def test_save_encoder_writes_it_and_loading_reads_it(trained, tmp_path):
    """With save_encoder the component folder carries its encoder (safetensors + tokenizer), and a load uses it."""
    from spacy_concept_align.encoders.bundle import BUNDLE_FILE

    nlp = trained[0]
    pipe = nlp.get_pipe("concept_align")
    pipe.cfg["save_encoder"] = True
    try:
        nlp.to_disk(tmp_path / "model")
    finally:
        pipe.cfg["save_encoder"] = False
    encoder_dir = tmp_path / "model" / "concept_align" / "encoder"
    assert json.loads((encoder_dir / BUNDLE_FILE).read_text())["weights"] == "checkpoint"
    assert (encoder_dir / "model.safetensors").is_file() and (encoder_dir / "tokenizer.json").is_file()
    loaded = spacy.load(tmp_path / "model")
    assert Path(loaded.get_pipe("concept_align").encoder.path) == encoder_dir
    assert _predictions(loaded.pipe(TEXTS)) == _predictions(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "model")  # saved again without it: no stale encoder left behind
    assert not encoder_dir.exists()


def test_weights_come_through_initialize_config_not_the_factory(tiny_bert_dir, trained, tmp_path):
    trained[0].get_pipe("concept_align").to_disk(tmp_path / "component")
    nlp = _blank(tiny_bert_dir)
    assert not nlp.get_pipe("concept_align").is_initialized  # the factory reads nothing
    nlp.config["initialize"]["components"]["concept_align"] = {"weights": str(tmp_path / "component")}
    nlp.initialize()
    assert _predictions(nlp.pipe(TEXTS)) == _predictions(trained[0].pipe(TEXTS))


def test_initialize_from_examples_starts_fresh(trained, tiny_bert_dir, train_examples):
    nlp = _clone(trained[0], tiny_bert_dir)
    pipe = nlp.get_pipe("concept_align")
    pipe.decoder.add_language("wo")
    before = {k: v.clone() for k, v in pipe.decoder.state_dict().items()}
    nlp.initialize(lambda: train_examples)
    after = pipe.decoder.state_dict()
    assert pipe.decoder.languages == [] and not any(k.startswith("pos.adaptors") for k in after)
    assert not torch.equal(before["arcs.dep_mlp.0.weight"], after["arcs.dep_mlp.0.weight"])  # new random start
    assert torch.equal(before["pos.source_means"], after["pos.source_means"])  # the same examples' class means


def test_to_bytes_and_from_bytes(trained, tiny_bert_dir):
    nlp = trained[0]
    fresh = _blank(tiny_bert_dir)
    fresh.get_pipe("concept_align").from_bytes(nlp.get_pipe("concept_align").to_bytes())
    assert _predictions(fresh.pipe(TEXTS)) == _predictions(nlp.pipe(TEXTS))
    whole = spacy.blank("en")
    whole.add_pipe("concept_align", config=_config(tiny_bert_dir))
    whole.from_bytes(nlp.to_bytes())
    assert _predictions(whole.pipe(TEXTS)) == _predictions(nlp.pipe(TEXTS))


def test_reload_in_a_new_process(trained, tmp_path):
    nlp = trained[0]
    nlp.to_disk(tmp_path / "model")
    script = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "texts = json.loads(sys.argv[2])\n"
        "print(json.dumps([[(t.text, t.pos_, t.head.i, t.dep_) for t in doc] for doc in nlp.pipe(texts)]))\n"
    )
    # No import of spacy_concept_align in the script: the factory is found through the entry points.
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model"), json.dumps(TEXTS)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = [[tuple(t) for t in doc] for doc in json.loads(result.stdout.strip().splitlines()[-1])]
    assert got == _predictions(nlp.pipe(TEXTS))


def test_initialized_weights_come_back_exactly(trained, tiny_bert_dir):
    pipe = trained[0].get_pipe("concept_align")
    clone = _clone(trained[0], tiny_bert_dir).get_pipe("concept_align")
    original, copied = pipe.decoder.state_dict(), clone.decoder.state_dict()
    assert original.keys() == copied.keys()
    for key in original:
        assert torch.equal(original[key], copied[key]), key


# ---------------------------------------------------------------------------------------------------------------
# initialize and predict checks

def test_initialize_without_examples(tiny_bert_dir):
    nlp = _blank(tiny_bert_dir)
    with pytest.raises(ValueError, match="needs gold examples with POS and dependency annotation"):
        nlp.initialize()
    pipe = nlp.get_pipe("concept_align")
    for bad in (lambda: None, lambda: []):
        with pytest.raises(TypeError, match="Example"):
            pipe.initialize(bad)
    with pytest.raises(TypeError, match="Example"):
        pipe.initialize(lambda: [nlp.make_doc("not an example")])


def test_initialize_with_examples_lacking_annotation(tiny_bert_dir, train_examples):
    nlp = _blank(tiny_bert_dir)
    bare = [Example(unannotated(eg.reference), unannotated(eg.reference)) for eg in train_examples]
    with pytest.raises(ValueError, match="POS and dependency"):
        nlp.initialize(get_examples=lambda: bare)
    pos_only = []
    for eg in train_examples:
        ref = unannotated(eg.reference)
        for token, gold in zip(ref, eg.reference):
            token.pos_ = gold.pos_
        pos_only.append(Example(unannotated(ref), ref))
    with pytest.raises(ValueError, match="heads"):
        nlp.initialize(get_examples=lambda: pos_only)
    assert not nlp.get_pipe("concept_align").is_initialized


def test_predict_before_initialize(tiny_bert_dir):
    nlp = _blank(tiny_bert_dir)
    # nothing loaded or initialised: the first use reaches for the shipped default, made for another encoder
    with pytest.raises(ValueError, match="384-d vectors \\(now 32-d\\)"):
        nlp("The cat sat.")


def test_missing_weights_path_is_a_clear_error(tiny_bert_dir, tmp_path):
    nlp = _blank(tiny_bert_dir)
    with pytest.raises(ValueError, match="not a saved concept_align component"):
        nlp.get_pipe("concept_align").initialize(weights=str(tmp_path / "nothing"))
    assert not nlp.get_pipe("concept_align").is_initialized


# ---------------------------------------------------------------------------------------------------------------
# Prediction

def test_pipe_equals_call(trained):
    nlp = trained[0]
    texts = TEXTS * 3
    assert _predictions(nlp.pipe(texts, batch_size=2)) == _predictions(nlp(text) for text in texts)
    pipe = nlp.get_pipe("concept_align")
    docs = [nlp.make_doc(t) for t in texts]
    assert _predictions(pipe.pipe([nlp.make_doc(t) for t in texts], batch_size=5)) == _predictions(pipe(d) for d in docs)


def _assert_trees(doc):
    for sent in doc.sents:
        roots = [t for t in sent if t.head.i == t.i]
        assert len(roots) == 1, sent.text
        assert roots[0].dep_ == "ROOT"
        for token in sent:
            assert sent.start <= token.head.i < sent.end
            assert token.pos_ in UPOS
            assert token.dep_ and (token.dep_ != "ROOT" or token.i == roots[0].i)
            node, steps = token, 0
            while node.head.i != node.i:
                node, steps = node.head, steps + 1
                assert steps <= len(sent), "cycle"
            assert node.i == roots[0].i


# Samples in tests/data; Tamil, Hebrew and Greek come from the shared data (CC BY-NC-SA: not copied into the repo).
SCRIPTS = ["en_ewt", "ja_gsd", "ar_pud", "hi_pud", "ko_kaist", "zh_gsdsimp", "am_att", ("ta_ttb", "dev"), "wo_wtb",
           ("he_htb", "dev"), ("el_gdt", "dev"), "ru_pud", "ug_udt", "vi_vtb"]


def test_every_sentence_is_a_tree_in_many_scripts(trained, sample_file, ud_file):
    nlp = trained[0]
    for code in SCRIPTS:
        path = ud_file(*code) if isinstance(code, tuple) else sample_file(code)
        gold = read_docs(path, nlp.vocab, n_sents=5, limit=20)
        assert len(gold) >= 2, code
        inputs = [unannotated(doc) for doc in gold]
        for source, doc in zip(gold, nlp.pipe(inputs)):
            assert [s.start for s in doc.sents] == [s.start for s in source.sents], code  # boundaries are kept
            assert [t.text for t in doc] == [t.text for t in source]
            _assert_trees(doc)


def test_raw_text_without_and_with_sentence_boundaries(trained, tiny_bert_dir):
    text = "This is the first sentence. Here is another one! And a third, with a comma."
    doc = trained[0](text)
    assert len(list(doc.sents)) == 1  # no boundaries: one tree over the whole doc
    _assert_trees(doc)
    with_sentencizer = _clone(trained[0], tiny_bert_dir, before=("sentencizer",))
    expected = [s.start for s in with_sentencizer.get_pipe("sentencizer")(with_sentencizer.make_doc(text)).sents]
    assert len(expected) == 3
    doc = with_sentencizer(text)
    assert [s.start for s in doc.sents] == expected
    _assert_trees(doc)


def test_overwrite_false_keeps_existing_pos(trained, tiny_bert_dir):
    def doc_with_intj(nlp):
        doc = nlp.make_doc("The cat sat on the mat .")
        for token in doc[:3]:
            token.pos_ = "INTJ"
        return doc

    keep = _clone(trained[0], tiny_bert_dir, overwrite=False).get_pipe("concept_align")
    replace = _clone(trained[0], tiny_bert_dir, overwrite=True).get_pipe("concept_align")
    kept = keep(doc_with_intj(trained[0]))
    replaced = replace(doc_with_intj(trained[0]))
    assert [t.pos_ for t in kept[:3]] == ["INTJ"] * 3
    assert [t.pos_ for t in replaced[:3]] != ["INTJ"] * 3
    assert [t.pos_ for t in kept[3:]] == [t.pos_ for t in replaced[3:]]  # tokens without POS are tagged
    _assert_trees(kept)
    # An existing parse is kept too.
    parsed = Doc(trained[0].vocab, words=["a", "b", "c"], heads=[2, 2, 2], deps=["dep", "dep", "ROOT"])
    keep(parsed)
    assert [t.head.i for t in parsed] == [2, 2, 2] and [t.dep_ for t in parsed] == ["dep", "dep", "ROOT"]
    assert all(t.pos_ in UPOS for t in parsed)


def test_confidence_per_word_and_per_doc(trained):
    doc = trained[0]("The cat  sat on the mat.")
    values = [t._.concept_confidence for t in doc]
    assert values[2] is None and doc[2].pos_ == "SPACE"  # a blank token is not a word
    words = [v for v in values if v is not None]
    # probabilities rounded to 4 places: a head the tree imposes against the scores can show as 0.0
    assert len(words) == 7 and all(0 <= v <= 1 for v in words) and len(set(words)) > 1
    assert doc._.concept_confidence == pytest.approx(sum(words) / 7)
    decoder = trained[0].get_pipe("concept_align").decoder
    assert decoder.confidence_temperatures == (1.5, 1.5)  # the config's, fitted on the validation languages


def test_empty_and_one_token_docs(trained):
    nlp = trained[0]
    assert len(nlp("")) == 0
    one = nlp("Hello")
    assert len(one) == 1 and one[0].head.i == 0 and one[0].dep_ == "ROOT" and one[0].pos_ in UPOS
    docs = list(nlp.pipe(["", "Hello", "", "Two words"]))
    assert [len(d) for d in docs] == [0, 1, 0, 2]
    _assert_trees(docs[3])
    assert _predictions(docs) == _predictions(nlp(t) for t in ["", "Hello", "", "Two words"])


def test_displacy_renders_the_parse(trained):
    doc = trained[0]("The cat sat on the mat.")
    svg = displacy.render(doc, style="dep", jupyter=False, options={"collapse_punct": False})
    assert svg.lstrip().startswith("<svg")
    for token in doc:
        assert f">{token.text}</tspan>" in svg
    assert any(t.dep_ != "ROOT" and f">{t.dep_}</textPath>" in svg for t in doc)


# ---------------------------------------------------------------------------------------------------------------
# Scoring

def test_scorer_counts_punctuation_and_ignores_subtypes():
    vocab = spacy.blank("en").vocab
    words = ["She", "was", "seen", "today", "."]
    gold = Doc(vocab, words=words, pos=["PRON", "AUX", "VERB", "NOUN", "PUNCT"], heads=[2, 2, 2, 2, 2],
               deps=["nsubj:pass", "aux:pass", "ROOT", "obl:tmod", "punct"])
    # Subtypes stripped and "root" in lower case match the gold; the punctuation is attached to the wrong head,
    # and one POS is wrong.
    pred = Doc(vocab, words=words, pos=["PRON", "AUX", "VERB", "ADV", "PUNCT"], heads=[2, 2, 2, 2, 3],
               deps=["nsubj", "aux", "root", "obl", "punct"])
    scores = make_concept_scorer()([Example(pred, gold)])
    assert scores["pos_acc"] == pytest.approx(0.8)
    assert scores["dep_uas"] == pytest.approx(0.8)  # 4 of 5: punctuation counts
    assert scores["dep_las"] == pytest.approx(0.8)
    assert scores["dep_las_per_type"]["nsubj"]["f"] == pytest.approx(1.0)
    assert scores["dep_las_per_type"]["punct"]["f"] == pytest.approx(0.0)
    # The registered scorer is this one.
    assert registry.scorers.get("spacy-concept-align.scorer.v1") is make_concept_scorer


# ---------------------------------------------------------------------------------------------------------------
# Registry and entry points

ENTRY_POINTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
REGISTRY_OF_GROUP = {"spacy_factories": "factories", "spacy_architectures": "architectures",
                     "spacy_readers": "readers", "spacy_scorers": "scorers"}
NAMES = [(group, name, value) for group, entries in ENTRY_POINTS.items() if group in REGISTRY_OF_GROUP
         for name, value in entries.items()]


def test_entry_point_groups_are_all_covered():
    assert set(ENTRY_POINTS) - {"console_scripts"} <= set(REGISTRY_OF_GROUP)
    assert len(NAMES) >= 5


@pytest.mark.parametrize("group,name,value", NAMES, ids=[n for _, n, _ in NAMES])
def test_registry_lookups(group, name, value):
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    assert name in installed and installed[name].value == value
    loaded = installed[name].load()
    found = getattr(registry, REGISTRY_OF_GROUP[group]).get(name)
    assert callable(found) and found is loaded
    if group == "spacy_factories":
        assert spacy.language.Language.has_factory(name)


# ---------------------------------------------------------------------------------------------------------------
# Languages and adaptors

@pytest.fixture
def with_wolof(trained, tiny_bert_dir):
    """A clone whose component has a (perturbed, so it matters) Wolof adaptor."""
    nlp = _clone(trained[0], tiny_bert_dir)
    pipe = nlp.get_pipe("concept_align")
    pipe.decoder.add_language("wo")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for aligner in (pipe.decoder.pos, pipe.decoder.rel):
            for param in aligner.adaptors["wo"].parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 2)
    return nlp


def test_language_picks_the_adaptor(with_wolof, tiny_bert_dir, sample_file):
    pipe = with_wolof.get_pipe("concept_align")
    assert pipe.languages == ["wo"]
    gold = read_docs(sample_file("wo_wtb"), with_wolof.vocab, n_sents=5, limit=10)

    def run(doc_lang, call_lang=None, component=pipe):
        docs = []
        for g in gold:
            doc = unannotated(g)
            doc._.set(LANG_ATTR, doc_lang)
            docs.append(component(doc, lang=call_lang) if call_lang else component(doc))
        return _predictions(docs)

    zero_shot = run(None)
    wolof = run("wo")
    assert wolof != zero_shot  # the adaptor is used
    assert run("qq") == zero_shot  # unknown language: zero-shot
    assert run(None, call_lang="wo") == wolof  # per-call override
    assert run("wo", call_lang="qq") == zero_shot  # the override wins, and is unknown
    assert _predictions(pipe.pipe([unannotated(g) for g in gold], lang="wo")) == wolof
    # The component's own language, used when the doc names none (the adaptor survives to_bytes/from_bytes).
    component_wo = _blank(tiny_bert_dir, lang="wo").get_pipe("concept_align")
    component_wo.from_bytes(pipe.to_bytes())
    assert component_wo.languages == ["wo"]
    assert run(None, component=component_wo) == wolof
    assert run("qq", component=component_wo) == zero_shot  # the doc's language comes first
    # read_docs sets the doc language from the file name: Wolof docs use the adaptor by default.
    assert [g._.get(LANG_ATTR) for g in gold] == ["wo", "wo"]
    assert _predictions(pipe(unannotated(g)) for g in gold) == wolof


def test_a_named_unseen_language_gets_its_nearest_sources_word_order(with_wolof, sample_file, caplog):
    from spacy_concept_align.typology import syntax_features

    pipe = with_wolof.get_pipe("concept_align")
    gold = read_docs(sample_file("wo_wtb"), with_wolof.vocab, n_sents=5, limit=10)

    def run(lang):
        docs = [unannotated(g) for g in gold]
        for doc in docs:
            doc._.set(LANG_ATTR, lang)  # (read_docs named them Wolof)
        return _predictions([pipe(doc) for doc in docs])

    zero_shot = run(None)
    assert run("yo") == zero_shot  # no sources' word order kept: the plain zero-shot path
    decoder = pipe.decoder
    decoder.source_typology = torch.from_numpy(np.stack([syntax_features("en"), syntax_features("ja")]))
    decoder.source_arc_tables = torch.rand(2, *decoder.source_arc_tables.shape[1:], generator=torch.Generator().manual_seed(0))
    decoder.word_order_weight = 50.0  # the sources' word order now decides the heads
    with caplog.at_level("WARNING"):
        hausa = run("ha")
    assert hausa != zero_shot and "'ha'; using the zero-shot path with the word order and taggers of the" in caplog.text
    assert run("qq") == zero_shot  # no typology for this code: nothing to go by
    assert run("wo") != hausa  # a language with its own parts uses them


def test_the_pipelines_own_language_is_the_last_fallback(trained, tiny_bert_dir, caplog):
    english = _clone(trained[0], tiny_bert_dir)  # spacy.blank("en")
    pipe = english.get_pipe("concept_align")
    zero_shot = _predictions([english(text) for text in TEXTS])
    with caplog.at_level("WARNING"):
        assert _predictions([english(text) for text in TEXTS]) == zero_shot  # no "en" adaptor: zero-shot, no warning
    assert "no adaptor" not in caplog.text
    pipe.decoder.add_language("en")
    with torch.no_grad():
        for param in pipe.decoder.pos.adaptors["en"].parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 2)
    assert _predictions([english(text) for text in TEXTS]) != zero_shot  # spacy.blank("en") picks the "en" adaptor
    multilingual = _blank(tiny_bert_dir, nlp_lang="xx")
    multilingual.get_pipe("concept_align").from_bytes(pipe.to_bytes())
    assert _predictions([multilingual(text) for text in TEXTS]) == zero_shot


def test_settings_reach_the_pipe_from_the_config(trained, tiny_bert_dir, sample_file):
    """longest_tree and the adapt defaults come from [components.concept_align]; a call's settings win."""
    nlp = _clone(trained[0], tiny_bert_dir, longest_tree=20, adapt={"adapt_arcs": False, "min_sentences": 1})
    pipe = nlp.get_pipe("concept_align")
    doc = nlp(" ".join(["word"] * 50))
    assert sum(t.dep_ == "ROOT" for t in doc) == 3  # 50 words without a boundary: trees of at most 20
    gold = read_docs(sample_file("wo_wtb"), nlp.vocab, limit=6)
    pipe.adapt(gold, "wo")
    assert "wo" in pipe.languages and "wo" not in pipe.decoder.language_arcs  # the config said no arcs
    pipe.adapt(gold, "wo", adapt_arcs=True)
    assert "wo" in pipe.decoder.language_arcs


def test_pipelines_saved_by_earlier_versions_still_load(trained, tmp_path):
    """Their configs name the architecture spacy-concept-align.ConceptAligner.v1 and carry `init_weights`."""
    trained[0].to_disk(tmp_path / "old")
    config = (tmp_path / "old" / "config.cfg").read_text()
    config = config.replace("spacy-concept-align.TaggerParser.v1", "spacy-concept-align.ConceptAligner.v1")
    config = config.replace("init_weights = null", 'init_weights = "default"')
    (tmp_path / "old" / "config.cfg").write_text(config)
    assert 'init_weights = "default"' in config and "ConceptAligner.v1" in config
    assert _predictions(spacy.load(tmp_path / "old").pipe(TEXTS)) == _predictions(trained[0].pipe(TEXTS))


def test_update_teaches_a_language_with_its_own_layers(trained, tiny_bert_dir, ud_file):
    """A language adapted with the whole-treebank recipe (its relations read context and structure) keeps learning
    through nlp.update, as spacy train would run it."""
    nlp = _clone(trained[0], tiny_bert_dir)
    pipe = nlp.get_pipe("concept_align")
    gold = read_docs(ud_file("wo_wtb", "dev"), nlp.vocab, limit=12)
    pipe.adapt(gold, "wo", train="phi", min_relation_sentences=1, epochs=1, arc_epochs=1)
    assert pipe.decoder.rel.extra_inputs("wo") > 0
    examples = []
    for doc in gold:
        predicted = unannotated(doc)
        predicted._.set(LANG_ATTR, "wo")
        examples.append(Example(predicted, doc))
    before = {k: v.clone() for k, v in pipe.decoder.rel.adaptors["wo"].state_dict().items()}
    losses = nlp.update(examples, sgd=nlp.create_optimizer())
    assert np.isfinite(losses["concept_align"]) and losses["concept_align"] > 0
    after = pipe.decoder.rel.adaptors["wo"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_language_whose_heads_read_characters_saves_and_loads(trained, tiny_bert_dir, ud_file, tmp_path):
    """The whole-treebank recipe's arc scorer reads the words' character n-grams: the forms reach it when tagging,
    and the pipeline round-trips through to_disk / spacy.load."""
    torch.manual_seed(0)
    nlp = _clone(trained[0], tiny_bert_dir)
    pipe = nlp.get_pipe("concept_align")
    gold = read_docs(ud_file("wo_wtb", "dev"), nlp.vocab, limit=12)
    pipe.adapt(gold, "wo", train="phi", epochs=1, arc_epochs=3)
    context = pipe.decoder.language_arcs["wo"].context
    assert context.chars is not None and context.sizes[2:] == [16, 2, 4096]
    texts, wolof = [doc.text for doc in gold[:4]], {"concept_align": {"lang": "wo"}}
    tagged = _predictions(nlp.pipe(texts, component_cfg=wolof))
    nlp.to_disk(tmp_path / "wo")
    assert _predictions(spacy.load(tmp_path / "wo").pipe(texts, component_cfg=wolof)) == tagged
    confidences = lambda: [t._.concept_confidence for doc in nlp.pipe(texts, component_cfg=wolof) for t in doc]  # noqa: E731
    before = confidences()
    with torch.no_grad():
        context.chars.embed.weight.mul_(100.0)  # the characters are read: other embeddings, other head scores
    assert not np.allclose(confidences(), before)


def test_arc_batch_limits_come_from_the_config_and_change_no_prediction(trained, tiny_bert_dir):
    model = {"encoder": {"name": str(tiny_bert_dir), "layer": 2}, "dropout": 0.0, "arc_batch_size": 1,
             "arc_batch_cells": 50}
    nlp = _clone(trained[0], tiny_bert_dir, model=model)
    decoder = nlp.get_pipe("concept_align").decoder
    assert (decoder.arc_batch_size, decoder.arc_batch_cells) == (1, 50)
    assert _predictions(nlp.pipe(TEXTS)) == _predictions(trained[0].pipe(TEXTS))
