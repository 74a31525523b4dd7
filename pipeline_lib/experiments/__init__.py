"""One folder per experiment family, each its pipeline from pre-training to its tables.

* `transfer`: Wu, Li & Liang 2022, what synthetic pre-training transfers (T5; Tables 1-3).
* `implicit_bias`: Liu, Xie, Li & Ma 2023, same pre-training loss, different downstream
  (BERT MLM on PCFGs; exact loss, Hessian trace, probes).
* `primer`: So et al. 2021, decoder-LM variants (Primer-EZ, Transformer++, vanilla).

A family imports the layers below it (evaluate, train, models, pcfg, data, report and the
ground floor), never another family (an import-linter contract in the test suite).
"""
