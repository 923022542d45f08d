"""``ftlit explain``: which words made a fine-tuned classifier decide, by integrated gradients (extra ``explain``).

Captum's ``LayerIntegratedGradients`` runs over the backbone's input embedding layer
(``model.get_input_embeddings()``): the path goes from a baseline, the same sequence with every non-special token
replaced by the pad token ([CLS] and [SEP] kept), to the input, and each token's attribution (summed over the
embedding dimension) is its share of ``f(input) - f(baseline)`` for the target logit. Sub-tokens are merged into the
words of the text, with character spans into it. Sequence classification explains the predicted label (or
``--target``); NER explains each predicted entity, at its first token's tag logit.

Words come from the one word splitter (``ftlit.core.words``): NER uses the splitter its checkpoint recorded
(``data.words``: the words ``ftlit predict`` tags; ``whitespace`` for a checkpoint from before that key); sequence
tasks, whose data records no splitter, use ``bert`` (``DEFAULT_WORDS``): BERT's basic words, every CJK ideograph and
every punctuation mark a word of its own, so Chinese text gets one score per character, not one for the whole
sentence (on spaced text without punctuation that is the whitespace words). A token that covers several words (a
SentencePiece piece of two ideographs) shares its score among them by the characters it covers in each.

The model and tokenizer come from the checkpoint alone (no network, no original model folder), as in ``ftlit
export``. ``explain()`` returns the entries that ``ftlit explain`` writes to ``explanations.json`` beside a
self-contained ``explanations.html``.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from transformers import PreTrainedTokenizerBase

from ftlit import backbone
from ftlit.checkpoint_io import read_checkpoint
from ftlit.classes import class_path, find_class
from ftlit.commands.folders import arg_docs, check_target, command_parser, replace_folder, sibling
from ftlit.commands.fonts import FONT_FAMILY
from ftlit.core import words as word_splitters
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError, report_errors
from ftlit.tasks.ner import TokenClassifier
from ftlit.tasks.ner.data import checkpoint_words
from ftlit.tasks.ner.metric import extract_entities
from ftlit.tasks.text import SequenceClassifier

JSON_FILE, HTML_FILE = "explanations.json", "explanations.html"
# The tasks explain covers, and how the others are named in its error.
SUPPORTED = (SequenceClassifier, TokenClassifier)
_TASK_NAMES = {
    "SequenceRegressor": "regression",
    "MultiLabelClassifier": "multi-label classification",
    "QuestionAnswering": "question answering",
}
# Integration steps per forward/backward batch: bounds memory on long texts and large models.
_STEPS_PER_BATCH = 32
# The word splitter (ftlit.core.words) of a model whose checkpoint records none: sequence tasks have no data.words.
DEFAULT_WORDS = "bert"


@dataclass
class Input:
    """One text (or text pair) to explain, and how an error about it names it: ``<field>: <where><problem>``."""

    text: Any
    text_pair: Any
    field: str
    where: str

    def error(self, problem: str) -> ConfigError:
        return ConfigError(self.field, f"{self.where}{problem}")


# --- the programmatic API ----------------------------------------------------------------------------------------


def explain(
    ckpt_path: str,
    texts: str | Sequence[str],
    text_pairs: Sequence[str | None] | None = None,
    target: str | None = None,
    n_steps: int = 50,
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """Token attributions of a fine-tuned sequence or token classifier for ``texts``, by integrated gradients.

    Args:
        ckpt_path: Checkpoint written by ``ftlit fit`` (a ``SequenceClassifier`` or ``TokenClassifier``).
        texts: The texts to explain (one string is one text).
        text_pairs: The second text of each pair (sequence classification), ``None`` for a single text.
        target: Label to explain (default: the predicted one). For NER, the tag whose logit is explained at each
            entity's first token.
        n_steps: Integration steps (more: a smaller convergence delta, slower).
        trust_remote_code: Let a model that ships its own Python code (packed in the checkpoint) run it.

    Returns:
        One entry per text (sequence classification) or per predicted entity (NER): ``text``, ``text_pair``,
        ``predicted``, ``target``, ``probability`` (of the target), ``delta`` (Captum's convergence delta),
        ``words`` (``word``, ``start``, ``end``, ``score``, one per word as :func:`checkpoint_splitter` names the
        splitter; words of the second text have ``segment: 1`` and spans into it) and, for NER, ``entity``
        (``text``, ``type``, ``start``, ``end``).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if text_pairs is not None:
        text_pairs = list(text_pairs)
        if len(text_pairs) != len(texts):
            raise ConfigError("text_pairs", f"{len(text_pairs)} pairs for {len(texts)} texts: give one per text")
    pairs = text_pairs if text_pairs is not None else [None] * len(texts)
    inputs = [Input(t, p, "texts", f"item {i}: ") for i, (t, p) in enumerate(zip(texts, pairs, strict=True))]
    return _explain(ckpt_path, inputs, target, n_steps, trust_remote_code)


# Captum takes gradients: a caller's inference_mode would make the rebuilt model's weights inference tensors.
@torch.inference_mode(False)
def _explain(
    ckpt_path: str, inputs: list[Input], target: str | None, n_steps: int, trust_remote_code: bool
) -> list[dict[str, Any]]:
    """The checks (cheapest first), then the model, then one attribution per text or entity."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError("n_steps", f"must be a whole number >= 1, got {n_steps!r}")
    if find_spec("captum") is None:
        raise ConfigError("captum", "ftlit explain needs captum: pip install 'ftlit[explain]' (or captum)")
    if not inputs:
        raise ConfigError("texts", "no texts to explain")
    for item in inputs:
        _check_text(item)
    ckpt = read_checkpoint(ckpt_path)
    _check_task(ckpt, ckpt_path)
    pair = next((item for item in inputs if item.text_pair is not None), None)
    saved = _saved_class(ckpt)
    if pair is not None and isinstance(saved, type) and issubclass(saved, TokenClassifier):
        field = "text_pair" if pair.field == "text" else pair.field
        raise ConfigError(field, f"{pair.where}NER takes one text per input, not a text pair")
    module = FineTuneModule.load_from_checkpoint(ckpt_path, map_location="cpu", trust_remote_code=trust_remote_code)
    if not isinstance(module, SUPPORTED):
        raise _task_error(ckpt_path, type(module))
    tokenizer = _checkpoint_tokenizer(ckpt, trust_remote_code)
    return attribute(module, tokenizer, inputs, target, n_steps, words=checkpoint_splitter(ckpt, module))


def checkpoint_splitter(ckpt: dict[str, Any], module: FineTuneModule) -> str:
    """The word splitter (``ftlit.core.words``) explain merges a checkpoint's tokens into: for NER the one its data
    recorded (``data.words``, what ``ftlit predict`` tags; ``whitespace`` before that key), for a sequence task the
    one its data records if it ever does, else ``DEFAULT_WORDS`` (``bert``)."""
    data = ckpt.get("datamodule_hyper_parameters") or {}
    if isinstance(module, TokenClassifier):
        return checkpoint_words(data)
    recorded = data.get("words")
    return str(recorded) if isinstance(recorded, str) and recorded != "auto" else DEFAULT_WORDS


def can_explain(module: FineTuneModule) -> bool:
    """Whether :func:`attribute` explains this model here (its task, and captum installed)."""
    return isinstance(module, SUPPORTED) and find_spec("captum") is not None


@torch.inference_mode(False)
def attribute(
    module: FineTuneModule,
    tokenizer: PreTrainedTokenizerBase,
    inputs: list[Input],
    target: str | None = None,
    n_steps: int = 50,
    words: str | None = None,
) -> list[dict[str, Any]]:
    """The entries of ``inputs`` by a loaded sequence or token classifier (``ftlit serve`` keeps one loaded).

    ``words``: the word splitter the tokens' scores are summed into; default the model's own (a ``TokenClassifier``
    loaded from a checkpoint or attached to its data knows it), else ``DEFAULT_WORDS``."""
    model = module.model.eval()
    labels = label_names(model.config)
    if target is not None and target not in labels:
        raise ConfigError("target", f"{target!r} is not one of the model's labels: {', '.join(labels)}")
    split = word_splitters.splitter(words or getattr(module, "words", None) or DEFAULT_WORDS, "words")
    explainer = _Explainer(module, tokenizer, labels, n_steps, split)
    encodings = [explainer.encode(item) for item in inputs]  # every length is checked before any attribution
    entries: list[dict[str, Any]] = []
    for item, encoding in zip(inputs, encodings, strict=True):
        entries += explainer.explain(item, encoding, target)
    return entries


def _check_text(item: Input) -> None:
    if not isinstance(item.text, str):
        raise item.error(f"the text is {type(item.text).__name__}, not a string")
    if not item.text.strip():
        raise item.error("the text is empty: give some words to explain")
    if item.text_pair is not None:
        if not isinstance(item.text_pair, str):
            raise item.error(f"the text pair is {type(item.text_pair).__name__}, not a string (or null)")
        if not item.text_pair.strip():
            raise item.error("the text pair is empty: give some words, or leave it out")


def _saved_class(ckpt: dict[str, Any]) -> type | None:
    """The task class the checkpoint names (``_class_path``, saved by LightningCLI), when it is importable."""
    name = ckpt.get("hyper_parameters", {}).get("_class_path")
    return find_class(name, imported_only=True) if isinstance(name, str) else None


def _check_task(ckpt: dict[str, Any], ckpt_path: str) -> None:
    """A checkpoint of another task is refused before its model is rebuilt."""
    cls = _saved_class(ckpt)
    if isinstance(cls, type) and issubclass(cls, FineTuneModule) and not issubclass(cls, SUPPORTED):
        raise _task_error(ckpt_path, cls)


def _task_error(ckpt_path: str, cls: type) -> ConfigError:
    what = _TASK_NAMES.get(cls.__name__, class_path(cls))
    return ConfigError(
        "ckpt_path",
        f"explain supports sequence and token classification, not {what} ('{ckpt_path}' holds a {class_path(cls)})",
    )


def _checkpoint_tokenizer(ckpt: dict[str, Any], trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The tokenizer packed in the checkpoint, written to a temporary folder and loaded from there."""
    saved = ckpt["ftlit"]
    with tempfile.TemporaryDirectory() as tmp:
        backbone.unpack(tmp, saved["config"], saved["tokenizer"], saved.get("code"))
        return backbone.load_tokenizer(tmp, "ckpt_path", trust_remote_code=trust_remote_code)


def label_names(config: Any) -> list[str]:
    """The model's label names in id order (``id2label`` keys may be ints or, from JSON, strings)."""
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    return [id2label[i] for i in range(len(id2label))]


def max_tokens(tokenizer: PreTrainedTokenizerBase, config: Any) -> int:
    """The longest input the model takes: the tokenizer's limit, capped by the position embeddings."""
    limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None)]
    return min(int(n) for n in limits if isinstance(n, int) and n > 0)


