"""LLMdoctor (theory.md §6, arXiv 2601.10416): pairs → token rewards → TFPO doctor → guided decoding.

A pure library: no Django import; torch, transformers and peft are imported inside functions, so
importing this package stays cheap. Modules:

- ``pairs``: preference pairs from a population or from judgments; pairs CSV.
- ``rewards``: token rewards from the frozen patient under a positive and a negative system prompt.
- ``network``: the doctor (LoRA on a copy of the patient, or a small LM) with its value head.
- ``tfpo``: the subtrajectory-balance + value-hinge training loop, checkpoints, hash, resume.
- ``losses``: the SubTB loss and the value hinges (per token, or on the mean value), on tensors.
- ``curve``: a training history as a small inline SVG.
- ``guided``: decoding with several doctors, α·log π_patient + Σ β_j·log π_doctor_j.

See docs/llmdoctor.md.
"""

from __future__ import annotations
