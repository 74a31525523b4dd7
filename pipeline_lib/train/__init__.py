"""Training engine: optimizers and schedules (optim), input pipeline (data), checkpoints
(checkpoint), device mesh (mesh) and the resumable jitted loop (loop).

Import the submodules directly (`from pipeline_lib.train import loop`); this package imports
nothing itself, so `pipeline_lib.train.data` stays usable without initialising JAX.
"""
