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
