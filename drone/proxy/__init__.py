"""The drone's HTTP/WebSocket reverse proxy.

Every browser byte to a backend passes through here, so the data path is
written on asyncio Protocols: h11 parses what browsers send, a small strict
reader parses what backends answer, response heads are written directly,
bodies stream with flow control both ways, and upgraded connections are copied
as raw bytes.

Modules: `server` (listeners, shutdown), `client` (one browser socket),
`exchange` (one request relayed to a backend), `upstream` (backend sockets and
their keep-alive pool), `response` (reading a backend's response), `writer`
(response heads and body framing toward the browser), `tunnel`
(raw copying after an upgrade), `headers` and `auth` (pure decisions about
heads and tokens), `responses` (the proxy's own answers), `tls` (certificates
and their reload), `redirect` (HTTP → HTTPS), `metrics`, `timer`.
"""
