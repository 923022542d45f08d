"""Chinese text for the tests: a tiny BERT with a character vocabulary (no WordPiece), built from the Chinese NER
fixtures (tests/fixtures/ner/zh-*) and any other texts a test needs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from conftest import SPECIAL, TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "ner"


def fixture_characters() -> set[str]:
    """Every character of the Chinese NER fixtures (one a line: ``张 B-PER``)."""
    return {line.split()[0] for f in FIXTURES.glob("zh-*.conll") for line in f.read_text("utf-8").splitlines() if line}


def make_char_bert(folder: Path, texts: Iterable[str] = ()) -> Path:
    """A tiny BERT whose vocabulary is every character of the Chinese fixtures (and of ``texts``), one token each.

    With no ``texts`` the vocabulary, and so the seeded model, is the same as tests/tasks/ner/test_chinese.py has
    always built.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    chars = fixture_characters() | {c for text in texts for c in text if not c.isspace()}
    vocab = SPECIAL + sorted(chars)
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, tokenize_chinese_chars=True)
    # The transformers 5 trap (shared/STACK.md): a tokenizer that silently lost its vocabulary makes every one [UNK].
    assert tokenizer.convert_tokens_to_ids("张") != tokenizer.unk_token_id
    assert tokenizer.tokenize("张伟在北京") == ["张", "伟", "在", "北", "京"]
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder
