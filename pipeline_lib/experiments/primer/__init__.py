"""The primer family (So et al. 2021): decoder-LM variants compared side by side."""
