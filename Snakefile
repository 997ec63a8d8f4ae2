workflow.include(
    "workflow/Snakefile", overwrite_default_target=True
)  # = `include:`, keeping rule all as the default target
