"""Text nobody has seen, broken files, tampered models, several processes: the pipeline keeps working or says why.

Generated text runs through the real shipped pipeline (offline multilingual-e5-small + the default weights: marked
slow) and, fewer examples of it, through the small saved pipeline on the tiny random BERT (the fast tier).
"""
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from spacy.tokens import Doc
from typer.testing import CliRunner

from spacy_concept_align.cli import app
from spacy_concept_align.chars import is_blank
from spacy_concept_align.corpus import doc_to_conllu, find_treebank, read_conllu, read_docs, sentences_to_doc, unannotated
from spacy_concept_align.labels import DEPRELS, UPOS
from spacy_concept_align.component import LONGEST_TREE
from spacy_concept_align.validate import validate_conllu

runner = CliRunner()
DATA = Path(__file__).parent / "data"
SPACY_DEPS = {"ROOT"} | set(DEPRELS)

# Fragments text in the wild is made of: scripts, emoji (with modifiers and joiners), invisible and control
# characters, bidirectional marks, combining accents, very long "words".
FRAGMENTS = [
    "Bonjour le monde.", "Dëgg la.", "שלום עולם", "مرحبا بالعالم!", "नमस्ते दुनिया।", "你好，世界。", "こんにちは",
    "Привет", "ሰላም ዓለም።", "สวัสดีชาวโลก", "Γειά σου", "👍🏽", "👨‍👩‍👧", "🇸🇳", "\u200b", "\u200d", "\ufeff",
    "\u202e", "\u2066", "\x00", "\x07", "\x1b[31m", "e\u0301\u0301\u0301", "\t", "\n", "\n\n", "  ",
    "https://example.org/" + "a/" * 60, "x" * 500, "...", "?!", "-", "'", "\"", "1,000.5",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=25).map(" ".join)
words = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(min_size=1, max_size=20)), min_size=1, max_size=40)


def assert_well_formed(doc: Doc) -> None:
    """Every word has a UD tag and relation; blank tokens (spaces, zero-width, controls) hang from a word as SPACE;
    every sentence is one tree (one root, no cycle, heads inside); the CoNLL-U written from it is valid."""
    for token in doc:
        if is_blank(token.text):
            assert (token.pos_, token.dep_) == ("SPACE", "dep"), (token.text, token.pos_)
            assert not is_blank(token.head.text) or token.head.i == token.i
            continue
        assert token.pos_ in UPOS, (token.text, token.pos_)
        assert token.dep_ in SPACY_DEPS, (token.text, token.dep_)
        assert (token.dep_ == "ROOT") == (token.head.i == token.i)
        assert not is_blank(token.head.text)
    for sent in doc.sents:
        words = [t for t in sent if not is_blank(t.text)]
        assert sum(token.head.i == token.i for token in words) == (1 if words else 0)
        for token in sent:
            assert sent.start <= token.head.i < sent.end
            node, steps = token, 0
            while node.head.i != node.i:  # climbing heads reaches the root: no cycle
                node, steps = node.head, steps + 1
                assert steps <= len(sent)
    conllu = "".join(doc_to_conllu(doc))
    assert validate_conllu(conllu) == [], conllu


@pytest.fixture(scope="module")
def nlp(offline_encoder_dir):
    nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("concept_align")
    return nlp


@pytest.fixture(scope="module")
def tiny_nlp(tiny_pipeline_dir):
    """The small saved pipeline (tiny random BERT) behind a sentencizer: the same code paths, no real encoder."""
    nlp = spacy.load(tiny_pipeline_dir)
    nlp.add_pipe("sentencizer", first=True)
    return nlp


# ---------------------------------------------------------------------------------------------------------------
# Text

GENERATED = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@GENERATED
@given(text=texts)
def test_generated_text_gives_trees(nlp, text):
    _text_gives_a_tree(nlp, text)


def _text_gives_a_tree(nlp, text):
    doc = nlp(text)
    assert doc.text == text
    assert_well_formed(doc)


FEW_GENERATED = settings(GENERATED, max_examples=100)


