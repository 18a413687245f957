"""Owners' tools: mark model files with a post-training scheme, keep credentials, talk to the
registry. Used by `hallmark watermark`, `register`, `submit`, `report` and `login`.

Modules, each importing only the ones above it:
- `errors`: `OwnerToolError`, the typed failure every function here raises;
- `output`: writing files that must not be overwritten, key files with mode 0600;
- `files`: reading a model file (safetensors, PEFT adapter, ONNX) through `verifier.models`
  and writing the same format back with new weights;
- `arch`: building the owner's own torch module (`package.module:factory`) from weights;
- `onnx_sign`: the output-signature wrapper appended to an existing ONNX graph;
- `marking`: the post-training schemes applied to files (`watermark_file`);
- `config`: registry URL and API token from the environment or a 0600 config file.
"""
