"""Fine-tuning the on-device LLM on intervention data (config, data, the Trainer loop). Imports torch,
transformers and peft lazily: only ``fatigue-llm train`` and the tests load them."""
