# Decoder-only LMs (So et al. 2021): Primer-EZ vs the baselines on the PCFG sentences.


rule lm_pretrain:
    input:
        data=f"results/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        summary="results/lm/{variant}/summary.json",
        metrics="results/lm/{variant}/metrics.jsonl",
    log:
        "results/logs/lm/{variant}.log",
    benchmark:
        "results/benchmarks/lm/{variant}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=lm_spec_json,
        ckpt="results/ckpt/lm/{variant}",
        out="results/lm/{variant}",
    shell:
        "python -m pipeline_lib lm-pretrain --spec {params.spec:q} --variant {wildcards.variant}"
        " --data {input.data} --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule lm_table:
    input:
        expand("results/lm/{variant}/summary.json", variant=config["lm"]["variants"]),
    output:
        report(
            multiext("results/tables/lm_variants", ".csv", ".md", ".tex"),
            caption="../report/lm_variants.rst",
            category="Decoder LMs (So et al. 2021)",
        ),
    log:
        "results/logs/tables/lm_variants.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    params:
        spec=lm_spec_json,
    shell:
        "python -m pipeline_lib lm-table --spec {params.spec:q}"
        " --out-prefix results/tables/lm_variants {input:q} 2> {log}"


rule lm_models:
    input:
        rules.lm_table.output,
    localrule: True
