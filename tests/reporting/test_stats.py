"""tomograph.stats(): the default tracer's counters, summed and per backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

import tomograph
from tomograph import config
from tomograph.reporting.transport import TransportBackend
from tomograph.span import Span


class _Discard:
    name = "discard"

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        return [(len(spans), b"")]

    def send(self, payload: bytes) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class SameName(TransportBackend):
    """Two backends can look alike: one URL with and without gzip, or with two tokens, which
    a repr never shows."""

    def __init__(self) -> None:
        super().__init__(_Discard())

    def __repr__(self) -> str:
        return "ZipkinBackend('http://zipkin:9411/api/v2/spans', encoding='json')"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    config.reset()
    yield
    config.reset()


def test_backends_with_the_same_repr_each_keep_their_own_counters() -> None:
    # Keyed by repr alone, the second backend's counters replaced the first's.
    first, second = SameName(), SameName()
    tracer = tomograph.configure(service="svc", backends=[first, second], environ={})
    for _ in range(3):
        with tracer.span("op") as span:
            pass
    first.report(span)  # once more, to the first only
    assert tomograph.flush(5)
    stats = tomograph.stats()
    per_backend = list(stats["backends"].values())
    assert sorted(counts["sent"] for counts in per_backend) == [3, 4]
    assert sum(counts["queued"] for counts in per_backend) == stats["queued"] == 7