# --- attributions ------------------------------------------------------------------------------------------------


class _Explainer:
    """Integrated gradients of one loaded model, one text (or entity) at a time."""

    def __init__(
        self,
        module: FineTuneModule,
        tokenizer: PreTrainedTokenizerBase,
        labels: list[str],
        n_steps: int,
        split: Callable[[str], list[tuple[int, int]]],
    ):
        self.module, self.model, self.tokenizer = module, module.model, tokenizer
        self.labels, self.n_steps, self.split = labels, n_steps, split
        self.ner = isinstance(module, TokenClassifier)
        self.limit = max_tokens(tokenizer, self.model.config)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.unk_token_id or 0)

    def encode(self, item: Input) -> Any:
        """The text tokenized as the task's ``ftlit predict`` does it, checked against the model's length."""
        options = {"return_special_tokens_mask": True, "return_tensors": "pt"}
        if self.ner:
            # NER predicts on the words of its checkpoint's splitter, tokenized as words (ftlit.tasks.ner.data).
            words = [item.text[a:b] for a, b in self.split(item.text)]
            encoding = self.tokenizer(words, is_split_into_words=True, **options)
        else:
            encoding = self.tokenizer(item.text, item.text_pair, return_offsets_mapping=True, **options)
        length = encoding["input_ids"].shape[1]
        if length > self.limit:
            raise item.error(f"{length} tokens, more than the model's {self.limit}: shorten it")
        return encoding

    def explain(self, item: Input, encoding: Any, target: str | None) -> list[dict[str, Any]]:
        ids = encoding["input_ids"]
        names = [n for n in self.module.input_names if n != "input_ids" and n in encoding]
        extra = tuple(encoding[n] for n in names)
        special = encoding["special_tokens_mask"].bool()
        # The baseline: the same sequence, every non-special token the pad token (same length, same mask).
        baseline = ids.masked_fill(~special, self.pad_id)

        def logits(input_ids: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, **dict(zip(names, rest, strict=True))).logits

        with torch.no_grad():
            predicted = logits(ids, *extra)[0].float()
        if not self.ner:
            scores, delta, probability, chosen = self._attribute(logits, ids, baseline, extra, predicted, target)
            words = self._sequence_words(item, encoding, scores, special[0])
            return [self._entry(item, predicted.argmax().item(), chosen, probability, delta, words)]

        word_ids = encoding.word_ids(0)
        first_token: dict[int, int] = {}
        for t, word in enumerate(word_ids):
            if word is not None and word not in first_token:
                first_token[word] = t
        spans = self.split(item.text)
        tags = ["O"] * len(spans)
        for word, t in first_token.items():
            tags[word] = self.labels[int(predicted[t].argmax())]
        entries = []
        for type_, first, last in extract_entities(tags):
            position = first_token[first]

            def at_token(input_ids: torch.Tensor, *rest: torch.Tensor, position: int = position) -> torch.Tensor:
                return logits(input_ids, *rest)[:, position]

            scores, delta, probability, chosen = self._attribute(
                at_token, ids, baseline, extra, predicted[position], target
            )
            words = self._ner_words(item.text, spans, word_ids, scores)
            start, end = spans[first][0], spans[last][1]
            entity = {"text": item.text[start:end], "type": type_, "start": start, "end": end}
            entry = self._entry(item, predicted[position].argmax().item(), chosen, probability, delta, words)
            entries.append({**{k: v for k, v in entry.items() if k != "words"}, "entity": entity, "words": words})
        return entries

    def _attribute(
        self,
        forward: Callable[..., torch.Tensor],
        ids: torch.Tensor,
        baseline: torch.Tensor,
        extra: tuple[torch.Tensor, ...],
        logits: torch.Tensor,
        target: str | None,
    ) -> tuple[list[float], float, float, int]:
        """Per-token attributions toward the target's logit (summed over the embedding), the convergence delta,
        the target's probability and its id."""
        from captum.attr import LayerIntegratedGradients

        chosen = int(logits.argmax()) if target is None else self.labels.index(target)
        probability = float(logits.softmax(-1)[chosen])
        integrated = LayerIntegratedGradients(forward, self.model.get_input_embeddings())
        with torch.enable_grad():  # Captum takes gradients, also when the caller is under no_grad
            attributions, delta = integrated.attribute(
                inputs=ids,
                baselines=baseline,
                additional_forward_args=extra or None,
                target=chosen,
                n_steps=self.n_steps,
                internal_batch_size=min(self.n_steps, _STEPS_PER_BATCH),
                return_convergence_delta=True,
            )
        return attributions.sum(-1)[0].tolist(), float(delta.reshape(-1)[0]), probability, chosen

    def _sequence_words(
        self, item: Input, encoding: Any, scores: list[float], special: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Sub-token scores summed into the words of the text (and of the pair: segment 1), as the splitter finds
        them; a token across several words (a SentencePiece piece of two ideographs) shares its score among them."""
        segments = [(item.text, 0)] + ([(item.text_pair, 1)] if item.text_pair is not None else [])
        spans = {segment: self.split(text) for text, segment in segments}
        starts = {segment: [a for a, _ in spans[segment]] for _, segment in segments}
        totals = {segment: [0.0] * len(spans[segment]) for _, segment in segments}
        offsets = encoding["offset_mapping"][0].tolist()
        for t, segment in enumerate(encoding.sequence_ids(0)):
            if special[t] or segment is None:
                continue  # special tokens are the same in the baseline: no attribution
            for word, share in _covered(spans[segment], starts[segment], *offsets[t]):
                totals[segment][word] += scores[t] * share
        words = []
        for text, segment in segments:
            for (a, b), score in zip(spans[segment], totals[segment], strict=True):
                word = {"word": text[a:b], "start": a, "end": b, "score": score}
                words.append({**word, "segment": 1} if segment else word)
        return words

    @staticmethod
    def _ner_words(
        text: str, spans: list[tuple[int, int]], word_ids: list[int | None], scores: list[float]
    ) -> list[dict[str, Any]]:
        totals = [0.0] * len(spans)
        for t, word in enumerate(word_ids):
            if word is not None:
                totals[word] += scores[t]
        return [{"word": text[a:b], "start": a, "end": b, "score": s} for (a, b), s in zip(spans, totals, strict=True)]

    def _entry(
        self, item: Input, predicted: int, chosen: int, probability: float, delta: float, words: list[dict]
    ) -> dict[str, Any]:
        return {
            "text": item.text,
            "text_pair": item.text_pair,
            "predicted": self.labels[predicted],
            "target": self.labels[chosen],
            "probability": probability,
            "delta": delta,
            "words": words,
        }


def _covered(spans: list[tuple[int, int]], starts: list[int], a: int, b: int) -> list[tuple[int, float]]:
    """The words a token's characters ``[a, b)`` fall in, each with its share of them (by characters); a token that
    covers no word's character (an empty span, or one between words) goes to the word before it (or the first)."""
    first = max(bisect_right(starts, a) - 1, 0)
    overlaps = []
    for word in range(first, len(spans)):
        start, end = spans[word]
        if start >= b:
            break
        if min(b, end) > max(a, start):
            overlaps.append((word, min(b, end) - max(a, start)))
    total = sum(n for _, n in overlaps)
    return [(word, n / total) for word, n in overlaps] if overlaps else [(first, 1.0)]


# --- the page ----------------------------------------------------------------------------------------------------

# The font stack renders Chinese text (ftlit.commands.fonts); the page is UTF-8.
PAGE_STYLE = """
body { font-family: FONT_FAMILY; margin: 2em auto; max-width: 60em;
  color: #1f2328; line-height: 1.5; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.note { color: #59636e; font-size: 0.9em; }
section { border-top: 1px solid #d1d9e0; padding: 0.6em 0; }
""".replace("FONT_FAMILY", FONT_FAMILY)
# What render_entries' fragment needs, also where another page (the report) embeds it.
WORDS_STYLE = """
.title { font-size: 0.9em; color: #59636e; margin: 0 0 0.3em; }
.title b { color: #1f2328; }
.words { margin: 0.2em 0; font-size: 1.1em; }
.words .w { padding: 0.1em 0.15em; border-radius: 0.2em; }
.words .entity { outline: 2px solid #1f2328; }
.pair { color: #59636e; font-size: 0.8em; margin-right: 0.4em; }
.legend span { padding: 0.1em 0.4em; border-radius: 0.2em; }
"""
STYLE = PAGE_STYLE + WORDS_STYLE


def _colour(score: float, largest: float) -> str:
    """Red toward the target, blue against it; opacity by |score| relative to the input's largest."""
    strength = abs(score) / largest if largest > 0 else 0.0
    rgb = "214, 39, 40" if score > 0 else "31, 119, 180"
    text = "; color: #fff" if strength > 0.6 else ""
    return f"background: rgba({rgb}, {strength:.3f}){text}"


def _words_html(words: list[dict[str, Any]], largest: float, entity: dict[str, Any] | None, text: Any = None) -> str:
    """The words as coloured spans, with what ``text`` (whose spans they are) has between them: a space between
    English words, nothing between Chinese characters (a space when the spans do not index ``text``)."""
    parts = []
    at = 0
    for i, word in enumerate(words):
        inside = entity is not None and entity["start"] <= word["start"] and word["end"] <= entity["end"]
        cls = "w entity" if inside else "w"
        fits = isinstance(text, str) and at <= word["start"] <= word["end"] <= len(text)
        gap = (text[at : word["start"]] if fits else " ") if i else ""
        parts.append(
            f'{html.escape(gap)}<span class="{cls}" style="{_colour(word["score"], largest)}" '
            f'title="{word["score"]:+.4f}">{html.escape(word["word"])}</span>'
        )
        at = word["end"] if fits else at
    return "".join(parts)


def render_html(entries: list[dict[str, Any]], source: str = "") -> str:
    """A self-contained page (inline CSS, no JavaScript, no external URL): each entry's words coloured by score."""
    origin = f'<p class="note">{html.escape(source)}</p>' if source else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>ftlit explain</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>Token attributions</h1>\n{origin}\n{render_entries(entries)}"
        "\n</body>\n</html>\n"
    )


