# The primer family (So et al. 2021): decoder-only LM variants (Primer-EZ, Transformer++,
# vanilla) trained on the PCFG sentences, compared side by side.


rule primer_pretrain:
    input:
        data=f"results/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        summary="results/primer/{variant}/summary.json",
        metrics="results/primer/{variant}/metrics.jsonl",
    log:
        "results/logs/primer/{variant}.log",
    benchmark:
        "results/benchmarks/primer/{variant}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=primer_spec_json,
        ckpt="results/ckpt/primer/{variant}",
        out="results/primer/{variant}",
    shell:
        "python -m pipeline_lib primer-pretrain --spec {params.spec:q}"
        " --variant {wildcards.variant} --data {input.data} --out {params.out}"
        " --ckpt-dir {params.ckpt} 2> {log}"


rule primer_models:
    input:
        expand("results/primer/{variant}/summary.json", variant=PRIMER["variants"]),
    localrule: True


rule primer_table:
    input:
        rules.primer_models.input,
    output:
        report(
            multiext("results/tables/primer", ".csv", ".md", ".tex"),
            caption="../report/primer_table.rst",
            category="Primer (So et al. 2021)",
        ),
    log:
        "results/logs/primer/table.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=primer_spec_json,
    shell:
        "python -m pipeline_lib primer-table --spec {params.spec:q}"
        " --out-prefix results/tables/primer {input:q} 2> {log}"


# The name of the README before the family layout (kept as an alias).
rule lm_models:
    input:
        rules.primer_table.output,
    localrule: True
