# Pre-training science as one DAG: Wu et al. 2022 synthetic tasks, Liu et al. 2023 PCFGs, T0,
# Primer and HINT. This file is the table of contents; rules live in workflow/rules/.
#
#   snakemake --cores 2                 the headline target: corpora, PCFG data, Table 2
#   snakemake corpora --cores 2         every synthetic pre-training corpus in the config
#   snakemake pcfg_data --cores 2       PCFG grammar, MLM data, tasks A/B/C, optimal loss
#   snakemake pretrained_models -c 2    T5 pre-trained on the corpora in pretrain.tasks
#   snakemake table1|table2|table3 -c 2 Wu et al.'s Tables 1-3 (results/tables/)
#   snakemake mlm_models -c 2           BERT MLM sweeps on the PCFG data (Liu et al.)
#   snakemake lm_models -c 2            Primer-EZ vs Transformer++ decoder LMs
#   snakemake -n <target>               the plan


# --configfile FILE replaces config.yaml instead of being merged into it (a merge would keep
# the laptop entries of dict-valued sections such as downstream or liu.sizes).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pcfg.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/liu.smk"
include: "workflow/rules/lm.smk"


rule all:
    default_target: True
    input:
        rules.corpora.input,
        rules.pcfg_data.input,
        rules.table2.input,
