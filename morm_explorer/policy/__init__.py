"""Policies: causal LMs that write responses.

- `config`: `SamplingConfig` (no torch import);
- `load`: find and load a policy (the packaged SmolLM2-135M-Instruct GGUF is converted once into
  a safetensors folder in the workspace);
- `generate`: sample N responses per prompt, batched and seeded;
- `jobs`: the sampling job that turns samples into a candidate set.

Nothing is imported here, so that importing a light part never loads torch.
"""
