from .cli import main

main(prog_name="python -m spacy_concept_align")
