"""Evaluation: decoding, metrics, exact MLM loss, Hessian trace, enlargement, probes."""
