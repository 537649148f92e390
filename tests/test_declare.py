"""What a declaration holds and the checks made from it: types from annotations, TOML values
coerced to them, each setting's own rule, choice and finiteness, with the flag in the message."""

from dataclasses import dataclass

import pytest

from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import declare
from pytorch_cli.settings.declare import setting


@dataclass
class Toy:
    size: int = setting(3, "How many.", rule=(lambda v: v >= 1, "at least 1"))
    mode: str = setting("a", choices=("a", "b"))
    rate: float = setting(0.5, "A rate.")
    old_name_now: float = setting(1.0, aliases=("old_name",))


def test_each_setting_is_checked_against_its_own_declaration():
    declare.check(Toy())
    with pytest.raises(UsageError, match=r"^--size must be at least 1, got 0$"):
        declare.check(Toy(size=0))
    with pytest.raises(UsageError, match=r"^--mode must be one of a\|b, got 'c'$"):
        declare.check(Toy(mode="c"))
    with pytest.raises(UsageError, match=r"^--rate must be a finite number, got nan$"):
        declare.check(Toy(rate=float("nan")))


def test_declared_flags_and_renames():
    assert declare.declared(Toy)["size"].help == "How many."
    assert declare.flag("old_name_now") == "--old-name-now"
    assert declare.renamed(Toy) == {"old_name": "old_name_now"}


def test_optional_fields_take_their_type_or_stay_unset(tmp_path):
    # a field typed `int | None` (resolved from the string annotation) accepts an int from TOML
    # and stays None when the key is absent; TOML has no null, so the file leaves it out
    from dataclasses import dataclass

    @dataclass
    class Later:
        max_steps: "int | None" = None
        lr: float = 0.1

    types = declare.field_types(Later)
    assert types == {"max_steps": (int, type(None)), "lr": (float,)}
    assert declare.coerce(types["max_steps"], "max_steps", 500, "f.toml") == 500
    assert declare.coerce(types["lr"], "lr", 1, "f.toml") == 1.0
    with pytest.raises(UsageError, match="max_steps must be int, got 'many'"):
        declare.coerce(types["max_steps"], "max_steps", "many", "f.toml")
    with pytest.raises(UsageError, match="max_steps must be int, got True"):
        declare.coerce(types["max_steps"], "max_steps", True, "f.toml")


@dataclass
class Limited:
    count: int = setting(2, "How many.", rule=(lambda v: v >= 0, "0 or more"),
                         limit=(64, "more only cost memory"), env="PTRAIN_COUNT")
    seed: int = setting(1)


def test_a_declared_limit_is_checked_after_the_rule_with_its_reason_and_origin():
    declare.check(Limited(count=64))
    with pytest.raises(UsageError, match=r"^--count must be 0 or more, got -1$"):
        declare.check(Limited(count=-1))
    with pytest.raises(UsageError, match=r"^--count must be at most 64 \(more only cost memory\), "
                                         r"got 65 \(from PTRAIN_COUNT\)$"):
        declare.check(Limited(count=65), {"count": "PTRAIN_COUNT"})


def test_integers_beyond_64_bits_are_refused_even_without_a_rule():
    declare.check(Limited(seed=2**63 - 1))
    for huge in (2**63, 10**30, -2**63 - 1):
        with pytest.raises(UsageError, match=r"^--seed must be a 64-bit integer \(at most "
                                             r"9223372036854775807\), got -?\d+$"):
            declare.check(Limited(seed=huge))


def test_a_toml_integer_too_large_for_a_float_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^f.toml: lr must be a finite number, got an integer "
                                         "too large for a float$"):
        declare.coerce((float,), "lr", 10**400, "f.toml")
