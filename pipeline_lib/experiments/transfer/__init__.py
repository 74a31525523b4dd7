"""The transfer family (Wu et al. 2022): T5 pre-training on synthetic corpora, fine-tuning
with init schemes, Tables 1-3."""
