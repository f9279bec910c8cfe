"""warmstart: distill a strong teacher into a student, then improve it with RL on verifiable rewards."""

__version__ = "0.1.0"
