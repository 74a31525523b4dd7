# The primer family (So et al. 2021): decoder-only LM variants (Primer-EZ, Transformer++,
# vanilla) trained on the PCFG sentences, compared side by side.


rule primer_pretrain:
    input:
        data=f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/pretrain",
    output:
        summary=f"{RESULTS}/primer/{{variant}}/summary.json",
        metrics=f"{RESULTS}/primer/{{variant}}/metrics.jsonl",
    log:
        f"{RESULTS}/logs/primer/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/primer/{{variant}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=primer_spec_json,
        ckpt=f"{RESULTS}/ckpt/primer/{{variant}}",
        out=f"{RESULTS}/primer/{{variant}}",
    shell:
        "python -m pipeline_lib primer-pretrain --spec {params.spec:q}"
        " --variant {wildcards.variant} --data {input.data} --out {params.out}"
        " --ckpt-dir {params.ckpt} 2> {log}"


rule primer_models:
    input:
        expand(f"{RESULTS}/primer/{{variant}}/summary.json", variant=PRIMER["variants"]),
    localrule: True


rule primer_table:
    input:
        rules.primer_models.input,
    output:
        report(
            multiext(f"{RESULTS}/tables/primer", ".csv", ".md", ".tex"),
            caption="../report/primer_table.rst",
            category="Primer (So et al. 2021)",
        ),
    log:
        f"{RESULTS}/logs/primer/table.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=primer_spec_json,
        prefix=lambda wildcards, output: output[0][: -len(".csv")],
    shell:
        "python -m pipeline_lib primer-table --spec {params.spec:q}"
        " --out-prefix {params.prefix} {input:q} 2> {log}"


# The name of the README before the family layout (kept as an alias).
rule lm_models:
    input:
        rules.primer_table.output,
    localrule: True
