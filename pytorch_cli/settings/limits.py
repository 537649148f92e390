"""The rules settings share and the limits they keep to: (test, what the error message says
the value must be), and the most a setting takes, with why. The declarations in config.py use
them."""

from __future__ import annotations

# the rules settings share: (test, what the error message says the value must be)
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
POSITIVE = (lambda v: v > 0, "greater than 0")
NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
OFF_OR_MORE = (lambda v: v >= 0, "0 (off) or more")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_OPEN = (lambda v: 0 <= v < 1, "in [0, 1)")
# a path is written into config.toml and one-line messages: no NUL, newline...
PATH = (lambda v: not any(ord(c) < 32 or ord(c) == 127 for c in v),
        "a path without control characters")
# torch.manual_seed takes [-2**63, 2**64-1] but maps a negative seed onto a large one; TOML's
# integers (config.toml) are signed 64-bit: the seeds both take without aliasing
SEED_RANGE = (lambda v: 0 <= v <= 2**63 - 1, "in [0, 2**63-1] (64-bit seeds, as torch and TOML "
              "take them)")

# limits (the most a setting takes, and why): beyond them a value is a typo or breaks something
MAX_EPOCHS = 1_000_000  # beyond any schedule; epochs x steps stays an exact count in a float
# recipes train below ~10 (the tests diverge on purpose at 1e6); near 3e38 torch cannot
# even apply a rate to float32 weights
MAX_LR = 1_000_000
MAX_FACTOR = 1000  # --norm-lr-scale, and 1/it: recipes use up to 64; lr x it stays in float32
MAX_DECAY = 10  # AdamW's are 0.01-0.3, SGD's 5e-4; lr x decay near 1 zeroes the weights
# DataLoader processes beyond the machine's cores only cost memory (each imports torch and
# holds a share of the batches in flight); 64 is more than the largest useful count
MAX_WORKERS = 64
