# The implicit-bias family (Liu, Xie, Li & Ma 2023) on the PCFG data: BERT MLM pre-training
# sweeps, then per exported checkpoint the exact loss, Hessian trace, linear probe and
# fine-tuning; the tables and figures (`implicit_bias_tables`, alias `pcfg_tables`).


rule implicit_bias_pretrain:
    input:
        data=f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        params=expand(
            f"{RESULTS}/implicit_bias/pretrain/{{{{size}}}}/{{{{optimizer}}}}/{{{{seed}}}}/step{{step}}.npz",
            step=IMPLICIT_BIAS["checkpoints"],
        ),
        summary=f"{RESULTS}/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}/summary.json",
        metrics=f"{RESULTS}/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}/metrics.jsonl",
    log:
        f"{RESULTS}/logs/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=implicit_bias_spec_json,
        ckpt=f"{RESULTS}/ckpt/implicit_bias/{{size}}/{{optimizer}}/{{seed}}",
        # the outputs' directory as the job sees it (under a storage plugin: the local copy)
        out=lambda wildcards, output: Path(output.summary).parent,
    shell:
        "python -m pipeline_lib implicit-bias-pretrain --spec {params.spec:q}"
        " --size {wildcards.size} --optimizer {wildcards.optimizer} --seed {wildcards.seed}"
        " --data {input.data} --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule implicit_bias_models:
    input:
        expand(
            f"{RESULTS}/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}/summary.json",
            size=IMPLICIT_BIAS["sizes"],
            optimizer=IMPLICIT_BIAS["optimizers"],
            seed=IMPLICIT_BIAS["seeds"],
        ),
    localrule: True


# The name of the README before the family layout (kept as an alias).
rule mlm_models:
    input:
        rules.implicit_bias_models.input,
    localrule: True


rule implicit_bias_evaluate:
    input:
        params=f"{RESULTS}/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}/step{{step}}.npz",
        pcfg=PCFG_DIRS,
    output:
        f"{RESULTS}/implicit_bias/eval/{{size}}/{{optimizer}}/{{seed}}/step{{step}}.json",
    log:
        f"{RESULTS}/logs/implicit_bias/eval/{{size}}/{{optimizer}}/{{seed}}/step{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/implicit_bias/eval/{{size}}/{{optimizer}}/{{seed}}/step{{step}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        spec=implicit_bias_eval_spec_json,
        pcfg=lambda wildcards, input: Path(input.pcfg[0]).parent,
    shell:
        "python -m pipeline_lib implicit-bias-evaluate --spec {params.spec:q}"
        " --size {wildcards.size} --optimizer {wildcards.optimizer} --seed {wildcards.seed}"
        " --step {wildcards.step} --params {input.params} --pcfg-dir {params.pcfg}"
        " --out {output} 2> {log}"


rule implicit_bias_lookup_table:
    input:
        PCFG_DIRS,
    output:
        f"{RESULTS}/implicit_bias/lookup_table.json",
    log:
        f"{RESULTS}/logs/implicit_bias/lookup_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/implicit_bias/lookup_table.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=implicit_bias_eval_spec_json,
        pcfg=lambda wildcards, input: Path(input[0]).parent,
    shell:
        "python -m pipeline_lib implicit-bias-lookup-table --spec {params.spec:q}"
        " --pcfg-dir {params.pcfg} --out {output} 2> {log}"


rule implicit_bias_table:
    input:
        evals=expand(
            f"{RESULTS}/implicit_bias/eval/{{size}}/{{optimizer}}/{{seed}}/step{{step}}.json",
            size=IMPLICIT_BIAS["sizes"],
            optimizer=IMPLICIT_BIAS["optimizers"],
            seed=IMPLICIT_BIAS["seeds"],
            step=IMPLICIT_BIAS["checkpoints"],
        ),
        lookup=f"{RESULTS}/implicit_bias/lookup_table.json",
    output:
        report(
            multiext(f"{RESULTS}/tables/implicit_bias_checkpoints", ".csv", ".md", ".tex"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        report(
            multiext(f"{RESULTS}/tables/implicit_bias_correlations", ".csv", ".md", ".tex"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        report(
            multiext(f"{RESULTS}/tables/implicit_bias_accuracy_vs_", "loss.png", "trace.png"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        report(
            multiext(f"{RESULTS}/tables/implicit_bias_matched_pairs", ".csv", ".md", ".tex"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        findings=f"{RESULTS}/tables/implicit_bias.findings.json",
    log:
        f"{RESULTS}/logs/implicit_bias/tables.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=implicit_bias_tables_spec_json,
        prefix=lambda wildcards, output: output[0][: -len("checkpoints.csv")],
    shell:
        "python -m pipeline_lib implicit-bias-table --spec {params.spec:q}"
        " --lookup {input.lookup} --out-prefix {params.prefix}"
        " {input.evals:q} 2> {log}"


# The validation curves of the pre-training runs behind the tables (their metrics.jsonl sit
# next to the summary.json files of implicit_bias_models).
rule implicit_bias_curves:
    input:
        lambda wildcards: [
            p.removesuffix("summary.json") + "metrics.jsonl"
            for p in rules.implicit_bias_models.input
        ],
    output:
        report(
            f"{RESULTS}/tables/implicit_bias_curves.png",
            caption="../report/implicit_bias_curves.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
    log:
        f"{RESULTS}/logs/implicit_bias/curves.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        root=f"{RESULTS}/implicit_bias/pretrain",
    shell:
        "python -m pipeline_lib report-curves --root {params.root} --out {output}"
        " --metric loss --column 'validation MLM loss'"
        " --ylabel 'validation MLM loss (per masked token)'"
        " --title 'Implicit bias: validation MLM loss of the pre-training runs'"
        " -- {input:q} 2> {log}"


# The name of the README before the family layout (kept as an alias).
# The family's target: its tables, findings and pre-training curves.
rule implicit_bias_tables:
    input:
        rules.implicit_bias_table.output,
        rules.implicit_bias_curves.output,
    localrule: True


rule pcfg_tables:
    input:
        rules.implicit_bias_tables.input,
    localrule: True
