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
 * Build: gcc -std=c11 -O2 -static -pthread -Wall -Wextra -o testbackend testbackend.c
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

#define HEAD_MAX (64 * 1024)      /* request line + headers */
#define IO_CHUNK (64 * 1024)      /* body reads and /bytes writes */
#define LINE_MAX_CHUNKED 8192     /* chunk-size and trailer lines */
#define WS_MAX_MESSAGE (16u << 20) /* reassembled WebSocket message */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
static char fill_bytes[IO_CHUNK];

/* ------------------------------------------------------------------ utils */

static void sleep_ms(unsigned long long ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void on_signal(int sig) {
    (void)sig;
    _exit(0);
}

/* Parse a whole decimal number (no sign, no spaces); 0 on success. */
static int parse_u64(const char *s, size_t n, unsigned long long *out) {
    unsigned long long v = 0;
    if (n == 0 || n > 19) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    *out = v;
    return 0;
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

static int ieq(const char *a, size_t an, const char *b) {
    size_t bn = strlen(b);
    return an == bn && strncasecmp(a, b, an) == 0;
}

static void trim(const char **s, size_t *n) {
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

/* Does the comma-separated list (s, n) hold `token` (case-insensitive)? */
static int has_token(const char *s, size_t n, const char *token) {
    while (n > 0) {
        const char *comma = memchr(s, ',', n);
        size_t len = comma ? (size_t)(comma - s) : n;
        const char *t = s;
        size_t tn = len;
        trim(&t, &tn);
        if (ieq(t, tn, token)) return 1;
        if (!comma) break;
        s += len + 1;
        n -= len + 1;
    }
    return 0;
}

/* The last element of a comma-separated list, trimmed. */
static void last_token(const char *s, size_t n, const char **t, size_t *tn) {
    const char *p = s + n;
    while (p > s && p[-1] != ',') p--;
    *t = p;
    *tn = (size_t)(s + n - p);
    trim(t, tn);
}

/* ------------------------------------------------------- SHA-1 and base64 */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t block[64];
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, data + i);
    size_t rest = len - i;
    memset(block, 0, sizeof block);
    memcpy(block, data + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, sizeof block);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) block[63 - j] = (uint8_t)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (uint8_t)(h[j] >> 24);
        out[4 * j + 1] = (uint8_t)(h[j] >> 16);
        out[4 * j + 2] = (uint8_t)(h[j] >> 8);
        out[4 * j + 3] = (uint8_t)h[j];
    }
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* out must hold 29 bytes */
static void ws_accept(const char *key, size_t keylen, char *out) {
    uint8_t buf[128 + sizeof WS_GUID];
    uint8_t digest[20];
    memcpy(buf, key, keylen);
    memcpy(buf + keylen, WS_GUID, sizeof WS_GUID - 1);
    sha1(buf, keylen + sizeof WS_GUID - 1, digest);
    base64(digest, sizeof digest, out);
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

typedef struct {
    const char *method, *target, *path;
    size_t method_len, target_len, path_len;
    int minor; /* HTTP/1.<minor> */
    int head_only;
    int has_length, chunked;
    unsigned long long length;
    int conn_close, conn_keepalive;
    int upgrade_ws;
    const char *ws_key;
    size_t ws_key_len;
    int expect_continue;
    size_t raw_len; /* head without the blank line, for /headers */
} req_t;

static int is_tchar(unsigned char ch) {
    if (ch >= 'a' && ch <= 'z') return 1;
    if (ch >= 'A' && ch <= 'Z') return 1;
    if (ch >= '0' && ch <= '9') return 1;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Wait for a complete head: 1 found (c->head filled), 0 clean EOF,
 * -1 EOF/error inside a head, -2 head too large. */
static int read_head(conn_t *c) {
    size_t scan = 0;
    for (;;) {
        /* tolerate empty lines before a request line */
        while (c->start < c->end && (c->buf[c->start] == '\r' || c->buf[c->start] == '\n')) {
            c->start++;
            scan = 0;
        }
        size_t avail = c->end - c->start;
        const char *b = c->buf + c->start;
        for (size_t i = scan; i < avail; i++) {
            if (b[i] != '\n') continue;
            size_t end = 0;
            if (i + 1 < avail && b[i + 1] == '\n')
                end = i + 2;
            else if (i + 2 < avail && b[i + 1] == '\r' && b[i + 2] == '\n')
                end = i + 3;
            else if (i + 2 >= avail)
                break; /* undecided: need more input */
            if (end) {
                memcpy(c->head, b, end);
                c->head_len = end;
                c->start += end;
                return 1;
            }
        }
        scan = avail > 2 ? avail - 2 : 0;
        size_t before = c->start;
        ssize_t n = conn_fill(c);
        if (n == -2) return -2;
        if (n <= 0) return avail == 0 ? 0 : -1;
        if (c->start != before) { /* compacted: positions moved, rescan */
            scan = 0;
        }
    }
}

/* Parse c->head into r; 0 ok, -1 bad request. */
static int parse_head(conn_t *c, req_t *r) {
    const char *p = c->head, *end = c->head + c->head_len;
    memset(r, 0, sizeof *r);

    /* raw_len: drop the terminating blank line */
    r->raw_len = c->head_len - 1;
    if (r->raw_len > 0 && c->head[r->raw_len - 1] == '\r') r->raw_len--;

    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)(nl - p);
    if (n > 0 && p[n - 1] == '\r') n--;
    /* request line: method SP target SP HTTP/1.x */
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i])) i++;
    if (i == 0 || i >= n || p[i] != ' ') return -1;
    r->method = p;
    r->method_len = i;
    size_t t0 = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && p[i] != 0x7f) i++;
    if (i == t0 || i >= n || p[i] != ' ') return -1;
    r->target = p + t0;
    r->target_len = i - t0;
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0) return -1;
    if (p[i + 7] == '0')
        r->minor = 0;
    else if (p[i + 7] == '1')
        r->minor = 1;
    else
        return -1;
    r->head_only = ieq(r->method, r->method_len, "HEAD");

    /* path: the target without its query; absolute-form keeps only its path */
    const char *path = r->target;
    size_t plen = r->target_len;
    if (plen > 7 && (strncasecmp(path, "http://", 7) == 0 || strncasecmp(path, "https://", 8) == 0)) {
        const char *s = memchr(path + 8, '/', plen - 8);
        if (s) {
            plen -= (size_t)(s - path);
            path = s;
        } else {
            path = "/";
            plen = 1;
        }
    }
    const char *q = memchr(path, '?', plen);
    if (q) plen = (size_t)(q - path);
    r->path = path;
    r->path_len = plen;

    /* headers */
    p = nl + 1;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n == 0) break; /* the blank line */
        if (p[0] == ' ' || p[0] == '\t') return -1; /* obsolete line folding */
        i = 0;
        while (i < n && is_tchar((unsigned char)p[i])) i++;
        if (i == 0 || i >= n || p[i] != ':') return -1;
        const char *name = p;
        size_t name_len = i;
        const char *val = p + i + 1;
        size_t vlen = n - i - 1;
        for (size_t k = 0; k < vlen; k++) {
            unsigned char ch = (unsigned char)val[k];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;
        }
        trim(&val, &vlen);
        if (ieq(name, name_len, "Content-Length")) {
            unsigned long long len;
            if (parse_u64(val, vlen, &len) != 0) return -1;
            if (r->has_length && len != r->length) return -1;
            r->has_length = 1;
            r->length = len;
        } else if (ieq(name, name_len, "Transfer-Encoding")) {
            const char *t;
            size_t tn;
            last_token(val, vlen, &t, &tn);
            if (!ieq(t, tn, "chunked")) return -1; /* a body we cannot frame */
            r->chunked = 1;
        } else if (ieq(name, name_len, "Connection")) {
            if (has_token(val, vlen, "close")) r->conn_close = 1;
            if (has_token(val, vlen, "keep-alive")) r->conn_keepalive = 1;
        } else if (ieq(name, name_len, "Upgrade")) {
            if (has_token(val, vlen, "websocket")) r->upgrade_ws = 1;
        } else if (ieq(name, name_len, "Sec-WebSocket-Key")) {
            if (vlen == 0 || vlen > 128) return -1;
            r->ws_key = val;
            r->ws_key_len = vlen;
        } else if (ieq(name, name_len, "Expect")) {
            if (ieq(val, vlen, "100-continue")) r->expect_continue = 1;
        }
        p = nl + 1;
    }
    if (r->chunked) {
        r->has_length = 0; /* Transfer-Encoding wins; the connection ends after */
        r->conn_close = 1;
    }
    return 0;
}

