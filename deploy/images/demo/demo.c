/*
 * demo: the session backend that `make run` starts, to show what session
 * backends are for. One process holds live state (a counter and a text
 * document) that every browser tab of its URL shares over a WebSocket. It
 * runs as PID 1 in a FROM-scratch image: one thread, nonblocking sockets and
 * epoll, and it exits at once on SIGTERM or SIGINT.
 *
 * Environment:
 *   PORT              port to listen on (default 8080), on 0.0.0.0
 *   PLANE_BACKEND_ID  this backend's ID, shown on the page
 *
 * Routes (GET or HEAD; the query string is ignored):
 *   /          the page (index.html, embedded in the binary)
 *   /healthz   200 "ok"
 *   /ws        the WebSocket (RFC 6455, version 13)
 *   anything else: 404
 *
 * WebSocket messages, all text:
 *   from a tab   "+" and "-" add one to / subtract one from the counter;
 *                "doc:" followed by the whole document replaces the document
 *   to the tabs  JSON objects with a "type":
 *                {"type":"hello","you":7,"backend":"…","started":"2024-05-01T12:00:00Z"}
 *                  first, to the new tab only, then the state as these updates:
 *                {"type":"counter","counter":3}
 *                {"type":"doc","doc":"…","by":7}   (by: the tab that wrote it, 0 for none)
 *                {"type":"clients","clients":2}    (tabs connected)
 *                {"type":"error","message":"…"}    (to one tab whose message was refused)
 *   Every change is sent to every tab, the writer included, in the order the
 *   changes were made.
 *
 * Build: build.sh (with the shared HTTP and WebSocket code in ../common)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "ws.h"

#define HEAD_MAX (16 * 1024)            /* request line + headers */
#define DOC_MAX (64 * 1024)             /* the shared document, in bytes */
#define MESSAGE_MAX (DOC_MAX + 64)      /* a reassembled WebSocket message */
#define IN_MAX (MESSAGE_MAX + WS_HEADER_MAX) /* one whole frame fits */
#define OUT_MAX (8u << 20)              /* queued for one slow peer before it is dropped */
#define READ_CHUNK (64 * 1024)
#define TICK_MS 1000
#define PING_EVERY_MS 20000             /* keep-alive pings to every tab */
#define SILENT_MAX_MS 60000             /* a tab that answers nothing for this long is gone */
#define HTTP_IDLE_MAX_MS 300000         /* an idle keep-alive connection */
#define CLOSING_MAX_MS 3000             /* to finish sending and hear the peer close */
#define SERVER "plane-demo"

/* index.html, embedded (compile.sh puts this folder on the assembler's path) */
__asm__(".section .rodata\n"
        ".global demo_page\n"
        "demo_page:\n"
        ".incbin \"index.html\"\n"
        ".global demo_page_end\n"
        "demo_page_end:\n"
        ".previous\n");
extern const char demo_page[], demo_page_end[];

/* --------------------------------------------------------------- buffers */

typedef struct {
    uint8_t *p;
    size_t start, len, cap; /* the bytes held are p[start .. start + len) */
} buf_t;

static uint8_t *buf_data(const buf_t *b) { return b->p + b->start; }

/* Room for `more` bytes after the data; 0 ok, -1 out of memory. */
static int buf_reserve(buf_t *b, size_t more) {
    if (b->cap - b->start - b->len >= more) return 0;
    if (b->start > 0) {
        memmove(b->p, b->p + b->start, b->len);
        b->start = 0;
        if (b->cap - b->len >= more) return 0;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < more) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_append(buf_t *b, const void *data, size_t n) {
    if (buf_reserve(b, n) != 0) return -1;
    memcpy(b->p + b->start + b->len, data, n);
    b->len += n;
    return 0;
}

static int buf_printf(buf_t *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    return buf_append(b, tmp, (size_t)n);
}

static void buf_consume(buf_t *b, size_t n) {
    b->start += n;
    b->len -= n;
    if (b->len == 0) b->start = 0;
}

static void buf_free(buf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A JSON string (quotes included) of s, which is UTF-8. */
static int json_string(buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, n * 6 + 2) != 0) return -1;
    uint8_t *o = b->p + b->start + b->len;
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (ch == '"' || ch == '\\') {
            o[k++] = '\\';
            o[k++] = ch;
        } else if (ch < 0x20) {
            memcpy(o + k, "\\u00", 4);
            o[k + 4] = (uint8_t)hex[ch >> 4];
            o[k + 5] = (uint8_t)hex[ch & 15];
            k += 6;
        } else {
            o[k++] = ch;
        }
    }
    o[k++] = '"';
    b->len += k;
    return 0;
}

