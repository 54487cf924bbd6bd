"""lorakit: LoRA fine-tuning of transformer text classifiers from per-task recipes."""

import logging
import warnings

# bitsandbytes warns at import on AVX-512-BF16 CPUs that it cannot fetch an optional kernel from the Hub;
# it falls back to its own kernel, so the warning is noise for every run that does not even quantise.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
# PEFT 0.21 still calls a transformers attribute that 5.x renamed; the warning is for PEFT, not our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
