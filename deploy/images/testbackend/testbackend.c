/*
 * testbackend: a small static HTTP/1.1 + WebSocket server used as the session
 * backend in plane's tests. It runs as PID 1 in a FROM-scratch image.
 *
 * Environment:
 *   PORT          port to listen on (default 8080), on 0.0.0.0
 *   EXIT_CODE     if set: sleep EXIT_TIMEOUT ms (default 0), exit with it, never listen
 *   READY_DELAY   ms to wait before listening
 *
 * Routes (any method unless said; the query string is ignored):
 *   /exit/<code>     200 "bye\n", then the process exits with <code>
 *   /crash/<code>    no answer: the connection is reset and the process exits with <code>
 *   GET /bytes/<n>   n bytes of 'x' with Content-Length n, streamed in 64 KiB writes
 *   POST (any other) reads the body (Content-Length or chunked), answers its size in decimal
 *   /sleep/<ms>      answers "slept <ms>\n" after that delay
 *   /stream/<n>      chunked: "chunk 1\n" .. "chunk <n>\n", one every 100 ms
 *   /headers         the request line and headers exactly as received
 *   anything else    "hello from testbackend\n"
 *   Upgrade: websocket (with Sec-WebSocket-Key): 101, then echo messages; ping -> pong;
 *   close -> close with the same status code.
 *
 * Build: build.sh (with the shared HTTP and WebSocket code in ../common)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "ws.h"

#define HEAD_MAX (64 * 1024)      /* request line + headers */
#define IO_CHUNK (64 * 1024)      /* body reads and /bytes writes */
#define LINE_MAX_CHUNKED 8192     /* chunk-size and trailer lines */
#define WS_MAX_MESSAGE (16u << 20) /* reassembled WebSocket message */

static char fill_bytes[IO_CHUNK];

/* ------------------------------------------------------------------ utils */

static void sleep_ms(unsigned long long ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static volatile sig_atomic_t ignore_sigterm = 0; /* IGNORE_SIGTERM=1: only SIGKILL stops it */

static void on_signal(int sig) {
    if (sig == SIGTERM) {
        static const char said[] = "testbackend got SIGTERM\n";
        ssize_t ignored = write(STDOUT_FILENO, said, sizeof said - 1);
        (void)ignored;
        if (ignore_sigterm) {
            return;
        }
    }
    _exit(0);
}

static int env_u64(const char *name, unsigned long long dflt, unsigned long long *out) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        *out = dflt;
        return 0;
    }
    if (parse_u64(v, strlen(v), out) != 0) {
        fprintf(stderr, "testbackend: %s=%s is not a non-negative integer\n", name, v);
        return -1;
    }
    return 0;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int writev_all(int fd, struct iovec *iov, int cnt) {
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Half-close, then drain what the peer still sends (briefly), so that our
 * last bytes are not lost to a reset caused by unread input. */
static void linger_close(int fd) {
    struct timeval tv = {1, 0};
    char scratch[4096];
    size_t drained = 0;
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (drained < (1u << 20)) {
        ssize_t n = recv(fd, scratch, sizeof scratch, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        drained += (size_t)n;
    }
    close(fd);
}

/* ------------------------------------------------------- buffered reading */

typedef struct {
    int fd;
    char *buf; /* HEAD_MAX bytes of input */
    size_t start, end;
    char *head; /* a copy of the current request's head */
    size_t head_len;
    char *scratch; /* IO_CHUNK bytes where discarded bodies land */
} conn_t;

/* Read more input; >0 bytes read, 0 EOF, -1 error, -2 buffer full. */
static ssize_t conn_fill(conn_t *c) {
    if (c->start > 0 && c->end == HEAD_MAX) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    } else if (c->start == c->end) {
        c->start = c->end = 0;
    }
    if (c->end == HEAD_MAX) return -2;
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->end, HEAD_MAX - c->end, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) c->end += (size_t)n;
        return n;
    }
}

static int read_exact(conn_t *c, void *dst, size_t n) {
    char *d = dst;
    size_t have = c->end - c->start;
    size_t take = have < n ? have : n;
    memcpy(d, c->buf + c->start, take);
    c->start += take;
    d += take;
    n -= take;
    while (n > 0) {
        ssize_t r = recv(c->fd, d, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        d += r;
        n -= (size_t)r;
    }
    return 0;
}

static int discard(conn_t *c, unsigned long long n) {
    size_t have = c->end - c->start;
    size_t take = have < n ? have : (size_t)n;
    c->start += take;
    n -= take;
    while (n > 0) {
        ssize_t r = recv(c->fd, c->scratch, n < IO_CHUNK ? (size_t)n : IO_CHUNK, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        n -= (unsigned long long)r;
    }
    return 0;
}

/* A line ending in LF (CR stripped) of at most `max` bytes: 0 ok, -1 EOF/error, -2 too long. */
static int read_line(conn_t *c, const char **line, size_t *len, size_t max) {
    size_t scanned = 0;
    for (;;) {
        char *nl = memchr(c->buf + c->start + scanned, '\n', c->end - c->start - scanned);
        if (nl) {
            *line = c->buf + c->start;
            *len = (size_t)(nl - *line);
            c->start += *len + 1;
            if (*len > 0 && (*line)[*len - 1] == '\r') (*len)--;
            return 0;
        }
        scanned = c->end - c->start;
        if (scanned > max) return -2;
        ssize_t n = conn_fill(c);
        if (n == -2) return -2;
        if (n <= 0) return -1;
    }
}

/* ------------------------------------------------------------- requests */

/* Wait for a complete head: 1 found (c->head filled), 0 clean EOF,
 * -1 EOF/error inside a head, -2 head too large. */
static int read_head(conn_t *c) {
    size_t scan = 0;
    for (;;) {
        size_t blank = http_leading_blank(c->buf + c->start, c->end - c->start);
        if (blank > 0) {
            c->start += blank;
            scan = 0;
        }
        size_t avail = c->end - c->start;
        size_t end = http_head_end(c->buf + c->start, avail, &scan);
        if (end) {
            memcpy(c->head, c->buf + c->start, end);
            c->head_len = end;
            c->start += end;
            return 1;
        }
        size_t before = c->start;
        ssize_t n = conn_fill(c);
        if (n == -2) return -2;
        if (n <= 0) return avail == 0 ? 0 : -1;
        if (c->start != before) { /* compacted: positions moved, rescan */
            scan = 0;
        }
    }
}

/* Read and count the body: 0 ok, -1 connection gone, -2 malformed. */
static int read_body(conn_t *c, const http_req_t *r, unsigned long long *count) {
    *count = 0;
    if (r->has_length) {
        if (discard(c, r->length) != 0) return -1;
        *count = r->length;
        return 0;
    }
    if (!r->chunked) return 0;
    for (;;) {
        const char *line;
        size_t len;
        int rc = read_line(c, &line, &len, LINE_MAX_CHUNKED);
        if (rc == -2) return -2;
        if (rc != 0) return -1;
        unsigned long long size = 0;
        size_t i = 0;
        for (; i < len; i++) {
            char ch = line[i];
            int v;
            if (ch >= '0' && ch <= '9')
                v = ch - '0';
            else if (ch >= 'a' && ch <= 'f')
                v = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F')
                v = ch - 'A' + 10;
            else
                break;
            if (i >= 15) return -2;
            size = size * 16 + (unsigned long long)v;
        }
        if (i == 0) return -2;
        if (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t') return -2;
        if (size == 0) break;
        if (discard(c, size) != 0) return -1;
        *count += size;
        rc = read_line(c, &line, &len, 2);
        if (rc == -1) return -1;
        if (rc != 0 || len != 0) return -2;
    }
    for (;;) { /* trailers, up to the blank line */
        const char *line;
        size_t len;
        int rc = read_line(c, &line, &len, LINE_MAX_CHUNKED);
        if (rc == -2) return -2;
        if (rc != 0) return -1;
        if (len == 0) return 0;
    }
}

/* ------------------------------------------------------------ responses */

static int respond(conn_t *c, const http_req_t *r, int status, const char *reason, const char *ctype,
                   const char *body, size_t blen, int keep) {
    char head[512];
    int hl = http_format_head(head, sizeof head, r, "testbackend", status, reason, ctype, NULL,
                              blen, keep);
    if (hl < 0) return -1;
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, blen}};
    int cnt = (r && r->head_only) || blen == 0 ? 1 : 2;
    return writev_all(c->fd, iov, cnt);
}

static int respond_text(conn_t *c, const http_req_t *r, int status, const char *reason, int keep,
                        const char *fmt, ...) {
    char body[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof body) n = sizeof body - 1;
    return respond(c, r, status, reason, "text/plain", body, (size_t)n, keep);
}

static int bad_request(conn_t *c, int status, const char *reason) {
    return respond_text(c, NULL, status, reason, 0, "%d %s\n", status, reason);
}

/* Does path start with prefix and continue with a decimal number only? */
static int path_number(const http_req_t *r, const char *prefix, unsigned long long *out, int *malformed) {
    size_t pl = strlen(prefix);
    if (r->path_len < pl || memcmp(r->path, prefix, pl) != 0) return 0;
    if (parse_u64(r->path + pl, r->path_len - pl, out) != 0) *malformed = 1;
    return 1;
}

/* ------------------------------------------------------------ WebSocket */

static int ws_send(int fd, int opcode, const uint8_t *payload, size_t len) {
    uint8_t hdr[10];
    size_t hl = ws_frame_header(hdr, opcode, len);
    struct iovec iov[2] = {{hdr, hl}, {(void *)payload, len}};
    return writev_all(fd, iov, len ? 2 : 1);
}

static void ws_close_with(int fd, unsigned code) {
    uint8_t p[2];
    ws_close_code(code, p);
    ws_send(fd, WS_CLOSE, p, 2);
}

/* Echo frames until the peer closes; the caller closes the socket. */
static void ws_loop(conn_t *c) {
    ws_msg_t msg = {0};
    for (;;) {
        uint8_t h[WS_HEADER_MAX];
        ws_frame_t f;
        if (read_exact(c, h, 2) != 0) break;
        size_t hl = ws_header_len(h);
        if (read_exact(c, h + 2, hl - 2) != 0) break;
        long rc = ws_parse_header(h, hl, &f);
        if (rc < 0) {
            ws_close_with(c->fd, (unsigned)-rc);
            break;
        }
        if (f.opcode >= WS_CLOSE) {
            uint8_t ctl[125], answer[2];
            if (read_exact(c, ctl, (size_t)f.len) != 0) break;
            ws_unmask(ctl, (size_t)f.len, f.mask);
            if (f.opcode == WS_CLOSE) { /* answer with the same status code */
                ws_send(c->fd, WS_CLOSE, answer, ws_close_answer(ctl, (size_t)f.len, answer));
                break;
            }
            if (f.opcode == WS_PING && ws_send(c->fd, WS_PONG, ctl, (size_t)f.len) != 0) break;
            continue; /* a pong: nothing to do */
        }
        unsigned refusal = ws_msg_take(&msg, &f, WS_MAX_MESSAGE);
        if (refusal) {
            ws_close_with(c->fd, refusal);
            break;
        }
        if (read_exact(c, msg.data + msg.len, (size_t)f.len) != 0) break;
        ws_unmask(msg.data + msg.len, (size_t)f.len, f.mask);
        msg.len += (size_t)f.len;
        if (f.fin) {
            if (ws_send(c->fd, msg.opcode, msg.data, msg.len) != 0) break;
            ws_msg_reset(&msg);
        }
    }
    ws_msg_free(&msg);
}

static int ws_handshake(conn_t *c, const http_req_t *r) {
    char head[256];
    int n = ws_handshake_head(head, sizeof head, "testbackend", r->ws_key, r->ws_key_len);
    return n < 0 ? -1 : write_all(c->fd, head, (size_t)n);
}

/* ------------------------------------------------------------ the server */

static void die_now(int fd, unsigned long long code, int reset) {
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    printf("testbackend exiting with code %llu (%s)\n", code, reset ? "/crash" : "/exit");
    fflush(stdout);
    fflush(stderr);
    _exit((int)code);
}

/* Serve one request; 1 to keep the connection, 0 to close it gracefully,
 * -1 if the socket is unusable. */
static int serve(conn_t *c) {
    http_req_t r;
    int rc = read_head(c);
    if (rc == 0) return -1;
    if (rc == -1) {
        bad_request(c, 400, "Bad Request");
        return 0;
    }
    if (rc == -2) {
        bad_request(c, 431, "Request Header Fields Too Large");
        return 0;
    }
    if (http_parse_head(c->head, c->head_len, &r) != 0) {
        bad_request(c, 400, "Bad Request");
        return 0;
    }
    if (r.upgrade_ws && r.ws_key) {
        if (ws_handshake(c, &r) != 0) return -1;
        ws_loop(c);
        return 0;
    }
    unsigned long long num = 0, count = 0;
    int malformed = 0;
    if ((r.has_length && r.length > 0) || r.chunked) {
        if (r.expect_continue && r.minor == 1 &&
            write_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
            return -1;
        rc = read_body(c, &r, &count);
        if (rc == -1) return -1;
        if (rc == -2) {
            bad_request(c, 400, "Bad Request");
            return 0;
        }
    }
    int keep = http_keep_alive(&r);
    int is_get = ieq(r.method, r.method_len, "GET") || r.head_only;

    if (path_number(&r, "/exit/", &num, &malformed) && !malformed && num <= 255) {
        respond(c, &r, 200, "OK", "text/plain", "bye\n", 4, 0);
        die_now(c->fd, num, 0);
    }
    if (path_number(&r, "/crash/", &num, &malformed) && !malformed && num <= 255) {
        die_now(c->fd, num, 1);
    }
    if (malformed || num > 255) {
        bad_request(c, 400, "Bad Request");
        return 0;
    }
    if (is_get && path_number(&r, "/bytes/", &num, &malformed)) {
        if (malformed) {
            bad_request(c, 400, "Bad Request");
            return 0;
        }
        char head[512];
        int hl = http_format_head(head, sizeof head, &r, "testbackend", 200, "OK",
                                  "application/octet-stream", NULL, num, keep);
        if (hl < 0 || write_all(c->fd, head, (size_t)hl) != 0) return -1;
        if (!r.head_only) {
            while (num > 0) {
                size_t n = num < IO_CHUNK ? (size_t)num : IO_CHUNK;
                if (write_all(c->fd, fill_bytes, n) != 0) return -1;
                num -= n;
            }
        }
        return keep;
    }
    if (ieq(r.method, r.method_len, "POST")) {
        if (respond_text(c, &r, 200, "OK", keep, "%llu", count) != 0) return -1;
        return keep;
    }
    if (path_number(&r, "/sleep/", &num, &malformed)) {
        if (malformed) {
            bad_request(c, 400, "Bad Request");
            return 0;
        }
        sleep_ms(num);
        if (respond_text(c, &r, 200, "OK", keep, "slept %llu\n", num) != 0) return -1;
        return keep;
    }
    if (path_number(&r, "/stream/", &num, &malformed)) {
        if (malformed) {
            bad_request(c, 400, "Bad Request");
            return 0;
        }
        int chunked = r.minor == 1; /* HTTP/1.0 gets the body delimited by the close */
        if (!chunked) keep = 0;
        char head[256];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nServer: testbackend\r\nContent-Type: text/plain\r\n"
                         "%s%s\r\n",
                         chunked ? "Transfer-Encoding: chunked\r\n" : "",
                         keep ? "" : "Connection: close\r\n");
        if (write_all(c->fd, head, (size_t)n) != 0) return -1;
        if (r.head_only) return keep;
        for (unsigned long long i = 1; i <= num; i++) {
            char chunk[64];
            if (i > 1) sleep_ms(100);
            char line[40];
            int ln = snprintf(line, sizeof line, "chunk %llu\n", i);
            n = chunked ? snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", (unsigned)ln, line)
                        : snprintf(chunk, sizeof chunk, "%s", line);
            if (write_all(c->fd, chunk, (size_t)n) != 0) return -1;
        }
        if (chunked && write_all(c->fd, "0\r\n\r\n", 5) != 0) return -1;
        return keep;
    }
    if (http_path_is(&r, "/headers")) {
        if (respond(c, &r, 200, "OK", "text/plain", c->head, r.raw_len, keep) != 0) return -1;
        return keep;
    }
    if (respond_text(c, &r, 200, "OK", keep, "hello from testbackend\n") != 0) return -1;
    return keep;
}

static void *connection_thread(void *arg) {
    conn_t c;
    memset(&c, 0, sizeof c);
    c.fd = (int)(intptr_t)arg;
    c.buf = malloc(HEAD_MAX);
    c.head = malloc(HEAD_MAX);
    c.scratch = malloc(IO_CHUNK);
    if (c.buf && c.head && c.scratch) {
        int rc;
        while ((rc = serve(&c)) == 1) {
        }
        if (rc == 0) {
            linger_close(c.fd);
            c.fd = -1;
        }
    }
    if (c.fd >= 0) close(c.fd);
    free(c.buf);
    free(c.head);
    free(c.scratch);
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    const char *ignore = getenv("IGNORE_SIGTERM");
    ignore_sigterm = ignore != NULL && strcmp(ignore, "1") == 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    memset(fill_bytes, 'x', sizeof fill_bytes);

    printf("testbackend starting pid=%d\n", (int)getpid());
    fflush(stdout);
    fprintf(stderr, "testbackend stderr hello\n");
    fflush(stderr);

    unsigned long long port, exit_timeout, ready_delay;
    if (env_u64("PORT", 8080, &port) != 0 || port == 0 || port > 65535) {
        fprintf(stderr, "testbackend: PORT must be 1..65535\n");
        return 2;
    }
    const char *exit_code = getenv("EXIT_CODE");
    if (exit_code != NULL && *exit_code != '\0') {
        unsigned long long code;
        if (parse_u64(exit_code, strlen(exit_code), &code) != 0 || code > 255) {
            fprintf(stderr, "testbackend: EXIT_CODE must be 0..255\n");
            return 2;
        }
        if (env_u64("EXIT_TIMEOUT", 0, &exit_timeout) != 0) return 2;
        sleep_ms(exit_timeout);
        printf("testbackend exiting with code %llu (EXIT_CODE)\n", code);
        fflush(stdout);
        _exit((int)code);
    }
    if (env_u64("READY_DELAY", 0, &ready_delay) != 0) return 2;
    sleep_ms(ready_delay);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        perror("testbackend: socket");
        return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("testbackend: bind");
        return 1;
    }
    if (listen(lfd, 1024) != 0) {
        perror("testbackend: listen");
        return 1;
    }
    printf("listening on %llu\n", port);
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) sleep_ms(10); /* EMFILE and friends */
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t tid;
        if (pthread_create(&tid, &attr, connection_thread, (void *)(intptr_t)fd) != 0) close(fd);
    }
}
