# Data stage: synthetic pre-training corpora (Wu, Li & Liang 2022).


rule corpus:
    output:
        directory("results/corpora/{task}"),
    log:
        "results/logs/corpora/{task}.log",
    benchmark:
        "results/benchmarks/corpora/{task}.tsv"
    conda:
        "../../envs/cpu.yaml"
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
        expand("results/corpora/{task}", task=TASKS),
    localrule: True
