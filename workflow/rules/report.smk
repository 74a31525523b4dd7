# The findings page: every table's claims checked (measured value, 95 % interval, verdict
# beside the paper's value) on one page, the report's "did the science reproduce at this
# scale" dashboard. `snakemake findings` builds every table it lists.

# Every family's findings files, in page order. A file joins the page once some rule declares
# it as an output (so the page never asks for a file no rule makes while a family's table
# rule is being grown); the page names the tables it collected.
FINDINGS_FILES = [
    path
    for path in [
        *(f"{RESULTS}/tables/{table}.findings.json" for table in ["table1", "table2", "table3"]),
        f"{RESULTS}/tables/implicit_bias.findings.json",
        f"{RESULTS}/tables/primer.findings.json",
    ]
    if any(r.is_producer(path) for r in workflow.rules)
]


rule findings:
    input:
        FINDINGS_FILES,
    output:
        md=f"{RESULTS}/tables/findings.md",
        html=report(
            f"{RESULTS}/tables/findings.html",
            caption="../report/findings.rst",
            category="Findings",
        ),
    log:
        f"{RESULTS}/logs/report/findings.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline_lib report-findings --md {output.md} --html {output.html}"
        " -- {input:q} 2> {log}"
