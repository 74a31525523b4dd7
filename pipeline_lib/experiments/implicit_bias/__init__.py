"""The implicit-bias family (Liu et al. 2023): BERT MLM on PCFGs, exact loss, Hessian trace,
probes and fine-tuning at (nearly) equal pre-training loss."""
