"""ftlit: fine-tune pretrained transformer encoders from one YAML file, with Lightning."""

__version__ = "0.1.0"
