"""rarft: Refusal-Aware Reinforcement Fine-Tuning for video temporal grounding."""

__version__ = "0.1.0"
