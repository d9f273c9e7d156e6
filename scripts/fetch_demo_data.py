from tikmix.data.demo import fetch_demo_data
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    manifest = fetch_demo_data(snakemake.params.resources_dir)
    log.info("demo data: %d domains, %d tasks", len(manifest["domains"]), len(manifest["tasks"]))
