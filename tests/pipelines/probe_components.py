"""Two trivial components for testing the local runner's checks (KFP reads components from files)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def decide(bless: bool) -> bool:
    """Args:
    bless: The decision to return.
    """
    return bless


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def decide_with_reason(bless: bool) -> NamedTuple("Decision", [("blessed", bool), ("reason", str)]):
    """Args:
    bless: The decision to return.
    """
    from collections import namedtuple

    return namedtuple("Decision", ["blessed", "reason"])(bless, "as asked")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def record(message: str, note: Output[Artifact]) -> None:
    """Args:
    message: Written to the note.
    """
    with open(note.path, "w") as fh:
        fh.write(message)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fail_loudly(reason: str) -> None:
    """Args:
    reason: The error message.
    """
    for i in range(50):
        print(f"progress marker {i:03d}")
    raise ValueError(reason)
