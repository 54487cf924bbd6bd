"""lorakit: LoRA fine-tuning of transformer text classifiers from per-task recipes."""

import logging

# bitsandbytes warns at import on AVX-512-BF16 CPUs that it cannot fetch an optional kernel from the Hub;
# it falls back to its own kernel, so the warning is noise for every run that does not even quantise.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
