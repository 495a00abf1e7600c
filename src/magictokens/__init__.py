"""magictokens: magic tokens as control inputs of language models."""
__version__ = "0.1.0"
