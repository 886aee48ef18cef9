"""medhash model package: data readers, the DaRF encoder, SCH and baseline losses, tie-aware
retrieval metrics, training, OOD stage, and ONNX export. Entry point: `python -m medhash_model`."""
