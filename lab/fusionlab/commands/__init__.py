"""The lab's commands: one module each with ``main(argv) -> int``, run as ``python -m fusionlab NAME``."""
