"""lorakit: LoRA fine-tuning of transformer text classifiers from per-task recipes.

Importing the package (or any module of it) changes no global state: logging, warning filters and the
matplotlib backend are the entry scripts' to set (`lorakit.errors.run_cli`).
"""