@FEW_GENERATED
@given(text=texts)
def test_generated_text_gives_trees_tiny_pipeline(tiny_nlp, text):
    _text_gives_a_tree(tiny_nlp, text)


@FEW_GENERATED
@given(words=words, data=st.data())
def test_generated_words_give_trees_tiny_pipeline(tiny_nlp, words, data):
    _words_give_a_tree(tiny_nlp, words, data)


def _words_give_a_tree(nlp, words, data):
    spaces = data.draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    doc = nlp.get_pipe("concept_align")(Doc(nlp.vocab, words=words, spaces=spaces))
    assert len(doc) == len(words)
    assert_well_formed(doc)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_generated_text_through_a_shipped_in_language_adaptation(nlp, text):
    """The in-language parts (priors on strange word forms, the BiLSTM on one-word and empty sentences) keep trees."""
    assert {"wo", "cy", "ug"} <= set(nlp.get_pipe("concept_align").languages)
    doc = nlp(text, component_cfg={"concept_align": {"lang": "wo"}})
    assert doc.text == text
    assert_well_formed(doc)


@pytest.mark.slow
@GENERATED
@given(words=words, data=st.data())
def test_generated_words_give_trees(nlp, words, data):
    _words_give_a_tree(nlp, words, data)


EDGE_TEXTS = ["", " ", "   \n\t ", "\u200b", "👍", "\x00", "x" * 5000, "ሰላም"]


@pytest.mark.slow
@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_edge_texts(nlp, text):
    doc = nlp(text)
    assert doc.text == text
    assert_well_formed(doc)


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_edge_texts_tiny_pipeline(tiny_nlp, text):
    doc = tiny_nlp(text)
    assert doc.text == text
    assert_well_formed(doc)


@pytest.mark.slow
def test_the_shipped_default_carries_its_sources_taggers(nlp):
    nlp("Ne bɛ taa .")  # (the weights load on first use)
    decoder = nlp.get_pipe("concept_align").decoder
    assert len(decoder.source_taggers) == len(decoder.source_typology) == len(decoder.source_arc_tables) == 26
    words = np.zeros((2, decoder.width), np.float32)
    assert decoder.source_tag_scores(words, "bm") is not None and decoder.source_tag_scores(words, None) is None


