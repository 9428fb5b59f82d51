#define _GNU_SOURCE
#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int parse_u64(const char *s, size_t n, unsigned long long *out) {
    unsigned long long v = 0;
    if (n == 0 || n > 19) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int ieq(const char *a, size_t an, const char *b) {
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

static int is_tchar(unsigned char ch) {
    if (ch >= 'a' && ch <= 'z') return 1;
    if (ch >= 'A' && ch <= 'Z') return 1;
    if (ch >= '0' && ch <= '9') return 1;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

size_t http_leading_blank(const char *b, size_t n) {
    size_t i = 0;
    while (i < n && (b[i] == '\r' || b[i] == '\n')) i++;
    return i;
}

size_t http_head_end(const char *b, size_t n, size_t *scan) {
    for (size_t i = *scan; i < n; i++) {
        if (b[i] != '\n') continue;
        if (i + 1 < n && b[i + 1] == '\n') return i + 2;
        if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n') return i + 3;
        if (i + 2 >= n) break; /* undecided: need more input */
    }
    *scan = n > 2 ? n - 2 : 0;
    return 0;
}

/* The request line: method SP target SP HTTP/1.x, in p[0..n). */
static int parse_request_line(const char *p, size_t n, http_req_t *r) {
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
    return 0;
}

/* One header field (name, value trimmed) into r; 0 ok, -1 bad request. */
static int take_header(const char *name, size_t name_len, const char *val, size_t vlen,
                       http_req_t *r) {
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
    } else if (ieq(name, name_len, "Sec-WebSocket-Version")) {
        r->ws_version = val;
        r->ws_version_len = vlen;
    } else if (ieq(name, name_len, "Expect")) {
        if (ieq(val, vlen, "100-continue")) r->expect_continue = 1;
    }
    return 0;
}

int http_parse_head(const char *head, size_t len, http_req_t *r) {
    const char *p = head, *end = head + len;
    memset(r, 0, sizeof *r);

    /* raw_len: drop the terminating blank line */
    r->raw_len = len - 1;
    if (r->raw_len > 0 && head[r->raw_len - 1] == '\r') r->raw_len--;

    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)(nl - p);
    if (n > 0 && p[n - 1] == '\r') n--;
    if (parse_request_line(p, n, r) != 0) return -1;

    p = nl + 1;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n == 0) break; /* the blank line */
        if (p[0] == ' ' || p[0] == '\t') return -1; /* obsolete line folding */
        size_t i = 0;
        while (i < n && is_tchar((unsigned char)p[i])) i++;
        if (i == 0 || i >= n || p[i] != ':') return -1;
        const char *val = p + i + 1;
        size_t vlen = n - i - 1;
        for (size_t k = 0; k < vlen; k++) {
            unsigned char ch = (unsigned char)val[k];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;
        }
        trim(&val, &vlen);
        if (take_header(p, i, val, vlen, r) != 0) return -1;
        p = nl + 1;
    }
    if (r->chunked) {
        r->has_length = 0; /* Transfer-Encoding wins; the connection ends after */
        r->conn_close = 1;
    }
    return 0;
}

int http_keep_alive(const http_req_t *r) {
    if (r->conn_close) return 0;
    return r->minor == 1 || r->conn_keepalive;
}

int http_path_is(const http_req_t *r, const char *path) {
    return r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0;
}

int http_format_head(char *head, size_t cap, const http_req_t *r, const char *server, int status,
                     const char *reason, const char *ctype, const char *extra,
                     unsigned long long length, int keep) {
    int n = snprintf(head, cap,
                     "HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\n%s"
                     "Content-Length: %llu\r\n%s\r\n",
                     status, reason, server, ctype, extra ? extra : "", length,
                     !keep ? "Connection: close\r\n"
                     : (r && r->minor == 0) ? "Connection: keep-alive\r\n"
                                            : "");
    if (n < 0 || (size_t)n >= cap) return -1;
    return n;
}
