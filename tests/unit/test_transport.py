"""The Socket.IO client manager that indexes each client's rooms (ops/transport.py)."""
from __future__ import annotations

import socketio

from ops.transport import Manager


def manager_with_clients(count: int) -> tuple[Manager, list[str]]:
    manager = Manager()
    socketio.Server(client_manager=manager)
    sids = [manager.connect(f"eio-{i}", "/") for i in range(count)]
    return manager, sids


def test_disconnect_leaves_exactly_the_clients_rooms():
    manager, (alice, bob) = manager_with_clients(2)
    manager.enter_room(alice, "/", "visit:1:staff")
    manager.enter_room(alice, "/", "participant:1")
    manager.enter_room(bob, "/", "visit:1:staff")

    manager.disconnect(alice, "/")

    assert dict(manager.rooms["/"]["visit:1:staff"]) == {bob: "eio-1"}
    assert "participant:1" not in manager.rooms["/"]
    assert alice not in manager.rooms["/"][None]
    assert sorted(manager.get_rooms(bob, "/")) == sorted([bob, "visit:1:staff"])


def test_rooms_of_a_client_follow_enter_and_leave():
    manager, (alice,) = manager_with_clients(1)
    manager.enter_room(alice, "/", "visit:2:call")
    manager.leave_room(alice, "/", "visit:2:call")

    assert sorted(manager.get_rooms(alice, "/")) == [alice]
    manager.disconnect(alice, "/")
    assert manager.rooms.get("/", {}) == {}
    assert manager._rooms_of == {}


def test_a_socket_event_request_context_matches_a_route(tmp_path):
    """Each Socket.IO event runs in a request context built from the handshake; a route
    must match it, or every event leaves an exception's traceback for the collector."""
    from app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    upgrade = {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade"}
    for environ in ({}, upgrade):
        with app.test_request_context("/socket.io/?EIO=4&transport=websocket",
                                      environ_base=environ) as context:
            assert context.request.routing_exception is None
    # The middleware still answers the path itself.
    assert app.test_client().get("/socket.io/").status_code == 400
