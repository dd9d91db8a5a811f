"""Research tools: the zero-shot evaluation with its baselines, few-shot learning curves, the alignability study,
the speed benchmark and the spaCy baseline. The runtime (the component, tagging, training) never imports them;
their extra dependencies (scipy, matplotlib, spacy-transformers) come with `pip install spacy-concept-align[research]`.
"""
