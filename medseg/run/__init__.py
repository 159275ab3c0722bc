"""Run orchestration: the entry points' shared path (config checks, run folder, train/evaluate/infer).

Importing this package stores the option schemas (:mod:`medseg.schema`) in Hydra's ConfigStore, which the
yaml files under ``conf/`` build on: compose a run config only after importing ``medseg.run``.
"""

from medseg.schema import register_schemas

register_schemas()
