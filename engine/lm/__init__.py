"""The ACE-Step 1.5 5 Hz LM planner (our implementation; no upstream code).

Modules: `model` (loading a published LM folder, prompts), `tables` + `fsm` (constrained
decoding), `decode` (KV-cached sampling loops with CFG), `generate` (the two-phase run),
`planner` (requests in, plans out, merge back), `tasks` (format / simple mode / understand),
`tiny` (tiny test checkpoints). Importing this package imports nothing heavy.
"""
