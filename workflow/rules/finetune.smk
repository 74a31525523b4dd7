# Fine-tuning stage (Wu, Li & Liang 2022): downstream data sets, then one T5 fine-tuning run per
# (downstream task, pre-training source, init scheme, seed). Checkpoints live in
# results/ckpt/finetune/, outside the declared outputs, so a killed run resumes.


rule downstream_data:
    input:
        downstream_source_input,
    output:
        directory("results/downstream/{downstream}"),
    log:
        "results/logs/downstream/{downstream}.log",
    benchmark:
        "results/benchmarks/downstream/{downstream}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=downstream_spec_json,
    shell:
        "python -m pipeline_lib downstream --spec {params.spec:q}"
        " --name {wildcards.downstream} --out {output} {input:q} 2> {log}"


rule finetune:
    input:
        data="results/downstream/{downstream}",
        init=finetune_init_input,
    output:
        metrics="results/finetune/{downstream}/{source}/{init}/{seed}/metrics.json",
        predictions="results/finetune/{downstream}/{source}/{init}/{seed}/predictions.jsonl",
        log_lines="results/finetune/{downstream}/{source}/{init}/{seed}/metrics.jsonl",
    log:
        "results/logs/finetune/{downstream}/{source}/{init}/{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{downstream}/{source}/{init}/{seed}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=finetune_spec_json,
        init_params=finetune_init_param,
        ckpt="results/ckpt/finetune/{downstream}/{source}/{init}/{seed}",
        out="results/finetune/{downstream}/{source}/{init}/{seed}",
    shell:
        "python -m pipeline_lib finetune --spec {params.spec:q}"
        " --downstream {wildcards.downstream} --data {input.data} --source {wildcards.source}"
        " --init {wildcards.init} --seed {wildcards.seed} --init-params {params.init_params:q}"
        " --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"