def render_entries(entries: list[dict[str, Any]]) -> str:
    """The legend and each entry's coloured words, as an HTML fragment (styled by ``STYLE``), e.g. for a report."""
    sections = []
    for n, entry in enumerate(entries, 1):
        words = entry["words"]
        largest = max((abs(w["score"]) for w in words), default=0.0)
        entity = entry.get("entity")
        about = (
            f"entity <b>{html.escape(entity['text'])}</b> ({html.escape(entity['type'])}) &middot; " if entity else ""
        )
        title = (
            f"{n}. {about}predicted <b>{html.escape(entry['predicted'])}</b> &middot; target "
            f"<b>{html.escape(entry['target'])}</b> &middot; p = {entry['probability']:.3f} &middot; "
            f"delta {entry['delta']:+.4f}"
        )
        first = [w for w in words if not w.get("segment")]
        body = f'<p class="words">{_words_html(first, largest, entity, entry.get("text"))}</p>'
        if entry.get("text_pair") is not None:
            second = [w for w in words if w.get("segment")]
            pair = _words_html(second, largest, None, entry["text_pair"])
            body += f'<p class="words"><span class="pair">pair</span>{pair}</p>'
        sections.append(f'<section>\n<p class="title">{title}</p>\n{body}\n</section>')
    legend = (
        '<p class="note legend"><span style="background: rgba(214, 39, 40, 0.8); color: #fff">toward the target</span>'
        ' <span style="background: rgba(31, 119, 180, 0.8); color: #fff">against it</span> &middot; '
        "integrated gradients over the input embeddings; each word's colour is its score over the input's largest "
        "|score| (hover a word for its score)</p>"
    )
    return f"{legend}\n" + ("\n".join(sections) or '<p class="note">nothing to explain: no entities were predicted</p>')


