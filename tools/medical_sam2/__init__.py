"""Medical-SAM2 / Medical SAM2-N command lines translated into this suite's Hydra commands.

``flags``: the flag table (each flag's rule, the scripts' defaults); ``translate``: one command into
this suite's command(s). The command line is ``tools/from_medical_sam2.py``. Imports no torch.
"""

from __future__ import annotations

from tools.medical_sam2.translate import SCRIPTS, Translation, TranslationError, translate

__all__ = ["SCRIPTS", "Translation", "TranslationError", "translate"]
