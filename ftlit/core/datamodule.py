"""What every task's data module shares: sources, split carving, the tokenization cache, loaders."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase
from typing_extensions import override

from ftlit import backbone
from ftlit.core import sources
from ftlit.core.samplers import EpochShuffle, LengthGroupedSampler
from ftlit.errors import ConfigError

CACHE_VERSION = 2
# Beside each cache entry, written last: every file's size and sha256 and each split's row count. An entry without
# one (an older ftlit's, or one whose writer died) is rebuilt like a damaged one.
MANIFEST = "ftlit-manifest.json"
# The batch key under which a task's collate puts what the model reads but the backbone does not take (QA's offsets
# and example ids, NER's word ids and texts): the contract between a data module and its model. Everything else in
# a batch is a backbone input (the tokenizer's model_input_names) or a target (labels, answer positions).
META = "meta"
# Models whose position ids start after the padding id (``padding_idx + 1``), so ``pad_token_id + 1`` of their
# ``max_position_embeddings`` are never usable (RoBERTa's 514 hold 512 tokens).
PADDING_OFFSET_MODELS = {
    "camembert",
    "data2vec-text",
    "ibert",
    "layoutlmv3",
    "lilt",
    "longformer",
    "luke",
    "markuplm",
    "mpnet",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
}

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """``$FTLIT_CACHE`` or ``~/.cache/ftlit``."""
    return os.environ.get("FTLIT_CACHE", str(Path("~/.cache/ftlit").expanduser()))


def is_text(feature: Any) -> bool:
    """Whether a column's feature holds strings."""
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def blank_rows(texts: list[str | None]) -> list[int]:
    """The rows whose text is missing, empty or only whitespace: nothing for the model to read."""
    return [row for row, text in enumerate(texts) if text is None or not text.strip()]


def check_texts(field: str, column: str, split: str, ds: datasets.Dataset, blank_fix: str | None = None) -> None:
    """Every row of ``column`` holds text: no empty cells, no numbers (a column of numbers reads as numbers).

    Args:
        field: Config field named in errors.
        column: The text column.
        split: The split's name, for errors.
        ds: The split.
        blank_fix: How to fix empty or whitespace-only texts, which then count as missing too (the error says how
            many); without it only missing cells are refused.
    """
    feature = ds.features[column]
    if not is_text(feature):
        raise ConfigError(field, f"column '{column}' of the {split} split holds {feature}, not text: check the column")
    texts = ds[column]
    if blank_fix is None:
        missing = next((row for row, text in enumerate(texts) if text is None), None)
        if missing is not None:
            raise ConfigError(field, f"row {missing} of the {split} split has no text: fill or drop it")
        return
    blank = blank_rows(texts)
    if blank:
        raise ConfigError(
            field,
            f"row {blank[0]} of the {split} split has no text ({len(blank)} of {len(texts)} rows are empty or blank "
            f"in '{column}'): {blank_fix}",
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, splits: datasets.DatasetDict) -> None:
    """Record a saved cache entry's row counts and every file's size and sha256 in ``folder``: written last, and
    atomically (temp file + rename), so an entry with a manifest was written whole."""
    files = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    manifest = {"rows": {split: len(ds) for split, ds in splits.items()}, "files": files}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)


def cache_damage(folder: Path) -> str | None:
    """Why the cache entry in ``folder`` cannot be trusted (a missing or bad manifest, a missing split or file, a
    size or checksum that differs, a row count that differs), or ``None`` when it is whole.

    Every file is hashed: a few MB for most data sets, once per process.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        rows, files = dict(manifest["rows"]), dict(manifest["files"])
    except FileNotFoundError:
        return "it has no manifest: an older ftlit wrote it, or its writer stopped before the end"
    except (OSError, ValueError, TypeError, KeyError):
        return f"its {MANIFEST} is unreadable"
    for split in rows:
        if not (folder / split).is_dir():
            return f"the {split} split is missing"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, not {expected['bytes']} (truncated or overwritten)"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its sha256 (overwritten)"
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:  # a manifest cannot vouch for what a newer datasets refuses to read
        return f"it does not load ({type(err).__name__})"
    found = {split: len(ds) for split, ds in loaded.items()}
    if found != rows:
        return f"its rows per split are {found}, not {rows}"
    return None


class Columns:
    """Encoded rows as plain columns (what :meth:`TaskDataModule.map_rows` gives for requests), read as a
    ``datasets.Dataset`` is: ``table["input_ids"]`` is a column, ``table[3]`` a row, ``len(table)`` the rows."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = dict(columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self.columns[key]
        return {name: values[key] for name, values in self.columns.items()}


