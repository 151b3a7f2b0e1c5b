"""A trained network outside the training framework: its measured speed (``speed.py``) and its export to
TorchScript and ONNX (``export.py``). Plain torch: nothing here imports Lightning."""
