"""What every task's data module shares: sources, split carving, the tokenization cache, loaders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler
from transformers import PreTrainedTokenizerBase

from ftlit import backbone
from ftlit.data import sources
from ftlit.data.samplers import LengthGroupedSampler
from ftlit.errors import ConfigError

CACHE_VERSION = 1


def default_cache_dir() -> str:
    """``$FTLIT_CACHE`` or ``~/.cache/ftlit``."""
    return os.environ.get("FTLIT_CACHE", str(Path("~/.cache/ftlit").expanduser()))


def check_texts(field: str, column: str, split: str, ds: datasets.Dataset) -> None:
    """Every row of ``column`` holds text: no empty cells, no numbers (a column of numbers reads as numbers)."""
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise ConfigError(field, f"column '{column}' of the {split} split holds {feature}, not text: check the column")
    missing = next((row for row, text in enumerate(ds[column]) if text is None), None)
    if missing is not None:
        raise ConfigError(field, f"row {missing} of the {split} split has no text: fill or drop it")


class TaskDataModule(pl.LightningDataModule):
    """Shared base: subclasses say how to check columns, find labels and encode a split."""

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
        self.datasets: datasets.DatasetDict | None = None
        self._validated = False

    # --- what a task supplies -------------------------------------------------------------------------------

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        """Raise a ConfigError if ``ds`` lacks what the task needs (columns, known labels)."""
        raise NotImplementedError

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """Tokenize ``ds`` (and turn its labels into ids); the result is cached on disk."""
        raise NotImplementedError

    def cache_fields(self) -> dict[str, Any]:
        """Task settings that change the encoded data, folded into the cache key."""
        return {}

    def map_rows(self, ds: datasets.Dataset, split: str, function: Any, **kwargs: Any) -> datasets.Dataset:
        """Run ``function`` over batches of ``ds``, replacing its columns: the one way a task tokenizes a split.

        ftlit caches the encoded splits itself, under :meth:`cache_key`, so datasets' own cache is not read, and
        the fingerprint it would compute by pickling ``function`` (its closure holds the tokenizer: 0.3 s per
        split for MiniLM) is given instead. ``function`` must still not hold ``self`` (the trainer and model):
        datasets pickles it to run with several processes.
        """
        return ds.map(
            function,
            batched=True,
            remove_columns=ds.column_names,
            load_from_cache_file=False,
            new_fingerprint=f"ftlit-{self.cache_key()}-{split}",
            desc=f"Tokenizing {split}",
            **kwargs,
        )

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of encoded rows into a batch."""
        raise NotImplementedError

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """Read one local split; a task with its own file format (CoNLL, SQuAD JSON) reads it here.

        Args:
            path: The file.
            field: Config field named in errors (e.g. ``data.train_file``).
        """
        return sources.load_file(path, field)

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
        limit = getattr(tok, "model_max_length", None)
        if limit is not None and limit < 1_000_000 and self.max_length > limit:
            raise ConfigError("data.max_length", f"{self.max_length} exceeds the tokenizer's limit {limit}: lower it")
        return tok

    @cached_property
    def raw(self) -> dict[str, datasets.Dataset]:
        """The untokenized splits, with validation carved from train when none was given (not yet checked)."""
        if self.dataset is not None:
            splits = sources.load_hub(self.dataset, self.dataset_config, self.hub_splits)
            # Predicting local inputs with a model trained on a Hub dataset: the predict file is read beside it.
            if self.files["predict"] is not None and "predict" not in splits:
                splits["predict"] = self.load_file(self.files["predict"], "data.predict_file")
        else:
            splits = {s: self.load_file(f, f"data.{s}_file") for s, f in self.files.items() if f is not None}
        if "train" in splits and "validation" not in splits and self.val_fraction > 0:
            parts = splits["train"].train_test_split(test_size=self.val_fraction, seed=self.seed)
            splits["train"], splits["validation"] = parts["train"], parts["test"]
        return splits

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
    def cache_path(self) -> Path:
        return self.cache_dir / self.cache_key()

    def prepare_data(self) -> None:
        """Tokenize every split once and cache it; a second run with the same key skips all of it."""
        target = self.cache_path
        if (target / "dataset_dict.json").is_file():
            return
        self.validate()
        encoded = datasets.DatasetDict({s: self.encode(s, ds) for s, ds in self.raw.items()})
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a crash or a second process never sees a half-written cache.
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
        encoded.save_to_disk(str(tmp))
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = datasets.load_from_disk(str(self.cache_path))

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
        elif world > 1:
            kind = DistributedSampler if shuffle else UnrepeatedDistributedSampler
            sampler = kind(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        elif shuffle:
            # Its own generator: the loader draws a worker seed from its generator at every new epoch, and a shared
            # one would make the next epoch's order depend on whether the run was resumed.
            sampler = StatefulRandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
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

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("predict", shuffle=False)
