# Pre-training stage: T5 on each synthetic corpus (Wu, Li & Liang 2022).
# Checkpoints live in results/ckpt/, outside the declared outputs, so a killed job resumes.


rule pretrain:
    input:
        corpus="results/corpora/{task}",
    output:
        params="results/pretrain/{task}/params.npz",
        best="results/pretrain/{task}/best_params.npz",
        metrics="results/pretrain/{task}/metrics.jsonl",
        summary="results/pretrain/{task}/summary.json",
    log:
        "results/logs/pretrain/{task}.log",
    benchmark:
        "results/benchmarks/pretrain/{task}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=pretrain_spec_json,
        ckpt="results/ckpt/pretrain/{task}",
        out="results/pretrain/{task}",
    shell:
        "python -m pipeline_lib pretrain --spec {params.spec:q} --corpus {input.corpus}"
        " --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule pretrained_models:
    input:
        expand("results/pretrain/{task}/summary.json", task=config["pretrain"]["tasks"]),
    localrule: True


rule off_the_shelf:
    input:
        ancient(OFF_THE_SHELF_DIR),
    output:
        params="results/pretrain/off_the_shelf/params.npz",
        best="results/pretrain/off_the_shelf/best_params.npz",
    log:
        "results/logs/pretrain/off_the_shelf.log",
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pipeline_lib import-hf-t5 --hf-dir {input:q}"
        " --out {output.params} {output.best} 2> {log}"