@pytest.mark.slow
def test_ten_thousand_words_without_sentence_boundaries(nlp):
    """Far past the encoder's window: every word gets a vector and a tag; long stretches are cut into trees."""
    sentences = read_conllu(find_treebank("ga", "test").path)
    words = [w for s in sentences for w in s.words][:10000]
    doc = nlp.get_pipe("concept_align")(Doc(nlp.vocab, words=words))
    assert len(doc) == 10000
    assert_well_formed(doc)
    assert len(list(doc.sents)) == -(-10000 // LONGEST_TREE)
    assert {t.pos_ for t in doc} >= {"NOUN", "VERB", "ADP", "DET", "PUNCT"}


# ---------------------------------------------------------------------------------------------------------------
# Several processes, repeated runs

def _annotation(docs):
    return [[(t.pos_, t.head.i, t.dep_) for t in doc] for doc in docs]


def _real_docs(vocab, per_language=8):
    """Real sentences in four scripts: the samples in tests/data, and Hebrew from the shared data (its licence, CC
    BY-NC-SA, keeps it out of the repository)."""
    files = [DATA / "wo_wtb-dev-sample.conllu", find_treebank("he", "test").path, DATA / "hi_pud-test-sample.conllu",
             DATA / "ja_gsd-dev-sample.conllu"]
    sentences = [s for path in files for s in read_conllu(path)[:per_language]]
    return [unannotated(sentences_to_doc(vocab, [s])) for s in sentences]


@pytest.mark.slow
def test_n_process_2_equals_serial(nlp):
    docs = _real_docs(nlp.vocab)
    serial = _annotation(nlp.pipe([d.copy() for d in docs], batch_size=8))
    parallel = _annotation(nlp.pipe([d.copy() for d in docs], batch_size=8, n_process=2))
    assert parallel == serial
    assert len({tag for doc in serial for tag, _, _ in doc}) > 5


@pytest.mark.slow
def test_two_runs_give_identical_output(offline_encoder_dir):
    runs = []
    for _ in range(2):
        fresh = spacy.blank("xx")
        fresh.add_pipe("concept_align")
        runs.append(_annotation(fresh.pipe(_real_docs(fresh.vocab, per_language=3))))
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_adaptation_is_deterministic(offline_encoder_dir):
    support = read_docs(DATA / "wo_wtb-dev-sample.conllu", spacy.blank("xx").vocab, limit=5)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        fresh = spacy.blank("xx")
        pipe = fresh.add_pipe("concept_align")
        pipe.adapt(support, lang="wo", steps=10, arc_steps=5)
        states.append(pipe.decoder.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ---------------------------------------------------------------------------------------------------------------
# Adaptation input

@pytest.fixture(scope="module")
def adapt_support():
    return read_docs(DATA / "wo_wtb-dev-sample.conllu", spacy.blank("xx").vocab, limit=5)


def _snapshot(pipe):
    return {k: v.clone() for k, v in pipe.decoder.state_dict().items()}, list(pipe.languages)


def _unchanged(pipe, before):
    state, languages = before
    now = pipe.decoder.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state) and \
        pipe.languages == languages


def _with_relation(docs, dep):
    docs = [d.copy() for d in docs]
    docs[0][1].dep_ = dep
    return docs


@pytest.mark.parametrize("pipeline", [pytest.param("nlp", marks=pytest.mark.slow), "tiny_nlp"])
@pytest.mark.parametrize("case,message", [
    ("none", "at least one non-empty annotated sentence"),
    ("unannotated", "needs annotated sentences"),
    ("non-ud-relation", "relation 'subjecty'"),  # (spaCy itself refuses a non-UD token.pos_; see test_corpus)
])
def test_bad_adaptation_input_fails_and_changes_nothing(request, pipeline, adapt_support, case, message):
    pipe = request.getfixturevalue(pipeline).get_pipe("concept_align")
    examples = {"none": lambda: [], "unannotated": lambda: [unannotated(d) for d in adapt_support],
                "non-ud-relation": lambda: _with_relation(adapt_support, "subjecty")}[case]()
    before = _snapshot(pipe)
    with pytest.raises(ValueError, match=message):
        pipe.adapt(examples, lang="wo")
    assert _unchanged(pipe, before)


# ---------------------------------------------------------------------------------------------------------------
# Saved models: missing, truncated, tampered, mismatched, and pickles that must never run

@pytest.fixture
def copy_of(tiny_pipeline_dir, tmp_path):
    target = tmp_path / "pipeline"
    shutil.copytree(tiny_pipeline_dir, target)
    return target


def test_missing_weights_file(copy_of):
    (copy_of / "concept_align" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="missing model.safetensors"):
        spacy.load(copy_of)


def test_truncated_weights_file(copy_of):
    weights = copy_of / "concept_align" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        spacy.load(copy_of)


def test_broken_cfg_json(copy_of):
    (copy_of / "concept_align" / "cfg.json").write_text('{"encoder": ', encoding="utf-8")
    with pytest.raises(ValueError, match="cfg.json: not valid JSON"):
        spacy.load(copy_of)


def test_prototype_table_of_the_wrong_width(copy_of):
    weights = copy_of / "concept_align" / "model.safetensors"
    tensors = load_file(weights)
    name = "pos.source_means"  # the UPOS prototype table (17 x encoder width)
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 3)
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=f"do not fit this component.*{name}"):
        spacy.load(copy_of)


