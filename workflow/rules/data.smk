# Data stage: synthetic pre-training corpora (Wu, Li & Liang 2022).


rule corpus:
    output:
        directory(f"{RESULTS}/corpora/{{task}}"),
    log:
        f"{RESULTS}/logs/corpora/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/corpora/{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=corpus_spec_json,
    shell:
        "python -m pipeline_lib corpus --spec {params.spec:q} --task {wildcards.task}"
        " --out {output} --workers {threads} 2> {log}"


rule corpora:
    input:
        expand(f"{RESULTS}/corpora/{{task}}", task=TASKS),
    localrule: True


# Fine-tuning data sets (the transfer family's downstream tasks): tokenised, with examples for
# the metrics.
rule downstream_data:
    input:
        downstream_source_input,
    output:
        directory(f"{RESULTS}/downstream/{{downstream}}"),
    log:
        f"{RESULTS}/logs/downstream/{{downstream}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/downstream/{{downstream}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=downstream_spec_json,
    shell:
        "python -m pipeline_lib downstream --spec {params.spec:q}"
        " --name {wildcards.downstream} --out {output} {input:q} 2> {log}"
