# The transfer family (Wu, Li & Liang 2022): T5 pre-training on each synthetic corpus, one
# fine-tuning run per (downstream task, source, init scheme, seed), Tables 1-3.
# Checkpoints live in results/ckpt/transfer/, outside the declared outputs, so a killed job
# resumes.


rule transfer_pretrain:
    input:
        corpus=f"{RESULTS}/corpora/{{task}}",
    output:
        params=f"{RESULTS}/transfer/pretrain/{{task}}/params.npz",
        best=f"{RESULTS}/transfer/pretrain/{{task}}/best_params.npz",
        metrics=f"{RESULTS}/transfer/pretrain/{{task}}/metrics.jsonl",
        summary=f"{RESULTS}/transfer/pretrain/{{task}}/summary.json",
    log:
        f"{RESULTS}/logs/transfer/pretrain/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer/pretrain/{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=pretrain_spec_json,
        ckpt=f"{RESULTS}/ckpt/transfer/pretrain/{{task}}",
        # the outputs' directory as the job sees it (under a storage plugin: the local copy)
        out=lambda wildcards, output: Path(output.summary).parent,
    shell:
        "python -m pipeline_lib transfer-pretrain --spec {params.spec:q}"
        " --corpus {input.corpus} --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule transfer_models:
    input:
        expand(f"{RESULTS}/transfer/pretrain/{{task}}/summary.json", task=PRETRAIN_TASKS),
    localrule: True


# The name of the README before the family layout (kept as an alias).
rule pretrained_models:
    input:
        rules.transfer_models.input,
    localrule: True


rule transfer_off_the_shelf:
    input:
        ancient(OFF_THE_SHELF_DIR),
    output:
        params=f"{RESULTS}/transfer/pretrain/off_the_shelf/params.npz",
        best=f"{RESULTS}/transfer/pretrain/off_the_shelf/best_params.npz",
    log:
        f"{RESULTS}/logs/transfer/pretrain/off_the_shelf.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pipeline_lib import-hf-t5 --hf-dir {input:q}"
        " --out {output.params} {output.best} 2> {log}"


rule transfer_finetune:
    input:
        data=f"{RESULTS}/downstream/{{downstream}}",
        init=finetune_init_input,
    output:
        metrics=expand(
            f"{RESULTS}/transfer/finetune/{{{{downstream}}}}/{{{{source}}}}/{{{{init}}}}/{{seed}}/metrics.json",
            seed=FINETUNE["seeds"],
        ),
        predictions=expand(
            f"{RESULTS}/transfer/finetune/{{{{downstream}}}}/{{{{source}}}}/{{{{init}}}}/{{seed}}/predictions.jsonl",
            seed=FINETUNE["seeds"],
        ),
        log_lines=expand(
            f"{RESULTS}/transfer/finetune/{{{{downstream}}}}/{{{{source}}}}/{{{{init}}}}/{{seed}}/metrics.jsonl",
            seed=FINETUNE["seeds"],
        ),
    log:
        f"{RESULTS}/logs/transfer/finetune/{{downstream}}/{{source}}/{{init}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer/finetune/{{downstream}}/{{source}}/{{init}}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=finetune_spec_json,
        init_params=finetune_init_param,
        seeds=" ".join(str(s) for s in FINETUNE["seeds"]),
        ckpt=f"{RESULTS}/ckpt/transfer/finetune/{{downstream}}/{{source}}/{{init}}",
        # the outputs' directory as the job sees it (under a storage plugin: the local copy)
        out=lambda wildcards, output: Path(output.metrics[0]).parent.parent,
    shell:
        "python -m pipeline_lib transfer-finetune --spec {params.spec:q}"
        " --downstream {wildcards.downstream} --data {input.data} --source {wildcards.source}"
        " --init {wildcards.init} --seeds {params.seeds} --init-params {params.init_params:q}"
        " --out {params.out} --ckpt-dir {params.ckpt} 2> {log}"


rule transfer_table:
    input:
        metrics=table_inputs,
        sources=table_source_summaries,
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Transfer (Wu et al. 2022)",
            subcategory="{table}",
        ),
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
        findings=f"{RESULTS}/tables/{{table}}.findings.json",
        png=report(
            f"{RESULTS}/tables/{{table}}.png",
            caption="../report/table.rst",
            category="Transfer (Wu et al. 2022)",
            subcategory="{table}",
        ),
    log:
        f"{RESULTS}/logs/transfer/{{table}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=tables_spec_json,
        prefix=lambda wildcards, output: output.csv[: -len(".csv")],
    shell:
        "python -m pipeline_lib transfer-table --which {wildcards.table} --spec {params.spec:q}"
        " --out-prefix {params.prefix} --source-summaries {input.sources:q}"
        " -- {input.metrics:q} 2> {log}"


# The validation curves of the runs behind a table and of its pre-training sources (their
# metrics.jsonl files sit next to the metrics.json / summary.json the table reads).
rule transfer_curves:
    input:
        runs=lambda wildcards: [p.removesuffix(".json") + ".jsonl" for p in table_inputs(wildcards)],
        sources=lambda wildcards: [
            p.removesuffix("summary.json") + "metrics.jsonl"
            for p in table_source_summaries(wildcards)
        ],
    output:
        report(
            f"{RESULTS}/tables/{{table}}.curves.png",
            caption="../report/curves.rst",
            category="Transfer (Wu et al. 2022)",
            subcategory="{table}",
        ),
    log:
        f"{RESULTS}/logs/transfer/{{table}}.curves.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        spec=tables_spec_json,
    shell:
        "python -m pipeline_lib transfer-curves --which {wildcards.table} --spec {params.spec:q}"
        " --out {output} --sources {input.sources:q} -- {input.runs:q} 2> {log}"


TABLE_OUTPUTS = ["csv", "md", "tex", "png", "findings.json", "curves.png"]


rule table1:
    input:
        expand(f"{RESULTS}/tables/table1.{{ext}}", ext=TABLE_OUTPUTS),
    localrule: True


rule table2:
    input:
        expand(f"{RESULTS}/tables/table2.{{ext}}", ext=TABLE_OUTPUTS),
    localrule: True


rule table3:
    input:
        expand(f"{RESULTS}/tables/table3.{{ext}}", ext=TABLE_OUTPUTS),
    localrule: True


rule transfer_tables:
    input:
        rules.table1.input,
        rules.table2.input,
        rules.table3.input,
    localrule: True
