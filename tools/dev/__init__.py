"""Developers' tools: speed benchmarks (ours, timm's and side by side), the mutation check, timm's reference
figures and the straightforward reference of the authors' augmentation; users' tools are in tools/."""
