"""Taking a trained run away from tenfold: the model with its preprocessing inside, as an ONNX file."""
