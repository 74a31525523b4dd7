# The primer family (So et al. 2021): decoder-only LM variants (Primer-EZ, vanilla,
# Transformer++) trained on fixed LM windows, one run per variant and seed, with a validation
# curve; the table compares them by loss and speed-up factor over seeds.


from pipeline_lib.experiments.primer import specs as primer_specs


rule primer_corpus:
    input:
        primer_specs.corpus_inputs(config, f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/pretrain"),
    output:
        directory(f"{RESULTS}/primer/corpus"),
    log:
        f"{RESULTS}/logs/primer/corpus.log",
    benchmark:
        f"{RESULTS}/benchmarks/primer/corpus.tsv"
    conda:
        CONDA_ENV
    params:
        spec=primer_specs.corpus_spec(config),
        data=lambda wildcards, input: (
            f"--data {input[0]}" if PRIMER["data"]["kind"] == "pcfg" else ""
        ),
    shell:
        "python -m pipeline_lib primer-corpus --spec {params.spec:q} {params.data}"
        " --out {output} 2> {log}"


rule primer_pretrain:
    input:
        corpus=f"{RESULTS}/primer/corpus",
    output:
        summary=f"{RESULTS}/primer/{{variant}}/{{seed}}/summary.json",
        metrics=f"{RESULTS}/primer/{{variant}}/{{seed}}/metrics.jsonl",
    log:
        f"{RESULTS}/logs/primer/{{variant}}/{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/primer/{{variant}}/{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: primer_specs.run_spec(config, w.variant, w.seed),
        ckpt=f"{RESULTS}/ckpt/primer/{{variant}}/{{seed}}",
        # the outputs' directory as the job sees it (under a storage plugin: the local copy)
        out=lambda wildcards, output: Path(output.summary).parent,
    shell:
        "python -m pipeline_lib primer-pretrain --spec {params.spec:q}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --corpus {input.corpus}"
        " --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule primer_models:
    input:
        expand(
            f"{RESULTS}/primer/{{variant}}/{{seed}}/summary.json",
            variant=PRIMER["variants"],
            seed=PRIMER["seeds"],
        ),
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
        findings=f"{RESULTS}/tables/primer.findings.json",
        figure=report(
            f"{RESULTS}/tables/primer_curves.png",
            caption="../report/primer_curves.rst",
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
        " --out-prefix {params.prefix} --figure {output.figure} {input:q} 2> {log}"


# The name of the README before the family layout (kept as an alias).
rule lm_models:
    input:
        rules.primer_table.output,
    localrule: True
