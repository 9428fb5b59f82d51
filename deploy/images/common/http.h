/*
 * HTTP/1.1 request heads for the local images' servers: finding a head in a
 * buffer, parsing it, and formatting a response head. No I/O happens here, so
 * blocking and event-driven servers can both use it.
 */
#ifndef PLANE_IMAGES_HTTP_H
#define PLANE_IMAGES_HTTP_H

#include <stddef.h>

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
    const char *ws_version;
    size_t ws_version_len;
    int expect_continue;
    size_t raw_len; /* the head without its blank line */
} http_req_t;

/* Parse a whole decimal number (no sign, no spaces); 0 on success. */
int parse_u64(const char *s, size_t n, unsigned long long *out);

/* Is (a, an) equal to the string b, ignoring ASCII case? */
int ieq(const char *a, size_t an, const char *b);

/* How many CR/LF bytes stand before a request line (they are tolerated). */
size_t http_leading_blank(const char *b, size_t n);

/* The length of the head at the start of b, through its blank line, or 0 while
 * it is incomplete. *scan is where the next call may resume (start it at 0). */
size_t http_head_end(const char *b, size_t n, size_t *scan);

/* Parse a complete head (as found by http_head_end); 0 ok, -1 bad request.
 * The pointers in r point into head. */
int http_parse_head(const char *head, size_t len, http_req_t *r);

/* Does the request leave the connection open after its response? */
int http_keep_alive(const http_req_t *r);

/* Does the request's path equal path? */
int http_path_is(const http_req_t *r, const char *path);

/* Format a response head with Content-Length into head; its length, or -1 when
 * it does not fit. r may be NULL (a request that could not be parsed); extra
 * holds more header lines, each ending in CRLF, or is NULL. */
int http_format_head(char *head, size_t cap, const http_req_t *r, const char *server, int status,
                     const char *reason, const char *ctype, const char *extra,
                     unsigned long long length, int keep);

#endif
