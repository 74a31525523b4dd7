# Liu, Xie, Li & Ma (2023) on the PCFG data: BERT MLM pre-training sweeps, then per exported
# checkpoint the exact loss, Hessian trace, linear probe and fine-tuning; pcfg_tables.


rule mlm_pretrain:
    input:
        data=f"results/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        params=expand(
            "results/liu/pretrain/{{size}}/{{optimizer}}/{{seed}}/step{step}.npz",
            step=LIU["checkpoints"],
        ),
        summary="results/liu/pretrain/{size}/{optimizer}/{seed}/summary.json",
        metrics="results/liu/pretrain/{size}/{optimizer}/{seed}/metrics.jsonl",
    log:
        "results/logs/liu/pretrain/{size}/{optimizer}/{seed}.log",
    benchmark:
        "results/benchmarks/liu/pretrain/{size}/{optimizer}/{seed}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=liu_spec_json,
        ckpt="results/ckpt/liu/{size}/{optimizer}/{seed}",
        out="results/liu/pretrain/{size}/{optimizer}/{seed}",
    shell:
        "python -m pipeline_lib mlm-pretrain --spec {params.spec:q} --size {wildcards.size}"
        " --optimizer {wildcards.optimizer} --seed {wildcards.seed} --data {input.data}"
        " --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule mlm_models:
    input:
        expand(
            "results/liu/pretrain/{size}/{optimizer}/{seed}/summary.json",
            size=LIU["sizes"],
            optimizer=LIU["optimizers"],
            seed=LIU["seeds"],
        ),
    localrule: True


rule liu_evaluate:
    input:
        params="results/liu/pretrain/{size}/{optimizer}/{seed}/step{step}.npz",
        pcfg=PCFG_DIRS,
    output:
        "results/liu/eval/{size}/{optimizer}/{seed}/step{step}.json",
    log:
        "results/logs/liu/eval/{size}/{optimizer}/{seed}/step{step}.log",
    benchmark:
        "results/benchmarks/liu/eval/{size}/{optimizer}/{seed}/step{step}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        spec=liu_eval_spec_json,
        pcfg=lambda wildcards, input: Path(input.pcfg[0]).parent,
    shell:
        "python -m pipeline_lib liu-evaluate --spec {params.spec:q} --size {wildcards.size}"
        " --optimizer {wildcards.optimizer} --seed {wildcards.seed} --step {wildcards.step}"
        " --params {input.params} --pcfg-dir {params.pcfg} --out {output} 2> {log}"


rule liu_lookup_table:
    input:
        PCFG_DIRS,
    output:
        "results/liu/lookup_table.json",
    log:
        "results/logs/liu/lookup_table.log",
    benchmark:
        "results/benchmarks/liu/lookup_table.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=liu_eval_spec_json,
        pcfg=lambda wildcards, input: Path(input[0]).parent,
    shell:
        "python -m pipeline_lib liu-lookup-table --spec {params.spec:q}"
        " --pcfg-dir {params.pcfg} --out {output} 2> {log}"


rule pcfg_tables:
    input:
        evals=expand(
            "results/liu/eval/{size}/{optimizer}/{seed}/step{step}.json",
            size=LIU["sizes"],
            optimizer=LIU["optimizers"],
            seed=LIU["seeds"],
            step=LIU["checkpoints"],
        ),
        lookup="results/liu/lookup_table.json",
    output:
        report(
            multiext("results/tables/pcfg_checkpoints", ".csv", ".md", ".tex"),
            caption="../report/pcfg_tables.rst",
            category="PCFG (Liu et al. 2023)",
        ),
        report(
            multiext("results/tables/pcfg_correlations", ".csv", ".md", ".tex"),
            caption="../report/pcfg_tables.rst",
            category="PCFG (Liu et al. 2023)",
        ),
        report(
            multiext("results/tables/pcfg_accuracy_vs_", "loss.png", "trace.png"),
            caption="../report/pcfg_tables.rst",
            category="PCFG (Liu et al. 2023)",
        ),
    log:
        "results/logs/tables/pcfg_tables.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    params:
        spec=liu_eval_spec_json,
    shell:
        "python -m pipeline_lib pcfg-tables --spec {params.spec:q} --lookup {input.lookup}"
        " --out-prefix results/tables/pcfg_ {input.evals:q} 2> {log}"
