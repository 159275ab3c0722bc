"""The evaluation core: the one evaluation protocol, metrics, tables, pictures, sweep summaries, comparisons."""
