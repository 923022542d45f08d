"""What every task shares: the base LightningModule (``module``) and DataModule (``datamodule``) with their data
sources and samplers, model anatomy and the fine-tuning strategies, and the callbacks."""
