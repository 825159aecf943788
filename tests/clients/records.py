"""The deterministic record set shared by the producer scripts and the Rust tests.

Record i has key ``key-<i>``, a value that grows with i (so codecs have something to compress),
three headers (one with an empty and one with a null value) and, when a timestamp base is given,
timestamp ``base + i``. crates/fjord/tests/common/records.rs mirrors this; keep them in sync.
"""


def key(i):
    return f"key-{i}"


def value(i, pad=0):
    return f"value-{i}-" + "abcdefghij" * (i % 20) + "z" * pad


def headers(i):
    return [("idx", str(i).encode()), ("h-empty", b""), ("h-null", None)]


def text(b):
    """bytes -> str for JSON output (None stays None)."""
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return b.decode("utf-8", "backslashreplace")
