"""AutoRisk-TF: self-supervised pre-training on user behaviour sequences."""
