"""Build a tiny random-weight Llama model directory that vLLM can serve on the CPU.

Run it with the vLLM venv's interpreter (see .ci/vllm-env.sh)::

    python tests/real_vllm/make_model.py OUT_DIR

Everything is made locally: a word-level tokenizer trained with ``tokenizers`` on
a generated corpus, and a 2-layer Llama (head_dim 64, which the CPU attention
kernels accept) with seeded random weights, saved as bfloat16 safetensors.
Nothing is downloaded (HF_HUB_OFFLINE=1).

Tokenisation is one token per word of the vocabulary (see ``WORDS``), with a BOS
token added in front, so a prompt of N known words is N + 1 prompt tokens.
Unknown words become ``<unk>``. The script is idempotent: an OUT_DIR that
already holds a complete model (stamp file written last) is left as it is.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

SEED = 1234
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
N_WORDS = 508  # vocabulary = 4 special tokens + 508 words = 512
STAMP_NAME = ".tokenwatt-model-complete"
STAMP_CONTENT = "tiny-llama v1"

MODEL_CONFIG = {
    "hidden_size": 128,
    "num_attention_heads": 2,  # head_dim 64
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def make_words(n: int, seed: int = SEED) -> list[str]:
    """Return ``n`` distinct pronounceable lowercase pseudo-words, deterministically."""
    rng = random.Random(seed)
    consonants = "bdfgklmnprstvz"
    vowels = "aeiou"
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = make_words(N_WORDS)


def make_corpus(words: list[str], n_lines: int = 2000, seed: int = SEED) -> list[str]:
    """Sentences over ``words`` in which every word occurs at least once."""
    rng = random.Random(seed + 1)
    lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)]
    lines += [" ".join(rng.choices(words, k=rng.randint(4, 16))) for _ in range(n_lines)]
    return lines


def build_tokenizer(out: Path) -> int:
    """Train and save the tokenizer into ``out``; return the vocabulary size."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors  # type: ignore[import-not-found,unused-ignore]
    from tokenizers.models import WordLevel  # type: ignore[import-not-found,unused-ignore]
    from tokenizers.trainers import WordLevelTrainer  # type: ignore[import-not-found,unused-ignore]
    from transformers import PreTrainedTokenizerFast  # type: ignore[import-not-found,unused-ignore]

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece's decoder joins tokens with spaces (there are no "##" pieces).
    tok.decoder = decoders.WordPiece()
    trainer = WordLevelTrainer(
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator(make_corpus(WORDS), trainer=trainer)
    vocab_size = tok.get_vocab_size()
    if vocab_size != len(SPECIAL_TOKENS) + len(WORDS):
        raise RuntimeError(f"unexpected vocabulary size {vocab_size}")
    bos_id = tok.token_to_id(BOS)
    # Like Llama: BOS in front of every sequence, no EOS at the end.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, bos_id)],
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out))
    # Make AutoTokenizer pick the generic fast class and not the Llama one,
    # which would rebuild the pipeline for a SentencePiece-style vocabulary.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return int(vocab_size)


def build_model(out: Path, vocab_size: int) -> None:
    import torch  # type: ignore[import-not-found,unused-ignore]
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # type: ignore[import-not-found,unused-ignore]

    ids = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    config = LlamaConfig(
        vocab_size=vocab_size,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        **MODEL_CONFIG,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD]).save_pretrained(
        str(out)
    )


def check(out: Path) -> None:
    """Load what was written, as vLLM will, and run one forward pass."""
    import torch  # type: ignore[import-not-found,unused-ignore]
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # type: ignore[import-not-found,unused-ignore]

    tok = AutoTokenizer.from_pretrained(str(out))
    if not tok.is_fast:
        raise RuntimeError(f"{type(tok).__name__} is not a fast tokenizer")
    ids = tok(" ".join(WORDS[:5]))["input_ids"]
    if ids[0] != tok.bos_token_id or len(ids) != 6 or tok.unk_token_id in ids:
        raise RuntimeError(f"unexpected tokenisation {ids}")
    if tok.decode(ids, skip_special_tokens=True) != " ".join(WORDS[:5]):
        raise RuntimeError(f"decode mismatch: {tok.decode(ids, skip_special_tokens=True)!r}")
    config = AutoConfig.from_pretrained(str(out))
    if (config.bos_token_id, config.eos_token_id) != (tok.bos_token_id, tok.eos_token_id):
        raise RuntimeError("config and tokenizer disagree on bos/eos")
    if config.hidden_size // config.num_attention_heads != 64:
        raise RuntimeError("head_dim must be 64 for vLLM's CPU attention")
    model = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    if tuple(logits.shape) != (1, len(ids), config.vocab_size):
        raise RuntimeError(f"unexpected logits shape {tuple(logits.shape)}")


def is_complete(out: Path) -> bool:
    stamp = out / STAMP_NAME
    return stamp.is_file() and stamp.read_text() == STAMP_CONTENT


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1]).resolve()
    if is_complete(out):
        print(f"model already complete: {out}", file=sys.stderr)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to OUT_DIR and rename, so OUT_DIR is either absent or whole.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        vocab_size = build_tokenizer(tmp)
        build_model(tmp, vocab_size)
        check(tmp)
        (tmp / STAMP_NAME).write_text(STAMP_CONTENT)
        tmp.chmod(0o755)  # mkdtemp made it 0700
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
