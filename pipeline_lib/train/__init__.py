"""Training engine: optimizers and schedules (optim), input pipeline (data), checkpoints
(checkpoint), device mesh (mesh), the resumable jitted loop (loop) and what a run logs and
reports (metrics).

Import the submodules directly (`from pipeline_lib.train import loop`); this package imports
nothing itself, so `pipeline_lib.train.data` stays usable without initialising JAX.
"""
