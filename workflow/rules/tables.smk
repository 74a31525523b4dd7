# Tables stage: aggregate the fine-tuning runs into Tables 1-3 of Wu et al. (2022), as CSV,
# Markdown, LaTeX and a bar chart, registered in the Snakemake report.


rule table:
    input:
        table_inputs,
    output:
        csv=report(
            "results/tables/{table}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{table}",
        ),
        md="results/tables/{table}.md",
        tex="results/tables/{table}.tex",
        png=report(
            "results/tables/{table}.png",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{table}",
        ),
    log:
        "results/logs/tables/{table}.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    params:
        spec=tables_spec_json,
        prefix="results/tables/{table}",
    shell:
        "python -m pipeline_lib table --which {wildcards.table} --spec {params.spec:q}"
        " --out-prefix {params.prefix} {input:q} 2> {log}"


rule table1:
    input:
        expand("results/tables/table1.{ext}", ext=["csv", "md", "tex", "png"]),
    localrule: True


rule table2:
    input:
        expand("results/tables/table2.{ext}", ext=["csv", "md", "tex", "png"]),
    localrule: True


rule table3:
    input:
        expand("results/tables/table3.{ext}", ext=["csv", "md", "tex", "png"]),
    localrule: True
