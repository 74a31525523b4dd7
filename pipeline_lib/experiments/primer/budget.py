"""A run's training budget (`primer.budget`): a number of steps, or of training FLOPs.

With ``kind: flops`` every variant trains floor(value / flops_per_step) steps, so variants of
different cost get equal compute; with ``kind: steps`` they get equal steps (with the
Transformer++ d_ff matched and the dconv's small cost, about equal FLOPs too).
"""

from __future__ import annotations

from pipeline_lib.errors import ConfigError


def steps_for(budget: dict, flops_per_step: float, eval_every: int) -> int:
    """The number of steps of one run; a budget below one step or one eval interval fails
    naming `primer.budget.value`."""
    value = budget["value"]
    if budget["kind"] == "steps":
        steps = int(value)
    else:
        steps = int(value // flops_per_step)
        if steps < 1:
            raise ConfigError(f"primer.budget.value: {value:g} FLOPs is less than one training "
                              f"step ({flops_per_step:.3g} FLOPs)")
    if steps < max(1, eval_every):
        raise ConfigError(f"primer.budget.value: {value:g} {budget['kind']} give {steps} steps, "
                          f"fewer than primer.eval_every = {eval_every}: the curve would have "
                          "only its final point")
    return steps
