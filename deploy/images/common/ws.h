/*
 * WebSocket (RFC 6455) for the local images' servers: the handshake's accept
 * key, server frame headers, client frame headers with the protocol's rules,
 * and the reassembly of fragmented messages. No I/O happens here.
 */
#ifndef PLANE_IMAGES_WS_H
#define PLANE_IMAGES_WS_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_CONTINUATION = 0,
    WS_TEXT = 1,
    WS_BINARY = 2,
    WS_CLOSE = 8,
    WS_PING = 9,
    WS_PONG = 10,
};

/* Close codes this code sends. */
enum {
    WS_GOING_AWAY = 1001,
    WS_PROTOCOL_ERROR = 1002,
    WS_INVALID_DATA = 1007,
    WS_TOO_BIG = 1009,
    WS_INTERNAL_ERROR = 1011,
};

#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */
#define WS_HEADER_MAX 14 /* 2 + 8 bytes of length + 4 of mask */

/* The 101 response head that completes a handshake with Sec-WebSocket-Key key;
 * its length, or -1 when it does not fit in cap bytes. */
int ws_handshake_head(char *out, size_t cap, const char *server, const char *key, size_t keylen);

/* The header of an unfragmented, unmasked server frame; its length (2, 4 or 10). */
size_t ws_frame_header(uint8_t hdr[10], int opcode, uint64_t len);

/* A client frame's header. */
typedef struct {
    int fin, opcode;
    uint64_t len;
    uint8_t mask[4];
} ws_frame_t;

/* The whole header's length, given its first two bytes. */
size_t ws_header_len(const uint8_t h[2]);

/* Decode and check the header of a client frame at p[0..n): its length (> 0),
 * 0 while more bytes are needed, or minus the close code that answers a frame
 * breaking the protocol (reserved bits, no mask, a bad opcode or control frame). */
long ws_parse_header(const uint8_t *p, size_t n, ws_frame_t *f);

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4]);

/* The payload of the close frame that answers a peer's close frame: the same
 * status code (or 1002 for a one-byte payload); returns its length, 0 or 2. */
size_t ws_close_answer(const uint8_t *payload, size_t len, uint8_t out[2]);

/* Two bytes of a close frame's payload carrying `code`. */
void ws_close_code(unsigned code, uint8_t out[2]);

/* Is p[0..n) well-formed UTF-8, as text messages must be? */
int ws_utf8_valid(const uint8_t *p, size_t n);

/* A data message being reassembled from its frames. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
    int opcode; /* WS_TEXT or WS_BINARY while a message is open, else 0 */
} ws_msg_t;

/* Take a data frame's header: checks the fragmentation rules and makes room
 * for its payload at data + len. 0 ok, else the close code to answer with. */
unsigned ws_msg_take(ws_msg_t *m, const ws_frame_t *f, size_t max);

/* After a complete message: start the next one (big buffers are given back). */
void ws_msg_reset(ws_msg_t *m);

void ws_msg_free(ws_msg_t *m);

#endif
