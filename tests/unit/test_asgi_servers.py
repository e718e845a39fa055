"""Finding the server's client-gone flag behind a chain of ``send`` wrappers
(:mod:`otel_fileresp._asgi_servers`), and the routes it remembers."""

from __future__ import annotations

from typing import Any

from otel_fileresp import _asgi_servers
from otel_fileresp._asgi_servers import client_gone_flag


class UvicornLikeCycle:
    """A per-request object as uvicorn's: ``disconnected`` and ``response_complete``."""

    def __init__(self) -> None:
        self.disconnected = False
        self.response_complete = False

    async def send(self, message: Any) -> None:
        pass


class HypercornLikeStream:
    """A per-request object as hypercorn's: ``closed`` and ``app_send``."""

    def __init__(self) -> None:
        self.closed = False

    async def app_send(self, message: Any) -> None:
        pass

    async def send(self, message: Any) -> None:
        pass


def middleware(send: Any) -> Any:
    """A middleware's send: a closure over the one it was given."""

    async def wrapped_send(message: Any) -> None:
        await send(message)

    return wrapped_send


def shaped(inner: Any, sends: bool) -> Any:
    """Two functions with one module, qualified name and number of cells:
    one wraps ``inner`` as a send, the other only holds it."""
    if sends:

        async def send_of(message: Any) -> None:
            await send(message)

        send = inner
        return send_of

    async def send_of(message: Any) -> None:  # type: ignore[no-redef]
        held.append(message)

    held: list[Any] = [inner]
    return send_of


def test_the_flag_of_the_server_behind_a_chain_and_of_the_next_response() -> None:
    first = UvicornLikeCycle()
    assert client_gone_flag(middleware(middleware(first.send))) == (first, "disconnected")
    # The next response's chain has the same shape (a remembered route): its own server.
    second = UvicornLikeCycle()
    found = client_gone_flag(middleware(middleware(second.send)))
    assert found is not None and found[0] is second
    second.disconnected = True
    assert getattr(*found) is True


def test_a_remembered_route_to_another_server_is_walked_again() -> None:
    uvicorn_like = UvicornLikeCycle()
    assert client_gone_flag(middleware(uvicorn_like.send)) == (uvicorn_like, "disconnected")
    hypercorn_like = HypercornLikeStream()
    assert client_gone_flag(middleware(hypercorn_like.send)) == (hypercorn_like, "closed")


def test_a_function_named_as_a_remembered_one_is_not_taken_for_it() -> None:
    """Same module, qualified name and cells, another body: the route is
    checked to its server, and a chain that does not end there is walked."""
    server = UvicornLikeCycle()
    assert client_gone_flag(shaped(server.send, sends=True)) == (server, "disconnected")
    assert client_gone_flag(shaped(server.send, sends=False)) is None
    # And the other way round: a chain with no send first is not remembered.
    _asgi_servers._ROUTES.clear()
    assert client_gone_flag(shaped(server.send, sends=False)) is None
    assert client_gone_flag(shaped(server.send, sends=True)) == (server, "disconnected")


def test_no_server_behind_the_chain() -> None:
    async def app_send(message: Any) -> None:
        pass

    assert client_gone_flag(middleware(app_send)) is None
    # Remembered with that very function at its end, and followed again.
    route = _asgi_servers._ROUTES[_asgi_servers._name_of(middleware(app_send))]
    assert route[1]() is app_send  # type: ignore[operator]
    assert client_gone_flag(middleware(app_send)) is None
