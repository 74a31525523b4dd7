# The implicit-bias family (Liu, Xie, Li & Ma 2023) on the PCFG data: BERT MLM pre-training
# sweeps, then per exported checkpoint the exact loss, Hessian trace, linear probe and
# fine-tuning; the tables and figures (`implicit_bias_tables`, alias `pcfg_tables`).


rule implicit_bias_pretrain:
    input:
        data=f"results/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        params=expand(
            "results/implicit_bias/pretrain/{{size}}/{{optimizer}}/{{seed}}/step{step}.npz",
            step=IMPLICIT_BIAS["checkpoints"],
        ),
        summary="results/implicit_bias/pretrain/{size}/{optimizer}/{seed}/summary.json",
        metrics="results/implicit_bias/pretrain/{size}/{optimizer}/{seed}/metrics.jsonl",
    log:
        "results/logs/implicit_bias/pretrain/{size}/{optimizer}/{seed}.log",
    benchmark:
        "results/benchmarks/implicit_bias/pretrain/{size}/{optimizer}/{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=implicit_bias_spec_json,
        ckpt="results/ckpt/implicit_bias/{size}/{optimizer}/{seed}",
        out="results/implicit_bias/pretrain/{size}/{optimizer}/{seed}",
    shell:
        "python -m pipeline_lib implicit-bias-pretrain --spec {params.spec:q}"
        " --size {wildcards.size} --optimizer {wildcards.optimizer} --seed {wildcards.seed}"
        " --data {input.data} --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule implicit_bias_models:
    input:
        expand(
            "results/implicit_bias/pretrain/{size}/{optimizer}/{seed}/summary.json",
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
        params="results/implicit_bias/pretrain/{size}/{optimizer}/{seed}/step{step}.npz",
        pcfg=PCFG_DIRS,
    output:
        "results/implicit_bias/eval/{size}/{optimizer}/{seed}/step{step}.json",
    log:
        "results/logs/implicit_bias/eval/{size}/{optimizer}/{seed}/step{step}.log",
    benchmark:
        "results/benchmarks/implicit_bias/eval/{size}/{optimizer}/{seed}/step{step}.tsv"
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
        "results/implicit_bias/lookup_table.json",
    log:
        "results/logs/implicit_bias/lookup_table.log",
    benchmark:
        "results/benchmarks/implicit_bias/lookup_table.tsv"
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


rule implicit_bias_tables:
    input:
        evals=expand(
            "results/implicit_bias/eval/{size}/{optimizer}/{seed}/step{step}.json",
            size=IMPLICIT_BIAS["sizes"],
            optimizer=IMPLICIT_BIAS["optimizers"],
            seed=IMPLICIT_BIAS["seeds"],
            step=IMPLICIT_BIAS["checkpoints"],
        ),
        lookup="results/implicit_bias/lookup_table.json",
    output:
        report(
            multiext("results/tables/implicit_bias_checkpoints", ".csv", ".md", ".tex"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        report(
            multiext("results/tables/implicit_bias_correlations", ".csv", ".md", ".tex"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
        report(
            multiext("results/tables/implicit_bias_accuracy_vs_", "loss.png", "trace.png"),
            caption="../report/implicit_bias_tables.rst",
            category="Implicit bias (Liu et al. 2023)",
        ),
    log:
        "results/logs/implicit_bias/tables.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=implicit_bias_eval_spec_json,
    shell:
        "python -m pipeline_lib implicit-bias-table --spec {params.spec:q}"
        " --lookup {input.lookup} --out-prefix results/tables/implicit_bias_"
        " {input.evals:q} 2> {log}"


# The name of the README before the family layout (kept as an alias).
rule pcfg_tables:
    input:
        rules.implicit_bias_tables.output,
    localrule: True
