"""Semantic checks of the `primer` config section (called by `pipeline_lib.config` before any
job runs): what JSON Schema cannot say, each failure one ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.errors import ConfigError

# The budget check at config time uses the smallest vocabulary a corpus can have, so it can
# only under-count the FLOPs of a step: it rejects budgets that are too small for any corpus;
# the run repeats the check with the corpus's real vocabulary (`budget.steps_for`).
_SMALLEST_VOCAB = 8


def check_primer(section: dict) -> None:
    from pipeline_lib.experiments.primer.budget import steps_for
    from pipeline_lib.models.decoder_lm import decoder_lm_config, decoder_lm_train_flops

    for i, baseline in enumerate(section["baselines"]):
        if baseline not in section["variants"]:
            raise ConfigError(f"primer.baselines[{i}]: {baseline!r} is not in primer.variants "
                              f"({', '.join(section['variants'])})")
    budget = section["budget"]
    if budget["kind"] == "steps" and budget["value"] != int(budget["value"]):
        raise ConfigError(f"primer.budget.value: {budget['value']} steps is not a whole number")
    for variant in section["variants"]:
        model = decoder_lm_config(
            section["model"]["preset"], prefix="primer.model.overrides",
            **{"vocab_size": _SMALLEST_VOCAB, "variant": variant, "fidelity": section["fidelity"],
               **section["model"].get("overrides", {})},
        )
        flops = decoder_lm_train_flops(model, section["batch_size"], section["length"])
        steps_for(budget, flops, section["eval_every"])
    opt = section["optimizer"]
    if budget["kind"] == "steps" and opt["schedule"] in ("linear", "polynomial") \
            and opt["warmup_steps"] >= budget["value"]:
        raise ConfigError(f"primer.optimizer.warmup_steps: {opt['warmup_steps']} must be below "
                          f"the {int(budget['value'])} training steps of a {opt['schedule']} "
                          "schedule")
    data = section["data"]
    if data["kind"] == "text":
        if not data["path"]:
            raise ConfigError("primer.data.path: data.kind text needs a local UTF-8 file")
        if not Path(data["path"]).is_file():
            raise ConfigError(f"primer.data.path: {data['path']} is not a file")
        if Path(data["path"]).stat().st_size == 0:
            raise ConfigError(f"primer.data.path: {data['path']} is empty")