class TaskDataModule(pl.LightningDataModule, ABC):
    """Shared base: subclasses say how to check columns, find labels, encode a split and batch rows (:meth:`collate`:
    the backbone's inputs, the targets, and the task's metadata under ``batch[META]``)."""

    def __init__(
        self,
        tokenizer: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        hub_splits: dict[str, str] | None = None,
        max_length: int = 128,
        pad_to_multiple_of: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 42,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | None = None,
        group_by_length: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        """
        Args:
            tokenizer: Tokenizer name or folder; the CLI links it from ``model.backbone``.
            train_file: Local training file (csv, tsv, json, jsonl or parquet).
            validation_file: Local validation file; without one, ``val_fraction`` of train is held out.
            test_file: Local labelled test file, used by ``ftlit test``.
            predict_file: Local file of unlabelled inputs, used by ``ftlit predict``.
            dataset: Hugging Face Hub dataset name (e.g. ``glue``), instead of local files.
            dataset_config: Hub dataset configuration (e.g. ``sst2``).
            hub_splits: Which Hub split feeds each of ours, e.g. ``{train: train, validation: validation}``;
                default: the dataset's own train/validation/test splits, where present.
            max_length: Truncate inputs to this many tokens.
            pad_to_multiple_of: Pad each batch to a multiple of this (8 suits tensor cores); none pads to the
                longest in the batch.
            val_fraction: Share of train held out for validation when no validation split is given.
            seed: Seed for the validation carve and the training shuffle.
            batch_size: Training batch size per device.
            eval_batch_size: Validation/test/predict batch size per device (default: ``batch_size``).
            num_workers: DataLoader worker processes.
            pin_memory: Pin host memory for faster copies to the GPU.
            cache_dir: Where tokenized splits are cached (default ``$FTLIT_CACHE`` or ``~/.cache/ftlit``).
            group_by_length: Train on batches of similar length (less padding, faster), still in random order.
            trust_remote_code: Let a tokenizer that ships its own Python code run it; the CLI links
                ``model.trust_remote_code``.
        """
        super().__init__()
        self.save_hyperparameters()
        if dataset is None and train_file is None and predict_file is None:
            raise ConfigError("data.train_file", "no data given: set train_file (local) or dataset (Hub name)")
        if dataset is not None and any((train_file, validation_file, test_file)):
            raise ConfigError("data.dataset", "give either a Hub dataset or local labelled files, not both")
        for name, value in (("batch_size", batch_size), ("max_length", max_length)):
            if value < 1:
                raise ConfigError(f"data.{name}", f"must be a positive integer, got {value}")
        for name, value in (("eval_batch_size", eval_batch_size), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{name}", f"must be a positive integer, got {value}")
        if num_workers < 0:
            raise ConfigError("data.num_workers", f"must be >= 0, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError("data.val_fraction", f"must be in [0, 1), got {val_fraction}")
        self.tokenizer_name = tokenizer
        self.from_requests = False  # see for_requests
        self.files = {"train": train_file, "validation": validation_file, "test": test_file, "predict": predict_file}
        self.dataset = dataset
        self.dataset_config = dataset_config
        self.hub_splits = hub_splits
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.group_by_length = group_by_length
        self.trust_remote_code = trust_remote_code
        if pad_to_multiple_of is not None and pad_to_multiple_of > max_length:
            raise ConfigError(
                "data.pad_to_multiple_of",
                f"{pad_to_multiple_of} is above data.max_length={max_length}: every batch would be padded past the "
                "longest row; use a divisor of max_length (8 suits tensor cores) or none",
            )
        self.datasets: datasets.DatasetDict | None = None
        self._validated = False
        self._verified: Path | None = None  # the cache entry this process has checked (once: hashing takes time)

    # --- what a task supplies -------------------------------------------------------------------------------

    @classmethod
    def for_requests(cls, tokenizer: str, **settings: Any) -> TaskDataModule:
        """A data module that reads no file: its inputs come from elsewhere (``ftlit serve``'s requests) and go
        through :meth:`check_split`, :meth:`encode` and :meth:`collate` as a predict file's rows would."""
        data = cls(tokenizer=tokenizer, predict_file="<requests>", **settings)
        data.files["predict"] = None
        data.from_requests = True
        return data

    @classmethod
    def checkpoint_settings(cls, given: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
        """The settings that reading data for a checkpoint's model (test, predict, serve, a resumed fit) takes from
        the checkpoint where ``given`` (the config's, or an export's recorded settings) leaves them to it, e.g. NER's
        ``data.words: auto``. ``saved`` is the checkpoint's data hyperparameters; a key missing there was not
        recorded by the ftlit that wrote it. None by default.
        """
        return {}

    @abstractmethod
    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        """Raise a ConfigError if ``ds`` lacks what the task needs (columns, known labels)."""

    @abstractmethod
    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """Tokenize ``ds`` (and turn its labels into ids); the result is cached on disk."""

    def cache_fields(self) -> dict[str, Any]:
        """Task settings that change the encoded data, folded into the cache key."""
        return {}

    def map_rows(self, ds: datasets.Dataset, split: str, function: Any, **kwargs: Any) -> datasets.Dataset | Columns:
        """Run ``function`` over batches of ``ds``, replacing its columns: the one way a task tokenizes a split.

        ftlit caches the encoded splits itself, under :meth:`cache_key`, so datasets' own cache is not read, and
        the fingerprint it would compute by pickling ``function`` (its closure holds the tokenizer: 0.3 s per
        split for MiniLM) is given instead. ``function`` must still not hold ``self`` (the trainer and model):
        datasets pickles it to run with several processes.

        A data module :meth:`for_requests` calls ``function`` once, directly, and gives plain :class:`Columns`:
        datasets' bookkeeping costs more than tokenizing a request's few rows.
        """
        if self.from_requests:
            indices = list(range(len(ds)))
            return Columns(function(ds.to_dict(), indices) if kwargs.get("with_indices") else function(ds.to_dict()))
        return ds.map(
            function,
            batched=True,
            remove_columns=ds.column_names,
            load_from_cache_file=False,
            new_fingerprint=f"ftlit-{self.cache_key()}-{split}",
            desc=f"Tokenizing {split}",
            **kwargs,
        )

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of encoded rows into a batch: the backbone's inputs and the targets as tensors, and what else
        the task's model reads under ``batch[META]``."""

    def drop_rows(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """The rows of a freshly read split the task keeps, dropped on request before checks, carving and
        tokenization (the default keeps all)."""
        return ds

    @property
    def pairs(self) -> bool:
        """Whether each row is encoded as a pair of texts (the tokenizer then adds more special tokens)."""
        return False

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """Read one local split; a task with its own file format (CoNLL, SQuAD JSON) reads it here.

        Args:
            path: The file.
            field: Config field named in errors (e.g. ``data.train_file``).
        """
        return sources.load_file(path, field, self.datasets_cache)

    @property
    def label_names(self) -> list[str] | None:
        """Label names in id order, linked into the model; ``None`` for tasks without a label set."""
        return None

    # --- shared machinery -----------------------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer_name is None:
            raise ConfigError("data.tokenizer", "no tokenizer: set data.tokenizer (the CLI links model.backbone)")
        tok = backbone.load_tokenizer(self.tokenizer_name, trust_remote_code=self.trust_remote_code)
        self._check_lengths(tok)
        return tok

    def _check_lengths(self, tok: PreTrainedTokenizerBase) -> None:
        """``max_length`` holds at least one token of each text, and no more than the tokenizer and the backbone's
        position embeddings take; padded batches stay within the positions too. Every task's tokenizer passes here.
        """
        special = tok.num_special_tokens_to_add(pair=self.pairs)
        least = special + (2 if self.pairs else 1)
        if self.max_length < least:
            # Below the special tokens the tokenizer stops truncating; at them, every row is [CLS] [SEP].
            what = "a pair of texts" if self.pairs else "a text"
            raise ConfigError(
                "data.max_length",
                f"{self.max_length} leaves no room for text: the tokenizer adds {special} special tokens to {what}, "
                f"so give at least {least}",
            )
        limit = getattr(tok, "model_max_length", None)
        if limit is not None and limit < 1_000_000 and self.max_length > limit:
            raise ConfigError("data.max_length", f"{self.max_length} exceeds the tokenizer's limit {limit}: lower it")
        positions = self._positions()
        if positions is None:
            return
        usable, why = positions
        if self.max_length > usable:
            raise ConfigError(
                "data.max_length",
                f"{self.max_length} is more than the backbone's {usable} positions ({why}): lower it to {usable}",
            )
        multiple = self.pad_to_multiple_of
        padded = -(-self.max_length // multiple) * multiple if multiple else self.max_length
        if padded > usable:
            raise ConfigError(
                "data.pad_to_multiple_of",
                f"{multiple} pads rows of data.max_length={self.max_length} tokens to {padded}, more than the "
                f"backbone's {usable} positions: pick a max_length whose padded length fits, e.g. "
                f"{usable // multiple * multiple}",
            )

    def _positions(self) -> tuple[int, str] | None:
        """How many tokens the backbone's position embeddings take, and where that comes from; ``None`` when its
        config sets no limit (relative or rotary positions) or there is no model config beside the tokenizer."""
        try:
            config = backbone.load_config(
                self.tokenizer_name, "data.tokenizer", trust_remote_code=self.trust_remote_code
            )
        except ConfigError:
            return None  # a tokenizer-only folder: nothing to check, and a backbone that fails to load says so itself
        positions = getattr(config, "max_position_embeddings", None)
        # DeBERTa-v3 adds no absolute positions (position_biased_input false): longer inputs work.
        if not isinstance(positions, int) or getattr(config, "position_biased_input", True) is False:
            return None
        pad = getattr(config, "pad_token_id", None)
        if getattr(config, "model_type", None) in PADDING_OFFSET_MODELS and isinstance(pad, int):
            usable = positions - pad - 1
            return usable, f"max_position_embeddings {positions} less pad_token_id + 1, as {config.model_type} counts"
        return positions, "max_position_embeddings"

    @cached_property
    def raw(self) -> dict[str, datasets.Dataset]:
        """The untokenized splits, with validation carved from train when none was given (not yet checked)."""
        if self.dataset is not None:
            splits = sources.load_hub(self.dataset, self.dataset_config, self.hub_splits, self.datasets_cache)
            # Predicting local inputs with a model trained on a Hub dataset: the predict file is read beside it.
            if self.files["predict"] is not None and "predict" not in splits:
                splits["predict"] = self.load_file(self.files["predict"], "data.predict_file")
        else:
            splits = {s: self.load_file(f, f"data.{s}_file") for s, f in self.files.items() if f is not None}
        splits = {s: self.drop_rows(s, ds) for s, ds in splits.items()}
        if "train" in splits and "validation" not in splits and self.val_fraction > 0:
            rows = len(splits["train"])
            if rows - math.ceil(rows * self.val_fraction) < 1:
                raise ConfigError(
                    "data.val_fraction",
                    f"{rows} training rows leave none to train on once {self.val_fraction} of them are held out for "
                    "validation: give more rows, a validation_file, or val_fraction: 0",
                )
            parts = splits["train"].train_test_split(test_size=self.val_fraction, seed=self.seed)
            splits["train"], splits["validation"] = parts["train"], parts["test"]
        return splits

    def describe_split(self, split: str) -> dict[str, Any]:
        """Where a split's rows came from, for the record: a local file, a Hub dataset's split, or carved from
        train; and how many rows it has."""
        if self.dataset is not None:
            source: dict[str, Any] = {
                "dataset": self.dataset,
                "config": self.dataset_config,
                "split": (self.hub_splits or {}).get(split, split),
            }
        elif self.files.get(split):
            source = {"file": str(Path(self.files[split]).expanduser().resolve())}
        else:
            source = {"carved_from": "train", "fraction": self.val_fraction, "seed": self.seed}
        if split in self.raw:
            source["rows"] = len(self.raw[split])
        return source

    def validate(self) -> None:
        """Check every split before any work is done: empty splits, missing columns, unknown labels."""
        if self._validated:
            return
        for split, ds in self.raw.items():
            if len(ds) == 0:
                raise ConfigError(f"data.{split}_file", f"the {split} split is empty: give it data rows")
            self.check_split(split, ds)
        self._validated = True

    def cache_key(self) -> str:
        """Hash of everything that determines the tokenized splits."""
        source: Any = {s: sources.file_fingerprint(f) for s, f in self.files.items() if f is not None}
        if self.dataset is not None:
            source["hub"] = {"name": self.dataset, "config": self.dataset_config, "splits": self.hub_splits}
        key = {
            "version": CACHE_VERSION,
            "task": type(self).__qualname__,
            "source": source,
            "tokenizer": self._tokenizer_digest,
            "max_length": self.max_length,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            **self.cache_fields(),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

    @cached_property
    def _tokenizer_digest(self) -> str:
        """Hash of the tokenizer's full definition, minus the truncation/padding state that encoding changes
        (computed once: it serialises the whole vocabulary)."""
        spec = json.loads(self.tokenizer.backend_tokenizer.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @property
    def datasets_cache(self) -> str:
        """Where datasets keeps the Arrow copies of the raw files it reads (and a Hub dataset's download): inside
        :attr:`cache_dir`, as every cache a run writes."""
        return str(self.cache_dir / "datasets")

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / self.cache_key()

    @override
    def prepare_data(self) -> None:
        """Tokenize every split once and cache it; a second run with the same key skips all of it, unless the
        cached entry is damaged: it is then rebuilt."""
        target = self.cache_path
        if not self._cache_is_whole(target):
            self._build_cache(target)

    @override
    def setup(self, stage: str | None = None) -> None:
        """Load the cached splits, checked first in every process (other DDP ranks skip ``prepare_data``)."""
        if self.datasets is None:
            target = self.cache_path
            if not self._cache_is_whole(target):
                self._build_cache(target)
            self.datasets = datasets.load_from_disk(str(target))

    def _cache_is_whole(self, target: Path) -> bool:
        """Whether ``target`` holds a whole cache entry; a damaged one is set aside, with one log line."""
        if self._verified == target:
            return True
        if not target.exists():
            return False
        damage = cache_damage(target)
        if damage is None:
            self._verified = target
            return True
        log.warning("ftlit: tokenization cache %s is damaged, rebuilding it: %s", target, damage)
        # Renamed away first, then deleted: another process never sees it half-deleted.
        aside = Path(tempfile.mkdtemp(prefix=".damaged-", dir=self.cache_dir))
        try:
            target.rename(aside / "entry")
        except FileNotFoundError:  # another process set it aside first
            pass
        except OSError:  # not renamable here: delete it in place
            shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        return False

    def _build_cache(self, target: Path) -> None:
        """Check and tokenize every split, and save them with their manifest under ``target``."""
        self.validate()
        encoded = datasets.DatasetDict({s: self.encode(s, ds) for s, ds in self.raw.items()})
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a crash or a second process never sees a half-written cache.
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
        encoded.save_to_disk(str(tmp))
        write_manifest(tmp, encoded)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical (setup checks it)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            self._verified = target

    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        """A loader whose position is saved in checkpoints, sharded by rank when there are several.

        Lightning's own distributed sampler is off (``use_distributed_sampler=False`` in the CLI): it would
        hide the loader's state (mid-epoch resume) and pad evaluation with repeated rows (metrics count them
        twice). Training shards with a seeded ``DistributedSampler`` (Lightning calls ``set_epoch``); evaluation
        and prediction shard without padding, so every row counts exactly once.
        """
        if self.datasets is None or split not in self.datasets:
            field = "data.dataset" if self.dataset else f"data.{split}_file"
            raise ConfigError(field, f"no {split} split: give one to run this stage")
        dataset = self.datasets[split]
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = None
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        if shuffle and self.group_by_length:
            lengths = [len(ids) for ids in dataset["input_ids"]]
            sampler = LengthGroupedSampler(lengths, batch_size, self.seed, num_replicas=world, rank=rank)
        elif shuffle:
            # Each epoch's order is a pure function of (seed, epoch), one process or several: a run resumed from any
            # checkpoint, an epoch's end included, draws the orders the uninterrupted run drew.
            sampler = EpochShuffle(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        elif world > 1:
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False)

    @override
    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    @override
    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("predict", shuffle=False)
