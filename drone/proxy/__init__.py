"""The drone's HTTP/WebSocket reverse proxy.

Every browser byte to a backend passes through here, so the data path is
written on asyncio Protocols: h11 parses what browsers send, a small strict
reader parses what backends answer, response heads are written directly,
bodies stream with flow control both ways, and upgraded connections are copied
as raw bytes.

Modules, by what they own:

- `server`: the listeners and the orderly stop;
- `context`: what every connection of one proxy shares (`ProxyContext`);
- `client`: one browser socket, one request after another;
- `request_reader`: a browser's requests, parsed by h11's own readers;
- `cycle`: one request's facts, shared by its browser side and its exchange;
- `exchange`: one request relayed to a backend and its response back;
- `upstream`: backend sockets and their keep-alive pool;
- `response_reader`: reading a backend's response, incrementally and strictly;
- `response_writer`: response heads and body framing toward the browser;
- `chunked`: the chunked coding, written alike toward both sides;
- `flow`: reading paused while any reason holds, for every socket (`ReadGate`);
- `answers`: the proxy's own responses (404, 502, ...), built once;
- `tunnel`: raw copying both ways after an upgrade;
- `headers`, `auth`: pure decisions about heads and bearer tokens;
- `tls`: certificates and their reload; `redirect`: HTTP → HTTPS;
- `activity`: idle tracking across worker processes (pure);
- `fleet`: the drone process's worker processes; `worker_main`: a worker's own
  main; `control`: the messages between them;
- `metrics`, `timer`.
"""


def compiled() -> bool:
    """Whether the hot modules run compiled (a wheel built with PLANE_COMPILE=1)."""
    from drone.proxy import client

    return not client.__file__.endswith(".py")