def test_encoder_other_than_the_one_trained_with(copy_of, tiny_gpt2_dir):
    with pytest.raises(ValueError, match="layer 2 \\(now 1\\)"):
        spacy.load(copy_of, config={"components": {"concept_align": {"model": {"encoder": {"layer": 1}}}}})
    with pytest.raises(ValueError, match="vocabulary"):
        spacy.load(copy_of, config={"components": {"concept_align": {"model": {"encoder": {
            "name": str(tiny_gpt2_dir), "pooling": "first"}}}}})
    with pytest.raises(ValueError, match="extra_layers \\[\\] \\(now \\[1\\]\\)"):
        spacy.load(copy_of, config={"components": {"concept_align": {"model": {"encoder": {"extra_layers": [1]}}}}})


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_planted_pickle_is_never_executed(copy_of, tmp_path, tiny_bert_dir):
    payload = pickle.dumps(_Payload(tmp_path / "control"))
    pickle.loads(payload)  # the payload is live: unpickling it does run code
    assert (tmp_path / "control").exists()

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    component = copy_of / "concept_align"
    for name in ("model.safetensors", "model.pkl", "model.pt", "pytorch_model.bin"):
        (component / name).write_bytes(payload)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        spacy.load(copy_of)
    pipe = spacy.blank("xx").add_pipe("concept_align", config={"model": {
        "encoder": {"name": str(tiny_bert_dir), "layer": 2}}})
    with pytest.raises(ValueError, match="not a serialized concept_align component"):
        pipe.from_bytes(payload)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_encoder_weights_are_never_executed(tiny_bert_dir, tmp_path):
    """An encoder directory with only a pickled pytorch_model.bin: transformers refuses to unpickle code."""
    from spacy_concept_align.encoders import FrozenEncoder

    encoder_dir = tmp_path / "encoder"
    shutil.copytree(tiny_bert_dir, encoder_dir)
    (encoder_dir / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    (encoder_dir / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(OSError, match="Unable to load weights"):  # torch.load(weights_only=True) refuses it
        FrozenEncoder(str(encoder_dir), 1)([["a", "b"]])
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Broken CoNLL-U through the commands: a message naming file and line, and no output written

BROKEN = "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n2\tb\tb\tNOUN\t_\t_\t0\troot\t_\t_\n3\tc\tc\tNOUN\t_\t_\t7\tnmod\t_\t_\n\n"


@pytest.mark.parametrize("command", ["tag", "adapt", "evaluate", "train"])
def test_commands_report_broken_files_and_write_nothing(tiny_pipeline_dir, tiny_bert_dir, tmp_path, command):
    data_dir = tmp_path / "ud"
    (data_dir / "UD_Xx-Bad").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (data_dir / "UD_Xx-Bad" / f"xx_bad-ud-{split}.conllu").write_text(BROKEN, encoding="utf-8")
    bad = data_dir / "UD_Xx-Bad" / ("xx_bad-ud-train.conllu" if command == "train" else "xx_bad-ud-test.conllu")
    out = tmp_path / "out" / ("pred.conllu" if command == "tag" else command)
    pipeline = str(tiny_pipeline_dir)
    args = {
        "tag": ["tag", str(bad), "-o", str(out), "--pipeline", pipeline],
        "adapt": ["adapt", pipeline, str(bad), "--lang", "xx", "-o", str(out)],
        "evaluate": ["evaluate", pipeline, "--data-dir", str(data_dir), "--only", "xx", "--no-baselines", "-o", str(out)],
        "train": ["train", str(Path(__file__).parents[1] / "configs" / "default.cfg"), str(out), "--data-dir", str(data_dir),
                  "--set", f"model.encoder.name={tiny_bert_dir}", "--set", "model.encoder.layer=2",
                  "--set", 'languages.source=["xx"]', "--set", 'languages.train=["xx"]',
                  "--set", 'languages.validation=["xx"]'],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert f"{bad}:3: HEAD 7 is out of range" in str(result.exception), result.output
    assert not out.exists()


def test_a_failed_save_leaves_no_folder(tmp_path):
    from spacy_concept_align.paths import atomic_dir

    target = tmp_path / "pipeline"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "old.json").write_text("{}")
    with atomic_dir(target) as tmp:
        (tmp / "new.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"]


@pytest.mark.slow
def test_soak_in_miniature(offline_encoder_dir, tmp_path):
    """The soak command's run, a few hundred inputs: no crash, no invalid CoNLL-U line, through `tag` and nlp()."""
    from spacy_concept_align.soak import soak

    result = soak(n=200, seed=1, workdir=tmp_path, log=lambda line: None)
    assert (result["crashes"], result["invalid_lines"]) == (0, 0), result["problems"]
    assert result["words"] > 2000