/* ----------------------------------------------------------- connections */

typedef enum {
    HTTP,      /* reading requests */
    WEBSOCKET, /* a tab */
    FLUSHING,  /* sending what is queued, then shutting down our side */
    DRAINING,  /* our side is shut: discarding input until the peer closes */
    DEAD,      /* closed, freed after this round of events */
} conn_state;

typedef struct conn {
    int fd;
    unsigned id; /* for a tab: its number in the protocol and the log */
    conn_state state;
    int peer_closed;
    int watching_out;
    buf_t in, out;
    size_t scan; /* where http_head_end resumes */
    ws_msg_t msg;
    long long last_in_ms, state_since_ms;
    struct conn *prev, *next;
} conn_t;

static struct {
    int epfd, lfd, sfd;
    int accepting;
    conn_t *conns;
    unsigned next_id;
    int tabs, tabs_changed;
    long long counter;
    char doc[DOC_MAX];
    size_t doc_len;
    char backend[256];
    char started[32];
    long long last_ping_ms;
    buf_t frame; /* a message being sent to every tab */
} S;

/* Tokens in epoll's data for the two descriptors that are not connections. */
static char listener_token, signal_token;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("demo: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

static void set_state(conn_t *c, conn_state state) {
    if (c->state == WEBSOCKET && state != WEBSOCKET) {
        S.tabs--;
        S.tabs_changed = 1;
        say("tab %u left; %d connected", c->id, S.tabs);
    }
    c->state = state;
    c->state_since_ms = now_ms();
}

static void conn_drop(conn_t *c) {
    if (c->state == DEAD) return;
    set_state(c, DEAD);
    close(c->fd);
    c->fd = -1;
}

/* Ask epoll for what the connection waits on now. */
static void conn_watch(conn_t *c) {
    int want_out = c->out.len > 0;
    struct epoll_event ev = {.events = (c->peer_closed ? 0u : EPOLLIN) | (want_out ? EPOLLOUT : 0u),
                             .data.ptr = c};
    if (epoll_ctl(S.epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) conn_drop(c);
    c->watching_out = want_out;
}

/* Send what is queued, as far as the socket takes it. */
static void conn_flush(conn_t *c) {
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, buf_data(&c->out), c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_drop(c);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (c->out.len == 0 && c->state == FLUSHING) {
        if (c->peer_closed) {
            conn_drop(c);
            return;
        }
        shutdown(c->fd, SHUT_WR);
        set_state(c, DRAINING);
    }
    if (c->watching_out != (c->out.len > 0)) conn_watch(c);
}

/* Queue bytes for the peer (nothing once the connection is closing). */
static void conn_queue(conn_t *c, const void *data, size_t n) {
    if (c->state != HTTP && c->state != WEBSOCKET) return;
    if (c->out.len + n > OUT_MAX) {
        say("dropping connection %u: it reads too slowly", c->id);
        conn_drop(c);
        return;
    }
    if (buf_append(&c->out, data, n) != 0) conn_drop(c);
}

/* Stop taking requests or messages; close once what is queued is sent. */
static void conn_finish(conn_t *c) {
    if (c->state != HTTP && c->state != WEBSOCKET) return;
    set_state(c, FLUSHING);
    conn_flush(c);
}

/* ------------------------------------------------------------ WebSocket */

static void ws_queue(conn_t *c, int opcode, const void *payload, size_t len) {
    uint8_t hdr[10];
    conn_queue(c, hdr, ws_frame_header(hdr, opcode, len));
    conn_queue(c, payload, len);
}

static void ws_fail(conn_t *c, unsigned code) {
    uint8_t payload[2];
    ws_close_code(code, payload);
    ws_queue(c, WS_CLOSE, payload, sizeof payload);
    conn_finish(c);
}

/* Frame S.frame's JSON (after its WS_HEADER_MAX reserved bytes) as one text message. */
static const uint8_t *frame_json(size_t *len) {
    uint8_t hdr[10];
    size_t payload = S.frame.len - WS_HEADER_MAX;
    size_t hl = ws_frame_header(hdr, WS_TEXT, payload);
    uint8_t *start = buf_data(&S.frame) + WS_HEADER_MAX - hl;
    memcpy(start, hdr, hl);
    *len = hl + payload;
    return start;
}

/* Start a JSON message in S.frame. */
static void frame_begin(void) {
    static const uint8_t room[WS_HEADER_MAX];
    S.frame.start = S.frame.len = 0;
    buf_append(&S.frame, room, sizeof room);
}

static void send_frame(conn_t *only) {
    size_t len;
    const uint8_t *data = frame_json(&len);
    if (only) {
        conn_queue(only, data, len);
        return;
    }
    for (conn_t *c = S.conns; c; c = c->next)
        if (c->state == WEBSOCKET) conn_queue(c, data, len);
}

static void send_counter(conn_t *only) {
    frame_begin();
    buf_printf(&S.frame, "{\"type\":\"counter\",\"counter\":%lld}", S.counter);
    send_frame(only);
}

static void send_doc(conn_t *only, unsigned by) {
    frame_begin();
    buf_printf(&S.frame, "{\"type\":\"doc\",\"by\":%u,\"doc\":", by);
    json_string(&S.frame, S.doc, S.doc_len);
    buf_append(&S.frame, "}", 1);
    send_frame(only);
}

static void send_tabs(void) {
    frame_begin();
    buf_printf(&S.frame, "{\"type\":\"clients\",\"clients\":%d}", S.tabs);
    send_frame(NULL);
}

static void send_error(conn_t *c, const char *message) {
    frame_begin();
    buf_printf(&S.frame, "{\"type\":\"error\",\"message\":");
    json_string(&S.frame, message, strlen(message));
    buf_append(&S.frame, "}", 1);
    send_frame(c);
}

static void send_hello(conn_t *c) {
    frame_begin();
    buf_printf(&S.frame, "{\"type\":\"hello\",\"you\":%u,\"backend\":", c->id);
    json_string(&S.frame, S.backend, strlen(S.backend));
    buf_printf(&S.frame, ",\"started\":\"%s\"}", S.started);
    send_frame(c);
}

/* A whole message from a tab. */
static void on_message(conn_t *c, int opcode, const uint8_t *p, size_t n) {
    if (opcode != WS_TEXT) {
        send_error(c, "this backend takes text messages only");
        return;
    }
    if (!ws_utf8_valid(p, n)) {
        ws_fail(c, WS_INVALID_DATA);
        return;
    }
    if (n == 1 && (p[0] == '+' || p[0] == '-')) {
        S.counter += p[0] == '+' ? 1 : -1;
        send_counter(NULL);
    } else if (n >= 4 && memcmp(p, "doc:", 4) == 0) {
        if (n - 4 > DOC_MAX) {
            send_error(c, "the document is limited to 64 KiB");
            send_doc(c, c->id); /* the text as it stands, in answer to this edit */
            return;
        }
        memcpy(S.doc, p + 4, n - 4);
        S.doc_len = n - 4;
        send_doc(NULL, c->id);
    } else {
        send_error(c, "unknown message: send \"+\", \"-\" or \"doc:\" and the text");
    }
}

static void on_control(conn_t *c, const ws_frame_t *f, const uint8_t *p, size_t n) {
    if (f->opcode == WS_CLOSE) {
        uint8_t answer[2];
        ws_queue(c, WS_CLOSE, answer, ws_close_answer(p, n, answer));
        conn_finish(c);
    } else if (f->opcode == WS_PING) {
        ws_queue(c, WS_PONG, p, n);
    }
}

/* Take the whole frames the input holds. */
static void ws_serve(conn_t *c) {
    while (c->state == WEBSOCKET) {
        ws_frame_t f;
        long hl = ws_parse_header(buf_data(&c->in), c->in.len, &f);
        if (hl < 0) {
            ws_fail(c, (unsigned)-hl);
            return;
        }
        if (hl == 0) return;
        if (f.opcode < WS_CLOSE && f.len > MESSAGE_MAX) {
            ws_fail(c, WS_TOO_BIG);
            return;
        }
        if (c->in.len - (size_t)hl < f.len) return; /* the rest is on its way */
        uint8_t *payload = buf_data(&c->in) + hl;
        size_t n = (size_t)f.len;
        ws_unmask(payload, n, f.mask);
        if (f.opcode >= WS_CLOSE) {
            on_control(c, &f, payload, n);
        } else if (f.fin && f.opcode != WS_CONTINUATION && !c->msg.opcode) {
            on_message(c, f.opcode, payload, n); /* unfragmented: no copy */
        } else {
            unsigned refusal = ws_msg_take(&c->msg, &f, MESSAGE_MAX);
            if (refusal) {
                ws_fail(c, refusal);
                return;
            }
            memcpy(c->msg.data + c->msg.len, payload, n);
            c->msg.len += n;
            if (f.fin) {
                on_message(c, c->msg.opcode, c->msg.data, c->msg.len);
                ws_msg_reset(&c->msg);
            }
        }
        buf_consume(&c->in, (size_t)hl + n);
    }
}

/* ----------------------------------------------------------------- HTTP */

static void respond(conn_t *c, const http_req_t *r, int status, const char *reason,
                    const char *ctype, const char *extra, const char *body, size_t len,
                    int keep) {
    char head[1024];
    int hl =
        http_format_head(head, sizeof head, r, SERVER, status, reason, ctype, extra, len, keep);
    if (hl < 0) {
        conn_drop(c);
        return;
    }
    conn_queue(c, head, (size_t)hl);
    if (!(r && r->head_only)) conn_queue(c, body, len);
    if (!keep) conn_finish(c);
}

static void respond_text(conn_t *c, const http_req_t *r, int status, const char *reason,
                         const char *extra, const char *text, int keep) {
    respond(c, r, status, reason, "text/plain; charset=utf-8", extra, text, strlen(text), keep);
}

static void upgrade(conn_t *c, const http_req_t *r) {
    char head[256];
    int n = ws_handshake_head(head, sizeof head, SERVER, r->ws_key, r->ws_key_len);
    if (n < 0) {
        conn_drop(c);
        return;
    }
    conn_queue(c, head, (size_t)n);
    if (c->state != HTTP) return;
    set_state(c, WEBSOCKET);
    c->id = ++S.next_id;
    S.tabs++;
    S.tabs_changed = 1;
    say("tab %u connected; %d connected", c->id, S.tabs);
    send_hello(c);
    send_counter(c);
    send_doc(c, 0);
}

/* One request whose head is in r; the connection's state says what follows. */
static void route(conn_t *c, const http_req_t *r) {
    int keep = http_keep_alive(r);
    if (r->chunked || (r->has_length && r->length > 0)) keep = 0; /* bodies are not read */
    int get = ieq(r->method, r->method_len, "GET") || r->head_only;
    int known = http_path_is(r, "/") || http_path_is(r, "/healthz") || http_path_is(r, "/ws");
    if (!known) {
        respond_text(c, r, 404, "Not Found", NULL, "not found\n", keep);
    } else if (!get) {
        respond_text(c, r, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                     "method not allowed\n", keep);
    } else if (http_path_is(r, "/")) {
        respond(c, r, 200, "OK", "text/html; charset=utf-8", "Cache-Control: no-store\r\n",
                demo_page, (size_t)(demo_page_end - demo_page), keep);
    } else if (http_path_is(r, "/healthz")) {
        respond_text(c, r, 200, "OK", "Cache-Control: no-store\r\n", "ok\n", keep);
    } else if (!r->upgrade_ws || !r->ws_key || r->head_only ||
               !ieq(r->ws_version, r->ws_version_len, "13")) {
        respond_text(c, r, 426, "Upgrade Required",
                     "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                     "this path takes WebSocket connections (version 13)\n", keep);
    } else {
        upgrade(c, r);
    }
}

/* Answer the whole requests the input holds; after an upgrade, its frames. */
static void http_serve(conn_t *c) {
    while (c->state == HTTP) {
        size_t blank = http_leading_blank((const char *)buf_data(&c->in), c->in.len);
        if (blank > 0) {
            buf_consume(&c->in, blank);
            c->scan = 0;
        }
        size_t end = http_head_end((const char *)buf_data(&c->in), c->in.len, &c->scan);
        if (end == 0) {
            if (c->in.len >= HEAD_MAX)
                respond_text(c, NULL, 431, "Request Header Fields Too Large", NULL,
                             "request head too large\n", 0);
            return;
        }
        http_req_t r;
        if (http_parse_head((const char *)buf_data(&c->in), end, &r) != 0) {
            respond_text(c, NULL, 400, "Bad Request", NULL, "bad request\n", 0);
            return;
        }
        route(c, &r);
        buf_consume(&c->in, end);
        c->scan = 0;
    }
    if (c->state == WEBSOCKET) ws_serve(c);
}

/* --------------------------------------------------------------- events */

static void conn_readable(conn_t *c) {
    int discard = c->state == FLUSHING || c->state == DRAINING;
    size_t limit = c->state == HTTP ? HEAD_MAX : IN_MAX;
    if (discard) c->in.start = c->in.len = 0;
    size_t room = limit > c->in.len ? limit - c->in.len : 0;
    if (room > READ_CHUNK) room = READ_CHUNK;
    if (room == 0 || buf_reserve(&c->in, room) != 0) { /* cannot happen with whole frames */
        conn_drop(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.p + c->in.start + c->in.len, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) conn_drop(c);
        return;
    }
    if (n == 0) { /* the peer is done sending */
        c->peer_closed = 1;
        if (c->state == HTTP && c->out.len > 0) {
            conn_finish(c);
            conn_watch(c);
        } else {
            conn_drop(c);
        }
        return;
    }
    c->last_in_ms = now_ms();
    if (discard) {
        c->in.len = 0;
        return;
    }
    c->in.len += (size_t)n;
    if (c->state == HTTP)
        http_serve(c);
    else
        ws_serve(c);
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(S.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: stop accepting until the next tick */
                struct epoll_event ev = {.events = 0, .data.ptr = &listener_token};
                epoll_ctl(S.epfd, EPOLL_CTL_MOD, S.lfd, &ev);
                S.accepting = 0;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN};
        if (c) ev.data.ptr = c;
        if (!c || epoll_ctl(S.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->state = HTTP;
        c->last_in_ms = c->state_since_ms = now_ms();
        c->next = S.conns;
        if (S.conns) S.conns->prev = c;
        S.conns = c;
    }
}

/* Free the connections closed in this round. */
static void sweep(void) {
    conn_t *c = S.conns;
    while (c) {
        conn_t *next = c->next;
        if (c->state == DEAD) {
            if (c->prev)
                c->prev->next = next;
            else
                S.conns = next;
            if (next) next->prev = c->prev;
            buf_free(&c->in);
            buf_free(&c->out);
            ws_msg_free(&c->msg);
            free(c);
        }
        c = next;
    }
}

/* Timed work: pings, silent tabs, stuck and idle connections, a paused listener. */
static void tick(long long now) {
    int ping = now - S.last_ping_ms >= PING_EVERY_MS;
    if (ping) S.last_ping_ms = now;
    for (conn_t *c = S.conns; c; c = c->next) {
        long long quiet = now - c->last_in_ms, in_state = now - c->state_since_ms;
        if (c->state == WEBSOCKET && quiet >= SILENT_MAX_MS) {
            say("tab %u went silent", c->id);
            conn_drop(c);
        } else if (c->state == WEBSOCKET && ping) {
            ws_queue(c, WS_PING, NULL, 0);
            conn_flush(c);
        } else if (c->state == HTTP && quiet >= HTTP_IDLE_MAX_MS) {
            conn_drop(c);
        } else if ((c->state == FLUSHING || c->state == DRAINING) && in_state >= CLOSING_MAX_MS) {
            conn_drop(c);
        }
    }
    if (!S.accepting) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_token};
        if (epoll_ctl(S.epfd, EPOLL_CTL_MOD, S.lfd, &ev) == 0) S.accepting = 1;
    }
}

/* SIGTERM or SIGINT: tell every tab, then exit. */
static void stop(int sig) {
    say("%s: stopping with %d tab(s) connected", sig == SIGTERM ? "SIGTERM" : "SIGINT", S.tabs);
    uint8_t payload[2];
    ws_close_code(WS_GOING_AWAY, payload);
    for (conn_t *c = S.conns; c; c = c->next) {
        if (c->state != WEBSOCKET) continue;
        ws_queue(c, WS_CLOSE, payload, sizeof payload);
        conn_flush(c); /* one try: the socket takes it or the tab reconnects anyway */
    }
    fflush(stdout);
    exit(0);
}

/* ---------------------------------------------------------------- setup */

static int listen_on(unsigned port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1024) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void take_environment(void) {
    const char *id = getenv("PLANE_BACKEND_ID");
    if (id && strlen(id) < sizeof S.backend && ws_utf8_valid((const uint8_t *)id, strlen(id)))
        strcpy(S.backend, id);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(S.started, sizeof S.started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* as many connections as the hard limit allows */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned long long port = 8080;
    const char *port_env = getenv("PORT");
    if (port_env && *port_env &&
        (parse_u64(port_env, strlen(port_env), &port) != 0 || port == 0 || port > 65535)) {
        fprintf(stderr, "demo: PORT must be 1..65535, not %s\n", port_env);
        return 2;
    }
    take_environment();

    /* the signals arrive through a descriptor; blocked, they are never lost,
     * even to PID 1, which the kernel spares signals it has no handler for */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    S.sfd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
    S.epfd = epoll_create1(EPOLL_CLOEXEC);
    S.lfd = listen_on((unsigned)port);
    if (S.sfd < 0 || S.epfd < 0 || S.lfd < 0) {
        perror("demo: starting");
        return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_token};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signal_token};
    if (epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.lfd, &ev) != 0 ||
        epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.sfd, &sev) != 0) {
        perror("demo: epoll");
        return 1;
    }
    S.accepting = 1;
    S.last_ping_ms = now_ms();
    say("backend %s listening on port %llu", *S.backend ? S.backend : "(no PLANE_BACKEND_ID)",
        port);

    struct epoll_event events[128];
    long long last_tick = now_ms();
    for (;;) {
        int n = epoll_wait(S.epfd, events, 128, TICK_MS);
        if (n < 0 && errno != EINTR) {
            perror("demo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *token = events[i].data.ptr;
            if (token == &signal_token) {
                struct signalfd_siginfo info;
                if (read(S.sfd, &info, sizeof info) == (ssize_t)sizeof info)
                    stop((int)info.ssi_signo);
                continue;
            }
            if (token == &listener_token) {
                accept_all();
                continue;
            }
            conn_t *c = token;
            if (c->state == DEAD) continue;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_readable(c);
            if (c->state != DEAD && (events[i].events & EPOLLOUT)) conn_flush(c);
        }
        long long now = now_ms();
        if (now - last_tick >= TICK_MS) {
            tick(now);
            last_tick = now;
        }
        if (S.tabs_changed) {
            S.tabs_changed = 0;
            send_tabs();
        }
        for (conn_t *c = S.conns; c; c = c->next)
            if (c->out.len > 0 && !c->watching_out && c->state != DEAD) conn_flush(c);
        sweep();
    }
}
