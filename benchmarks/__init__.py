"""Speed, parity and accuracy reports; run each as `python -m benchmarks.<name>` from the
repository root. Shared helpers: benchmarks.common."""