static int keep_alive(const req_t *r) {
    if (r->conn_close) return 0;
    return r->minor == 1 || r->conn_keepalive;
}

/* Read and count the body: 0 ok, -1 connection gone, -2 malformed. */
static int read_body(conn_t *c, const req_t *r, unsigned long long *count) {
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

static int send_head(const req_t *r, int status, const char *reason,
                     const char *ctype, unsigned long long length, int keep, char *head,
                     size_t cap, size_t *head_len) {
    int n = snprintf(head, cap,
                     "HTTP/1.1 %d %s\r\nServer: testbackend\r\nContent-Type: %s\r\n"
                     "Content-Length: %llu\r\n%s\r\n",
                     status, reason, ctype, length,
                     !keep ? "Connection: close\r\n"
                     : (r && r->minor == 0) ? "Connection: keep-alive\r\n"
                                            : "");
    if (n < 0 || (size_t)n >= cap) return -1;
    *head_len = (size_t)n;
    return 0;
}

static int respond(conn_t *c, const req_t *r, int status, const char *reason, const char *ctype,
                   const char *body, size_t blen, int keep) {
    char head[512];
    size_t hl;
    if (send_head(r, status, reason, ctype, blen, keep, head, sizeof head, &hl) != 0)
        return -1;
    struct iovec iov[2] = {{head, hl}, {(void *)body, blen}};
    int cnt = (r && r->head_only) || blen == 0 ? 1 : 2;
    return writev_all(c->fd, iov, cnt);
}

static int respond_text(conn_t *c, const req_t *r, int status, const char *reason, int keep,
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
static int path_number(const req_t *r, const char *prefix, unsigned long long *out, int *malformed) {
    size_t pl = strlen(prefix);
    if (r->path_len < pl || memcmp(r->path, prefix, pl) != 0) return 0;
    if (parse_u64(r->path + pl, r->path_len - pl, out) != 0) *malformed = 1;
    return 1;
}

static int route_is(const req_t *r, const char *path) {
    return r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0;
}

/* ------------------------------------------------------------ WebSocket */

static int ws_send(int fd, int opcode, const uint8_t *payload, size_t len) {
    uint8_t hdr[10];
    size_t hl;
    hdr[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        hdr[1] = (uint8_t)len;
        hl = 2;
    } else if (len <= 0xFFFF) {
        hdr[1] = 126;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        hl = 4;
    } else {
        hdr[1] = 127;
        for (int i = 0; i < 8; i++) hdr[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    struct iovec iov[2] = {{hdr, hl}, {(void *)payload, len}};
    return writev_all(fd, iov, len ? 2 : 1);
}

static void ws_close_with(int fd, unsigned code) {
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    ws_send(fd, 8, p, 2);
}

static void unmask(uint8_t *p, size_t n, const uint8_t mask[4]) {
    for (size_t i = 0; i < n; i++) p[i] ^= mask[i & 3];
}

/* Echo frames until the peer closes; the caller closes the socket. */
static void ws_loop(conn_t *c) {
    uint8_t *msg = NULL;
    size_t mlen = 0, mcap = 0;
    int mop = 0; /* opcode of the message being reassembled, 0 if none */
    for (;;) {
        uint8_t h[2], ext[8], mask[4];
        if (read_exact(c, h, 2) != 0) break;
        int fin = h[0] & 0x80, op = h[0] & 0x0f;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            if (read_exact(c, ext, 2) != 0) break;
            len = (uint64_t)ext[0] << 8 | ext[1];
        } else if (len == 127) {
            if (read_exact(c, ext, 8) != 0) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | ext[i];
        }
        if ((h[0] & 0x70) || !(h[1] & 0x80)) { /* reserved bits, or an unmasked client frame */
            ws_close_with(c->fd, 1002);
            break;
        }
        if (read_exact(c, mask, 4) != 0) break;
        if (op >= 8) {
            uint8_t ctl[125];
            if (!fin || len > 125 || op > 10) {
                ws_close_with(c->fd, 1002);
                break;
            }
            if (read_exact(c, ctl, (size_t)len) != 0) break;
            unmask(ctl, (size_t)len, mask);
            if (op == 8) { /* close: answer with the same status code */
                if (len == 1) ws_close_with(c->fd, 1002);
                else ws_send(c->fd, 8, ctl, len >= 2 ? 2 : 0);
                break;
            }
            if (op == 9 && ws_send(c->fd, 10, ctl, (size_t)len) != 0) break;
            continue; /* a pong: nothing to do */
        }
        if (op == 0) {
            if (!mop) {
                ws_close_with(c->fd, 1002);
                break;
            }
        } else if (op == 1 || op == 2) {
            if (mop) {
                ws_close_with(c->fd, 1002);
                break;
            }
            mop = op;
            mlen = 0;
        } else {
            ws_close_with(c->fd, 1002);
            break;
        }
        if (len > WS_MAX_MESSAGE - mlen) {
            ws_close_with(c->fd, 1009);
            break;
        }
        if (mlen + len > mcap) {
            size_t ncap = mcap ? mcap : 4096;
            while (ncap < mlen + len) ncap *= 2;
            uint8_t *nmsg = realloc(msg, ncap);
            if (!nmsg) {
                ws_close_with(c->fd, 1011);
                break;
            }
            msg = nmsg;
            mcap = ncap;
        }
        if (read_exact(c, msg + mlen, (size_t)len) != 0) break;
        unmask(msg + mlen, (size_t)len, mask);
        mlen += (size_t)len;
        if (fin) {
            if (ws_send(c->fd, mop, msg, mlen) != 0) break;
            mop = 0;
            mlen = 0;
            if (mcap > (1u << 20)) { /* give big buffers back */
                free(msg);
                msg = NULL;
                mcap = 0;
            }
        }
    }
    free(msg);
}

static int ws_handshake(conn_t *c, const req_t *r) {
    char accept[32];
    char head[256];
    ws_accept(r->ws_key, r->ws_key_len, accept);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nServer: testbackend\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    return write_all(c->fd, head, (size_t)n);
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
    req_t r;
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
    if (parse_head(c, &r) != 0) {
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
    int keep = keep_alive(&r);
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
        size_t hl;
        send_head(&r, 200, "OK", "application/octet-stream", num, keep, head, sizeof head, &hl);
        if (write_all(c->fd, head, hl) != 0) return -1;
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
    if (route_is(&r, "/headers")) {
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
