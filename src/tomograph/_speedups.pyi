from collections.abc import Callable
from typing import Any

def setup(
    span_type: type, names: dict[str, Any], /
) -> tuple[Callable[..., Any], Any, Any, Any, Any, Any, Any]: ...
def use_tracer_layout(tracer_type: type, /) -> None: ...
