"""Hydra launcher plugin ``hydra/launcher=decoderlab``: each sweep job in its own child process."""
