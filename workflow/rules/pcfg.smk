# PCFG data stage (Liu, Xie, Li & Ma 2023): grammar -> pre-training sentences + MLM
# instances, downstream tasks A/B/C, exact optimal MLM loss.


rule pcfg_grammar:
    input:
        pcfg_grammar_input,
    output:
        directory(f"{RESULTS}/pcfg/{{grammar}}/grammar"),
    log:
        f"{RESULTS}/logs/pcfg/{{grammar}}/grammar.log",
    benchmark:
        f"{RESULTS}/benchmarks/pcfg/{{grammar}}/grammar.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spec=pcfg_grammar_spec,
    shell:
        "python -m pipeline_lib pcfg build-grammar --spec {params.spec:q} --out {output}"
        " 2> {log}"


rule pcfg_pretrain:
    input:
        grammar=f"{RESULTS}/pcfg/{{grammar}}/grammar",
    output:
        directory(f"{RESULTS}/pcfg/{{grammar}}/pretrain"),
    log:
        f"{RESULTS}/logs/pcfg/{{grammar}}/pretrain.log",
    benchmark:
        f"{RESULTS}/benchmarks/pcfg/{{grammar}}/pretrain.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=pcfg_pretrain_spec,
    shell:
        "python -m pipeline_lib pcfg build-pretrain --spec {params.spec:q}"
        " --grammar {input.grammar} --out {output} 2> {log}"


rule pcfg_downstream:
    input:
        grammar=f"{RESULTS}/pcfg/{{grammar}}/grammar",
    output:
        directory(f"{RESULTS}/pcfg/{{grammar}}/downstream/{{pcfg_task}}"),
    log:
        f"{RESULTS}/logs/pcfg/{{grammar}}/downstream/{{pcfg_task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pcfg/{{grammar}}/downstream/{{pcfg_task}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=pcfg_downstream_spec,
    shell:
        "python -m pipeline_lib pcfg build-downstream --spec {params.spec:q}"
        " --grammar {input.grammar} --task {wildcards.pcfg_task} --out {output} 2> {log}"


rule pcfg_optimal_loss:
    input:
        grammar=f"{RESULTS}/pcfg/{{grammar}}/grammar",
    output:
        directory(f"{RESULTS}/pcfg/{{grammar}}/optimal_loss"),
    log:
        f"{RESULTS}/logs/pcfg/{{grammar}}/optimal_loss.log",
    benchmark:
        f"{RESULTS}/benchmarks/pcfg/{{grammar}}/optimal_loss.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=pcfg_optimal_loss_spec,
    shell:
        "python -m pipeline_lib pcfg build-optimal-loss --spec {params.spec:q}"
        " --grammar {input.grammar} --out {output} 2> {log}"


rule pcfg_transduction:
    input:
        grammar=f"{RESULTS}/pcfg/{{grammar}}/grammar",
    output:
        directory(f"{RESULTS}/pcfg/{{grammar}}/transduction/{{transduction_task}}"),
    log:
        f"{RESULTS}/logs/pcfg/{{grammar}}/transduction/{{transduction_task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pcfg/{{grammar}}/transduction/{{transduction_task}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=pcfg_transduction_spec,
    shell:
        "python -m pipeline_lib pcfg build-transduction --spec {params.spec:q}"
        " --grammar {input.grammar} --task {wildcards.transduction_task} --out {output} 2> {log}"


rule pcfg_data:
    input:
        expand(f"{RESULTS}/pcfg/{{grammar}}/pretrain", grammar=PCFG_GRAMMAR),
        expand(
            f"{RESULTS}/pcfg/{{grammar}}/downstream/{{pcfg_task}}",
            grammar=PCFG_GRAMMAR,
            pcfg_task=PCFG_TASKS,
        ),
        expand(f"{RESULTS}/pcfg/{{grammar}}/optimal_loss", grammar=PCFG_GRAMMAR),
        expand(
            f"{RESULTS}/pcfg/{{grammar}}/transduction/{{transduction_task}}",
            grammar=PCFG_GRAMMAR,
            transduction_task=PCFG["transduction"]["tasks"],
        ),
    localrule: True