# --- the command -------------------------------------------------------------------------------------------------


def read_inputs(path: str) -> list[Input]:
    """The rows of a JSON lines file: ``{"text": ..., "text_pair": ...}`` (``text_pair`` optional)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError("input", f"'{path}' {'is a folder' if file.is_dir() else 'does not exist'}: give a file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError("input", f"'{path}' is not UTF-8 text: give a JSON lines file") from None
    inputs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                "input", f"line {number} of '{path}' is not JSON ({err.msg}): give one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise ConfigError("input", f"line {number} of '{path}' is not a JSON object: give {{\"text\": ...}}")
        if "text" not in row:
            keys = ", ".join(map(str, row)) or "none"
            raise ConfigError("input", f"line {number} of '{path}' has no \"text\" key (keys: {keys})")
        inputs.append(Input(row["text"], row.get("text_pair"), "input", f"line {number}: "))
    if not inputs:
        raise ConfigError("input", f"'{path}' has no rows: give one JSON object per line")
    return inputs


def write_explanations(
    ckpt_path: str,
    text: str | None = None,
    text_pair: str | None = None,
    input: str | None = None,
    target: str | None = None,
    out: str = "explanations",
    overwrite: bool = False,
    n_steps: int = 50,
    trust_remote_code: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """Explain a classifier's predictions word by word: integrated gradients over the input embeddings.

    Writes ``explanations.json`` (one entry per text, or per predicted entity for NER) and ``explanations.html``
    (the words coloured by attribution: red toward the target, blue against it).

    Args:
        ckpt_path: Checkpoint written by ``ftlit fit``: sequence classification or NER.
        text: One text to explain.
        text_pair: The second text of a pair (with ``--text``).
        input: A JSON lines file of texts to explain: ``{"text": ..., "text_pair": ...}`` per line.
        target: Label to explain (default: the predicted one); for NER, the tag explained at each entity.
        out: Folder to write. An existing non-empty folder is an error unless ``overwrite`` is set.
        overwrite: Replace an existing ``out`` folder (atomically).
        n_steps: Integration steps (more: a smaller convergence delta, slower).
        trust_remote_code: Let a model that ships its own Python code (packed in the checkpoint) run it.

    Returns:
        The folder written and its entries.
    """
    if (text is None) == (input is None):
        both = "not both" if text is not None else "one of them"
        raise ConfigError("text", f'give --text "..." or --input file.jsonl, {both}')
    if text_pair is not None and text is None:
        raise ConfigError("text_pair", 'goes with --text; in an --input file, give each row a "text_pair"')
    target_folder = Path(out).expanduser()
    check_target(target_folder, overwrite, {"the checkpoint": Path(ckpt_path)})
    inputs = [Input(text, text_pair, "text", "")] if text is not None else read_inputs(input)
    entries = _explain(ckpt_path, inputs, target, n_steps, trust_remote_code)

    target_folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(target_folder, "tmp")
    tmp.mkdir()
    try:
        (tmp / JSON_FILE).write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / HTML_FILE).write_text(render_html(entries, f"checkpoint: {ckpt_path}"), encoding="utf-8")
        replace_folder(tmp, target_folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target_folder, entries


def build_parser() -> ArgumentParser:
    """The ``ftlit explain`` parser: ``write_explanations``'s signature, with the yes/no options as plain flags."""
    # Texts as given: a `str | None` option would read --text null as None.
    texts = ("text", "text_pair", "target")
    parser = command_parser(write_explanations, "ftlit explain", flags=("overwrite", "trust_remote_code"), skip=texts)
    helps = arg_docs(write_explanations)
    for name in texts:
        parser.add_argument(f"--{name}", type=str, default=None, help=helps.get(name))
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ftlit explain``; bad input exits with one line naming the field (exit code 2)."""
    config = report_errors(lambda: build_parser().parse_args(argv))
    folder, entries = report_errors(
        lambda: write_explanations(
            config.ckpt_path,
            text=config.text,
            text_pair=config.text_pair,
            input=config.input,
            target=config.target,
            out=config.out,
            overwrite=config.overwrite,
            n_steps=config.n_steps,
            trust_remote_code=config.trust_remote_code,
        )
    )
    delta = max((abs(e["delta"]) for e in entries), default=0.0)
    print(
        f"ftlit: explained {len(entries)} prediction(s) of {config.ckpt_path} in {folder} (largest |convergence "
        f"delta| {delta:.4f}: if that is large next to the word scores, raise --n_steps)"
    )
