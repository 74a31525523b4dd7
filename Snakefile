# Pre-training science as one DAG: Wu et al. 2022 synthetic tasks, Liu et al. 2023 PCFGs, T0,
# Primer and HINT. This file is the table of contents; rules live in workflow/rules/.
#
#   snakemake --cores 2                    the headline target: corpora, PCFG data, Table 2
#   data:           corpora, pcfg_data
#   transfer:       transfer_models (alias pretrained_models), table1|table2|table3,
#                   transfer_tables                      (Wu et al. 2022; workflow/rules/transfer.smk)
#   implicit_bias:  implicit_bias_models (alias mlm_models),
#                   implicit_bias_tables (alias pcfg_tables)   (Liu et al. 2023)
#   primer:         primer_models, primer_table (alias lm_models) (So et al. 2021)
#   report:         findings (every table's claims on one page; builds every table)
#   snakemake -n <target>                  the plan


# --configfile FILE replaces config.yaml instead of being merged into it (a merge would keep
# the laptop entries of dict-valued sections such as downstream or liu.sizes).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pcfg.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/implicit_bias.smk"
include: "workflow/rules/primer.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.corpora.input,
        rules.pcfg_data.input,
        rules.table2.input,
