"""placeholder"""

from __future__ import annotations

from typing import Any


class GraphQLSource:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass
